import { describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import type { ControllerContext, KubeObject } from '../../../../src/controllers/context.js';
import { vmIndexes } from '../../../../src/controllers/indexes.js';
import {
  machineOfDomain,
  machinesOnNetwork,
  machinesUsingVolume,
} from '../../../../src/controllers/virtual-machine/index.js';
import { vm } from './machines.js';

/** The cache's index lookup over a fixed list of machines, using the agent's real indexes. */
function cacheOf(machines: VirtualMachine[]): ControllerContext {
  const byIndex = (_kind: string, index: string, value: string) =>
    machines.filter((m) =>
      (vmIndexes as Record<string, (o: KubeObject) => string[]>)[index]!(m).includes(value),
    );
  return { nodeName: 'node-a', byIndex } as unknown as ControllerContext;
}

function named(name: string, namespace: string, spec: Parameters<typeof vm>[0]): VirtualMachine {
  const m = vm(spec);
  m.metadata = { ...m.metadata, name, namespace, uid: `uid-${name}` };
  return m;
}

const machines = [
  named('a', 'prod', {
    disks: [{ name: 'root', volume: 'root', bus: 'virtio', readOnly: false }],
    interfaces: [{ name: 'eth0', network: 'lab', model: 'virtio' }],
  }),
  named('b', 'prod', { boot: { kernel: { volume: 'root' } } }),
  named('c', 'test', { disks: [{ name: 'root', volume: 'root', bus: 'virtio', readOnly: false }] }),
  named('d', 'prod', {
    nodeName: 'node-b',
    disks: [{ name: 'root', volume: 'root', bus: 'virtio', readOnly: false }],
    interfaces: [{ name: 'eth0', network: 'lab', model: 'virtio' }],
  }),
  named('e', 'prod', { uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f' }),
];
const ctx = cacheOf(machines);

describe('which machines to reconcile', () => {
  it("for a Volume: this node's machines in its namespace using it as disk or kernel", () => {
    expect(machinesUsingVolume(ctx, { metadata: { name: 'root', namespace: 'prod' } })).toEqual([
      'prod/a',
      'prod/b',
    ]);
    expect(machinesUsingVolume(ctx, { metadata: { name: 'other', namespace: 'prod' } })).toEqual(
      [],
    );
  });

  it("for a VirtualNetwork: this node's machines with an interface on it", () => {
    expect(machinesOnNetwork(ctx, { metadata: { name: 'lab' } })).toEqual(['prod/a']);
  });

  it('for a domain event: the machine with that UUID (spec.uuid or uid), in any letter case', () => {
    expect(machineOfDomain(ctx, 'uid-c')).toEqual(['test/c']);
    expect(machineOfDomain(ctx, '6695EB01-F6A4-8304-79AA-97F2502E193F')).toEqual(['prod/e']);
    expect(machineOfDomain(ctx, 'uid-d')).toEqual([]); // another node's
    expect(machineOfDomain(ctx, 'uid-e')).toEqual([]); // its domain has spec.uuid instead
  });
});
