import { describe, expect, it } from 'vitest';
import { leaseDecision } from '../../../src/runtime/lease.js';

describe('lease decision', () => {
  const t = 1_000_000;
  it('renews our own lease, takes a free or released one', () => {
    expect(leaseDecision({ holderIdentity: 'me', leaseDurationSeconds: 15 }, 'me', t, t)).toBe(
      'renew',
    );
    expect(leaseDecision({}, 'me', t, t)).toBe('acquire');
    expect(leaseDecision({ holderIdentity: null, leaseDurationSeconds: 1 }, 'me', t, t)).toBe(
      'acquire',
    );
    expect(leaseDecision({ holderIdentity: '', leaseDurationSeconds: 1 }, 'me', t, t)).toBe(
      'acquire',
    );
  });

  it('waits for another holder until the lease went unchanged for its duration by our clock, whatever its renewTime says', () => {
    const spec = {
      holderIdentity: 'other',
      leaseDurationSeconds: 15,
      renewTime: '1970-01-01T00:00:00.000000Z',
    };
    expect(leaseDecision(spec, 'me', t, t + 14_999)).toBe('wait');
    expect(leaseDecision(spec, 'me', t, t + 15_000)).toBe('acquire');
  });
});
