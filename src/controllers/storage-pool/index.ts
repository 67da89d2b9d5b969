// The StoragePool controller: each agent materialises a StoragePool as a libvirt pool on its
// own node when spec.nodeSelector selects it, and reports it in status.nodes[].
import { clusterIndexes, volumePool } from '../indexes.js';
import { changed, type ControllerModule } from '../module.js';
import { reconcileStoragePool } from './reconcile.js';

export { reconcileStoragePool } from './reconcile.js';

export const storagePool: ControllerModule = {
  kind: 'StoragePool',
  watch: 'cluster',
  reconcile: reconcileStoragePool,
  indexes: clusterIndexes,
  hostEvents: 'storagePool',
  // libvirt sends no event when a pool's directory is removed and keeps the pool "running":
  // a pass refreshes it (reconcile.ts POOL_REFRESH_MS) and finds it within about a minute,
  // instead of reading Ready until the agent's 10-minute resync.
  resyncMs: 60_000,
  triggers: [
    // Removal waits for the Volumes in the pool.
    { from: 'Volume', keys: (c) => changed(c).flatMap((v) => volumePool(v)) },
    // A pool refused because another one held its path or a directory inside or around it
    // (PathConflict, PathNested) tries again as soon as that one is gone, instead of after its backoff (up to 5 minutes).
    {
      from: 'StoragePool',
      keys: (c, cache) => (c.type === 'deleted' ? cache.keys('StoragePool') : []),
    },
    // Node labels decide which pools this host should have.
    { from: 'Node', keys: (_c, cache) => cache.keys('StoragePool') },
  ],
};
