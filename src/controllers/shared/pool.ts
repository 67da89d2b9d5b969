// Lookups of libvirt storage pools that more than one kind needs (StoragePool materialises
// them, Volume puts files in them). Reads only.
import type { Connect } from '../../libvirt/connection.js';
import { absentIfNotFound } from './absent.js';
import type { StoragePool as LibvirtPool } from '../../libvirt/storage.js';

/** The libvirt pool with this UUID, or undefined. */
export async function lookupPool(conn: Connect, uuid: string): Promise<LibvirtPool | undefined> {
  return conn.lookupStoragePoolByUUIDString(uuid).catch(absentIfNotFound('storagePool'));
}
