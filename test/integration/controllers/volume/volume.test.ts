// Volume reconcile against a real API server and libvirt's test driver (volumes live in
// memory there: no files, no upload, no resize).
import { createServer, type Server } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoragePool, VirtualMachine, Volume } from '../../../../src/api/generated/types.js';
import {
  HOST_FINALIZER,
  VOLUME_PROTECTION_FINALIZER,
} from '../../../../src/controllers/context.js';
import { reconcileStoragePool } from '../../../../src/controllers/storage-pool/index.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { reconcileVolume } from '../../../../src/controllers/volume/index.js';
import { withPoolLock } from '../../../../src/controllers/shared/pool-lock.js';
import { Connect } from '../../../../src/libvirt/index.js';
import type { StoragePool as LibvirtPool } from '../../../../src/libvirt/storage.js';
import { buildVolumeXML, parseVolumeXML } from '../../../../src/libvirt/xml/volume.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import {
  converge,
  toldOnceDespiteRefusals,
  withFinalizerRemovalRefused,
  snapshotContext,
  type SnapshotContext,
  requeueMs,
} from '../../../harness/controller-context.js';
import { kube, type Kube } from '../../../harness/kube-objects.js';
import { ensureNode } from '../../../harness/agent.js';
import { hostSnapshot, reconcileUntil, recordPoolEvents } from '../storage-pool/fixtures.js';

const NODE = 'node-a';
const NS = 'apps';
const POOL_DIR = '/var/lib/lvo-test/vols';
const cp = useControlPlane();
let conn: Connect;
let stateDir: string;
let k: Kube;
let ctx: SnapshotContext;
let pool: LibvirtPool;

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  stateDir = await mkdtemp(path.join(tmpdir(), 'lvo-vol-'));
  k = kube(cp().kubeConfig);
  ctx = snapshotContext({ kubeConfig: cp().kubeConfig, conn, nodeName: NODE, stateDir });
  await k.namespace(NS);
  const created = await k.create<StoragePool>('StoragePool', {
    metadata: { name: 'vols' },
    spec: { path: POOL_DIR },
  });
  await converge(ctx, reconcileStoragePool, 'vols');
  pool = await conn.lookupStoragePoolByUUIDString(String(created.metadata.uid));
});
afterAll(async () => {
  await conn?.close();
  await rm(stateDir, { recursive: true, force: true });
});

const getVol = (name: string) => k.get<Volume>('Volume', NS, name);
const createVol = (name: string, spec: Partial<Volume['spec']>) =>
  k.create<Volume>('Volume', {
    metadata: { name, namespace: NS },
    spec: { nodeName: NODE, pool: 'vols', ...spec },
  });
const settled =
  (name: string, phases = ['Available', 'InUse']) =>
  async () => {
    const v = await getVol(name);
    return (
      phases.includes(v?.status?.phase ?? '') &&
      (v?.metadata.finalizers ?? []).includes(HOST_FINALIZER) &&
      (v?.metadata.finalizers ?? []).includes(VOLUME_PROTECTION_FINALIZER)
    );
  };
const gone = (name: string) => async () => (await getVol(name)) === undefined;
const fileNames = async () => (await pool.listAllVolumes()).map((v) => v.getName()).sort();
const fileDoc = async (name: string) =>
  parseVolumeXML(await (await pool.lookupStorageVolByName(name)).getXMLDesc(0));
const eventsOf = (name: string) => ctx.events.filter((e) => e.key === `${NS}/${name}`);

