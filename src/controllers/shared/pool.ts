// Lookups of libvirt storage pools that more than one kind needs (StoragePool materialises
// them, Volume puts files in them). Reads only.
import { realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Connect } from '../../libvirt/connection.js';
import { absentIfNotFound } from './absent.js';
import type { StoragePool as LibvirtPool } from '../../libvirt/storage.js';

/** The libvirt pool with this UUID, or undefined. */
export async function lookupPool(conn: Connect, uuid: string): Promise<LibvirtPool | undefined> {
  return conn.lookupStoragePoolByUUIDString(uuid).catch(absentIfNotFound('storagePool'));
}

/**
 * Where `path` leads once symbolic links are followed: the deepest existing part resolved
 * (realpath), the missing rest appended as written.
 */
export async function resolvedPath(path: string): Promise<string> {
  let existing = path;
  const missing: string[] = [];
  for (;;) {
    const real = await realpath(existing).catch(() => undefined);
    if (real !== undefined) return [real === '/' ? '' : real, ...missing].join('/') || '/';
    if (existing === dirname(existing)) return path;
    missing.unshift(basename(existing));
    existing = dirname(existing);
  }
}
