import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../../../src/controllers/context.js';
import { kindResyncMs, type KeyLookup } from '../../../../src/controllers/module.js';
import type { CacheChange } from '../../../../src/runtime/cache.js';
import { virtualNetwork } from '../../../../src/controllers/virtual-network/index.js';

const network = (name: string): KubeObject =>
  ({ metadata: { name, uid: `uid-${name}` }, spec: { bridge: 'virbr-same' } }) as KubeObject;

const cache: KeyLookup = {
  keysByIndex: () => [],
  keys: (kind) => (kind === 'VirtualNetwork' ? ['first', 'second'] : []),
};

const woken = (change: CacheChange<KubeObject>) =>
  virtualNetwork.triggers
    .filter((t) => t.from === 'VirtualNetwork')
    .flatMap((t) => t.keys(change, cache))
    .sort();

describe('which VirtualNetworks a VirtualNetwork change wakes', () => {
  // Seen on libvirtd 9.0: a network refused for the bridge another one held (BridgeInUse) waited
  // out its backoff, as long as it had been failing (up to 5 min), after that one was deleted.
  it('a deleted network wakes the others: one refused for its bridge or subnet retries at once', () => {
    expect(woken({ type: 'deleted', obj: network('gone') })).toEqual(['first', 'second']);
  });
  it('other changes wake no other network', () => {
    expect(woken({ type: 'added', obj: network('new') })).toEqual([]);
    expect(woken({ type: 'updated', obj: network('first'), old: network('first') })).toEqual([]);
  });
});

describe('how often a VirtualNetwork is looked at again without an event', () => {
  // Seen on libvirtd 9.0: a mode-bridge network whose host bridge was deleted (`ip link del`)
  // stayed Ready=True, Active, until the agent's 10-minute resync; libvirt sends no event and
  // keeps the network active, and a machine started on it meanwhile fails.
  it('within a minute, so a vanished host bridge reads BridgeNotFound soon', () => {
    expect(kindResyncMs(virtualNetwork, 10 * 60_000)).toBeLessThanOrEqual(60_000);
  });
});

describe('which VirtualNetworks a VirtualMachine change wakes', () => {
  const entry = (reason: string) => ({
    nodeName: 'node-a',
    conditions: [{ type: 'Ready', status: 'False', reason }],
  });
  const networks: KubeObject[] = [
    { metadata: { name: 'old', uid: 'uid-old' }, status: { nodes: [entry('InUse')] } },
    { metadata: { name: 'new', uid: 'uid-new' }, status: { nodes: [entry('Active')] } },
    { metadata: { name: 'other', uid: 'uid-other' }, status: { nodes: [entry('Active')] } },
  ] as unknown as KubeObject[];
  // The cache's index lookup over the networks above, with the module's real indexes.
  const lookup: KeyLookup = {
    keysByIndex: (kind, index, value) => {
      expect(kind).toBe('VirtualNetwork');
      const fn = virtualNetwork.indexes[index]!;
      return networks.filter((n) => fn(n).includes(value)).map((n) => String(n.metadata.name));
    },
    keys: () => networks.map((n) => String(n.metadata.name)),
  };
  const machine = (phase: string) =>
    ({
      metadata: { name: 'web', namespace: 'prod', uid: 'uid-web' },
      spec: { nodeName: 'node-a', interfaces: [{ name: 'eth0', network: 'new' }] },
      status: { phase },
    }) as KubeObject;
  const wokenBy = (change: CacheChange<KubeObject>) =>
    virtualNetwork.triggers
      .filter((t) => t.from === 'VirtualMachine')
      .flatMap((t) => t.keys(change, lookup))
      .sort();

  // The NIC of web was switched from 'old' to 'new' while the guest ran: 'old', being deleted,
  // waits (InUse) for the guest, which stays on it until it stops. When it stops, neither the
  // old nor the new object names 'old': its deletion waited out its backoff (up to 5 minutes).
  it('a machine that stops wakes a network waiting for guests its spec no longer names', () => {
    const change = { type: 'updated', obj: machine('Stopped'), old: machine('Running') } as const;
    expect(wokenBy(change)).toEqual(['new', 'old']);
  });
  it('a network not waiting for guests is woken only by the machines that name it', () => {
    expect(wokenBy({ type: 'deleted', obj: machine('Running') })).not.toContain('other');
  });
});