describe('Volume on test:///default', () => {
  it('creates a blank qcow2 volume <namespace>_<name> and reports it Available', async () => {
    await createVol('base', { capacity: '1Gi' });
    await converge(ctx, reconcileVolume, `${NS}/base`, { until: settled('base') });
    const v = await getVol('base');
    expect(v?.status).toMatchObject({
      phase: 'Available',
      path: `${POOL_DIR}/apps_base`,
      capacity: '1Gi',
      observedGeneration: 1,
      conditions: [
        { type: 'Ready', status: 'True', reason: 'Available' },
        { type: 'Reconciling', status: 'False' },
        { type: 'Stalled', status: 'False' },
      ],
    });
    expect(await fileDoc('apps_base')).toMatchObject({
      capacity: 2n ** 30n,
      format: 'qcow2',
      path: `${POOL_DIR}/apps_base`,
    });
    expect(eventsOf('base').map((e) => e.reason)).toEqual(['VolumeCreated']);
  });

  it('clones a Volume and layers a qcow2 overlay on one', async () => {
    await createVol('copy', { source: { clone: { volume: 'base' } } });
    await createVol('overlay', { capacity: '2Gi', source: { backingVolume: { volume: 'base' } } });
    await converge(ctx, reconcileVolume, `${NS}/copy`, { until: settled('copy') });
    await converge(ctx, reconcileVolume, `${NS}/overlay`, { until: settled('overlay') });
    expect(await fileDoc('apps_copy')).toMatchObject({ capacity: 2n ** 30n, format: 'qcow2' });
    expect((await fileDoc('apps_copy')).backingStore).toBeUndefined();
    expect(await fileDoc('apps_overlay')).toMatchObject({
      capacity: 2n * 2n ** 30n,
      format: 'qcow2',
      backingStore: { path: `${POOL_DIR}/apps_base`, format: 'qcow2' },
    });
    expect((await getVol('copy'))?.status).toMatchObject({ phase: 'Available', capacity: '1Gi' });
    expect((await getVol('overlay'))?.status).toMatchObject({
      phase: 'Available',
      capacity: '2Gi',
    });
  });

  it('lists the Volumes layered on a Volume and calls it InUse; a finished copy does not use it', async () => {
    await converge(ctx, reconcileVolume, `${NS}/base`, { until: settled('base', ['InUse']) });
    expect((await getVol('base'))?.status?.usedBy).toEqual([{ kind: 'Volume', name: 'overlay' }]);
  });

  it('waits for a source that is not Available yet', async () => {
    await createVol('early', { source: { clone: { volume: 'later' } } });
    await ctx.refresh();
    const action = await reconcileVolume(`${NS}/early`, ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect((await getVol('early'))?.status).toMatchObject({
      phase: 'Pending',
      conditions: [
        { type: 'Ready', status: 'False', reason: 'SourceNotReady' },
        { type: 'Reconciling', status: 'True', reason: 'SourceNotReady' },
        { type: 'Stalled', status: 'False' },
      ],
    });
    expect(eventsOf('early')).toMatchObject([{ type: 'Warning', reason: 'SourceNotReady' }]);
    await createVol('later', { capacity: '64Mi', format: 'raw' });
    await converge(ctx, reconcileVolume, `${NS}/later`, { until: settled('later') });
    await converge(ctx, reconcileVolume, `${NS}/early`, { until: settled('early') });
    // Once the copy is made, its source is no longer used by it (the watch reconciles it).
    await converge(ctx, reconcileVolume, `${NS}/later`, { until: settled('later', ['Available']) });
    // A clone takes the format its own spec says (qcow2 by default), whatever the source's.
    expect(await fileDoc('apps_early')).toMatchObject({
      capacity: 64n * 2n ** 20n,
      format: 'qcow2',
    });
  });

  it('creates 20 Volumes in one pool at once, all of them', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `many-${i}`);
    await Promise.all(names.map((n) => createVol(n, { capacity: `${64 + names.indexOf(n)}Mi` })));
    const passes = await Promise.all(
      names.map((n) => converge(ctx, reconcileVolume, `${NS}/${n}`, { until: settled(n) })),
    );
    expect(passes.every((p) => p >= 1)).toBe(true);
    const files = await fileNames();
    for (const n of names) expect(files).toContain(`apps_${n}`);
    for (const [i, n] of names.entries())
      expect((await getVol(n))?.status?.capacity).toBe(`${64 + i}Mi`);
  });

  it('re-reconciling converged Volumes changes nothing on the host and writes nothing to the API', async () => {
    await ctx.refresh();
    const before = await hostSnapshot(conn);
    const lifecycle = await recordPoolEvents(conn);
    ctx.writes = 0;
    const keys = ctx
      .list<Volume>('Volume')
      .filter((v) => v.status?.phase === 'Available' || v.status?.phase === 'InUse');
    expect(keys.length).toBeGreaterThanOrEqual(25);
    for (const v of keys)
      expect(await reconcileVolume(`${NS}/${v.metadata.name}`, ctx)).toEqual({ kind: 'done' });
    await lifecycle.stop();
    expect(ctx.writes).toBe(0);
    expect(lifecycle.events).toEqual([]);
    expect(await hostSnapshot(conn)).toEqual(before);
  });

  it('reports a grow the test driver cannot do as ResizeUnsupported, once, and keeps the volume Available', async () => {
    await k.patchSpec('Volume', NS, 'many-0', { capacity: '128Mi' });
    await converge(ctx, reconcileVolume, `${NS}/many-0`, {
      until: async () =>
        (await getVol('many-0'))?.status?.conditions?.some(
          (c) => c.reason === 'ResizeUnsupported',
        ) ?? false,
    });
    const v = await getVol('many-0');
    expect(v?.status).toMatchObject({
      phase: 'Available',
      capacity: '64Mi',
      observedGeneration: 2,
    });
    expect(v?.status?.conditions?.find((c) => c.type === 'Resized')).toMatchObject({
      status: 'False',
      observedGeneration: 2,
    });
    // The file is usable, but spec.capacity is not reached and only a user can change that.
    expect(v?.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'ResizeUnsupported',
      observedGeneration: 2,
    });
    expect(eventsOf('many-0').filter((e) => e.reason === 'ResizeUnsupported')).toHaveLength(1);
    await ctx.refresh();
    ctx.writes = 0;
    expect(await reconcileVolume(`${NS}/many-0`, ctx)).toEqual({ kind: 'done' });
    expect(ctx.writes).toBe(0);
  });

  it('never adopts or deletes a file under its name that it did not create: NameConflict', async () => {
    await pool.createVolumeXML(
      buildVolumeXML({ name: 'apps_clash', capacity: 5n * 2n ** 20n, format: 'raw' }),
    );
    const before = await fileDoc('apps_clash');
    await createVol('clash', { capacity: '1Gi' });
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/clash`, ctx))).toBeGreaterThan(0);
    expect((await getVol('clash'))?.status).toMatchObject({
      phase: 'Failed',
      conditions: [
        { type: 'Ready', status: 'False', reason: 'NameConflict' },
        { type: 'Reconciling', status: 'False' },
        { type: 'Stalled', status: 'True', reason: 'NameConflict' },
      ],
    });
    expect((await getVol('clash'))?.status?.path).toBeUndefined();
    expect(eventsOf('clash')).toMatchObject([{ type: 'Warning', reason: 'NameConflict' }]);
    await k.remove('Volume', NS, 'clash');
    await converge(ctx, reconcileVolume, `${NS}/clash`, { until: gone('clash') });
    expect(await fileDoc('apps_clash')).toEqual(before);
    expect(eventsOf('clash').map((e) => e.reason)).toContain('FileKept');
  });

  it('finishes after a crash between creating the file and recording it, without a duplicate', async () => {
    await pool.createVolumeXML(
      buildVolumeXML({ name: 'apps_crashed', capacity: 2n ** 30n, format: 'qcow2' }),
    );
    await createVol('crashed', { capacity: '1Gi' });
    await converge(ctx, reconcileVolume, `${NS}/crashed`, { until: settled('crashed') });
    expect((await fileNames()).filter((n) => n === 'apps_crashed')).toHaveLength(1);
    expect(eventsOf('crashed').map((e) => e.reason)).toEqual([]);
  });

  it('copies again over an unrecorded file a crash may have cut short, never adopting it', async () => {
    // libvirt makes a copy's file at its full size, then streams the source in: after an agent
    // or libvirtd crash such a file is the copy it should be in all but its content.
    await pool.createVolumeXML(
      buildVolumeXML({ name: 'apps_halfcopy', capacity: 2n ** 30n, format: 'qcow2' }),
    );
    await createVol('halfcopy', { source: { clone: { volume: 'base' } } });
    await converge(ctx, reconcileVolume, `${NS}/halfcopy`, { until: settled('halfcopy') });
    expect(eventsOf('halfcopy').map((e) => e.reason)).toEqual([
      'PartialCopyDiscarded',
      'VolumeCreated',
    ]);
    expect((await fileNames()).filter((n) => n === 'apps_halfcopy')).toHaveLength(1);
  });

  it('says Creating before a copy starts, not nothing while it runs', async () => {
    await createVol('slowcopy', { source: { clone: { volume: 'base' } } });
    // A copy of many GiB holds the pool for minutes: the pass waits here as it would there.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const lock = withPoolLock(ctx.host.poolLocks, 'vols', () => held);
    await ctx.refresh();
    const pass = reconcileVolume(`${NS}/slowcopy`, ctx);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const during = await getVol('slowcopy');
    release();
    await lock;
    await pass;
    expect(during?.status).toMatchObject({
      phase: 'Pending',
      conditions: expect.arrayContaining([
        expect.objectContaining({ type: 'Ready', status: 'False', reason: 'Creating' }),
      ]),
    });
    await converge(ctx, reconcileVolume, `${NS}/slowcopy`, { until: settled('slowcopy') });
  });

  it('reports a missing pool as PoolNotReady, and deletion does not wait for it', async () => {
    await createVol('orphan', { pool: 'nowhere', capacity: '1Gi' });
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/orphan`, ctx))).toBeGreaterThan(0);
    expect((await getVol('orphan'))?.status).toMatchObject({
      phase: 'Pending',
      conditions: [
        { status: 'False', reason: 'PoolNotReady', message: 'StoragePool nowhere does not exist' },
        { type: 'Reconciling', status: 'True', reason: 'PoolNotReady' },
        { type: 'Stalled', status: 'False' },
      ],
    });
    await k.remove('Volume', NS, 'orphan');
    await converge(ctx, reconcileVolume, `${NS}/orphan`, { until: gone('orphan') });
  });

  it('reports a pool whose spec.nodeSelector leaves this node out as PoolNotOnNode (Stalled)', async () => {
    // Without a Node object the labels are unknown: the pool may yet come, a wait.
    await k.create<StoragePool>('StoragePool', {
      metadata: { name: 'elsewhere' },
      spec: { path: '/var/lib/lvo-test/elsewhere', nodeSelector: { matchLabels: { zone: 'b' } } },
    });
    await createVol('stranded', { pool: 'elsewhere', capacity: '1Gi' });
    await ctx.refresh();
    await reconcileVolume(`${NS}/stranded`, ctx);
    expect((await getVol('stranded'))?.status?.conditions?.[0]?.reason).toBe('PoolNotReady');

    await ensureNode(cp(), NODE, { zone: 'a' });
    try {
      await ctx.refresh();
      await reconcileVolume(`${NS}/stranded`, ctx);
      const status = (await getVol('stranded'))?.status;
      expect(status).toMatchObject({
        phase: 'Failed',
        conditions: [
          { type: 'Ready', status: 'False', reason: 'PoolNotOnNode' },
          { type: 'Reconciling', status: 'False' },
          { type: 'Stalled', status: 'True', reason: 'PoolNotOnNode' },
        ],
      });
      expect(status?.conditions?.[0]?.message).toBe(
        `spec.pool: StoragePool elsewhere is not on node ${NODE}: its spec.nodeSelector does ` +
          `not select this node; label the node, change the pool's nodeSelector, or create the ` +
          `Volume on a node the pool selects`,
      );
      expect(eventsOf('stranded').map((e) => e.reason)).toContain('PoolNotOnNode');

      // Labelled, the node is the pool's: a wait for its agent to make it.
      await ensureNode(cp(), NODE, { zone: 'b' });
      await ctx.refresh();
      await reconcileVolume(`${NS}/stranded`, ctx);
      expect((await getVol('stranded'))?.status).toMatchObject({
        phase: 'Pending',
        conditions: [{ reason: 'PoolNotReady' }, { type: 'Reconciling', status: 'True' }, {}],
      });
    } finally {
      await cp().kubectl(['delete', 'node', NODE]);
    }
    await k.remove('Volume', NS, 'stranded');
    await converge(ctx, reconcileVolume, `${NS}/stranded`, { until: gone('stranded') });
    await k.remove('StoragePool', undefined, 'elsewhere');
  });

  it('ignores Volumes of other nodes', async () => {
    await k.create('Volume', {
      metadata: { name: 'theirs', namespace: NS },
      spec: { nodeName: 'node-b', pool: 'vols', capacity: '1Gi' },
    });
    await ctx.refresh();
    ctx.writes = 0;
    expect(await reconcileVolume(`${NS}/theirs`, ctx)).toEqual({ kind: 'done' });
    expect(ctx.writes).toBe(0);
    expect(await fileNames()).not.toContain('apps_theirs');
    await k.remove('Volume', NS, 'theirs');
  });

  it('Retain keeps the file; Delete removes it', async () => {
    await createVol('kept', { capacity: '1Gi', deletionPolicy: 'Retain' });
    await createVol('dropped', { capacity: '1Gi' });
    await converge(ctx, reconcileVolume, `${NS}/kept`, { until: settled('kept') });
    await converge(ctx, reconcileVolume, `${NS}/dropped`, { until: settled('dropped') });
    await k.remove('Volume', NS, 'kept');
    await k.remove('Volume', NS, 'dropped');
    await converge(ctx, reconcileVolume, `${NS}/kept`, { until: gone('kept') });
    await converge(ctx, reconcileVolume, `${NS}/dropped`, { until: gone('dropped') });
    const files = await fileNames();
    expect(files).toContain('apps_kept');
    expect(files).not.toContain('apps_dropped');
    expect(eventsOf('kept').map((e) => e.reason)).toContain('VolumeRetained');
    expect(eventsOf('dropped').map((e) => e.reason)).toContain('VolumeDeleted');
  });

  it('says a file is kept once, not with every retry of a refused finalizer removal', async () => {
    const id = randomBytes(3).toString('hex');
    const [retained, foreign] = [`retained-${id}`, `foreign-${id}`];
    // A file under the Volume's name that it did not create: kept (FileKept) at its deletion.
    await pool.createVolumeXML(
      buildVolumeXML({ name: `${NS}_${foreign}`, capacity: 2n ** 20n, format: 'raw' }),
    );
    await createVol(retained, { capacity: '64Mi', deletionPolicy: 'Retain' });
    await createVol(foreign, { capacity: '64Mi' });
    await converge(ctx, reconcileVolume, `${NS}/${retained}`, { until: settled(retained) });
    for (let i = 0; i < 5 && (await getVol(foreign))?.status?.phase !== 'Failed'; i++) {
      await ctx.refresh();
      await reconcileVolume(`${NS}/${foreign}`, ctx);
    }
    expect((await getVol(foreign))?.status?.phase).toBe('Failed');
    await k.remove('Volume', NS, retained);
    await k.remove('Volume', NS, foreign);
    const told = (name: string, reason: string) =>
      eventsOf(name).filter((e) => e.reason === reason).length;
    await withFinalizerRemovalRefused(ctx, async () => {
      for (const name of [retained, foreign]) {
        for (let i = 0; i < 2; i++) {
          await ctx.refresh();
          await expect(reconcileVolume(`${NS}/${name}`, ctx)).rejects.toThrow(/injected/);
        }
      }
    });
    expect(told(retained, 'VolumeRetained'), 'told while the removal was refused').toBe(0);
    expect(told(foreign, 'FileKept'), 'told while the removal was refused').toBe(0);
    await converge(ctx, reconcileVolume, `${NS}/${retained}`, { until: gone(retained) });
    await converge(ctx, reconcileVolume, `${NS}/${foreign}`, { until: gone(foreign) });
    expect(told(retained, 'VolumeRetained')).toBe(1);
    expect(told(foreign, 'FileKept')).toBe(1);
    const files = await fileNames();
    expect(files).toContain(`${NS}_${retained}`);
    expect(files).toContain(`${NS}_${foreign}`);
    for (const name of [retained, foreign])
      await (await pool.lookupStorageVolByName(`${NS}_${name}`)).delete();
  });

  it('keeps a Volume a VirtualMachine uses until the machine is gone', async () => {
    await createVol('disk', { capacity: '1Gi' });
    await converge(ctx, reconcileVolume, `${NS}/disk`, { until: settled('disk') });
    await k.create('VirtualMachine', {
      metadata: { name: 'web', namespace: NS },
      spec: {
        nodeName: NODE,
        vcpus: 1,
        memory: '256Mi',
        disks: [{ name: 'root', volume: 'disk' }],
      },
    });
    await converge(ctx, reconcileVolume, `${NS}/disk`, { until: settled('disk', ['InUse']) });
    expect((await getVol('disk'))?.status?.usedBy).toEqual([
      { kind: 'VirtualMachine', name: 'web' },
    ]);

    await k.remove('Volume', NS, 'disk');
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/disk`, ctx))).toBeGreaterThan(0);
    const blocked = await getVol('disk');
    expect(blocked?.metadata.finalizers).toEqual(
      expect.arrayContaining([HOST_FINALIZER, VOLUME_PROTECTION_FINALIZER]),
    );
    expect(blocked?.status?.conditions?.find((c) => c.type === 'DeletionBlocked')).toMatchObject({
      status: 'True',
      reason: 'InUse',
      message: expect.stringContaining('VirtualMachine web'),
    });
    expect(blocked?.status?.phase).toBe('InUse');
    expect(eventsOf('disk').filter((e) => e.reason === 'DeletionBlocked')).toHaveLength(1);
    expect(await fileNames()).toContain('apps_disk');

    await k.remove('VirtualMachine', NS, 'web');
    await converge(ctx, reconcileVolume, `${NS}/disk`, { until: gone('disk') });
    expect(await fileNames()).not.toContain('apps_disk');
  });

  it('keeps a Volume others are layered on until they are gone; a finished copy does not hold it', async () => {
    await k.remove('Volume', NS, 'base');
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/base`, ctx))).toBeGreaterThan(0);
    expect(await fileNames()).toContain('apps_base');
    expect(
      (await getVol('base'))?.status?.conditions?.find((c) => c.type === 'DeletionBlocked'),
    ).toMatchObject({ message: 'deletion waits until no longer used by Volume overlay' });
    await k.remove('Volume', NS, 'overlay');
    await converge(ctx, reconcileVolume, `${NS}/overlay`, { until: gone('overlay') });
    await converge(ctx, reconcileVolume, `${NS}/base`, { until: gone('base') });
    expect(await fileNames()).not.toContain('apps_base');
    // The copy is a file of its own: it stays Available without its source.
    await converge(ctx, reconcileVolume, `${NS}/copy`, { until: settled('copy', ['Available']) });
    expect(await fileNames()).toContain('apps_copy');
    await k.remove('Volume', NS, 'copy');
    await converge(ctx, reconcileVolume, `${NS}/copy`, { until: gone('copy') });
  });

  it('says a problem once its status says so, not with every retry of a refused write', async () => {
    const name = `lost-${randomBytes(3).toString('hex')}`;
    await createVol(name, { pool: `nowhere-${name}`, capacity: '1Gi' });
    const warned = () => eventsOf(name).filter((e) => e.reason === 'PoolNotReady').length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    await toldOnceDespiteRefusals(ctx, reconcileVolume, `${NS}/${name}`, warned);
    expect((await getVol(name))?.status?.conditions?.[0]?.reason).toBe('PoolNotReady');
    await k.remove('Volume', NS, name);
    await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name) });
  });

  it('says a problem once when a pass runs again before its cache has the status it wrote', async () => {
    const name = `stale-${randomBytes(3).toString('hex')}`;
    // Its finalizers already on: the second pass would stop at adding them again otherwise.
    await k.create<Volume>('Volume', {
      metadata: {
        name,
        namespace: NS,
        finalizers: [HOST_FINALIZER, VOLUME_PROTECTION_FINALIZER],
      },
      spec: { nodeName: NODE, pool: `nowhere-${name}`, capacity: '1Gi' },
    });
    const warned = () => eventsOf(name).filter((e) => e.reason === 'PoolNotReady').length;
    await ctx.refresh();
    // The second pass a second later: its Ready=False would be stamped a second later too.
    const start = Date.now();
    const clock = ctx.now;
    ctx.now = () => new Date(start);
    await reconcileVolume(`${NS}/${name}`, ctx);
    expect(warned()).toBe(1);
    // The same copy again (the watch has not brought the write back): nothing new to say,
    // and nothing to send.
    ctx.now = () => new Date(start + 1000);
    const writes = ctx.writes;
    await reconcileVolume(`${NS}/${name}`, ctx);
    ctx.now = clock;
    expect(warned()).toBe(1);
    expect(ctx.writes).toBe(writes);
    await k.remove('Volume', NS, name);
    await converge(ctx, reconcileVolume, `${NS}/${name}`, { until: gone(name) });
  });

  it('says DeletionBlocked once its status says so, not with every retry of a refused write', async () => {
    const id = randomBytes(3).toString('hex');
    const [base, layer] = [`under-${id}`, `over-${id}`];
    await createVol(base, { capacity: '64Mi' });
    await converge(ctx, reconcileVolume, `${NS}/${base}`, { until: settled(base) });
    await createVol(layer, { source: { backingVolume: { volume: base } } });
    await converge(ctx, reconcileVolume, `${NS}/${layer}`, { until: settled(layer) });
    await k.remove('Volume', NS, base);
    const warned = () => eventsOf(base).filter((e) => e.reason === 'DeletionBlocked').length;
    await toldOnceDespiteRefusals(ctx, reconcileVolume, `${NS}/${base}`, warned);
    expect(
      (await getVol(base))?.status?.conditions?.find((c) => c.type === 'DeletionBlocked')?.message,
    ).toBe(`deletion waits until no longer used by Volume ${layer}`);
    await k.remove('Volume', NS, layer);
    await converge(ctx, reconcileVolume, `${NS}/${layer}`, { until: gone(layer) });
    await converge(ctx, reconcileVolume, `${NS}/${base}`, { until: gone(base) });
    expect(await fileNames()).not.toContain(`${NS}_${base}`);
  });

  it('a copy uses its source until the copy is made, and no longer after', async () => {
    await createVol('orig', { capacity: '64Mi' });
    await createVol('dup', { source: { clone: { volume: 'orig' } } });
    await ctx.refresh();
    await converge(ctx, reconcileVolume, `${NS}/orig`, { until: settled('orig', ['InUse']) });
    expect((await getVol('orig'))?.status?.usedBy).toEqual([{ kind: 'Volume', name: 'dup' }]);
    await converge(ctx, reconcileVolume, `${NS}/dup`, { until: settled('dup', ['Available']) });
    await converge(ctx, reconcileVolume, `${NS}/orig`, { until: settled('orig', ['Available']) });
    expect((await getVol('orig'))?.status?.usedBy).toBeUndefined();
    await k.remove('Volume', NS, 'orig');
    await converge(ctx, reconcileVolume, `${NS}/orig`, { until: gone('orig') });
    expect(await fileNames()).toContain('apps_dup');
    expect(await fileNames()).not.toContain('apps_orig');
    await k.remove('Volume', NS, 'dup');
    await converge(ctx, reconcileVolume, `${NS}/dup`, { until: gone('dup') });
  });

  it('does not copy a disk a running machine holds: SourceInUse names it, the copy is made once it stops', async () => {
    await createVol('held', { capacity: '64Mi' });
    await converge(ctx, reconcileVolume, `${NS}/held`, { until: settled('held') });
    await k.create('VirtualMachine', {
      metadata: { name: 'runner', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '256Mi',
        disks: [{ name: 'root', volume: 'held' }],
      },
    });
    await converge(ctx, reconcileVirtualMachine, `${NS}/runner`, {
      until: async () =>
        (await k.get<VirtualMachine>('VirtualMachine', NS, 'runner'))?.status?.phase === 'Running',
    });
    await createVol('held-copy', { source: { clone: { volume: 'held' } } });
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/held-copy`, ctx))).toBeGreaterThan(0);
    expect(await fileNames()).not.toContain('apps_held-copy');
    const waiting = await getVol('held-copy');
    expect(waiting?.status?.phase).toBe('Pending');
    expect(waiting?.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'SourceInUse',
      message: expect.stringContaining('running VirtualMachine runner'),
    });
    expect(waiting?.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'False',
    });
    // Nor is an overlay layered on it: the guest is changing the base it would read.
    await createVol('held-over', {
      capacity: '64Mi',
      source: { backingVolume: { volume: 'held' } },
    });
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(`${NS}/held-over`, ctx))).toBeGreaterThan(0);
    expect(await fileNames()).not.toContain('apps_held-over');
    expect(
      (await getVol('held-over'))?.status?.conditions?.find((c) => c.type === 'Ready'),
    ).toMatchObject({
      reason: 'SourceInUse',
      message: expect.stringContaining('the overlay is made once the machine is stopped'),
    });

    // The machine's passes as the queue runs them: with the overlay declared, each reports
    // VolumeHasOverlays and asks to look again, which converge() does not count as done.
    const runnerUntil = async (holds: (vm?: VirtualMachine) => boolean) => {
      for (let pass = 0; pass < 20; pass++) {
        await ctx.refresh();
        await reconcileVirtualMachine(`${NS}/runner`, ctx);
        if (holds(await k.get<VirtualMachine>('VirtualMachine', NS, 'runner'))) return;
      }
      throw new Error(
        `runner: ${JSON.stringify((await k.get<VirtualMachine>('VirtualMachine', NS, 'runner'))?.status)}`,
      );
    };
    await k.patchSpec('VirtualMachine', NS, 'runner', { runStrategy: 'Halted' });
    await runnerUntil((vm) => vm?.status?.phase === 'Stopped');
    await converge(ctx, reconcileVolume, `${NS}/held-copy`, { until: settled('held-copy') });
    expect(await fileNames()).toContain('apps_held-copy');
    await converge(ctx, reconcileVolume, `${NS}/held-over`, { until: settled('held-over') });
    expect(await fileNames()).toContain('apps_held-over');
    // With an overlay on it, the base is no writable disk any more: the machine stays off.
    await k.patchSpec('VirtualMachine', NS, 'runner', { runStrategy: 'Always' });
    await runnerUntil(
      (vm) =>
        vm?.status?.conditions?.some(
          (c) => c.type === 'Ready' && c.reason === 'VolumeHasOverlays',
        ) ?? false,
    );
    expect((await k.get<VirtualMachine>('VirtualMachine', NS, 'runner'))?.status?.phase).toBe(
      'Stopped',
    );
    await k.remove('Volume', NS, 'held-over');
    await converge(ctx, reconcileVolume, `${NS}/held-over`, { until: gone('held-over') });
    await k.remove('VirtualMachine', NS, 'runner');
    await converge(ctx, reconcileVirtualMachine, `${NS}/runner`, {
      until: async () => (await k.get('VirtualMachine', NS, 'runner')) === undefined,
    });
  });

  it('two Volumes layered on each other wait as SourceNotReady, and both can be deleted', async () => {
    await createVol('cycle-a', {
      capacity: '1Gi',
      source: { backingVolume: { volume: 'cycle-b' } },
    });
    await createVol('cycle-b', {
      capacity: '1Gi',
      source: { backingVolume: { volume: 'cycle-a' } },
    });
    for (const name of ['cycle-a', 'cycle-b', 'cycle-a']) {
      await ctx.refresh();
      expect(requeueMs(await reconcileVolume(`${NS}/${name}`, ctx))).toBeGreaterThan(0);
    }
    for (const name of ['cycle-a', 'cycle-b']) {
      expect(
        (await getVol(name))?.status?.conditions?.find((c) => c.type === 'Ready'),
      ).toMatchObject({ status: 'False', reason: 'SourceNotReady' });
    }
    await k.remove('Volume', NS, 'cycle-a');
    await k.remove('Volume', NS, 'cycle-b');
    await converge(ctx, reconcileVolume, `${NS}/cycle-a`, { until: gone('cycle-a') });
    await converge(ctx, reconcileVolume, `${NS}/cycle-b`, { until: gone('cycle-b') });
    expect(await fileNames()).not.toContain('apps_cycle-a');
  });
});

describe('HTTP import on test:///default (download and verification real; the driver cannot upload)', () => {
  let server: Server;
  let base: string;
  const image = Buffer.alloc(3 * 1024 * 1024, 7);
  const sha = createHash('sha256').update(image).digest('hex');
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url !== '/disk.img') return res.writeHead(404).end();
      res.writeHead(200, { 'content-length': image.length }).end(image);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const failedWith = (name: string, reason: string) => async () =>
    (await getVol(name))?.status?.conditions?.[0]?.reason === reason;

  // A driver without uploads never gets them: Unsupported, Stalled (it was ImportFailed,
  // phase Failed beside Reconciling=True).
  it('downloads, verifies, records the path, then reports that the driver cannot upload', async () => {
    await createVol('imported', {
      format: 'raw',
      source: { http: { url: `${base}/disk.img`, sha256: sha } },
    });
    const seen: string[] = [];
    await reconcileUntil(ctx, reconcileVolume, `${NS}/imported`, async () => {
      const v = await getVol('imported');
      seen.push(`${v?.status?.phase}:${v?.status?.path ?? ''}`);
      return v?.status?.conditions?.[0]?.reason === 'Unsupported';
    });
    const v = await getVol('imported');
    expect(v?.status?.phase).toBe('Failed');
    expect(v?.status?.conditions?.[0]?.message).toContain('cannot upload');
    expect(v?.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'Unsupported',
    });
    // The path was recorded before libvirt was asked to create the file.
    expect(seen).toContain(`Importing:${POOL_DIR}/apps_imported`);
    expect(await fileNames()).not.toContain('apps_imported');
    // ... and dropped with the file: status names no file that is not the Volume's.
    expect(v?.status?.path).toBeUndefined();
    expect(await readdir(path.join(stateDir, 'imports'))).toEqual([]);
    await k.remove('Volume', NS, 'imported');
    await converge(ctx, reconcileVolume, `${NS}/imported`, { until: gone('imported') });
  });

  it('fails a download whose SHA-256 does not match, keeping nothing', async () => {
    await createVol('tampered', {
      format: 'raw',
      source: { http: { url: `${base}/disk.img`, sha256: 'f'.repeat(64) } },
    });
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/tampered`,
      failedWith('tampered', 'ChecksumMismatch'),
    );
    const v = await getVol('tampered');
    expect(v?.status?.phase).toBe('Failed');
    expect(v?.status?.conditions?.[0]?.message).toContain(sha);
    expect(eventsOf('tampered')).toMatchObject([{ type: 'Warning', reason: 'ChecksumMismatch' }]);
    expect(await readdir(path.join(stateDir, 'imports'))).toEqual([]);
    expect(await fileNames()).not.toContain('apps_tampered');
    await k.remove('Volume', NS, 'tampered');
    await converge(ctx, reconcileVolume, `${NS}/tampered`, { until: gone('tampered') });
  });

  // A URL the server refuses: Failed and Stalled (kstatus Failed) naming the status; it was
  // ImportFailed, Reconciling (InProgress) for ever. Still retried, as the image may appear.
  it('fails a URL the server refuses (HTTP 404) as SourceRefused, Stalled, still retried', async () => {
    await createVol('missing', {
      format: 'raw',
      source: { http: { url: `${base}/nope.img`, sha256: sha } },
    });
    await reconcileUntil(
      ctx,
      reconcileVolume,
      `${NS}/missing`,
      failedWith('missing', 'SourceRefused'),
    );
    const v = await getVol('missing');
    expect(v?.status?.phase).toBe('Failed');
    expect(v?.status?.conditions?.[0]?.message).toMatch(
      /HTTP 404.*; attempt 1 failed, next try in 10 s/,
    );
    expect(v?.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'SourceRefused',
    });
    expect(v?.status?.conditions?.find((c) => c.type === 'Reconciling')?.status).toBe('False');
    await k.remove('Volume', NS, 'missing');
    await converge(ctx, reconcileVolume, `${NS}/missing`, { until: gone('missing') });
  });
});

