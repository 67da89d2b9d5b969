// StoragePool and Volume reconcile against a real libvirtd (a private one in its own mount
// namespace, so other tests starting or stopping the system daemon cannot disturb it) where
// the test driver falls short: real directories and files, the
// HTTP import's upload, growing in place, 20 real qemu-img creates at once in one pool.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdir, readFile, rm, stat, statfs, utimes, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoragePool, VirtualMachine, Volume } from '../../../../src/api/generated/types.js';
import {
  HOST_FINALIZER,
  VOLUME_PROTECTION_FINALIZER,
} from '../../../../src/controllers/context.js';
import { reconcileStoragePool } from '../../../../src/controllers/storage-pool/index.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { reconcileVolume } from '../../../../src/controllers/volume/index.js';
import { applyVolumeSteps } from '../../../../src/controllers/volume/act.js';
import { desiredVolume } from '../../../../src/controllers/volume/desired.js';
import { readImageLayers } from '../../../../src/controllers/volume/observe.js';
import { withPoolLock, type PoolLocks } from '../../../../src/controllers/shared/pool-lock.js';
import type { LibvirtDaemon } from '../../../../src/commands/local/libvirtd.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { parseVolumeXML } from '../../../../src/libvirt/xml/volume.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { createImage } from '../../../harness/host.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';
import {
  converge,
  snapshotContext,
  type SnapshotContext,
  requeueMs,
} from '../../../harness/controller-context.js';
import { sleep, type Kube } from '../../../harness/kube-objects.js';
import { reconcileUntil } from '../storage-pool/fixtures.js';

const run = promisify(execFile);
const NODE = 'node-real';
const NS = 'real';
const POOL = `lvo-it-${randomBytes(3).toString('hex')}`;
/** A pool on a 2 MiB tmpfs, for a file system that is full. */
const SMALL = `${POOL}-small`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-it-',
  // Whatever a failed test left on the shared daemon goes.
  async cleanup(conn) {
    for (const name of [POOL, SMALL]) {
      const leftover = await conn.lookupStoragePoolByName(name).catch(() => undefined);
      if (!leftover) continue;
      for (const v of await leftover.listAllVolumes().catch(() => []))
        await v.delete(0).catch(() => undefined);
      await leftover.destroy().catch(() => undefined);
      await leftover.undefine().catch(() => undefined);
    }
  },
});
let daemon: LibvirtDaemon;
let conn: Connect;
let tmp: string;
let poolDir: string;
let k: Kube;
let ctx: SnapshotContext;
let server: Server;
let base: string;

// A raw image served slowly enough that an import shows progress, and an empty qcow2 image.
const rawImage = randomBytes(4 * 1024 * 1024);
let qcowImage: Buffer;
/** A qcow2 image (made by qemu-img) whose data lives in a host file it names: `canary`. */
let dataFileImage: Buffer;
let canary: string;
/** A vmdk image (made by qemu-img) layered on a vmdk file of the host. */
let vmdkImage: Buffer;
/** An empty qcow2 version 2 (compat 0.10) image, as older tools still publish them. */
let v2Image: Buffer;
const canaryBytes = Buffer.alloc(1024 * 1024, 0x43);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ({ daemon, conn, tmp, k, ctx } = lv());
  poolDir = path.join(tmp, 'pool');
  /** An image qemu-img makes in the temp directory, as the server will send it. */
  const image = async (name: string, format: string, size: string, options?: string) => {
    await createImage(path.join(tmp, name), format, size, options);
    return readFile(path.join(tmp, name));
  };
  qcowImage = await image('src.qcow2', 'qcow2', '64M');
  v2Image = await image('v2.qcow2', 'qcow2', '16M', 'compat=0.10');
  canary = path.join(tmp, 'canary');
  dataFileImage = await image('df.qcow2', 'qcow2', '1M', `data_file=${canary},data_file_raw=on`);
  const vmdkBase = path.join(tmp, 'base.vmdk');
  await createImage(vmdkBase, 'vmdk', '1M');
  vmdkImage = await image('v.vmdk', 'vmdk', '1M', `backing_file=${vmdkBase},backing_fmt=vmdk`);
  // Written after qemu-img, which makes the data file anew.
  await writeFile(canary, canaryBytes);
  server = createServer((req, res) => {
    if (req.url === '/image.qcow2')
      return res.writeHead(200, { 'content-length': qcowImage.length }).end(qcowImage);
    if (req.url === '/v2.qcow2')
      return res.writeHead(200, { 'content-length': v2Image.length }).end(v2Image);
    if (req.url === '/image.vmdk')
      return res.writeHead(200, { 'content-length': vmdkImage.length }).end(vmdkImage);
    if (req.url === '/data-file.qcow2')
      return res.writeHead(200, { 'content-length': dataFileImage.length }).end(dataFileImage);
    if (req.url !== '/slow.raw') return res.writeHead(404).end();
    res.writeHead(200, { 'content-length': rawImage.length });
    let offset = 0;
    const timer = setInterval(() => {
      res.write(rawImage.subarray(offset, offset + 128 * 1024));
      offset += 128 * 1024;
      if (offset >= rawImage.length) {
        clearInterval(timer);
        res.end();
      }
    }, 150);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 120_000);

afterAll(async () => {
  server?.closeAllConnections();
  server?.close();
});

const getVol = (name: string) => k.get<Volume>('Volume', NS, name);
const createVol = (name: string, spec: Partial<Volume['spec']>) =>
  k.create<Volume>('Volume', {
    metadata: { name, namespace: NS },
    spec: { nodeName: NODE, pool: POOL, ...spec },
  });
const settled = (name: string) => async () => {
  const v = await getVol(name);
  const f = v?.metadata.finalizers ?? [];
  return (
    v?.status?.phase === 'Available' &&
    f.includes(HOST_FINALIZER) &&
    f.includes(VOLUME_PROTECTION_FINALIZER)
  );
};
const gone = (name: string) => async () => (await getVol(name)) === undefined;
const readyOf = async (name: string) =>
  (await getVol(name))?.status?.conditions?.find((c) => c.type === 'Ready');
const libvirtVolume = async (name: string) => {
  const pool = await conn.lookupStoragePoolByName(POOL);
  return parseVolumeXML(await (await pool.lookupStorageVolByName(name)).getXMLDesc(0));
};
const passesUntilReady = async (name: string, reason: string) => {
  for (let i = 0; i < 6; i++) {
    await ctx.refresh();
    await reconcileVolume(`${NS}/${name}`, ctx);
    if ((await readyOf(name))?.reason === reason) return;
  }
  throw new Error(`Volume ${name}: Ready is ${JSON.stringify(await readyOf(name))}`);
};
const removeAll = async (name: string) => {
  await k.remove('Volume', NS, name);
  await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name), maxPasses: 40 });
};
const eventsOf = (name: string) =>
  ctx.events.filter((e) => e.key === `${NS}/${name}`).map((e) => e.reason);
