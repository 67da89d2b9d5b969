import { describe, expect, it } from 'vitest';
import type { VirtKind } from '../../../../src/api/generated/crds.js';
import type { KubeObject } from '../../../../src/controllers/context.js';
import type { KeyLookup, Trigger } from '../../../../src/controllers/module.js';
import { volume } from '../../../../src/controllers/volume/index.js';

const vol = (name: string, source?: object): KubeObject =>
  ({
    metadata: { name, namespace: 'prod', uid: `uid-${name}` },
    spec: { nodeName: 'node-a', pool: 'p', ...(source ? { source } : {}) },
  }) as KubeObject;

// This node's Volumes: a copy and an overlay of the machine's disk, and one unrelated.
const volumes = [
  vol('disk'),
  vol('copy', { clone: { volume: 'disk' } }),
  vol('layer', { backingVolume: { volume: 'disk' } }),
  vol('other'),
];

/** The cache's index lookup over the Volumes above, using the module's real indexes. */
const cache: KeyLookup = {
  keysByIndex: (kind: VirtKind, index: string, value: string) => {
    expect(kind).toBe('Volume');
    const fn = volume.indexes[index]!;
    return volumes
      .filter((v) => fn(v).includes(value))
      .map((v) => `${v.metadata.namespace}/${v.metadata.name}`);
  },
  keys: () => volumes.map((v) => `${v.metadata.namespace}/${v.metadata.name}`),
};

function woken(from: Trigger['from'], obj: KubeObject): string[] {
  return volume.triggers
    .filter((t) => t.from === from)
    .flatMap((t) => t.keys({ type: 'added', obj }, cache))
    .sort();
}

describe('which Volumes a change wakes (the Volume module triggers)', () => {
  it('for a VirtualMachine: its disks, and the Volumes copied from or layered on them (a copy waits for the machine to let go, SourceInUse)', () => {
    const machine = {
      metadata: { name: 'web', namespace: 'prod', uid: 'uid-web' },
      spec: { nodeName: 'node-a', disks: [{ name: 'root', volume: 'disk' }] },
    } as KubeObject;
    expect(woken('VirtualMachine', machine)).toEqual(['prod/copy', 'prod/disk', 'prod/layer']);
  });
});