describe('a failed HTTP import is retried with growing waits that status names', () => {
  let server: Server;
  let base: string;
  let hits = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.writeHead(503).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('waits 10 s, then 20 s, saying when the next try is; no download in between', async () => {
    await createVol('backoff', {
      format: 'raw',
      source: { http: { url: `${base}/image.img`, sha256: 'e'.repeat(64) } },
    });
    const message = async () =>
      (await getVol('backoff'))?.status?.conditions?.find((c) => c.type === 'Ready')?.message ?? '';
    await reconcileUntil(ctx, reconcileVolume, `${NS}/backoff`, async () =>
      (await message()).includes('attempt 1 failed'),
    );
    const first = await message();
    expect(first).toMatch(
      /HTTP 503.*; attempt 1 failed, next try in 10 s \(at \d{4}-\d\d-\d\dT[\d:]+Z\)$/,
    );
    // A 503 may pass by itself: Reconciling (InProgress), and the phase says so too; it read
    // Failed beside Reconciling=True.
    const failing = (await getVol('backoff'))?.status;
    expect(failing?.phase).toBe('Pending');
    expect(failing?.conditions?.find((c) => c.type === 'Reconciling')).toMatchObject({
      status: 'True',
      reason: 'ImportFailed',
    });
    expect(failing?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('False');
    expect(hits).toBe(1);
    const version = (await getVol('backoff'))?.metadata.resourceVersion;
    // Woken again and again (every status write, resync, a user's edit...): no new download
    // and no status write until the retry time, which is 10 s away: five wakes show it, however
    // long they take (a 3 s window of them added only waiting).
    for (let wake = 0; wake < 5; wake++) {
      await ctx.refresh();
      await reconcileVolume(`${NS}/backoff`, ctx);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(hits).toBe(1);
    expect((await getVol('backoff'))?.metadata.resourceVersion).toBe(version);
    // The rest of the 10 s passes on the context's clock (the retry time is read from it),
    // not by waiting it out: the retry comes when that clock reaches it.
    const { now } = ctx;
    const retryAt = Date.parse(/\(at (.+Z)\)$/.exec(first)![1]!);
    ctx.now = () => new Date(Math.max(Date.now(), retryAt + 1_000));
    try {
      await reconcileUntil(
        ctx,
        reconcileVolume,
        `${NS}/backoff`,
        async () => (await message()).includes('attempt 2 failed'),
        20_000,
      );
    } finally {
      ctx.now = now;
    }
    expect(await message()).toMatch(/; attempt 2 failed, next try in 20 s \(at .+Z\)$/);
    expect(hits).toBe(2);
    await k.remove('Volume', NS, 'backoff');
    await converge(ctx, reconcileVolume, `${NS}/backoff`, { until: gone('backoff') });
  });
});

describe('StoragePool and Volumes together', () => {
  it('refuses to remove the pool while Volumes are in it, then leaves the host as it found it', async () => {
    await k.remove('StoragePool', undefined, 'vols');
    await ctx.refresh();
    expect(requeueMs(await reconcileStoragePool('vols', ctx))).toBeGreaterThan(0);
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).toContain('vols');

    for (const v of ctx.list<Volume>('Volume')) {
      await k.remove('Volume', NS, String(v.metadata.name));
      await converge(ctx, reconcileVolume, `${NS}/${v.metadata.name}`, {
        until: gone(String(v.metadata.name)),
      });
    }
    await converge(ctx, reconcileStoragePool, 'vols', {
      until: async () => !(await k.get('StoragePool', undefined, 'vols')),
    });
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).toEqual(['default-pool']);
  });
});
