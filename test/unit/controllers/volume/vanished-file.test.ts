// A Volume's file deleted behind libvirt's back (rm in the pool directory): libvirt keeps
// listing the volume by name until its pool is refreshed, while reading it says "not found"
// (VIR_ERR_NO_STORAGE_VOL, measured on libvirt 9.0). Creating it again then failed with
// "storage volume ... exists already" on every retry, and a Volume with an HTTP source
// downloaded its image again before each one. A state-based fake of that pool: the real one
// cannot lose a file in the test driver, which keeps pools in memory.
import { describe, expect, it } from 'vitest';
import { observeVolume } from '../../../../src/controllers/volume/observe.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import type { StoragePool } from '../../../../src/libvirt/storage.js';

function poolWithVanishedFile(name: string) {
  const state = { listed: new Set([name]), files: new Set<string>(), refreshes: 0 };
  const notFound = () =>
    new LibvirtError(`Storage volume not found: no storage vol with matching path '/p/${name}'`, {
      code: ErrorCode.VIR_ERR_NO_STORAGE_VOL,
      domain: ErrorDomain.VIR_FROM_STORAGE,
      level: 2,
    });
  const handle = {
    lookupStorageVolByName: (n: string) =>
      state.listed.has(n)
        ? Promise.resolve({
            getXMLDesc: () =>
              state.files.has(n) ? Promise.resolve('') : Promise.reject(notFound()),
          })
        : Promise.reject(notFound()),
    refresh: () => {
      state.refreshes++;
      // A refresh lists what the directory holds.
      state.listed = new Set(state.files);
      return Promise.resolve();
    },
    createVolumeXML: () => {
      if (state.listed.has(name))
        return Promise.reject(new Error(`storage volume '${name}' exists already`));
      state.listed.add(name);
      state.files.add(name);
      return Promise.resolve({});
    },
  };
  const pool = { name: 'images', handle: handle as unknown as StoragePool, locks: new Map() };
  return { pool, state };
}

describe('observeVolume: a volume whose file vanished', () => {
  it('reports it absent and refreshes the pool, so the next create can succeed', async () => {
    const { pool, state } = poolWithVanishedFile('ns_disk');
    expect(await observeVolume(pool, 'ns_disk')).toBeUndefined();
    expect(state.refreshes).toBe(1);
    expect(state.listed.has('ns_disk')).toBe(false);
    await expect(pool.handle.createVolumeXML('<volume/>', 0)).resolves.toBeDefined();
  });

  it('does not refresh for a volume that was never there', async () => {
    const { pool, state } = poolWithVanishedFile('ns_disk');
    expect(await observeVolume(pool, 'ns_other')).toBeUndefined();
    expect(state.refreshes).toBe(0);
  });
});
