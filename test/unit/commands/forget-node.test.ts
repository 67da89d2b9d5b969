// forget-node refuses while the retired host's agent still holds its Lease. An agent that
// stopped released it (holder cleared, duration 1 s, renewTime its release): that Lease is
// not held, though its renewTime is a moment ago.
import { describe, expect, it } from 'vitest';
import {
  describeForgetting,
  FORGET_KINDS,
  forgetPlan,
  leaseHeld,
} from '../../../src/commands/forget-node.js';

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

// A restore holds no finalizer: the retired node's claim is its status.nodeName, which the
// admission policy lets no other node's agent write past or delete.
describe('forget-node: restores claimed by the retired node', () => {
  const restore = (name: string, nodeName?: string) => ({
    metadata: { name, namespace: 'ns' },
    spec: {},
    status: nodeName === undefined ? {} : { nodeName },
  });

  it('clears status.nodeName where it names the node, and nothing else', () => {
    const plan = forgetPlan('gone', 'VirtualMachineRestore', [
      restore('mine', 'gone'),
      restore('other', 'alive'),
      restore('finished'),
    ]);
    expect(plan).toEqual([
      {
        kind: 'VirtualMachineRestore',
        namespace: 'ns',
        name: 'mine',
        finalizers: [],
        statusClaim: true,
      },
    ]);
    expect(describeForgetting('gone', plan[0]!)).toBe(
      'VirtualMachineRestore ns/mine: status.nodeName gone',
    );
    expect(FORGET_KINDS).toContain('VirtualMachineRestore');
  });

  it('is no claim on the kinds that keep the node in spec or in a finalizer', () => {
    expect(forgetPlan('gone', 'VirtualMachineSnapshot', [restore('s', 'gone')])).toEqual([]);
  });
});
