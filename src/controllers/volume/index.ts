// The Volume controller: the agent of spec.nodeName keeps the Volume's file in its pool (blank,
// cloned, layered or imported over HTTP) and reports who uses it.
import { keyOf, type KubeObject } from '../context.js';
import {
  INDEX_POOL,
  INDEX_SOURCE_VOLUME,
  snapshotVolumes,
  vmVolumes,
  volumeIndexes,
  volumeSources,
} from '../indexes.js';
import { changed, type ControllerModule } from '../module.js';
import { reconcileVolume } from './reconcile.js';

export { reconcileVolume } from './reconcile.js';

export const volume: ControllerModule = {
  kind: 'Volume',
  watch: 'node',
  reconcile: reconcileVolume,
  indexes: volumeIndexes,
  triggers: [
    // A Volume's status names the Volumes layered on or copied from it, and waits for its source.
    {
      from: 'Volume',
      keys: (c, cache) => [
        ...cache.keysByIndex('Volume', INDEX_SOURCE_VOLUME, keyOf(c.obj)),
        ...volumeSources(c.obj),
      ],
    },
    // ... and the machines using it; a copy of a disk waits for its machine to stop
    // (SourceInUse), so the Volumes copied from or layered on a machine's disks look too.
    {
      from: 'VirtualMachine',
      keys: (c, cache) =>
        changed(c)
          .flatMap((vm) => vmVolumes(vm))
          .flatMap((key) => [key, ...cache.keysByIndex('Volume', INDEX_SOURCE_VOLUME, key)]),
    },
    // Not for a change of the pool's byte figures alone: they move with the disk (a status
    // write per node up to once a minute), a Volume never reads them, and a pool of a
    // thousand Volumes woke all of them on every agent at each such write.
    {
      from: 'StoragePool',
      keys: (c, cache) =>
        c.type === 'updated' && !poolChangeSeenByVolumes(c.old, c.obj)
          ? []
          : cache.keysByIndex('Volume', INDEX_POOL, keyOf(c.obj)),
    },
    // A snapshot protects the Volumes its disks are in.
    {
      from: 'VirtualMachineSnapshot',
      keys: (c) => changed(c).flatMap((s) => snapshotVolumes(s)),
    },
  ],
};

/**
 * Whether a StoragePool update changed what its Volumes act on: its identity, spec, deletion,
 * or a node entry's state and conditions (a pool started or lost on a node). Pure.
 */
export function poolChangeSeenByVolumes(old: KubeObject, obj: KubeObject): boolean {
  return JSON.stringify(seenByVolumes(old)) !== JSON.stringify(seenByVolumes(obj));
}

function seenByVolumes(pool: KubeObject) {
  const { spec, status } = pool as KubeObject & {
    spec?: unknown;
    status?: { nodes?: Record<string, unknown>[] };
  };
  const nodes = (status?.nodes ?? []).map(
    ({ capacity: _c, allocation: _a, available: _v, ...rest }) => rest,
  );
  const { uid, deletionTimestamp } = pool.metadata;
  return { uid, deletionTimestamp, spec, nodes };
}
