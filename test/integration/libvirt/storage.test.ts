import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  ErrorCode,
  LibvirtError,
  StoragePoolState,
  isAlreadyExists,
  isInvalidXML,
  isNotFound,
  isUnsupported,
  type StoragePool,
} from '../../../src/libvirt/index.js';
import { TEST_URI, dirPoolXML, uniqueName, volumeXML } from './fixtures.js';

let conn: Connect;
const pools: StoragePool[] = [];

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
});

afterAll(async () => {
  for (const p of pools) {
    for (const v of await p.listAllVolumes().catch(() => []))
      await v.delete().catch(() => undefined);
    await p.destroy().catch(() => undefined);
    await p.undefine().catch(() => undefined);
  }
  await conn?.close();
});

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof LibvirtError) return err;
    throw err;
  }
  throw new Error('expected the promise to reject');
}

// The test driver keeps pools and volumes in memory: these paths are never created.
async function runningPool(): Promise<StoragePool> {
  const name = uniqueName('pool');
  const pool = await conn.defineStoragePoolXML(dirPoolXML(name, `/nonexistent/lvbt/${name}`));
  pools.push(pool);
  await pool.build();
  await pool.create();
  return pool;
}

describe('StoragePool', () => {
  it('defines, builds, starts, refreshes, stops, deletes and undefines a dir pool', async () => {
    const name = uniqueName('life');
    const uuid = randomUUID();
    const pool = await conn.defineStoragePoolXML(
      dirPoolXML(name, `/nonexistent/lvbt/${name}`, uuid),
    );
    pools.push(pool);
    expect(pool.getName()).toBe(name);
    expect(pool.getUUIDString()).toBe(uuid);
    expect(await pool.isActive()).toBe(false);
    expect(await pool.isPersistent()).toBe(true);
    expect((await pool.getInfo()).stateName).toBe('inactive');
    await pool.build();
    await pool.create();
    expect(await pool.isActive()).toBe(true);
    await pool.refresh();
    const info = await pool.getInfo();
    expect(info.state).toBe(StoragePoolState.RUNNING);
    expect(typeof info.capacity).toBe('bigint');
    expect(typeof info.available).toBe('bigint');
    expect(await pool.getXMLDesc()).toContain(`<name>${name}</name>`);
    expect(await pool.getAutostart()).toBe(false);
    await pool.setAutostart(true);
    expect(await pool.getAutostart()).toBe(true);
    await pool.setAutostart(false);
    expect((await conn.lookupStoragePoolByUUID(uuid)).getName()).toBe(name);
    expect((await conn.lookupStoragePoolByUUIDString(uuid)).getName()).toBe(name);
    expect((await conn.lookupStoragePoolByUUID(pool.getUUID())).getName()).toBe(name);
    expect((await conn.lookupStoragePoolByName(name)).getUUIDString()).toBe(uuid);
    const byPath = await rejection(conn.lookupStoragePoolByTargetPath(`/nonexistent/lvbt/${name}`));
    expect(isUnsupported(byPath)).toBe(true);
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).toContain(name);
    await pool.destroy();
    await pool.delete();
    await pool.undefine();
    expect(isNotFound(await rejection(conn.lookupStoragePoolByUUID(uuid)), 'storagePool')).toBe(
      true,
    );
  });

  it('creates a transient pool from XML', async () => {
    const name = uniqueName('tpool');
    const pool = await conn.createStoragePoolXML(dirPoolXML(name, `/nonexistent/lvbt/${name}`));
    expect(await pool.isActive()).toBe(true);
    expect(await pool.isPersistent()).toBe(false);
    await pool.destroy();
    expect(isNotFound(await rejection(conn.lookupStoragePoolByName(name)))).toBe(true);
  });

  it('rejects bad XML, duplicate names and missing pools', async () => {
    expect(
      isInvalidXML(await rejection(conn.defineStoragePoolXML('<pool type="dir"><name>'))),
    ).toBe(true);
    const pool = await runningPool();
    const dup = await rejection(
      conn.defineStoragePoolXML(dirPoolXML(pool.getName(), '/nonexistent/x')),
    );
    expect(isAlreadyExists(dup)).toBe(true);
    const missing = await rejection(conn.lookupStoragePoolByName(uniqueName('none')));
    expect(missing.code).toBe(ErrorCode.VIR_ERR_NO_STORAGE_POOL);
    expect(isNotFound(missing, 'storagePool')).toBe(true);
  });
});