// Each test makes what it uses, so that it passes alone (`-t`) as in the file's run, where an
// earlier test already made it: the pool, and the Volumes named below as the 20 of the second
// test (disk-N, 64 MiB qcow2) and the third (layer on disk-1) make them.
const poolRunning = async () =>
  (await k.get<StoragePool>('StoragePool', undefined, POOL))?.status?.nodes?.[0]?.state ===
  'running';
const ensurePool = async () => {
  if (!(await k.get('StoragePool', undefined, POOL)))
    await k.create('StoragePool', { metadata: { name: POOL }, spec: { path: poolDir } });
  await converge(ctx, reconcileStoragePool, POOL, { until: poolRunning });
};
const ensureVol = async (name: string, spec: Partial<Volume['spec']> = { capacity: '64Mi' }) => {
  await ensurePool();
  if (!(await getVol(name))) await createVol(name, spec);
  // Ready, not `settled`: a base an earlier test layered on is InUse, not Available.
  const ready = async () => (await readyOf(name))?.status === 'True';
  await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: ready, maxPasses: 40 });
};

describe('a real libvirtd with QEMU', () => {
  it('builds the pool directory (mode 0711) and reports the file system figures', async () => {
    await k.create('StoragePool', { metadata: { name: POOL }, spec: { path: poolDir } });
    await converge(ctx, reconcileStoragePool, POOL, {
      until: async () =>
        (await k.get<StoragePool>('StoragePool', undefined, POOL))?.status?.nodes?.[0]?.state ===
        'running',
    });
    expect((await stat(poolDir)).mode & 0o777).toBe(0o711);
    const entry = (await k.get<StoragePool>('StoragePool', undefined, POOL))?.status?.nodes?.[0];
    expect(entry?.capacity).toMatch(/^\d+(Mi|Gi|Ti)$/);
    expect(entry?.available).toMatch(/^\d+(Mi|Gi|Ti)$/);
  });

  it('creates 20 qcow2 Volumes at once in the pool: every file is there', async () => {
    await ensurePool();
    const names = Array.from({ length: 20 }, (_, i) => `disk-${i}`);
    await Promise.all(names.map((n) => createVol(n, { capacity: '64Mi' })));
    await Promise.all(
      names.map((n) =>
        converge(ctx, reconcileVolume, `${NS}/${n}`, { until: settled(n), maxPasses: 40 }),
      ),
    );
    for (const n of names) {
      expect((await stat(path.join(poolDir, `real_${n}`))).isFile()).toBe(true);
      expect(await libvirtVolume(`real_${n}`)).toMatchObject({
        format: 'qcow2',
        capacity: 64n * 2n ** 20n,
      });
    }
  });

  it('clones and layers real qcow2 files', async () => {
    await ensureVol('disk-0');
    await ensureVol('disk-1');
    await createVol('copy', { source: { clone: { volume: 'disk-0' } } });
    await createVol('layer', { source: { backingVolume: { volume: 'disk-1' } } });
    await converge(ctx, reconcileVolume, `${NS}/copy`, { until: settled('copy') });
    await converge(ctx, reconcileVolume, `${NS}/layer`, { until: settled('layer') });
    expect(await libvirtVolume('real_copy')).toMatchObject({
      format: 'qcow2',
      capacity: 64n * 2n ** 20n,
    });
    expect((await libvirtVolume('real_layer')).backingStore).toEqual({
      path: path.join(poolDir, 'real_disk-1'),
      format: 'qcow2',
    });
  });

  it('serialises storage calls: a pool refresh beside 10 clones does not fail', async () => {
    await ensureVol('disk-0');
    // Measured on this libvirt 9.0: without the lock, a refresh issued while clones run fails
    // with "pool ... has asynchronous jobs running".
    const handle = await conn.lookupStoragePoolByName(POOL);
    const locks: PoolLocks = new Map();
    const ready = { name: POOL, handle, locks };
    const source = await handle.lookupStorageVolByName('real_disk-0');
    const results = await Promise.allSettled([
      ...Array.from({ length: 10 }, (_, i) =>
        applyVolumeSteps(ready, undefined, source, [
          { op: 'clone', doc: { name: `race-${i}`, capacity: 64n * 2n ** 20n, format: 'qcow2' } },
        ]),
      ),
      withPoolLock(locks, POOL, () => handle.refresh(0)),
      withPoolLock(locks, POOL, () => handle.refresh(0)),
    ]);
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    for (const r of results.slice(0, 10)) expect(r).toMatchObject({ value: { done: ['clone'] } });
    for (let i = 0; i < 10; i++) await (await handle.lookupStorageVolByName(`race-${i}`)).delete(0);
  });

  it('grows a Volume in place', async () => {
    await ensureVol('disk-2');
    await k.patchSpec('Volume', NS, 'disk-2', { capacity: '96Mi' });
    await converge(ctx, reconcileVolume, `${NS}/disk-2`, {
      until: async () => (await getVol('disk-2'))?.status?.capacity === '96Mi',
    });
    expect((await libvirtVolume('real_disk-2')).capacity).toBe(96n * 2n ** 20n);
    expect((await getVol('disk-2'))?.status?.conditions?.map((c) => c.type)).toEqual([
      'Ready',
      'Reconciling',
      'Stalled',
    ]);
    expect(eventsOf('disk-2')).toContain('VolumeResized');
  });

  // The pool's directory made read-only after the pool started: CreateFailed, Reconciling for
  // ever, phase Failed. Now PathReadOnly naming the directory, Stalled, still retried: a
  // remount is picked up without touching the Volume.
  it('says a pool directory on a read-only file system needs a user (PathReadOnly, Stalled), and picks up the remount', async () => {
    await ensurePool();
    // In the private daemon's mount namespace, where libvirt and its qemu-img make the files.
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    await run('nsenter', [...inDaemon, 'mount', '--bind', poolDir, poolDir]);
    const names = ['ro-qcow2', 'ro-raw'];
    try {
      await run('nsenter', [...inDaemon, 'mount', '-o', 'remount,bind,ro', poolDir]);
      await createVol('ro-qcow2', { capacity: '16Mi' });
      await createVol('ro-raw', { capacity: '16Mi', format: 'raw' });
      for (const name of names) {
        await reconcileUntil(
          ctx,
          reconcileVolume,
          `${NS}/${name}`,
          async () => (await getVol(name))?.status?.conditions?.[0]?.status === 'False',
        );
        const status = (await getVol(name))?.status;
        expect(status?.phase).toBe('Failed');
        expect(status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
          reason: 'PathReadOnly',
          message: expect.stringContaining(
            `pool ${POOL}'s directory ${poolDir} is on a read-only file system`,
          ),
        });
        expect(status?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
        expect(status?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe('False');
      }
    } finally {
      await run('nsenter', [...inDaemon, 'umount', poolDir]);
    }
    for (const name of names) {
      await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: settled(name) });
      expect((await stat(path.join(poolDir, `real_${name}`))).isFile()).toBe(true);
      await k.remove('Volume', NS, name);
      await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name) });
    }
  });

  it('a file put in the pool behind libvirt is a NameConflict (Stalled), and its removal is seen', async () => {
    await ensurePool();
    // libvirt lists a pool's files as of its last refresh: this one it does not list.
    await writeFile(path.join(poolDir, `${NS}_clash`), 'not ours\n');
    await createVol('clash', { capacity: '16Mi' });
    const ready = () => readyOf('clash');
    const passesUntil = async (
      what: (r: { reason?: string; status?: string } | undefined) => boolean,
    ) => {
      for (let i = 0; i < 4; i++) {
        await ctx.refresh();
        await reconcileVolume(`${NS}/clash`, ctx);
        if (what(await ready())) return;
      }
      throw new Error(`Volume clash: Ready is ${JSON.stringify(await ready())}`);
    };
    await passesUntil((r) => r?.reason === 'NameConflict');
    const stalled = (await getVol('clash'))?.status?.conditions?.find((c) => c.type === 'Stalled');
    expect(stalled?.status).toBe('True');
    expect(await readFile(path.join(poolDir, `${NS}_clash`), 'utf8')).toBe('not ours\n');
    // The user removes it; libvirt still lists it until its pool is refreshed.
    await rm(path.join(poolDir, `${NS}_clash`));
    await passesUntil((r) => r?.status === 'True');
    expect((await getVol('clash'))?.status?.phase).toBe('Available');
    await k.remove('Volume', NS, 'clash');
    await converge(ctx, reconcileVolume, `${NS}/clash`, { until: gone('clash'), maxPasses: 40 });
  });

  it("makes a file removed behind libvirt's back again, though libvirt still lists it", async () => {
    await ensureVol('disk-5');
    const file = path.join(poolDir, 'real_disk-5');
    await rm(file);
    // libvirt's list of the pool's volumes still names it until the pool is refreshed.
    const listed = await (await conn.lookupStoragePoolByName(POOL)).listAllVolumes();
    expect(listed.map((v) => v.getName())).toContain('real_disk-5');
    await converge(ctx, reconcileVolume, `${NS}/disk-5`, {
      until: async () => (await stat(file).catch(() => undefined))?.isFile() === true,
      maxPasses: 5,
    });
    expect((await getVol('disk-5'))?.status?.phase).toBe('Available');
    expect(eventsOf('disk-5').filter((r) => r === 'VolumeCreated')).toHaveLength(2);
  });

  it('imports over HTTP with progress in status; the file holds exactly the verified bytes', async () => {
    await ensurePool();
    await createVol('slow', {
      format: 'raw',
      source: { http: { url: `${base}/slow.raw`, sha256: sha(rawImage) } },
    });
    const percents = new Set<number>();
    await reconcileUntil(ctx, reconcileVolume, `${NS}/slow`, async () => {
      const v = await getVol('slow');
      if (v?.status?.progress?.percent !== undefined) percents.add(v.status.progress.percent);
      return v?.status?.phase === 'Available';
    });
    expect([...percents].some((p) => p > 0 && p < 100)).toBe(true);
    const v = await getVol('slow');
    expect(v?.status).toMatchObject({ path: path.join(poolDir, 'real_slow'), capacity: '4Mi' });
    expect(v?.status?.progress).toBeUndefined();
    expect(v?.status?.conditions?.find((c) => c.type === 'Imported')).toMatchObject({
      status: 'True',
      reason: 'Verified',
    });
    expect(sha(await readFile(path.join(poolDir, 'real_slow')))).toBe(sha(rawImage));
    expect(eventsOf('slow')).toContain('Imported');
  });

  it('keeps the file it just uploaded when a pass still sees the status from before the upload', async () => {
    await ensurePool();
    // A watch delivers our own Imported write after the next pass has begun: that pass sees
    // status.path recorded but no Imported condition, which alone would mean an interrupted
    // upload. A second context of the same agent (its host state), frozen at that moment,
    // plays the stale cache.
    const stale = snapshotContext({
      kubeConfig: cp().kubeConfig,
      conn,
      nodeName: NODE,
      stateDir: path.join(tmp, 'state'),
      host: ctx.host,
    });
    let frozen = false;
    await createVol('late', {
      format: 'raw',
      source: { http: { url: `${base}/slow.raw`, sha256: sha(rawImage) } },
    });
    await reconcileUntil(ctx, reconcileVolume, `${NS}/late`, async () => {
      const v = await getVol('late');
      const imported = v?.status?.conditions?.some((c) => c.type === 'Imported');
      if (v?.status?.path && !imported && !frozen) {
        await stale.refresh();
        frozen = true;
      }
      return v?.status?.phase === 'Available';
    });
    expect(frozen).toBe(true);
    const file = path.join(poolDir, 'real_late');
    const before = await stat(file);

    await reconcileVolume(`${NS}/late`, stale).catch(() => undefined); // its status write may 409

    const after = await stat(file);
    expect(after.ino).toBe(before.ino);
    expect(sha(await readFile(file))).toBe(sha(rawImage));
    expect(stale.events.map((e) => e.reason)).not.toContain('PartialImportDiscarded');
  });

  it('imports a qcow2 image as qcow2 and grows it to spec.capacity', async () => {
    await ensurePool();
    await createVol('cloud', {
      capacity: '128Mi',
      source: { http: { url: `${base}/image.qcow2`, sha256: sha(qcowImage) } },
    });
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/cloud`,
      async () => (await getVol('cloud'))?.status?.capacity === '128Mi',
    );
    expect(await libvirtVolume('real_cloud')).toMatchObject({
      format: 'qcow2',
      capacity: 128n * 2n ** 20n,
    });
    // Converged: a further pass changes nothing.
    await ctx.refresh();
    ctx.writes = 0;
    expect(await reconcileVolume(`${NS}/cloud`, ctx)).toEqual({ kind: 'done' });
    expect(ctx.writes).toBe(0);
  });

  // QEMU opens an image's external data file read-write at the path the image names: an image
  // from the internet would hand the guest any host file. Imported, it was Available.
  it('refuses an image whose data is in a host file it names, and puts nothing in the pool', async () => {
    await ensurePool();
    await createVol('datafile', {
      source: { http: { url: `${base}/data-file.qcow2`, sha256: sha(dataFileImage) } },
    });
    const ready = () => readyOf('datafile');
    await reconcileUntil(ctx, reconcileVolume, `${NS}/datafile`, async () => {
      const r = await ready();
      return r?.reason === 'InvalidImage' || r?.status === 'True';
    });
    // The digest pins these very bytes: only a user fixes it (it was ImportFailed, retried as
    // if it might pass, Reconciling beside phase Failed).
    expect((await getVol('datafile'))?.status?.phase).toBe('Failed');
    expect(await ready()).toMatchObject({
      status: 'False',
      reason: 'InvalidImage',
      message: expect.stringContaining('external data file'),
    });
    await expect(stat(path.join(poolDir, 'real_datafile'))).rejects.toThrow(/ENOENT/);
    await k.remove('Volume', NS, 'datafile');
    await converge(ctx, reconcileVolume, `${NS}/datafile`, { until: gone('datafile') });
    expect(sha(await readFile(canary))).toBe(sha(canaryBytes));
  });

  // libvirt's pool refresh calls an uploaded vmdk a vmdk (with its backing file): the agent
  // could not read that volume, and the Volume stayed Importing at 100% for ever.
  it('refuses an image of another format (vmdk), spec.format raw: FormatMismatch, nothing in the pool', async () => {
    await ensurePool();
    await createVol('vmdk', {
      format: 'raw',
      source: { http: { url: `${base}/image.vmdk`, sha256: sha(vmdkImage) } },
    });
    const ready = () => readyOf('vmdk');
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/vmdk`,
      async () => (await ready())?.reason === 'FormatMismatch',
      10_000,
    );
    expect(await ready()).toMatchObject({
      status: 'False',
      message: expect.stringContaining('the image is vmdk, neither raw nor qcow2'),
    });
    expect((await getVol('vmdk'))?.status?.phase).toBe('Failed');
    await expect(stat(path.join(poolDir, 'real_vmdk'))).rejects.toThrow(/ENOENT/);
    await k.remove('Volume', NS, 'vmdk');
    await converge(ctx, reconcileVolume, `${NS}/vmdk`, { until: gone('vmdk') });
  });

  // A file libvirt probes as another format (here a vmdk someone copied into the pool under the
  // Volume's file name): reading it threw "vmdk is not one of 'qcow2', 'raw', 'iso'" at every
  // pass, so the Volume never said NameConflict, and its deletion failed the same way.
  it('names a foreign vmdk file under its name as a NameConflict, and is deleted leaving it', async () => {
    await ensurePool();
    const file = path.join(poolDir, 'real_foreign');
    await writeFile(file, vmdkImage);
    await (await conn.lookupStoragePoolByName(POOL)).refresh(0);
    await createVol('foreign', { capacity: '1Mi' });
    const ready = () => readyOf('foreign');
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/foreign`,
      async () => (await ready())?.reason === 'NameConflict',
      10_000,
    );
    expect((await ready())?.message).toContain(`a file ${file} (format vmdk`);
    await k.remove('Volume', NS, 'foreign');
    await converge(ctx, reconcileVolume, `${NS}/foreign`, { until: gone('foreign') });
    expect(sha(await readFile(file))).toBe(sha(vmdkImage));
    await rm(file);
    await (await conn.lookupStoragePoolByName(POOL)).refresh(0);
  });

  // A running QEMU holds the file of a read-only disk locked (qemu-img cannot grow it) and
  // libvirt refuses to grow a read-only disk through QEMU; the grow must wait for the machine.
  // It was tried once through QEMU, ResizeUnsupported (never retried in a generation), and the
  // file kept its size after the machine had stopped.
  it('grows a file a running machine holds read-only once the machine stops', async () => {
    await ensurePool();
    await createVol('shared', { capacity: '16Mi' });
    await converge(ctx, reconcileVolume, `${NS}/shared`, { until: settled('shared') });
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'reader', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '32Mi',
        // No guest answers ACPI here (no bootable disk): the stop is a destroy after 0 s.
        terminationGracePeriodSeconds: 0,
        disks: [{ name: 'data', volume: 'shared', readOnly: true }],
      },
    });
    const phase = async () =>
      (await k.get<VirtualMachine>('VirtualMachine', NS, 'reader'))?.status?.phase;
    await converge(ctx, reconcileVirtualMachine, `${NS}/reader`, {
      until: async () => (await phase()) === 'Running',
    });
    await k.patchSpec('Volume', NS, 'shared', { capacity: '24Mi' });
    for (let pass = 0; pass < 2; pass++) {
      await ctx.refresh();
      expect(requeueMs(await reconcileVolume(`${NS}/shared`, ctx))).toBeGreaterThan(0);
    }
    const waiting = await getVol('shared');
    const condition = (type: string) => waiting?.status?.conditions?.find((c) => c.type === type);
    expect(condition('Resized')).toMatchObject({
      status: 'False',
      reason: 'ReadOnlyInUse',
      message: expect.stringContaining(`read-only disk vda of running VirtualMachine ${NS}/reader`),
    });
    expect(condition('Reconciling')).toMatchObject({ status: 'True', reason: 'ReadOnlyInUse' });
    expect(condition('Stalled')?.status).toBe('False');
    expect(waiting?.status?.capacity).toBe('16Mi');
    expect(eventsOf('shared').filter((r) => r === 'ReadOnlyInUse')).toHaveLength(1);

    await k.patchSpec('VirtualMachine', NS, 'reader', { runStrategy: 'Halted' });
    await converge(ctx, reconcileVirtualMachine, `${NS}/reader`, {
      until: async () => (await phase()) === 'Stopped',
    });
    await converge(ctx, reconcileVolume, `${NS}/shared`, {
      until: async () => (await getVol('shared'))?.status?.capacity === '24Mi',
    });
    expect((await libvirtVolume('real_shared')).capacity).toBe(24n * 2n ** 20n);
    const grown = await getVol('shared');
    expect(grown?.status?.conditions?.find((c) => c.type === 'Resized')).toBeUndefined();
    expect(grown?.status?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe('False');

    await k.remove('VirtualMachine', NS, 'reader');
    await converge(ctx, reconcileVirtualMachine, `${NS}/reader`, {
      until: async () => !(await k.get('VirtualMachine', NS, 'reader')),
    });
    await k.remove('Volume', NS, 'shared');
    await converge(ctx, reconcileVolume, `${NS}/shared`, { until: gone('shared') });
  });

  // A full file system and a size beyond the largest file were both CreateFailed with
  // libvirt's words only: Reconciling, retried for ever, and for the size it never succeeds.
  it('says a full pool is full (retried), and a size beyond the largest file needs a user (Stalled)', async () => {
    await ensurePool();
    const smallDir = path.join(tmp, 'small');
    await mkdir(smallDir);
    // In the private daemon's mount namespace, where libvirt and its qemu-img make the files.
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    await run('nsenter', [...inDaemon, 'mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', smallDir]);
    try {
      await k.create('StoragePool', { metadata: { name: SMALL }, spec: { path: smallDir } });
      await converge(ctx, reconcileStoragePool, SMALL, {
        until: async () =>
          (await k.get<StoragePool>('StoragePool', undefined, SMALL))?.status?.nodes?.[0]?.state ===
          'running',
      });
      await createVol('full', { pool: SMALL, capacity: '16Mi', format: 'raw' });
      await createVol('huge', { capacity: '64Ti', format: 'raw' });
      for (const name of ['full', 'huge']) {
        await reconcileUntil(
          ctx,
          reconcileVolume,
          `${NS}/${name}`,
          async () => (await readyOf(name))?.status === 'False',
        );
      }
      const full = (await getVol('full'))?.status;
      expect(full?.phase).toBe('Pending');
      const fullReady = full?.conditions?.find((c) => c.type === 'Ready');
      expect(fullReady?.reason).toBe('CreateFailed');
      expect(fullReady?.message).toMatch(
        new RegExp(`^pool ${SMALL} is full on this node: libvirt reports \\d+ bytes available`),
      );
      expect(fullReady?.message).toContain('needs 16777216 bytes (spec.capacity');
      expect(fullReady?.message).toContain('No space left on device');
      expect(full?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe('True');

      const huge = (await getVol('huge'))?.status;
      expect(huge?.phase).toBe('Failed');
      const hugeReady = huge?.conditions?.find((c) => c.type === 'Ready');
      expect(hugeReady?.reason).toBe('CapacityTooLarge');
      expect(hugeReady?.message).toContain(`spec.capacity (${64n * 2n ** 40n} bytes)`);
      expect(hugeReady?.message).toContain(`pool ${POOL}'s directory ${poolDir}`);
      const fs = await statfs(poolDir);
      // The limit is named where the file system says it (ext4, as this machine's /tmp).
      if (fs.type === 0xef53)
        expect(hugeReady?.message).toContain(
          `the largest file it takes is ${(2n ** 32n - 1n) * BigInt(fs.bsize)} bytes`,
        );
      expect(huge?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
      await expect(stat(path.join(poolDir, 'real_huge'))).rejects.toThrow(/ENOENT/);
      for (const name of ['full', 'huge']) {
        await k.remove('Volume', NS, name);
        await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name) });
      }
      await k.remove('StoragePool', undefined, SMALL);
      await converge(ctx, reconcileStoragePool, SMALL, {
        until: async () => !(await k.get('StoragePool', undefined, SMALL)),
      });
    } finally {
      await run('nsenter', [...inDaemon, 'umount', smallDir]);
    }
  });

  // A grow and an upload on a full file system were ResizeFailed and ImportFailed with
  // libvirt's words only ("Failed to grow the L1 table: No space left on device"; "Unable to
  // write ...: No space left on device"): now they say the pool is full, with the numbers, as
  // a create does, and are still retried.
  it('says a grow and an upload into a full pool need space (retried), and leaves no upload behind', async () => {
    const smallDir = path.join(tmp, `small-${randomBytes(3).toString('hex')}`);
    await mkdir(smallDir);
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    await run('nsenter', [...inDaemon, 'mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', smallDir]);
    try {
      await k.create('StoragePool', { metadata: { name: SMALL }, spec: { path: smallDir } });
      await converge(ctx, reconcileStoragePool, SMALL, {
        until: async () =>
          (await k.get<StoragePool>('StoragePool', undefined, SMALL))?.status?.nodes?.[0]?.state ===
          'running',
      });
      await createVol('grows', { pool: SMALL, capacity: '16Mi' });
      await reconcileUntil(ctx, reconcileVolume, `${NS}/grows`, settled('grows'));
      // Whatever is left of the 4 MiB, taken (dd stops at ENOSPC).
      await run('nsenter', [
        ...inDaemon,
        'sh',
        '-c',
        `dd if=/dev/zero of=${smallDir}/fill bs=64k 2>/dev/null; true`,
      ]);
      await k.patchSpec('Volume', NS, 'grows', { capacity: '100Gi' });
      const resized = async () =>
        (await getVol('grows'))?.status?.conditions?.find((c) => c.type === 'Resized');
      await reconcileUntil(
        ctx,
        reconcileVolume,
        `${NS}/grows`,
        async () => (await resized())?.status === 'False',
      );
      const grow = await resized();
      expect(grow?.reason).toBe('ResizeFailed');
      expect(grow?.message).toMatch(
        new RegExp(
          `^growing to ${100n * 2n ** 30n} bytes \\(spec.capacity\\) failed: pool ${SMALL} is ` +
            `full on this node: libvirt reports \\d+ bytes available, the grow needs room`,
        ),
      );
      expect(grow?.message).toContain(`free space in ${smallDir}`);
      expect(grow?.message).toContain('No space left on device');
      const grows = await getVol('grows');
      expect(grows?.status?.capacity).toBe('16Mi');
      expect(grows?.status?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe('True');

      await createVol('upload', {
        pool: SMALL,
        format: 'raw',
        // Random bytes: an empty qcow2 image is mostly zeros, which the upload leaves as holes.
        source: { http: { url: `${base}/slow.raw`, sha256: sha(rawImage) } },
      });
      await reconcileUntil(
        ctx,
        reconcileVolume,
        `${NS}/upload`,
        async () => (await readyOf('upload'))?.reason === 'ImportFailed',
      );
      const upload = await getVol('upload');
      expect(upload?.status?.phase).toBe('Pending');
      const message = (await readyOf('upload'))?.message;
      expect(message).toMatch(
        new RegExp(
          `^the upload failed: pool ${SMALL} is full on this node: libvirt reports \\d+ bytes ` +
            `available, the image needs ${rawImage.length} bytes; free space in ${smallDir}`,
        ),
      );
      expect(message).toContain('No space left on device');
      expect(upload?.status?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe(
        'True',
      );
      // The file the upload began is gone, from libvirt and the directory.
      const small = await conn.lookupStoragePoolByName(SMALL);
      await small.refresh(0);
      const paths = await Promise.all((await small.listAllVolumes()).map((v) => v.getPath()));
      expect(paths.map((p) => path.basename(p)).sort()).toEqual(['fill', 'real_grows']);

      for (const name of ['grows', 'upload']) {
        await k.remove('Volume', NS, name);
        await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name) });
      }
      await k.remove('StoragePool', undefined, SMALL);
      await converge(ctx, reconcileStoragePool, SMALL, {
        until: async () => !(await k.get('StoragePool', undefined, SMALL)),
      });
    } finally {
      await run('nsenter', [...inDaemon, 'umount', smallDir]);
    }
  });

  // qemu-img cannot grow a qcow2 v2 image that holds internal snapshots (the snapshots a
  // VirtualMachineSnapshot takes of an imported v2 image): ResizeFailed, retried for ever.
  it('refuses to grow a qcow2 v2 image holding snapshots: ResizeRefused (Stalled), file unchanged', async () => {
    await ensurePool();
    await createVol('old', {
      source: { http: { url: `${base}/v2.qcow2`, sha256: sha(v2Image) } },
    });
    await reconcileUntil(ctx, reconcileVolume, `${NS}/old`, settled('old'));
    const file = path.join(poolDir, 'real_old');
    await run('qemu-img', ['snapshot', '-c', 'before-upgrade', file]);
    const before = sha(await readFile(file));
    await k.patchSpec('Volume', NS, 'old', { capacity: '32Mi' });
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/old`,
      async () =>
        (await getVol('old'))?.status?.conditions?.find((c) => c.type === 'Resized')?.status ===
        'False',
    );
    const status = (await getVol('old'))?.status;
    const resized = status?.conditions?.find((c) => c.type === 'Resized');
    expect(resized?.reason).toBe('ResizeRefused');
    expect(resized?.message).toContain('qcow2 version 2 (compat 0.10) image holding internal');
    expect(resized?.message).toContain(`qemu-img amend -f qcow2 -o compat=1.1 ${file}`);
    expect(status?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
    expect(status?.capacity).toBe('16Mi');
    expect(sha(await readFile(file))).toBe(before);
    // Retried with backoff: the upgrade the message asks for is picked up without a spec change.
    await run('qemu-img', ['amend', '-f', 'qcow2', '-o', 'compat=1.1', file]);
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/old`,
      async () => (await getVol('old'))?.status?.capacity === '32Mi',
    );
    await k.remove('Volume', NS, 'old');
    await converge(ctx, reconcileVolume, `${NS}/old`, { until: gone('old') });
  });

  // A file replaced on the host after the Volume made it was used as it was: its format and
  // backing file were judged once (or never, for a blank one), and libvirt's volume XML keeps
  // the backing store of its last pool refresh. A machine would have opened the host file
  // the new header names.
  it('says a qcow2 file replaced on the host with one naming a backing file is InvalidImage, until it is removed', async () => {
    await ensureVol('disk-1');
    await ensureVol('layer', { source: { backingVolume: { volume: 'disk-1' } } });
    await createVol('swapped', { capacity: '16Mi' });
    await converge(ctx, reconcileVolume, `${NS}/swapped`, { until: settled('swapped') });
    const file = path.join(poolDir, 'real_swapped');
    await rm(file);
    await createImage(file, 'qcow2', '16M', 'backing_file=/etc/hostname,backing_fmt=raw');
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/swapped`,
      async () => (await readyOf('swapped'))?.status === 'False',
    );
    const status = (await getVol('swapped'))?.status;
    expect(status?.phase).toBe('Failed');
    expect(status?.path).toBe(file);
    const ready = status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.reason).toBe('InvalidImage');
    expect(ready?.message).toContain(
      `the volume file ${file} names the backing file /etc/hostname`,
    );
    expect(status?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
    // The overlay made earlier names its base's file, as it should: still Available.
    await converge(ctx, reconcileVolume, `${NS}/layer`, { until: settled('layer') });
    // Removed, the file is made again as the spec says.
    await rm(file);
    await reconcileUntil(ctx, reconcileVolume, `${NS}/swapped`, settled('swapped'));
    expect((await libvirtVolume('real_swapped')).backingStore).toBeUndefined();
    await k.remove('Volume', NS, 'swapped');
    await converge(ctx, reconcileVolume, `${NS}/swapped`, { until: gone('swapped') });
  });

  it('a base whose file was removed is not made blank again under its overlays (BaseFileMissing)', async () => {
    await ensurePool();
    const id = randomBytes(3).toString('hex');
    const [b, o, p] = [`lost-base-${id}`, `lost-layer-${id}`, `lost-top-${id}`];
    await createVol(b, { capacity: '16Mi' });
    await converge(ctx, reconcileVolume, `${NS}/${b}`, { until: settled(b) });
    await createVol(o, { source: { backingVolume: { volume: b } } });
    await converge(ctx, reconcileVolume, `${NS}/${o}`, { until: settled(o) });
    // An overlay on the overlay: its base's file stays, but the chain under it is broken.
    await createVol(p, { source: { backingVolume: { volume: o } } });
    await converge(ctx, reconcileVolume, `${NS}/${p}`, { until: settled(p) });
    const baseFile = path.join(poolDir, `${NS}_${b}`);
    await rm(baseFile);
    for (let i = 0; i < 4; i++) {
      await ctx.refresh();
      await reconcileVolume(`${NS}/${b}`, ctx);
    }
    const ready = await readyOf(b);
    expect(ready?.reason).toBe('BaseFileMissing');
    expect(ready?.message).toContain(o);
    await expect(stat(baseFile)).rejects.toThrow(/ENOENT/);
    // The overlay says it cannot be opened, naming its base, rather than Available.
    await ctx.refresh();
    await reconcileVolume(`${NS}/${o}`, ctx);
    const layered = await readyOf(o);
    expect(layered?.reason).toBe('BaseFileMissing');
    expect(layered?.message).toContain(`base Volume ${b}`);
    // Nor can the overlay on it be opened, though its own base's file is there (it said
    // Available when only that file was looked at).
    await ctx.refresh();
    await reconcileVolume(`${NS}/${p}`, ctx);
    const top = await readyOf(p);
    expect(top?.reason).toBe('BaseFileMissing');
    expect(top?.message).toContain(`base Volume ${o}, which is an overlay itself`);
    // So it stays while the base's deletion waits for its overlays.
    await k.remove('Volume', NS, b);
    await ctx.refresh();
    await reconcileVolume(`${NS}/${b}`, ctx);
    expect((await readyOf(b))?.reason).toBe('BaseFileMissing');
    await ctx.refresh();
    await reconcileVolume(`${NS}/${o}`, ctx);
    expect((await readyOf(o))?.reason).toBe('BaseFileMissing');
    // Without the overlays, the base's deletion goes on (no file to remove).
    await k.remove('Volume', NS, p);
    await converge(ctx, reconcileVolume, `${NS}/${p}`, { until: gone(p), maxPasses: 40 });
    await k.remove('Volume', NS, o);
    await converge(ctx, reconcileVolume, `${NS}/${o}`, { until: gone(o), maxPasses: 40 });
    await converge(ctx, reconcileVolume, `${NS}/${b}`, { until: gone(b), maxPasses: 40 });
    await expect(stat(baseFile)).rejects.toThrow(/ENOENT/);
  });

  it('a file a deleted Volume kept (Retain) is a NameConflict for a new Volume of its name, base or overlay', async () => {
    await ensurePool();
    const id = randomBytes(3).toString('hex');
    const [b, o] = [`kept-base-${id}`, `kept-layer-${id}`];
    await createVol(b, { capacity: '16Mi', deletionPolicy: 'Retain' });
    await converge(ctx, reconcileVolume, `${NS}/${b}`, { until: settled(b) });
    await createVol(o, { source: { backingVolume: { volume: b } }, deletionPolicy: 'Retain' });
    await converge(ctx, reconcileVolume, `${NS}/${o}`, { until: settled(o) });
    const baseFile = path.join(poolDir, `${NS}_${b}`);
    const layerFile = path.join(poolDir, `${NS}_${o}`);
    await removeAll(o);
    expect((await stat(layerFile)).isFile()).toBe(true);
    // Object creation times have whole seconds: the new objects come a second later.
    await sleep(1100);

    // The same overlay again, on the same base: the old overlay's file matches its spec
    // exactly, but holds what the old one's guest wrote.
    await createVol(o, { source: { backingVolume: { volume: b } } });
    await passesUntilReady(o, 'NameConflict');
    expect((await readyOf(o))?.message).toContain('older than the Volume');
    expect((await getVol(o))?.status?.path).toBeUndefined();
    // Deleting it (Delete) leaves the file it never owned.
    await removeAll(o);
    expect(eventsOf(o)).toContain('FileKept');
    expect((await stat(layerFile)).isFile()).toBe(true);

    // The base: a new blank Volume of its name must not become the old overlay's base.
    await removeAll(b);
    expect((await stat(baseFile)).isFile()).toBe(true);
    await sleep(1100);
    await createVol(b, { capacity: '16Mi' });
    await passesUntilReady(b, 'NameConflict');
    expect((await getVol(b))?.status?.path).toBeUndefined();
    // Deleting the new Volume (Delete) leaves the file it never owned.
    await removeAll(b);
    expect((await stat(baseFile)).isFile()).toBe(true);
    await rm(baseFile);
    await rm(layerFile);
    await (await conn.lookupStoragePoolByName(POOL)).refresh(0);
  });

  // The creation time has whole seconds: a kept file last changed earlier in the second the
  // new Volume was made in (a re-create right after the deletion) was taken for one made
  // after it, and adopted with the old Volume's data.
  it('a kept file changed within the second a new Volume of its name is made in is not adopted', async () => {
    await ensurePool();
    const b = `same-second-${randomBytes(3).toString('hex')}`;
    await createVol(b, { capacity: '16Mi', deletionPolicy: 'Retain' });
    await converge(ctx, reconcileVolume, `${NS}/${b}`, { until: settled(b) });
    await removeAll(b);
    const file = path.join(poolDir, `${NS}_${b}`);
    for (let attempt = 1; ; attempt++) {
      // Just past a second's start: the file changed (its ctime), then the Volume made.
      await sleep(1000 - (Date.now() % 1000) + 20);
      await utimes(file, new Date(), new Date());
      const created = await createVol(b, { capacity: '16Mi' });
      const changed = Math.floor((await stat(file)).ctimeMs / 1000) * 1000;
      if (changed === Date.parse(String(created.metadata.creationTimestamp))) break;
      // The create crossed into the next second (a loaded machine): try again.
      await removeAll(b);
      if (attempt === 5) throw new Error("could not make the Volume in the file's second");
    }
    await passesUntilReady(b, 'NameConflict');
    expect((await readyOf(b))?.message).toContain('older than the Volume');
    expect((await getVol(b))?.status?.path).toBeUndefined();
    await removeAll(b);
    expect(eventsOf(b)).toContain('FileKept');
    expect((await stat(file)).isFile()).toBe(true);
    await rm(file);
    await (await conn.lookupStoragePoolByName(POOL)).refresh(0);
  });

  // Only a file changed after the creation second is taken for one a crash left: the file a
  // pass just made within that second stays the Volume's while status does not record it yet.
  it('keeps the file it made within its creation second while the cached status is older', async () => {
    await ensurePool();
    const v = `quick-${randomBytes(3).toString('hex')}`;
    await sleep(1000 - (Date.now() % 1000) + 20);
    const created = await createVol(v, { capacity: '16Mi' });
    await ctx.refresh();
    await reconcileVolume(`${NS}/${v}`, ctx);
    const file = path.join(poolDir, `${NS}_${v}`);
    const changed = Math.floor((await stat(file)).ctimeMs / 1000) * 1000;
    // A pass that sees the Volume as before the first pass's status write (a cache behind,
    // or a write that failed): its finalizers on, its status not.
    await ctx.refresh();
    delete ctx.get<Volume>('Volume', NS, v)!.status;
    await reconcileVolume(`${NS}/${v}`, ctx);
    const status = (await getVol(v))?.status;
    expect(status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('Available');
    expect(status?.path).toBe(file);
    // Made within the creation second, or the pass above proved nothing.
    expect(changed).toBe(Date.parse(String(created.metadata.creationTimestamp)));
    await removeAll(v);
    await expect(stat(file)).rejects.toThrow(/ENOENT/);
  });

  // An agent killed after making the file and before writing status.path, within the
  // Volume's creation second: its ctime cannot tell it from a kept file touched in that
  // second, and the agent that comes back has no record of making it. Its birth time can.
  it('adopts the file an agent killed before its status write made within the creation second', async () => {
    await ensurePool();
    const v = `crashed-${randomBytes(3).toString('hex')}`;
    const file = path.join(poolDir, `${NS}_${v}`);
    const handle = await conn.lookupStoragePoolByName(POOL);
    for (let attempt = 1; ; attempt++) {
      await sleep(1000 - (Date.now() % 1000) + 20);
      const created = await createVol(v, { capacity: '16Mi' });
      // What the killed agent's pass did (plan.ts planVolume: create), and nothing after it:
      // no status write, and this process (the agent back) did not make it.
      const made = await applyVolumeSteps(
        { name: POOL, handle, locks: ctx.host.poolLocks },
        undefined,
        undefined,
        [{ op: 'create', doc: desiredVolume(created) }],
      );
      expect(made).toMatchObject({ done: ['create'] });
      const changed = Math.floor((await stat(file)).ctimeMs / 1000) * 1000;
      if (changed === Date.parse(String(created.metadata.creationTimestamp))) break;
      // The create crossed into the next second (a loaded machine): try again.
      await removeAll(v);
      await rm(file, { force: true });
      await handle.refresh(0);
      if (attempt === 5) throw new Error('could not make the file in the creation second');
    }
    expect(ctx.host.filesMade.has(String((await getVol(v))?.metadata.uid))).toBe(false);
    await passesUntilReady(v, 'Available');
    expect((await getVol(v))?.status?.path).toBe(file);
    await removeAll(v);
    await expect(stat(file)).rejects.toThrow(/ENOENT/);
  });

  // The header re-check was a direct read of the pool's file on every pass: on a hung NFS
  // pool each one held a thread of libuv's pool (DNS, other file work) and the pass for ever.
  it("reads a qcow2 file's header again only once the file changed, and waits a bounded time for it", async () => {
    await ensurePool();
    await createVol('steady', { capacity: '16Mi' });
    await converge(ctx, reconcileVolume, `${NS}/steady`, { until: settled('steady') });
    const file = path.join(poolDir, 'real_steady');
    const reads: string[] = [];
    const pass = async () => {
      await ctx.refresh();
      return reconcileVolume(`${NS}/steady`, ctx);
    };
    try {
      ctx.readImageLayers = (p) => {
        reads.push(p);
        return readImageLayers(p);
      };
      // The first pass that finds the file recorded reads its header; the converged passes
      // after it find libvirt describing the file as then, and read nothing.
      for (let i = 0; i < 4; i++) {
        expect(requeueMs(await pass())).toBeUndefined();
        expect(reads, `pass ${i}`).toEqual([file]);
      }
      // Replaced on the host: read once, found, and not read again while it stays so.
      await rm(file);
      await createImage(file, 'qcow2', '16M', 'backing_file=/etc/hostname,backing_fmt=raw');
      await pass();
      expect((await readyOf('steady'))?.reason).toBe('InvalidImage');
      await pass();
      expect((await readyOf('steady'))?.reason).toBe('InvalidImage');
      expect(reads).toEqual([file, file]);
      // Removed, made again, and read once more as the new file.
      await rm(file);
      await reconcileUntil(ctx, reconcileVolume, `${NS}/steady`, settled('steady'));
      await pass();
      await pass();
      expect(reads).toEqual([file, file, file]);

      // A read that never answers (a hung file system) holds the pass a few seconds at most,
      // does not fail the Volume, is looked at again later, and is not started twice.
      let hung = 0;
      ctx.readImageLayers = () => {
        hung++;
        return new Promise<never>(() => undefined);
      };
      // Waited for 0.5 s, not the agent's 5 s: the bound is what is tested, not its length.
      ctx.headerReadTimeoutMs = 500;
      // Touched: a change libvirt shows (its ctime), the header as it was.
      await utimes(file, new Date(), new Date());
      const started = Date.now();
      const action = await pass();
      expect(Date.now() - started).toBeLessThan(ctx.headerReadTimeoutMs + 3_000);
      expect(requeueMs(action)).toBeGreaterThan(0);
      expect(hung).toBe(1);
      const status = (await getVol('steady'))?.status;
      expect(status?.phase).toBe('Available');
      expect(requeueMs(await pass())).toBeGreaterThan(0);
      expect(hung).toBe(1);
    } finally {
      delete ctx.readImageLayers;
      delete ctx.headerReadTimeoutMs;
    }
    const uid = String((await getVol('steady'))?.metadata.uid);
    expect(ctx.host.headerChecks.has(uid)).toBe(true);
    await k.remove('Volume', NS, 'steady');
    await converge(ctx, reconcileVolume, `${NS}/steady`, { until: gone('steady') });
    expect(ctx.host.headerChecks.has(uid)).toBe(false);
  });

  it('deletes files (Delete), keeps one (Retain), then removes the pool but not a directory holding that file', async () => {
    await ensureVol('disk-3');
    await ensureVol('disk-4');
    await k.patchSpec('Volume', NS, 'disk-3', { deletionPolicy: 'Retain' });
    await k.remove('StoragePool', undefined, POOL);
    await ctx.refresh();
    expect(requeueMs(await reconcileStoragePool(POOL, ctx))).toBeGreaterThan(0);

    // Layered and copied Volumes first: their sources wait for them.
    const order = [
      'copy',
      'layer',
      ...ctx.list<Volume>('Volume').map((v) => String(v.metadata.name)),
    ];
    for (const name of [...new Set(order)]) {
      await k.remove('Volume', NS, name);
      await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name), maxPasses: 40 });
    }
    expect((await stat(path.join(poolDir, 'real_disk-3'))).isFile()).toBe(true);
    await expect(stat(path.join(poolDir, 'real_disk-4'))).rejects.toThrow(/ENOENT/);
    await converge(ctx, reconcileStoragePool, POOL, {
      until: async () => !(await k.get('StoragePool', undefined, POOL)),
    });
    expect(await conn.lookupStoragePoolByName(POOL).catch(() => undefined)).toBeUndefined();
    expect((await stat(poolDir)).isDirectory()).toBe(true);
    const removed = ctx.events.find((e) => e.key === POOL && e.reason === 'PoolRemoved');
    expect(removed?.message).toContain('kept');
    await sleep(0);
  });
});
