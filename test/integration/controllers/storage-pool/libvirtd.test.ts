// StoragePool against a real libvirtd (a private one, as in ../volume/libvirtd.test.ts) where
// the test driver has no files: a directory removed behind the operator's back, the parent
// directories libvirt's build makes, pools sharing a directory through a link or nested in one
// another, a pool on a file, a Volume made in a pool being deleted.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import type { StoragePool, Volume } from '../../../../src/api/generated/types.js';
import { parseQuantity } from '../../../../src/api/quantity.js';
import type { LibvirtDaemon } from '../../../../src/commands/local/libvirtd.js';
import { kindResyncMs } from '../../../../src/controllers/module.js';
import {
  reconcileStoragePool,
  storagePool,
} from '../../../../src/controllers/storage-pool/index.js';
import { withPoolLock } from '../../../../src/controllers/shared/pool-lock.js';
import { reconcileVolume } from '../../../../src/controllers/volume/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import { argoHealth, kstatus } from '../../../harness/health-tools.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { reconcileUntil } from './fixtures.js';

const run = promisify(execFile);
const NODE = 'node-real';
const NS = 'pool-real';
const PREFIX = `lvo-pr-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-pool-real-',
  async cleanup(conn) {
    for (const pool of await conn.listAllStoragePools().catch(() => [])) {
      if (!pool.getName().startsWith(PREFIX)) continue;
      for (const v of await pool.listAllVolumes().catch(() => []))
        await v.delete(0).catch(() => {});
      await pool.destroy().catch(() => undefined);
      await pool.undefine().catch(() => undefined);
    }
  },
});
let daemon: LibvirtDaemon;
let conn: Connect;
let tmp: string;
let k: Kube;
let ctx: SnapshotContext;

beforeAll(() => {
  ({ daemon, conn, tmp, k, ctx } = lv());
});

const entryOf = async (name: string) =>
  (await k.get<StoragePool>('StoragePool', undefined, name))?.status?.nodes?.find(
    (n) => n.nodeName === NODE,
  );
const readyOf = async (name: string) =>
  (await entryOf(name))?.conditions?.find((c) => c.type === 'Ready');
const ready = (name: string) => async () => (await readyOf(name))?.status === 'True';
const gone = (name: string) => async () =>
  (await k.get('StoragePool', undefined, name)) === undefined;
const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
const eventsOf = (key: string, reason: string) =>
  ctx.events.filter((e) => e.key === key && e.reason === reason).map((e) => e.message);

async function makePool(suffix: string, dir: string): Promise<string> {
  const name = `${PREFIX}-${suffix}`;
  await k.create('StoragePool', { metadata: { name }, spec: { path: dir } });
  return name;
}

/** Where the agent records the mount point a pool's directory is on (by the pool's uid). */
async function mountRecordOf(name: string): Promise<string> {
  const uid = (await k.get<StoragePool>('StoragePool', undefined, name))?.metadata.uid;
  return path.join(ctx.stateDir, 'pools', `${String(uid)}.mount.json`);
}

async function deletePool(name: string): Promise<void> {
  await k.remove('StoragePool', undefined, name);
  await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
}

describe('StoragePool on a real libvirtd', () => {
  it('sees a directory removed behind its back within its resync, says so and builds it again', async () => {
    // The kind looks more often than the agent's 10-minute resync.
    expect(kindResyncMs(storagePool, 10 * 60_000)).toBeLessThanOrEqual(60_000);
    const dir = path.join(tmp, 'lost');
    const name = await makePool('lost', dir);
    await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
    await rm(dir, { recursive: true });
    // libvirt itself still calls the pool running.
    expect((await (await conn.lookupStoragePoolByName(name)).getInfo()).stateName).toBe('running');

    // While a storage call holds the pool (an upload, a copy), a pass does not wait for it.
    let release!: () => void;
    const held = withPoolLock(
      ctx.host.poolLocks,
      name,
      () => new Promise<void>((r) => (release = r)),
    );
    ctx.host.poolRefreshes.clear();
    await ctx.refresh();
    const pass = reconcileStoragePool(name, ctx);
    const waited = new Promise((r) => setTimeout(() => r('waited for the lock'), 3_000));
    expect(await Promise.race([pass, waited])).not.toBe('waited for the lock');
    expect(eventsOf(name, 'DirectoryLost')).toEqual([]);
    release();
    await Promise.all([held, pass]);

    ctx.host.poolRefreshes.clear(); // as after POOL_REFRESH_MS
    await ctx.refresh();
    await reconcileStoragePool(name, ctx);
    expect((await entryOf(name))?.state).toBe('inactive');
    // libvirt knows no figures for a pool that is not running (it keeps its last ones): none.
    expect(await entryOf(name)).not.toHaveProperty('capacity');
    expect(await entryOf(name)).not.toHaveProperty('available');
    const said = await readyOf(name);
    expect(said).toMatchObject({ status: 'False', reason: 'DirectoryLost' });
    expect(said?.message).toMatch(/cannot open directory .*No such file or directory/);
    expect(eventsOf(name, 'DirectoryLost')).toHaveLength(1);

    await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
    expect(eventsOf(name, 'PoolStarted')).toHaveLength(1);
    // Running again: its figures are back.
    expect(parseQuantity((await entryOf(name))?.capacity ?? '0')).toBeGreaterThan(0n);
    expect(parseQuantity((await entryOf(name))?.available ?? '0')).toBeGreaterThan(0n);
    expect((await stat(dir)).isDirectory()).toBe(true);
    await deletePool(name);
  });

  it('removes the parent directories its build made, and no directory that was there before', async () => {
    const before = path.join(tmp, 'existing');
    await mkdir(before);
    const dir = path.join(before, 'made', 'deeper', 'pool');
    const name = await makePool('parents', dir);
    await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
    expect((await stat(dir)).isDirectory()).toBe(true);

    await deletePool(name);
    expect(await exists(path.join(before, 'made'))).toBe(false);
    expect((await stat(before)).isDirectory()).toBe(true);
    const [removed] = eventsOf(name, 'PoolRemoved');
    expect(removed).toContain(`directory ${dir} removed`);
    expect(removed).toContain(path.join(before, 'made', 'deeper'));
    // The record goes with the pool.
    expect(await exists(path.join(tmp, 'state', 'pools', `${name}.json`))).toBe(false);
  });

  it('keeps a directory that existed before the pool, and a parent holding anything else', async () => {
    const prepared = path.join(tmp, 'prepared');
    await mkdir(prepared);
    const kept = await makePool('prepared', prepared);
    const shared = path.join(tmp, 'shared', 'pool');
    const other = await makePool('shared', shared);
    await converge(ctx, reconcileStoragePool, kept, { until: ready(kept) });
    await converge(ctx, reconcileStoragePool, other, { until: ready(other) });
    await writeFile(path.join(tmp, 'shared', 'notes.txt'), 'not the pool');

    const linkTarget = path.join(tmp, 'link-target');
    await mkdir(linkTarget);
    const linked = await makePool('linked', path.join(tmp, 'link'));
    await symlink(linkTarget, path.join(tmp, 'link'));
    await converge(ctx, reconcileStoragePool, linked, { until: ready(linked) });
    await deletePool(linked);
    expect(eventsOf(linked, 'PoolRemoved')[0]).toContain('kept: it existed before the pool');

    await deletePool(kept);
    await deletePool(other);
    expect((await stat(prepared)).isDirectory()).toBe(true);
    expect(eventsOf(kept, 'PoolRemoved')[0]).toContain(
      `directory ${prepared} kept: it existed before the pool`,
    );
    expect(await exists(shared)).toBe(false);
    expect(await readFile(path.join(tmp, 'shared', 'notes.txt'), 'utf8')).toBe('not the pool');
  });

  it("never removes another pool's directory, though its own build made it", async () => {
    const outer = path.join(tmp, 'nest', 'outer');
    const inner = await makePool('inner', path.join(outer, 'inner'));
    await converge(ctx, reconcileStoragePool, inner, { until: ready(inner) });
    // An admin's pool on a directory inner's build made (the operator starts none nested).
    const foreign = await conn.defineStoragePoolXML(
      `<pool type='dir'><name>${PREFIX}-foreign</name><target><path>${outer}</path></target></pool>`,
    );

    await deletePool(inner);
    expect((await stat(outer)).isDirectory()).toBe(true);
    await foreign.undefine();

    // The same when that pool reaches the directory through a symbolic link.
    const linkedOuter = path.join(tmp, 'nest2', 'outer');
    const inner2 = await makePool('inner2', path.join(linkedOuter, 'inner'));
    await converge(ctx, reconcileStoragePool, inner2, { until: ready(inner2) });
    await symlink(linkedOuter, path.join(tmp, 'outer-link'));
    const viaLink = await conn.defineStoragePoolXML(
      `<pool type='dir'><name>${PREFIX}-via-link</name><target><path>${path.join(tmp, 'outer-link')}</path></target></pool>`,
    );
    await deletePool(inner2);
    expect((await stat(linkedOuter)).isDirectory()).toBe(true);
    await viaLink.undefine();
  });

  it("refuses a path that a symbolic link leads to another pool's directory: PathConflict", async () => {
    const dir = path.join(tmp, 'linked-twice');
    const first = await makePool('owner', dir);
    await converge(ctx, reconcileStoragePool, first, { until: ready(first) });
    await symlink(dir, path.join(tmp, 'alias'));
    const second = await makePool('alias', path.join(tmp, 'alias'));
    const reason = async () => (await readyOf(second))?.reason;
    await reconcileUntil(ctx, reconcileStoragePool, second, async () => !!(await reason()));
    expect(await reason()).toBe('PathConflict');
    const message = (await readyOf(second))?.message;
    expect(message).toContain(first);
    expect(message).toContain(dir);
    // Nothing of it on the host: not even defined.
    expect(await conn.lookupStoragePoolByName(second).catch(() => undefined)).toBeUndefined();
    await deletePool(second);
    await deletePool(first);

    // Two pools on one directory, reconciled at once (an agent runs passes in parallel).
    const twinDir = path.join(tmp, 'twins');
    await symlink(twinDir, path.join(tmp, 'twin-link'));
    const twins = [await makePool('twin-a', twinDir), await makePool('twin-b', `${tmp}/twin-link`)];
    await ctx.refresh();
    await Promise.all(twins.map((t) => reconcileStoragePool(t, ctx)));
    await ctx.refresh();
    await Promise.all(twins.map((t) => reconcileStoragePool(t, ctx)));
    const reasons = await Promise.all(twins.map(async (t) => (await readyOf(t))?.reason));
    expect(reasons.sort()).toEqual(['PathConflict', 'Running']);
    for (const t of twins) await deletePool(t);
  });

  it("refuses a pool inside another pool's directory, and one around it: PathNested", async () => {
    const outer = path.join(tmp, 'outerdir');
    const around = await makePool('around', outer);
    await converge(ctx, reconcileStoragePool, around, { until: ready(around) });
    const inner = await makePool('within', path.join(outer, 'sub', 'within'));
    await reconcileUntil(ctx, reconcileStoragePool, inner, async () => !!(await readyOf(inner)));
    expect(await readyOf(inner)).toMatchObject({ status: 'False', reason: 'PathNested' });
    expect((await readyOf(inner))?.message).toContain(around);
    // Nothing made inside the outer pool, which would list it as a volume.
    expect(await exists(path.join(outer, 'sub'))).toBe(false);
    const outerPool = await conn.lookupStoragePoolByName(around);
    await outerPool.refresh(0);
    expect(await outerPool.listAllVolumes()).toEqual([]);
    // A Volume in the refused pool says why it waits.
    await k.create('Volume', {
      metadata: { name: 'nested', namespace: NS },
      spec: { nodeName: NODE, pool: inner, capacity: '1Mi' },
    });
    const volReady = async () =>
      (await k.get<Volume>('Volume', NS, 'nested'))?.status?.conditions?.find(
        (c) => c.type === 'Ready',
      );
    await reconcileUntil(ctx, reconcileVolume, `${NS}/nested`, async () => !!(await volReady()));
    expect(await volReady()).toMatchObject({ reason: 'PoolNotReady' });
    expect((await volReady())?.message).toContain('the pool says PathNested: spec.path');
    await k.remove('Volume', NS, 'nested');
    await converge(ctx, reconcileVolume, `${NS}/nested`, {
      until: async () => !(await k.get('Volume', NS, 'nested')),
    });

    // The other way round: a new pool whose directory holds a running one.
    const wide = await makePool('wide', tmp);
    await reconcileUntil(ctx, reconcileStoragePool, wide, async () => !!(await readyOf(wide)));
    expect(await readyOf(wide)).toMatchObject({ status: 'False', reason: 'PathNested' });
    await deletePool(wide);
    await deletePool(inner);
    await deletePool(around);
    expect(await exists(tmp)).toBe(true);
  });

  it('says a path that is a file is not a directory, on removal too, and leaves the file', async () => {
    const file = path.join(tmp, 'a-file');
    await writeFile(file, 'keep me');
    const name = await makePool('file', file);
    await reconcileUntil(
      ctx,
      reconcileStoragePool,
      name,
      async () => (await readyOf(name))?.reason === 'PathNotDirectory',
    );
    await deletePool(name);
    const [removed] = eventsOf(name, 'PoolRemoved');
    expect(removed).toContain(`${file} is not a directory`);
    expect(removed).not.toContain('kept');
    expect(await readFile(file, 'utf8')).toBe('keep me');
  });

  it('says a path on a read-only file system needs a user (PathReadOnly, Stalled)', async () => {
    const ro = path.join(tmp, 'read-only');
    await mkdir(ro);
    // In the private daemon's mount namespace, where its builds run.
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    await run('nsenter', [...inDaemon, 'mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
    try {
      const name = await makePool('ro', path.join(ro, 'pool'));
      const ready = () => readyOf(name);
      await reconcileUntil(ctx, reconcileStoragePool, name, async () => !!(await ready()));
      expect(await ready()).toMatchObject({ status: 'False', reason: 'PathReadOnly' });
      expect((await ready())?.message).toMatch(/read-only file system .*remount it read-write/);
      const top = (await k.get<StoragePool>('StoragePool', undefined, name))?.status?.conditions;
      expect(top?.find((c) => c.type === 'Stalled')).toMatchObject({ status: 'True' });
      await deletePool(name);
    } finally {
      await run('nsenter', [...inDaemon, 'umount', ro]);
    }
  });

  it('stops a pool whose file system was unmounted, so no Volume makes its file underneath', async () => {
    const mnt = path.join(tmp, 'data-disk');
    await mkdir(mnt);
    const dir = path.join(mnt, 'pool');
    // Mounted where the agent looks and, apart (private propagation), where the daemon works.
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    // Two tmpfs instances, so the daemon's build makes the pool's directory in its own: the
    // agent's gets it by hand (on a host, both are one file system).
    const mountBoth = async () => {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
      await run('nsenter', [...inDaemon, 'mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
      await mkdir(dir);
    };
    const umountBoth = async () => {
      await run('umount', [mnt]).catch(() => undefined);
      await run('nsenter', [...inDaemon, 'umount', mnt]).catch(() => undefined);
    };
    await mountBoth();
    try {
      const name = await makePool('mounted', dir);
      await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
      const record = await mountRecordOf(name);
      expect(JSON.parse(await readFile(record, 'utf8'))).toEqual({ mountPoint: mnt });
      const volKey = `${NS}/on-disk`;
      await k.create('Volume', {
        metadata: { name: 'on-disk', namespace: NS },
        spec: { nodeName: NODE, pool: name, capacity: '8Mi', format: 'raw' },
      });
      const volReady = async () =>
        (await k.get<Volume>('Volume', NS, 'on-disk'))?.status?.conditions?.find(
          (c) => c.type === 'Ready',
        );
      await converge(ctx, reconcileVolume, volKey, {
        until: async () => (await volReady())?.status === 'True',
      });

      // A reboot that did not mount the disk, or an admin's umount: libvirt sees only a
      // directory that is missing (refresh fails) or empty. Either way the Volume's file
      // would be made again, blank, on the file system underneath.
      await umountBoth();
      await mkdir(dir);
      // Seen as the agent's pod sees it after such a reboot: its hostPath, a bind mount of the
      // plain directory left on the file system underneath, is still a mount point there.
      await run('mount', ['--bind', mnt, mnt]);
      ctx.host.poolRefreshes.clear();
      await reconcileUntil(
        ctx,
        reconcileStoragePool,
        name,
        async () => (await readyOf(name))?.reason === 'NotMounted',
      );
      const said = await readyOf(name);
      expect(said?.status).toBe('False');
      expect(said?.message).toContain(`mounted at ${mnt}`);
      expect(eventsOf(name, 'NotMounted')).toHaveLength(1);
      expect((await (await conn.lookupStoragePoolByName(name)).getInfo()).stateName).toBe(
        'inactive',
      );
      const top = (await k.get<StoragePool>('StoragePool', undefined, name))?.status?.conditions;
      expect(top?.find((c) => c.type === 'Stalled')).toMatchObject({ status: 'True' });
      await reconcileUntil(
        ctx,
        reconcileVolume,
        volKey,
        async () => (await volReady())?.reason === 'PoolNotReady',
      );
      expect(await exists(path.join(dir, `${NS}_on-disk`))).toBe(false);
      // Another pass keeps it stopped.
      ctx.host.poolRefreshes.clear();
      await ctx.refresh();
      await reconcileStoragePool(name, ctx);
      expect((await (await conn.lookupStoragePoolByName(name)).getInfo()).stateName).toBe(
        'inactive',
      );

      // Mounted again: the pool starts, and the Volume makes its file on the mounted disk.
      await run('umount', [mnt]);
      await rm(dir, { recursive: true });
      await mountBoth();
      await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
      await converge(ctx, reconcileVolume, volKey, {
        until: async () => (await volReady())?.status === 'True',
      });
      await k.remove('Volume', NS, 'on-disk');
      await converge(ctx, reconcileVolume, volKey, {
        until: async () => !(await k.get('Volume', NS, 'on-disk')),
      });
      await deletePool(name);
      expect(await exists(record)).toBe(false);
    } finally {
      await umountBoth();
      await run('umount', [mnt]).catch(() => undefined); // the bind, after a failure
    }
  });

  it("makes no Volume file in a pool libvirtd started on an unmounted disk before the pool's pass", async () => {
    // After a reboot that did not mount the disk, libvirtd autostarts the pool on the plain
    // directory underneath, and the agent's Volume passes run beside its StoragePool passes:
    // one that comes first must not see a running pool and make its file again, blank.
    const id = randomBytes(3).toString('hex');
    const mnt = path.join(tmp, `early-disk-${id}`);
    const dir = path.join(mnt, 'pool');
    const vol = `early-${id}`;
    const volKey = `${NS}/${vol}`;
    const inDaemon = ['-t', String(daemon.pid()), '-m'];
    const mountBoth = async () => {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mnt]);
      await run('nsenter', [...inDaemon, 'mount', '-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mnt]);
      await mkdir(dir);
    };
    const umountBoth = async () => {
      await run('umount', [mnt]).catch(() => undefined);
      await run('nsenter', [...inDaemon, 'umount', mnt]).catch(() => undefined);
    };
    await mkdir(mnt);
    await mountBoth();
    try {
      const name = await makePool(`early-${id}`, dir);
      await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
      await k.create('Volume', {
        metadata: { name: vol, namespace: NS },
        spec: { nodeName: NODE, pool: name, capacity: '8Mi', format: 'raw' },
      });
      const volReady = async () =>
        (await k.get<Volume>('Volume', NS, vol))?.status?.conditions?.find(
          (c) => c.type === 'Ready',
        );
      await converge(ctx, reconcileVolume, volKey, {
        until: async () => (await volReady())?.status === 'True',
      });

      // The reboot: the disk not mounted, the directory there (as for a pool on the mount
      // point itself), libvirtd's autostart of the pool, and no StoragePool pass yet.
      await umountBoth();
      await mkdir(dir);
      const libvirtPool = await conn.lookupStoragePoolByName(name);
      await libvirtPool.destroy();
      await libvirtPool.create(0);
      await ctx.refresh();
      await reconcileVolume(volKey, ctx);
      expect(await exists(path.join(dir, `${NS}_${vol}`))).toBe(false);
      const said = await volReady();
      expect(said).toMatchObject({ status: 'False', reason: 'PoolNotReady' });
      expect(said?.message).toContain(`mounted at ${mnt}`);

      await umountBoth();
      await rm(dir, { recursive: true });
      await mountBoth();
      await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
      await k.remove('Volume', NS, vol);
      await converge(ctx, reconcileVolume, volKey, {
        until: async () => !(await k.get('Volume', NS, vol)),
      });
      await deletePool(name);
    } finally {
      await umountBoth();
      await rm(mnt, { recursive: true, force: true });
    }
  });

  it("watches no bind mount of a subdirectory (a pod's hostPath): its going stops nothing", async () => {
    // The agent's pod sees each hostPath as a bind mount of a host directory, on another file
    // system than its own root; the same host's agent run as a process, sharing the state
    // directory, sees a plain directory there. Here the bind is made where the agent looks
    // only: the daemon, like the host's libvirtd, sees the plain directory.
    const id = randomBytes(3).toString('hex');
    const disk = path.join(tmp, `host-fs-${id}`);
    const hostPath = path.join(tmp, `host-path-${id}`);
    const dir = path.join(hostPath, 'pool');
    await mkdir(disk);
    await mkdir(hostPath);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', disk]);
      await mkdir(path.join(disk, 'pools'));
      await run('mount', ['--bind', path.join(disk, 'pools'), hostPath]);
      await mkdir(dir);
      const name = await makePool(`bound-${id}`, dir);
      await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
      const record = await mountRecordOf(name);
      expect(await exists(record)).toBe(false);

      // The pod gone, the process's view: the daemon's directory, still there.
      await run('umount', [hostPath]);
      for (let pass = 0; pass < 3; pass++) {
        ctx.host.poolRefreshes.clear();
        await ctx.refresh();
        await reconcileStoragePool(name, ctx);
      }
      expect(await readyOf(name)).toMatchObject({ status: 'True' });
      expect(eventsOf(name, 'NotMounted')).toEqual([]);
      expect((await (await conn.lookupStoragePoolByName(name)).getInfo()).stateName).toBe(
        'running',
      );
      await deletePool(name);
    } finally {
      await run('umount', [hostPath]).catch(() => undefined);
      await run('umount', [disk]).catch(() => undefined);
    }
  });

  it('makes no file for a Volume created in a pool being deleted; the pool waits for it', async () => {
    const dir = path.join(tmp, 'closing');
    const name = await makePool('closing', dir);
    await converge(ctx, reconcileStoragePool, name, { until: ready(name) });
    const volume = (vol: string) => ({
      metadata: { name: vol, namespace: NS },
      spec: { nodeName: NODE, pool: name, capacity: '16Mi' },
    });
    const phase = async (vol: string) => (await k.get<Volume>('Volume', NS, vol))?.status?.phase;
    await k.create('Volume', volume('first'));
    await converge(ctx, reconcileVolume, `${NS}/first`, {
      until: async () => (await phase('first')) === 'Available',
    });

    await k.remove('StoragePool', undefined, name);
    await ctx.refresh();
    await reconcileStoragePool(name, ctx);
    await k.create('Volume', volume('late'));
    await reconcileUntil(ctx, reconcileVolume, `${NS}/late`, async () => {
      const ready = (await k.get<Volume>('Volume', NS, 'late'))?.status?.conditions?.find(
        (c) => c.type === 'Ready',
      );
      return ready?.reason === 'PoolDeleting';
    });
    expect(await exists(path.join(dir, `${NS}_late`))).toBe(false);
    expect(eventsOf(`${NS}/late`, 'PoolDeleting')).toHaveLength(1);
    // The pool waits for the Volume and the Volume for the pool: only a user ends that, so
    // GitOps tools must read a failure, not wait for ever (it was Reconciling, InProgress).
    const late = (await k.get<Volume>('Volume', NS, 'late'))!;
    expect(late.status?.phase).toBe('Failed');
    expect(late.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'PoolDeleting',
    });
    expect(kstatus([late]).get('Volume/late')?.status).toBe('Failed');
    expect(argoHealth(late).status).toBe('Degraded');

    // The pool is not removed from under either Volume.
    await k.remove('Volume', NS, 'first');
    await converge(ctx, reconcileVolume, `${NS}/first`, {
      until: async () => !(await k.get('Volume', NS, 'first')),
    });
    await ctx.refresh();
    await reconcileStoragePool(name, ctx);
    expect(await k.get('StoragePool', undefined, name)).toBeDefined();
    expect(
      (await entryOf(name))?.conditions?.find((c) => c.type === 'DeletionBlocked')?.message,
    ).toContain(`${NS}/late`);

    await k.remove('Volume', NS, 'late');
    await converge(ctx, reconcileVolume, `${NS}/late`, {
      until: async () => !(await k.get('Volume', NS, 'late')),
    });
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
    expect(await exists(dir)).toBe(false);
  });
});

describe('names and paths longer than the file system takes', () => {
  const stalled = async (name: string) =>
    (await k.get<StoragePool>('StoragePool', undefined, name))?.status?.conditions?.find(
      (c) => c.type === 'Stalled',
    );

  it('a metadata.name libvirtd cannot name its file after is DefineRefused (Stalled)', async () => {
    // libvirtd writes /etc/libvirt/storage/<name>.xml.new: ENAMETOOLONG from 248 characters.
    const name = `${PREFIX}-`.padEnd(250, 'n');
    const dir = path.join(tmp, 'long-name');
    const created = await k.create<StoragePool>('StoragePool', {
      metadata: { name },
      spec: { path: dir },
    });
    await ctx.refresh();
    const action = await reconcileStoragePool(name, ctx);
    expect(action.kind).toBe('requeueAfter');
    const ready = await readyOf(name);
    expect(ready).toMatchObject({ status: 'False', reason: 'DefineRefused' });
    expect(ready?.message).toContain('File name too long');
    expect(ready?.message).toContain('shorter metadata.name');
    expect(await stalled(name)).toMatchObject({ status: 'True', reason: 'DefineRefused' });
    expect(eventsOf(name, 'DefineRefused')).toHaveLength(1);
    expect(
      await conn.lookupStoragePoolByUUIDString(String(created.metadata.uid)).catch(() => undefined),
    ).toBeUndefined();

    await k.remove('StoragePool', undefined, name);
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
  });

  it('a spec.path segment longer than 255 bytes is PathTooLong (Stalled)', async () => {
    const name = `${PREFIX}-longpath`;
    // Its parent is missing: libvirt's build makes it before failing on the long segment.
    const parent = path.join(tmp, 'long-path-parent');
    const dir = path.join(parent, 'p'.repeat(256));
    const created = await k.create<StoragePool>('StoragePool', {
      metadata: { name },
      spec: { path: dir },
    });
    await ctx.refresh();
    await reconcileStoragePool(name, ctx);
    const ready = await readyOf(name);
    expect(ready).toMatchObject({ status: 'False', reason: 'PathTooLong' });
    expect(ready?.message).toContain('File name too long');
    expect(ready?.message).toContain('255 bytes');
    expect(await stalled(name)).toMatchObject({ status: 'True', reason: 'PathTooLong' });
    const pool = await conn.lookupStoragePoolByUUIDString(String(created.metadata.uid));
    expect(await pool.isActive()).toBe(false);
    expect(await exists(parent)).toBe(true);

    await k.remove('StoragePool', undefined, name);
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
    expect(
      await conn.lookupStoragePoolByUUIDString(String(created.metadata.uid)).catch(() => undefined),
    ).toBeUndefined();
    expect(eventsOf(name, 'PoolRemoved').at(-1)).toContain(`there was no directory ${dir}`);
    // The parent the build made goes with the pool, as for any other pool.
    expect(await exists(parent)).toBe(false);
  });
});
