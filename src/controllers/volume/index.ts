// The Volume controller: the agent of spec.nodeName keeps the Volume's file in its pool (blank,
// cloned, layered or imported over HTTP) and reports who uses it.
import { keyOf } from '../context.js';
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
    {
      from: 'StoragePool',
      keys: (c, cache) => cache.keysByIndex('Volume', INDEX_POOL, keyOf(c.obj)),
    },
    // A snapshot protects the Volumes its disks are in.
    {
      from: 'VirtualMachineSnapshot',
      keys: (c) => changed(c).flatMap((s) => snapshotVolumes(s)),
    },
  ],
};
