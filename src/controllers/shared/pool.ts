// Lookups of libvirt storage pools that more than one kind needs (StoragePool materialises
// them, Volume puts files in them). Reads only.
import type { Connect } from '../../libvirt/connection.js';
import { isNotFound } from '../../libvirt/errors.js';
import type { StoragePool as LibvirtPool } from '../../libvirt/storage.js';

/** The libvirt pool with this UUID, or undefined. */
export async function lookupPool(conn: Connect, uuid: string): Promise<LibvirtPool | undefined> {
  return conn.lookupStoragePoolByUUIDString(uuid).catch(absentIfNotFound);
}

/** For a lookup's catch: a missing pool is undefined, anything else is thrown again. */
export function absentIfNotFound(err: unknown): undefined {
  if (isNotFound(err, 'storagePool')) return undefined;
  throw err;
}
