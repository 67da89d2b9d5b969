import { describe, expect, it } from 'vitest';
import type { VirtKind } from '../../../../src/api/generated/crds.js';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import type { KubeObject } from '../../../../src/controllers/context.js';
import type { CacheChange } from '../../../../src/runtime/cache.js';
import { INDEX_UUID, vmIndexes } from '../../../../src/controllers/indexes.js';
import type { KeyLookup, Trigger } from '../../../../src/controllers/module.js';
import { virtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { vm } from './machines.js';

function named(name: string, namespace: string, spec: Parameters<typeof vm>[0]): VirtualMachine {
  const m = vm(spec);
  m.metadata = { ...m.metadata, name, namespace, uid: `uid-${name}` };
  return m;
}

const MAC = '52:54:00:0a:bc:01';

// This node's cache: the agent's field selector (spec.nodeName) keeps other nodes' machines out.
const machines = [
  named('a', 'prod', {
    disks: [{ name: 'root', volume: 'root', bus: 'virtio', readOnly: false }],
    interfaces: [{ name: 'eth0', network: 'lab', model: 'virtio' }],
  }),
  named('b', 'prod', { boot: { kernel: { volume: 'root' } } }),
  named('c', 'test', { disks: [{ name: 'root', volume: 'root', bus: 'virtio', readOnly: false }] }),
  named('e', 'prod', { uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f' }),
  // Two machines with one MAC (as users write it, in either case): the later one waits.
  named('holder', 'prod', {
    interfaces: [{ name: 'eth0', network: 'lab2', model: 'virtio', macAddress: MAC }],
  }),
  named('waiter', 'test', {
    interfaces: [{ name: 'nic', network: 'lab2', model: 'virtio', macAddress: MAC.toUpperCase() }],
  }),
];

/** The cache's index lookup over the machines above, using the module's real indexes. */
const cache: KeyLookup = {
  keysByIndex: (kind: VirtKind, index: string, value: string) => {
    expect(kind).toBe('VirtualMachine');
    const fn = virtualMachine.indexes[index]!;
    return machines
      .filter((m) => fn(m).includes(value))
      .map((m) => `${m.metadata.namespace}/${m.metadata.name}`);
  },
  keys: () => machines.map((m) => `${m.metadata.namespace}/${m.metadata.name}`),
};

/** The machine keys a change of `from` wakes, over every trigger the module declares for it. */
function wokenBy(from: Trigger['from'], change: CacheChange<KubeObject>): string[] {
  return virtualMachine.triggers
    .filter((t) => t.from === from)
    .flatMap((t) => t.keys(change, cache))
    .sort();
}

const woken = (from: Trigger['from'], obj: KubeObject) => wokenBy(from, { type: 'added', obj });

describe('which machines a change wakes (the VirtualMachine module triggers)', () => {
  it('for a Volume: the machines in its namespace using it as disk or kernel', () => {
    expect(woken('Volume', { metadata: { name: 'root', namespace: 'prod' } })).toEqual([
      'prod/a',
      'prod/b',
    ]);
    expect(woken('Volume', { metadata: { name: 'other', namespace: 'prod' } })).toEqual([]);
  });

  // VolumeHasOverlays: a machine writing a base is judged again when an overlay comes or goes.
  it('for an overlay: also the machines using its base', () => {
    const overlay = (source: object) =>
      ({ metadata: { name: 'web-1', namespace: 'prod' }, spec: { source } }) as KubeObject;
    expect(woken('Volume', overlay({ backingVolume: { volume: 'root' } }))).toEqual([
      'prod/a',
      'prod/b',
    ]);
    expect(woken('Volume', overlay({ clone: { volume: 'root' } }))).toEqual([]);
  });

  it('for a VirtualNetwork: the machines with an interface on it', () => {
    expect(woken('VirtualNetwork', { metadata: { name: 'lab' } })).toEqual(['prod/a']);
  });

  it('for a VirtualMachineRestore: its machine', () => {
    const restore = { metadata: { name: 'r', namespace: 'prod' }, spec: { vmName: 'a' } };
    expect(woken('VirtualMachineRestore', restore)).toEqual(['prod/a']);
  });

  // MACAddressInUse: the machine held back goes on when the holder lets go of the MAC.
  it('for a VirtualMachine: the other machines with a MAC it has or had', () => {
    const holder = machines.find((m) => m.metadata.name === 'holder')!;
    expect(woken('VirtualMachine', holder)).toEqual(['test/waiter']);
    expect(wokenBy('VirtualMachine', { type: 'deleted', obj: holder })).toEqual(['test/waiter']);
    // Its MAC changed: the old one is the one the waiting machine wants.
    const renumbered = structuredClone(holder);
    renumbered.spec.interfaces![0]!.macAddress = '52:54:00:0a:bc:02';
    const change = { type: 'updated' as const, obj: renumbered, old: holder };
    expect(wokenBy('VirtualMachine', change)).toEqual(['test/waiter']);
    // A machine nobody shares a MAC with wakes nobody, itself included.
    expect(woken('VirtualMachine', machines[0]!)).toEqual([]);
  });

  it('for a domain event: the machine whose UUID (spec.uuid or uid) the domain carries', () => {
    const byUuid = (uuid: string) => cache.keysByIndex('VirtualMachine', INDEX_UUID, uuid);
    expect(virtualMachine.hostEvents).toBe('domain');
    expect(virtualMachine.indexes).toBe(vmIndexes);
    expect(byUuid('uid-c')).toEqual(['test/c']);
    expect(byUuid('6695eb01-f6a4-8304-79aa-97f2502e193f')).toEqual(['prod/e']);
    expect(byUuid('uid-e')).toEqual([]); // its domain has spec.uuid instead
  });
});
