// forget-node refuses while the retired host's agent still holds its Lease. An agent that
// stopped released it (holder cleared, duration 1 s, renewTime its release): that Lease is
// not held, though its renewTime is a moment ago.
import { describe, expect, it } from 'vitest';
import { leaseHeld } from '../../../src/commands/forget-node.js';

const NOW = new Date('2026-12-06T08:48:50.000Z');

describe('forget-node: whether the Lease is held', () => {
  it('is held when renewed within its duration by a holder', () => {
    const spec = {
      holderIdentity: 'host/up',
      renewTime: '2026-12-06T08:48:45.000000Z',
      leaseDurationSeconds: 40,
    };
    expect(leaseHeld(spec, NOW)).toBe(5_000);
    expect(leaseHeld({ ...spec, renewTime: '2026-12-06T08:48:00.000000Z' }, NOW)).toBeUndefined();
    expect(leaseHeld(undefined, NOW)).toBeUndefined();
  });

  it('is not held once its agent released it', () => {
    const released = {
      holderIdentity: null,
      renewTime: '2026-12-06T08:48:49.753000Z',
      leaseDurationSeconds: 1,
    };
    expect(leaseHeld(released, NOW)).toBeUndefined();
    expect(leaseHeld({ ...released, holderIdentity: '' }, NOW)).toBeUndefined();
  });
});
