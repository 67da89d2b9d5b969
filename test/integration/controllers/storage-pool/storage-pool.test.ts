// StoragePool reconcile against a real API server and libvirt's test driver.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoragePool } from '../../../../src/api/generated/types.js';
import { FIELD_MANAGER, nodeFieldManager } from '../../../../src/agent/kube-writes.js';
import { nodeFinalizer } from '../../../../src/controllers/context.js';
import { reconcileStoragePool } from '../../../../src/controllers/storage-pool/index.js';
import { Connect } from '../../../../src/libvirt/index.js';
import { buildPoolXML } from '../../../../src/libvirt/xml/pool.js';
import { KubeApiError } from '../../../../src/runtime/kube-client.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import {
  converge,
  toldOnceDespiteRefusals,
  withStatusUnanswered,
  snapshotContext,
  type SnapshotContext,
  requeueMs,
} from '../../../harness/controller-context.js';
import { kube, type Kube } from '../../../harness/kube-objects.js';
import { hostSnapshot, recordPoolEvents } from './fixtures.js';

const NODE = 'node-a';
const cp = useControlPlane();
let conn: Connect;
let stateDir: string;
let k: Kube;
let ctx: SnapshotContext;

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  stateDir = await mkdtemp(path.join(tmpdir(), 'lvo-pool-'));
  k = kube(cp().kubeConfig);
  ctx = snapshotContext({ kubeConfig: cp().kubeConfig, conn, nodeName: NODE, stateDir });
});
afterAll(async () => {
  await conn?.close();
  await rm(stateDir, { recursive: true, force: true });
});

const entryOf = async (name: string, node = NODE) =>
  (await k.get<StoragePool>('StoragePool', undefined, name))?.status?.nodes?.find(
    (n) => n.nodeName === node,
  );
const readyOn =
  (name: string, node = NODE) =>
  async () =>
    (await entryOf(name, node))?.conditions?.[0]?.status === 'True';
const gone = (name: string) => async () =>
  (await k.get('StoragePool', undefined, name)) === undefined;
const poolByUid = (uid: string) => conn.lookupStoragePoolByUUIDString(uid).catch(() => undefined);

