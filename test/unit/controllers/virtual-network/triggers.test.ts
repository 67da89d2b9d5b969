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