describe('StorageVol', () => {
  it('creates, finds, clones, inspects and deletes volumes', async () => {
    const pool = await runningPool();
    const name = uniqueName('vol');
    const vol = await pool.createVolumeXML(volumeXML(name, 10 * 1024 * 1024));
    expect(vol.getName()).toBe(name);
    const key = vol.getKey();
    const path = await vol.getPath();
    expect(path).toContain(name);
    expect((await pool.lookupStorageVolByName(name)).getKey()).toBe(key);
    expect((await conn.lookupStorageVolByKey(key)).getName()).toBe(name);
    expect((await conn.lookupStorageVolByPath(path)).getName()).toBe(name);
    expect((await vol.storagePoolLookupByVolume()).getName()).toBe(pool.getName());
    const info = await vol.getInfo();
    expect(info.capacity).toBe(10n * 1024n * 1024n);
    expect(info.typeName).toBe('file');
    expect(await vol.getXMLDesc()).toContain(`<name>${name}</name>`);

    const cloneName = uniqueName('clone');
    const clone = await pool.createVolumeXMLFrom(volumeXML(cloneName, 10 * 1024 * 1024), vol);
    expect((await clone.getInfo()).capacity).toBe(10n * 1024n * 1024n);
    expect(await pool.numOfVolumes()).toBe(2);
    expect((await pool.listAllVolumes()).map((v) => v.getName()).sort()).toEqual(
      [name, cloneName].sort(),
    );

    await clone.delete();
    await vol.delete();
    expect(await pool.numOfVolumes()).toBe(0);
    const gone = await rejection(pool.lookupStorageVolByName(name));
    expect(gone.code).toBe(ErrorCode.VIR_ERR_NO_STORAGE_VOL);
    expect(isNotFound(gone, 'storageVol')).toBe(true);
    expect(isNotFound(await rejection(conn.lookupStorageVolByPath(path)), 'storageVol')).toBe(true);
  });

  it('rejects a duplicate volume name and invalid volume XML', async () => {
    const pool = await runningPool();
    const name = uniqueName('dupvol');
    await pool.createVolumeXML(volumeXML(name, 1024 * 1024));
    const dup = await rejection(pool.createVolumeXML(volumeXML(name, 1024 * 1024)));
    expect(isAlreadyExists(dup)).toBe(true);
    expect(isInvalidXML(await rejection(pool.createVolumeXML('<volume><name>x</name>')))).toBe(
      true,
    );
  });

  it('reports resize, upload, download and wipe as unsupported on the test driver', async () => {
    const pool = await runningPool();
    const vol = await pool.createVolumeXML(volumeXML(uniqueName('unsup'), 1024 * 1024));
    expect(isUnsupported(await rejection(vol.resize(2n * 1024n * 1024n)))).toBe(true);
    expect(isUnsupported(await rejection(vol.upload('/dev/null')))).toBe(true);
    expect(isUnsupported(await rejection(vol.download('/dev/null')))).toBe(true);
    expect(isUnsupported(await rejection(vol.wipe()))).toBe(true);
  });

  it('fails an upload from a missing file with a system error naming the file', async () => {
    const pool = await runningPool();
    const vol = await pool.createVolumeXML(volumeXML(uniqueName('nofile'), 1024 * 1024));
    const err = await rejection(vol.upload('/nonexistent/lvbt/image.raw'));
    expect(err.codeName).toBe('VIR_ERR_SYSTEM_ERROR');
    expect(err.message).toContain("'/nonexistent/lvbt/image.raw'");
  });
});