describe('StoragePool on test:///default', () => {
  it('materialises a dir pool with the object uid as UUID, running and autostarted, and reports it', async () => {
    const created = await k.create<StoragePool>('StoragePool', {
      metadata: { name: 'images' },
      spec: { path: '/var/lib/lvo-test/images' },
    });
    await converge(ctx, reconcileStoragePool, 'images', { until: readyOn('images') });

    const pool = await poolByUid(String(created.metadata.uid));
    expect(pool?.getName()).toBe('images');
    expect(await pool?.isActive()).toBe(true);
    expect(await pool?.getAutostart()).toBe(true);
    expect(await pool?.isPersistent()).toBe(true);

    const obj = await k.get<StoragePool>('StoragePool', undefined, 'images');
    expect(obj?.metadata.finalizers).toEqual([nodeFinalizer(NODE)]);
    // The test driver reports 100 GiB for every pool.
    expect(await entryOf('images')).toMatchObject({
      nodeName: NODE,
      state: 'running',
      capacity: '100Gi',
      allocation: '0',
      available: '100Gi',
      observedGeneration: 1,
      conditions: [{ type: 'Ready', status: 'True', reason: 'Running' }],
    });
    expect(ctx.events.filter((e) => e.key === 'images').map((e) => e.reason)).toEqual([
      'PoolDefined',
    ]);
  });

  it('re-reconciling a converged pool changes nothing on the host and writes nothing to the API', async () => {
    await ctx.refresh();
    const before = await hostSnapshot(conn);
    const lifecycle = await recordPoolEvents(conn);
    ctx.writes = 0;
    for (let i = 0; i < 3; i++)
      expect(await reconcileStoragePool('images', ctx)).toEqual({ kind: 'done' });
    await new Promise((r) => setTimeout(r, 100));
    await lifecycle.stop();
    expect(ctx.writes).toBe(0);
    expect(lifecycle.events).toEqual([]);
    expect(await hostSnapshot(conn)).toEqual(before);
  });

  it('starts the pool again after it was stopped behind its back, with an Event', async () => {
    const uid = String(
      (await k.get<StoragePool>('StoragePool', undefined, 'images'))?.metadata.uid,
    );
    await (await poolByUid(uid))!.destroy();
    await converge(ctx, reconcileStoragePool, 'images', {
      until: async () => (await poolByUid(uid))!.isActive(),
    });
    expect(ctx.events.filter((e) => e.key === 'images').map((e) => e.reason)).toContain(
      'PoolStarted',
    );
    expect(await entryOf('images')).toMatchObject({ state: 'running' });
  });

  it('finishes a half-created pool (defined, never started) without a duplicate', async () => {
    const created = await k.create<StoragePool>('StoragePool', {
      metadata: { name: 'half' },
      spec: { path: '/var/lib/lvo-test/half' },
    });
    const uid = String(created.metadata.uid);
    // What a crash right after the define step leaves behind.
    await conn.defineStoragePoolXML(
      buildPoolXML({
        type: 'dir',
        name: 'half',
        uuid: uid,
        target: { path: '/var/lib/lvo-test/half' },
      }),
    );
    await converge(ctx, reconcileStoragePool, 'half', { until: readyOn('half') });
    const named = (await conn.listAllStoragePools()).filter((p) => p.getName() === 'half');
    expect(named.map((p) => p.getUUIDString())).toEqual([uid]);
    expect(await named[0]!.isActive()).toBe(true);
  });

  it('never adopts or changes a foreign pool with the same name: NameConflict and a Warning Event', async () => {
    const foreign = await conn.lookupStoragePoolByName('default-pool');
    const before = await hostSnapshot(conn);
    await k.create('StoragePool', {
      metadata: { name: 'default-pool' },
      spec: { path: '/var/lib/lvo-test/dp' },
    });
    await ctx.refresh();
    const action = await reconcileStoragePool('default-pool', ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect(await entryOf('default-pool')).toMatchObject({
      conditions: [{ type: 'Ready', status: 'False', reason: 'NameConflict' }],
    });
    expect((await entryOf('default-pool'))?.conditions?.[0]?.message).toContain(
      foreign.getUUIDString(),
    );
    expect(ctx.events.filter((e) => e.key === 'default-pool')).toMatchObject([
      { type: 'Warning', reason: 'NameConflict' },
    ]);
    expect(await hostSnapshot(conn)).toEqual(before);

    // Deleting the clashing object leaves the foreign pool alone too.
    await k.remove('StoragePool', undefined, 'default-pool');
    await converge(ctx, reconcileStoragePool, 'default-pool', { until: gone('default-pool') });
    expect(await hostSnapshot(conn)).toEqual(before);
    expect(await foreign.isActive()).toBe(true);
  });

  it('reports a directory already used by another pool as PathConflict', async () => {
    await k.create('StoragePool', {
      metadata: { name: 'same-path' },
      spec: { path: '/default-pool' },
    });
    await ctx.refresh();
    const action = await reconcileStoragePool('same-path', ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect(await entryOf('same-path')).toMatchObject({
      conditions: [{ status: 'False', reason: 'PathConflict' }],
    });
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).not.toContain('same-path');
    await k.remove('StoragePool', undefined, 'same-path');
    await converge(ctx, reconcileStoragePool, 'same-path', { until: gone('same-path') });
  });

  it('refuses a path that a symbolic link leads into a system directory: PathForbidden', async () => {
    const link = path.join(stateDir, 'pool-to-etc');
    await symlink('/etc', link);
    await k.create('StoragePool', { metadata: { name: 'via-link' }, spec: { path: link } });
    await ctx.refresh();
    expect(requeueMs(await reconcileStoragePool('via-link', ctx))).toBeGreaterThan(0);
    expect(await entryOf('via-link')).toMatchObject({
      conditions: [
        {
          status: 'False',
          reason: 'PathForbidden',
          message: expect.stringContaining(`spec.path ${link} leads to /etc on node ${NODE}`),
        },
      ],
    });
    const top = (await k.get<StoragePool>('StoragePool', undefined, 'via-link'))?.status;
    expect(top?.conditions).toContainEqual(
      expect.objectContaining({ type: 'Stalled', status: 'True', reason: 'PathForbidden' }),
    );
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).not.toContain('via-link');
    await k.remove('StoragePool', undefined, 'via-link');
    await converge(ctx, reconcileStoragePool, 'via-link', { until: gone('via-link') });
  });

  it('refuses to remove a pool while a Volume is in it, then removes it', async () => {
    await k.namespace('apps');
    await k.create('Volume', {
      metadata: { name: 'data', namespace: 'apps' },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi' },
    });
    // A Volume of another node does not hold this node's copy.
    await k.create('Volume', {
      metadata: { name: 'elsewhere', namespace: 'apps' },
      spec: { nodeName: 'node-z', pool: 'images', capacity: '1Gi' },
    });
    const uid = String(
      (await k.get<StoragePool>('StoragePool', undefined, 'images'))?.metadata.uid,
    );
    await k.remove('StoragePool', undefined, 'images');
    await ctx.refresh();
    const action = await reconcileStoragePool('images', ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect(await poolByUid(uid)).toBeDefined();
    const obj = await k.get<StoragePool>('StoragePool', undefined, 'images');
    expect(obj?.metadata.finalizers).toEqual([nodeFinalizer(NODE)]);
    const blocked = obj?.status?.nodes?.[0]?.conditions?.find((c) => c.type === 'DeletionBlocked');
    expect(blocked).toMatchObject({ status: 'True', reason: 'VolumesRemain' });
    expect(blocked?.message).toContain('apps/data');
    expect(blocked?.message).not.toContain('elsewhere');
    expect(
      ctx.events.filter((e) => e.key === 'images' && e.reason === 'VolumesRemain'),
    ).toHaveLength(1);

    await k.remove('Volume', 'apps', 'data');
    await converge(ctx, reconcileStoragePool, 'images', { until: gone('images') });
    expect(await poolByUid(uid)).toBeUndefined();
    expect(ctx.events.filter((e) => e.key === 'images').map((e) => e.reason)).toContain(
      'PoolRemoved',
    );
    await k.remove('Volume', 'apps', 'elsewhere');
  });

  it('says a problem once its status says so, not with every retry of a refused write', async () => {
    const name = `clash-${randomBytes(3).toString('hex')}`;
    await k.create('StoragePool', { metadata: { name }, spec: { path: '/default-pool' } });
    const warned = () =>
      ctx.events.filter((e) => e.key === name && e.reason === 'PathConflict').length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    await toldOnceDespiteRefusals(ctx, reconcileStoragePool, name, warned);
    expect((await entryOf(name))?.conditions?.[0]?.reason).toBe('PathConflict');
    await k.remove('StoragePool', undefined, name);
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
  });

  it('says a problem whose status write was applied but not answered', async () => {
    const name = `lost-${randomBytes(3).toString('hex')}`;
    await k.create('StoragePool', { metadata: { name }, spec: { path: '/default-pool' } });
    const warned = () =>
      ctx.events.filter((e) => e.key === name && e.reason === 'PathConflict').length;
    // The write lands, its answer does not: the next pass finds PathConflict already stored.
    await withStatusUnanswered(ctx, async () => {
      await ctx.refresh();
      await expect(reconcileStoragePool(name, ctx)).rejects.toThrow(/no response/);
    });
    expect((await entryOf(name))?.conditions?.[0]?.reason).toBe('PathConflict');
    await ctx.refresh();
    await reconcileStoragePool(name, ctx);
    expect(warned()).toBe(1);
    await k.remove('StoragePool', undefined, name);
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
  });

  it('says a problem whose node entry was written though the summary write was refused', async () => {
    const name = `half-${randomBytes(3).toString('hex')}`;
    await k.create('StoragePool', { metadata: { name }, spec: { path: '/default-pool' } });
    const warned = () =>
      ctx.events.filter((e) => e.key === name && e.reason === 'PathConflict').length;
    // The summary's write (after the entry's) refused once, as another agent's write between
    // the two would have it refused.
    let refused = 0;
    ctx.failRequest = (req) => {
      const summary = req.query?.fieldManager === `${FIELD_MANAGER}-summary`;
      if (!summary || !req.path.endsWith(`/${name}/status`) || refused++) return undefined;
      return new KubeApiError(409, 'Conflict', 'injected', req.method, req.path);
    };
    try {
      await ctx.refresh();
      await expect(reconcileStoragePool(name, ctx)).rejects.toThrow(/409/);
    } finally {
      ctx.failRequest = undefined;
    }
    expect((await entryOf(name))?.conditions?.[0]?.reason).toBe('PathConflict');
    for (let i = 0; i < 2; i++) {
      await ctx.refresh();
      await reconcileStoragePool(name, ctx);
    }
    expect(warned()).toBe(1);
    await k.remove('StoragePool', undefined, name);
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
  });

  it('says VolumesRemain once its status says so, not with every retry of a refused write', async () => {
    const name = `kept-${randomBytes(3).toString('hex')}`;
    await k.create('StoragePool', {
      metadata: { name },
      spec: { path: `/var/lib/lvo-test/${name}` },
    });
    await converge(ctx, reconcileStoragePool, name, { until: readyOn(name) });
    await k.namespace(name);
    await k.create('Volume', {
      metadata: { name: 'data', namespace: name },
      spec: { nodeName: NODE, pool: name, capacity: '1Gi' },
    });
    await k.remove('StoragePool', undefined, name);
    const warned = () =>
      ctx.events.filter((e) => e.key === name && e.reason === 'VolumesRemain').length;
    await toldOnceDespiteRefusals(ctx, reconcileStoragePool, name, warned);
    expect(
      (await entryOf(name))?.conditions?.find((c) => c.type === 'DeletionBlocked')?.reason,
    ).toBe('VolumesRemain');
    await k.remove('Volume', name, 'data');
    await converge(ctx, reconcileStoragePool, name, { until: gone(name) });
  });

  it('completes deletion when the libvirt pool is already gone', async () => {
    const created = await k.create<StoragePool>('StoragePool', {
      metadata: { name: 'vanishing' },
      spec: { path: '/var/lib/lvo-test/vanishing' },
    });
    await converge(ctx, reconcileStoragePool, 'vanishing', { until: readyOn('vanishing') });
    const pool = (await poolByUid(String(created.metadata.uid)))!;
    await pool.destroy();
    await pool.undefine();
    await k.remove('StoragePool', undefined, 'vanishing');
    await converge(ctx, reconcileStoragePool, 'vanishing', { until: gone('vanishing') });
  });

  it('says Ready at the top level in the same pass (and write) as the node entry', async () => {
    await k.create('StoragePool', {
      metadata: { name: 'one-pass' },
      spec: { path: '/var/lib/lvo-test/one-pass' },
    });
    await ctx.refresh();
    // Finalizer, define, build, start and both status writes: one pass.
    expect(await reconcileStoragePool('one-pass', ctx)).toEqual({ kind: 'done' });
    const stored = await k.get<StoragePool>('StoragePool', undefined, 'one-pass');
    expect(stored?.status?.nodes?.[0]?.conditions?.[0]).toMatchObject({ status: 'True' });
    expect(stored?.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'AllNodesReady',
    });
    await k.remove('StoragePool', undefined, 'one-pass');
    await converge(ctx, reconcileStoragePool, 'one-pass', { until: gone('one-pass') });
  });

  it('leaves the host as it found it once every pool is deleted', async () => {
    await k.remove('StoragePool', undefined, 'half');
    await converge(ctx, reconcileStoragePool, 'half', { until: gone('half') });
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).toEqual(['default-pool']);
  });
});

