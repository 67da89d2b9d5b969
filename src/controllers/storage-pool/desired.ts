// The libvirt pool a StoragePool becomes on a selected node: a directory pool named like the
// object, with the object's uid as its UUID. libvirt's pool format has no <metadata>, so the
// UUID is the ownership proof: a foreign pool has a random UUID, and a pool with our name but
// another UUID is a name clash, never adopted.
import { libvirtUuid } from '../../api/names.js';
import type { StoragePool } from '../../api/generated/types.js';
import type { PoolDocument } from '../../libvirt/xml/pool.js';

export function desiredPool(pool: StoragePool): PoolDocument {
  return {
    type: pool.spec.type ?? 'dir',
    name: String(pool.metadata.name),
    uuid: libvirtUuid({ metadata: pool.metadata }),
    // No <permissions>: libvirt creates a missing directory with mode 0711 and leaves an
    // existing directory's mode and owner alone, which is what a user pointing a pool at a
    // prepared directory expects.
    target: { path: pool.spec.path },
  };
}
