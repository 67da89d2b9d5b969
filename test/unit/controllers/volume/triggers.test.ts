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

  it('for a StoragePool: its Volumes, but not when only its byte figures moved', () => {
    const entry = (available: string, reason = 'Running') => ({
      nodeName: 'node-a',
      state: reason === 'Running' ? 'running' : 'inactive',
      capacity: '100Gi',
      allocation: '1Gi',
      available,
      conditions: [{ type: 'Ready', status: reason === 'Running' ? 'True' : 'False', reason }],
    });
    const pool = (available: string, reason?: string, deleting?: boolean) =>
      ({
        metadata: {
          name: 'p',
          uid: 'uid-p',
          ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}),
        },
        spec: { path: '/srv/p' },
        status: { nodes: [entry(available, reason)] },
      }) as KubeObject;
    const updated = (old: KubeObject, obj: KubeObject) =>
      volume.triggers
        .filter((t) => t.from === 'StoragePool')
        .flatMap((t) => t.keys({ type: 'updated', old, obj }, cache))
        .sort();
    const all = ['prod/copy', 'prod/disk', 'prod/layer', 'prod/other'];
    expect(woken('StoragePool', pool('90Gi'))).toEqual(all);
    expect(updated(pool('90Gi'), pool('89Gi'))).toEqual([]);
    expect(updated(pool('90Gi'), pool('90Gi', 'DirectoryLost'))).toEqual(all);
    expect(updated(pool('90Gi'), pool('90Gi', undefined, true))).toEqual(all);
  });
});
