// Volume resize, upload and download need real files: a dir pool under a temp directory on
// the shared system libvirtd.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  Connect,
  StorageVolResizeFlags,
  isNotFound,
  type StoragePool,
} from '../../../src/libvirt/index.js';
import { dirPoolXML, uniqueName, volumeXML } from './fixtures.js';

const MiB = 1024 * 1024;
let daemon: LibvirtDaemon;
let conn: Connect;
let dir: string;
let pool: StoragePool;

beforeAll(async () => {
  daemon = await ensureLibvirtd();
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
  dir = await mkdtemp('/var/tmp/lvbt-pool-');
  pool = await conn.defineStoragePoolXML(dirPoolXML(uniqueName('pool'), path.join(dir, 'pool')));
  await pool.build();
  await pool.create();
});

afterAll(async () => {
  if (pool) {
    for (const v of await pool.listAllVolumes().catch(() => []))
      await v.delete().catch(() => undefined);
    await pool.destroy().catch(() => undefined);
    await pool.delete().catch(() => undefined);
    await pool.undefine().catch(() => undefined);
  }
  await conn?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  await daemon?.stop();
});

describe('storage volumes on a real libvirtd', () => {
  it('builds the pool directory and reports its capacity', async () => {
    expect((await stat(path.join(dir, 'pool'))).isDirectory()).toBe(true);
    const info = await pool.getInfo();
    expect(info.stateName).toBe('running');
    expect(info.capacity).toBeGreaterThan(0n);
    const byPath = await conn.lookupStoragePoolByTargetPath(path.join(dir, 'pool'));
    expect(byPath.getUUIDString()).toBe(pool.getUUIDString());
  });

  it('creates a volume file, uploads into it and downloads the same bytes', async () => {
    const vol = await pool.createVolumeXML(volumeXML(uniqueName('up'), 4 * MiB));
    const volPath = await vol.getPath();
    expect(volPath).toBe(path.join(dir, 'pool', vol.getName()));
    expect((await stat(volPath)).size).toBe(4 * MiB);
    expect((await conn.lookupStorageVolByPath(volPath)).getKey()).toBe(vol.getKey());

    const payload = randomBytes(MiB + 12345);
    const src = path.join(dir, 'payload.bin');
    await writeFile(src, payload);
    expect(await vol.upload(src)).toBe(BigInt(payload.length));

    const back = path.join(dir, 'back.bin');
    expect(await vol.download(back, { length: payload.length })).toBe(BigInt(payload.length));
    expect((await readFile(back)).equals(payload)).toBe(true);
    // The rest of the volume is untouched zeros.
    const whole = await readFile(volPath);
    expect(whole.subarray(0, payload.length).equals(payload)).toBe(true);
    expect(whole.subarray(payload.length).every((b) => b === 0)).toBe(true);

    // An upload at an offset writes only there.
    const tail = Buffer.from('tail marker');
    await writeFile(src, tail);
    await vol.upload(src, { offset: 3 * MiB });
    const after = await readFile(volPath);
    expect(after.subarray(3 * MiB, 3 * MiB + tail.length).toString()).toBe('tail marker');
  });

  it('resizes a volume, refusing to shrink without the flag', async () => {
    const vol = await pool.createVolumeXML(volumeXML(uniqueName('rs'), 2 * MiB));
    await vol.resize(8n * BigInt(MiB));
    expect((await vol.getInfo()).capacity).toBe(8n * BigInt(MiB));
    expect((await stat(await vol.getPath())).size).toBe(8 * MiB);
    await expect(vol.resize(MiB)).rejects.toMatchObject({ name: 'LibvirtError' });
    await vol.resize(MiB, StorageVolResizeFlags.SHRINK);
    expect((await vol.getInfo()).capacity).toBe(BigInt(MiB));
  });

  it('clones a volume with its contents and deletes both', async () => {
    const vol = await pool.createVolumeXML(volumeXML(uniqueName('orig'), MiB));
    const src = path.join(dir, 'clone-src.bin');
    await writeFile(src, Buffer.from('cloned contents'));
    await vol.upload(src);
    const clone = await pool.createVolumeXMLFrom(volumeXML(uniqueName('clone'), MiB), vol);
    const data = await readFile(await clone.getPath());
    expect(data.subarray(0, 15).toString()).toBe('cloned contents');
    const clonePath = await clone.getPath();
    await clone.delete();
    await vol.delete();
    await pool.refresh();
    expect(
      isNotFound(await conn.lookupStorageVolByPath(clonePath).catch((e) => e), 'storageVol'),
    ).toBe(true);
  });
});