describe('StoragePool node selection (two agents, each with its own test-driver host)', () => {
  let connB: Connect;
  let ctxB: SnapshotContext;
  let hostB: string;
  beforeAll(async () => {
    // A test:/// URI with a file gives the connection a host of its own: a second node.
    hostB = path.join(stateDir, 'node-b.xml');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(hostB, '<node></node>');
    connB = await Connect.open(`test://${hostB}`);
    ctxB = snapshotContext({
      kubeConfig: cp().kubeConfig,
      conn: connB,
      nodeName: 'node-b',
      stateDir,
    });
    await k.node(NODE, { zone: 'a' });
    await k.node('node-b', { zone: 'b' });
  });
  afterAll(async () => {
    await connB?.close();
  });

  it('materialises only on matching nodes; each agent writes only its own status entry', async () => {
    await k.create('StoragePool', {
      metadata: { name: 'everywhere' },
      spec: { path: '/var/lib/lvo-test/everywhere' },
    });
    await k.create('StoragePool', {
      metadata: { name: 'zone-b' },
      spec: {
        path: '/var/lib/lvo-test/zone-b',
        nodeSelector: { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] },
      },
    });
    await converge(ctx, reconcileStoragePool, 'everywhere', { until: readyOn('everywhere') });
    await converge(ctxB, reconcileStoragePool, 'everywhere', {
      until: readyOn('everywhere', 'node-b'),
    });
    await converge(ctx, reconcileStoragePool, 'zone-b');
    await converge(ctxB, reconcileStoragePool, 'zone-b', { until: readyOn('zone-b', 'node-b') });

    const everywhere = await k.get<StoragePool>('StoragePool', undefined, 'everywhere');
    expect(everywhere?.status?.nodes?.map((n) => n.nodeName).sort()).toEqual([NODE, 'node-b']);
    expect([...(everywhere?.metadata.finalizers ?? [])].sort()).toEqual([
      nodeFinalizer(NODE),
      nodeFinalizer('node-b'),
    ]);
    const zoneB = await k.get<StoragePool>('StoragePool', undefined, 'zone-b');
    expect(zoneB?.status?.nodes?.map((n) => n.nodeName)).toEqual(['node-b']);
    expect(zoneB?.metadata.finalizers).toEqual([nodeFinalizer('node-b')]);
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).not.toContain('zone-b');
    expect((await connB.listAllStoragePools()).map((p) => p.getName()).sort()).toEqual([
      'everywhere',
      'zone-b',
    ]);
  });

  it('removes the pool from a node that stops matching and says so in its entry', async () => {
    await k.node('node-b', { zone: 'c' });
    await converge(ctxB, reconcileStoragePool, 'zone-b', {
      until: async () =>
        (await entryOf('zone-b', 'node-b'))?.conditions?.[0]?.reason === 'NodeNotSelected',
    });
    expect((await connB.listAllStoragePools()).map((p) => p.getName())).toEqual(['everywhere']);
    const zoneB = await k.get<StoragePool>('StoragePool', undefined, 'zone-b');
    expect(zoneB?.metadata.finalizers ?? []).toEqual([]);
    expect(await entryOf('zone-b', 'node-b')).toEqual({
      nodeName: 'node-b',
      observedGeneration: 1,
      conditions: [
        expect.objectContaining({ type: 'Ready', status: 'False', reason: 'NodeNotSelected' }),
      ],
    });
  });

  it('server-side apply of an empty nodes list under a node manager drops only that node entry', async () => {
    // Checked here for the context's owner: this is how an entry could be removed entirely.
    const applied = await cp().kubectl(
      [
        'apply',
        '--server-side',
        '--subresource=status',
        `--field-manager=${nodeFieldManager('node-b')}`,
        '-f',
        '-',
      ],
      {
        input: JSON.stringify({
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'StoragePool',
          metadata: { name: 'everywhere' },
          status: { nodes: [] },
        }),
      },
    );
    expect(applied.code, applied.stderr).toBe(0);
    const after = await k.get<StoragePool>('StoragePool', undefined, 'everywhere');
    expect(after?.status?.nodes?.map((n) => n.nodeName)).toEqual([NODE]);
  });

  it('never removes a pool because the Node object is missing', async () => {
    const { CoreV1Api } = await import('@kubernetes/client-node');
    await k.node('node-b', { zone: 'b' });
    await converge(ctxB, reconcileStoragePool, 'zone-b', { until: readyOn('zone-b', 'node-b') });
    await cp().kubeConfig.makeApiClient(CoreV1Api).deleteNode({ name: 'node-b' });
    await ctxB.refresh();
    const action = await reconcileStoragePool('zone-b', ctxB);
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect((await connB.listAllStoragePools()).map((p) => p.getName())).toContain('zone-b');
    expect((await entryOf('zone-b', 'node-b'))?.conditions?.[0]).toMatchObject({
      status: 'False',
      reason: 'NodeUnknown',
    });
  });
});
