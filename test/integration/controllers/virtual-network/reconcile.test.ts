// The VirtualNetwork controller against a real kube-apiserver and libvirt's test driver.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { VirtualNetwork } from '../../../../src/api/generated/types.js';
import { nodeFinalizer } from '../../../../src/controllers/context.js';
import { desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import { observeNetwork } from '../../../../src/controllers/virtual-network/observe.js';
import { planUpdate } from '../../../../src/controllers/virtual-network/plan.js';
import { reconcileVirtualNetwork } from '../../../../src/controllers/virtual-network/index.js';
import { Connect, isNotFound } from '../../../../src/libvirt/index.js';
import { buildXML } from '../../../../src/libvirt/xml/codec.js';
import { buildNetworkXML, parseNetworkXML } from '../../../../src/libvirt/xml/network.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import {
  converge,
  toldOnceDespiteRefusals,
  snapshotContext,
  type SnapshotContext,
  requeueMs,
} from '../../../harness/controller-context.js';
import { domainXML } from '../../libvirt/fixtures.js';
import { kube, sleep, type Kube } from '../../../harness/kube-objects.js';
import { networksSnapshot, recordNetworkEvents } from './fixtures.js';

const NODE = 'vnet-node-1';
const KIND = 'VirtualNetwork';
const getCp = useControlPlane();
let conn: Connect;
let k: Kube;
let ctx: SnapshotContext;
// The agent's state folder for this file's node, removed with it.
const stateDir = mkdtempSync(join(tmpdir(), 'lvo-vnet-'));
// One listener for the whole file: libvirt refuses a second registration of the binding's
// callback on one connection. Tests look at what arrived after a mark.
let libvirtEvents: { events: string[]; stop(): Promise<void> };

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  k = kube(getCp().kubeConfig);
  ctx = snapshotContext({
    kubeConfig: getCp().kubeConfig,
    conn,
    nodeName: NODE,
    stateDir,
  });
  libvirtEvents = await recordNetworkEvents(conn);
  await listable(ctx);
});

/**
 * Waits until the API server serves lists of the new kinds. Right after the CRDs are
 * Established it may still answer 429 "storage is (re)initializing" for a few seconds.
 */
async function listable(c: SnapshotContext): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await c.refresh();
    } catch (err) {
      if ((err as { code?: number }).code !== 429 || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

afterAll(async () => {
  await libvirtEvents?.stop();
  await conn?.close();
  rmSync(stateDir, { recursive: true, force: true });
});

/**
 * Network lifecycle events libvirt reported since `mark`: once `expected` have arrived (up to
 * 10 s on a busy host), plus 100 ms for any that should not be there.
 */
async function libvirtEventsSince(mark: number, expected = 0): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  while (libvirtEvents.events.length - mark < expected && Date.now() < deadline) await sleep(20);
  await sleep(100);
  return libvirtEvents.events.slice(mark);
}

const fetchVnet = (name: string) => k.get<VirtualNetwork>(KIND, undefined, name);
const entryOf = (v: VirtualNetwork | undefined) =>
  v?.status?.nodes?.find((n) => n.nodeName === NODE);
const condition = (v: VirtualNetwork | undefined, type: string) =>
  entryOf(v)?.conditions?.find((c) => c.type === type);
const readyTrue = (name: string) => async () =>
  condition(await fetchVnet(name), 'Ready')?.status === 'True';

async function lookup(uuid: string) {
  return conn.lookupNetworkByUUIDString(uuid).catch((err: unknown) => {
    if (isNotFound(err, 'network')) return undefined;
    throw err;
  });
}

/** One pass on a fresh snapshot, as the queue would run it. */
async function pass(name: string) {
  await ctx.refresh();
  return reconcileVirtualNetwork(name, ctx);
}

async function deleteAndConverge(name: string) {
  await k.remove(KIND, undefined, name);
  await converge(ctx, reconcileVirtualNetwork, name, {
    until: async () => !(await fetchVnet(name)),
  });
}

describe('the example NAT network', () => {
  let uid: string;

  it('becomes active with our UUID, its bridge and a correct status entry', async () => {
    const manifest = parse(
      readFileSync(
        new URL('../../../../manifests/examples/10-network-nat.yaml', import.meta.url),
        'utf8',
      ),
    ) as {
      metadata: { name: string };
      spec: object;
    };
    const mark = libvirtEvents.events.length;
    const created = await k.create<VirtualNetwork>(KIND, manifest);
    uid = String(created.metadata.uid);
    await converge(ctx, reconcileVirtualNetwork, 'lab', { until: readyTrue('lab') });

    const network = await lookup(uid);
    expect(network?.getName()).toBe('lab');
    expect(network?.getUUIDString()).toBe(uid);
    expect(await network?.isActive()).toBe(true);
    expect(await network?.getAutostart()).toBe(true);
    expect(await network?.getBridgeName()).toBe('virbr-lab');
    const doc = parseNetworkXML(await network!.getXMLDesc());
    expect(doc.stamp).toEqual({ kind: 'VirtualNetwork', name: 'lab', uid });
    expect(doc.forward).toBe('nat');
    expect(doc.ips).toEqual([
      {
        address: '192.168.150.1',
        prefix: 24,
        dhcp: {
          ranges: [{ start: '192.168.150.100', end: '192.168.150.199' }],
          hosts: [{ mac: '52:54:00:15:00:01', name: 'web-1', ip: '192.168.150.10' }],
        },
      },
    ]);
    expect(doc.dns?.hosts).toEqual([{ ip: '192.168.150.10', hostnames: ['web-1.lab.internal'] }]);

    const stored = await fetchVnet('lab');
    expect(stored?.metadata.finalizers).toContain(nodeFinalizer(NODE));
    expect(entryOf(stored)).toMatchObject({
      nodeName: NODE,
      active: true,
      bridge: 'virbr-lab',
      uuid: uid,
      observedGeneration: stored?.metadata.generation,
    });
    expect(condition(stored, 'Ready')).toMatchObject({ status: 'True', reason: 'Active' });
    expect(condition(stored, 'RestartRequired')).toMatchObject({ status: 'False' });
    expect(ctx.events.filter((e) => e.key === 'lab').map((e) => e.reason)).toContain('Created');
    expect(await libvirtEventsSince(mark, 2)).toEqual(['lab defined', 'lab started']);
  });

  it('re-reconciling the converged network writes nothing to libvirt or the API server', async () => {
    const before = await networksSnapshot(conn);
    const mark = libvirtEvents.events.length;
    const writes = ctx.writes;
    for (let i = 0; i < 3; i++) expect(await pass('lab')).toEqual({ kind: 'done' });
    expect(ctx.writes).toBe(writes);
    expect(await libvirtEventsSince(mark)).toEqual([]);
    expect(await networksSnapshot(conn)).toEqual(before);
    // The plan itself is empty: act only ever runs planned steps.
    const vnet = (await fetchVnet('lab'))!;
    const observed = await observeNetwork(conn, vnet);
    expect(observed.state).toBe('ours');
    if (observed.state === 'ours')
      expect(planUpdate(desiredNetwork(vnet), true, observed).steps).toEqual([]);
  });

  it('applies DHCP and DNS host changes live, without restarting the network', async () => {
    const mark = libvirtEvents.events.length;
    await k.patchSpec(KIND, undefined, 'lab', {
      ipv4: {
        cidr: '192.168.150.1/24',
        dhcp: {
          rangeStart: '192.168.150.100',
          rangeEnd: '192.168.150.199',
          hosts: [
            { macAddress: '52:54:00:15:00:01', ipAddress: '192.168.150.11', hostname: 'web-1' },
            { macAddress: '52:54:00:15:00:02', ipAddress: '192.168.150.12', hostname: 'web-2' },
          ],
        },
      },
      dns: { hosts: [{ ipAddress: '192.168.150.12', hostnames: ['web-2.lab.internal'] }] },
    });
    await converge(ctx, reconcileVirtualNetwork, 'lab', {
      until: async () => entryOf(await fetchVnet('lab'))?.observedGeneration === 2,
    });
    const network = (await lookup(uid))!;
    const doc = parseNetworkXML(await network.getXMLDesc());
    expect(doc.ips[0]?.dhcp?.hosts).toEqual([
      { mac: '52:54:00:15:00:01', name: 'web-1', ip: '192.168.150.11' },
      { mac: '52:54:00:15:00:02', name: 'web-2', ip: '192.168.150.12' },
    ]);
    expect(doc.dns?.hosts).toEqual([{ ip: '192.168.150.12', hostnames: ['web-2.lab.internal'] }]);
    // Not restarted: still active on the same bridge, and libvirt saw no stop, start or define.
    expect(await network.isActive()).toBe(true);
    expect(await network.getBridgeName()).toBe('virbr-lab');
    expect(await libvirtEventsSince(mark)).toEqual([]);
    expect(ctx.events.filter((e) => e.key === 'lab').map((e) => e.reason)).toContain(
      'HostsUpdated',
    );
    expect(condition(await fetchVnet('lab'), 'RestartRequired')?.status).toBe('False');
  });

  it('reports a restart-time change as RestartRequired and applies it only when the network restarts', async () => {
    const mark = libvirtEvents.events.length;
    await k.patchSpec(KIND, undefined, 'lab', { mtu: 9000 });
    const pending = async () =>
      condition(await fetchVnet('lab'), 'RestartRequired')?.status === 'True';
    await converge(ctx, reconcileVirtualNetwork, 'lab', { until: pending });
    const stored = await fetchVnet('lab');
    expect(condition(stored, 'RestartRequired')).toMatchObject({ reason: 'PendingRestart' });
    expect(condition(stored, 'RestartRequired')?.message).toContain('spec.mtu');
    expect(condition(stored, 'Ready')?.status).toBe('True');
    const network = (await lookup(uid))!;
    expect(await network.isActive()).toBe(true);
    expect(parseNetworkXML(await network.getXMLDesc()).mtu).toBeUndefined();
    // Redefined at most (the test driver cannot show the saved definition), never stopped.
    expect((await libvirtEventsSince(mark)).filter((e) => e !== 'lab defined')).toEqual([]);
    expect(ctx.events.some((e) => e.key === 'lab' && e.reason === 'RestartRequired')).toBe(true);

    // The user restarts it (here: stops it behind the operator's back); the agent starts it
    // again with the saved definition.
    await network.destroy();
    await converge(ctx, reconcileVirtualNetwork, 'lab', {
      until: async () => condition(await fetchVnet('lab'), 'RestartRequired')?.status === 'False',
    });
    expect(await network.isActive()).toBe(true);
    expect(parseNetworkXML(await network.getXMLDesc()).mtu).toBe(9000);
    expect(ctx.events.filter((e) => e.key === 'lab').map((e) => e.reason)).toContain('Started');
  });

  it('waits for running VirtualMachines on this node, then deletion removes the network', async () => {
    await k.namespace('vnet-test');
    const vm = await k.create<{ metadata: { uid: string } }>('VirtualMachine', {
      metadata: { name: 'user', namespace: 'vnet-test' },
      spec: {
        nodeName: NODE,
        vcpus: 1,
        memory: '64Mi',
        interfaces: [{ name: 'eth0', network: 'lab' }],
      },
    });
    const domain = await conn.createDomainXML(
      domainXML({ name: 'vnet-user', uuid: vm.metadata.uid }),
    );

    await k.remove(KIND, undefined, 'lab');
    expect(await pass('lab')).toMatchObject({ kind: 'requeueAfter', ms: expect.any(Number) });
    expect(condition(await fetchVnet('lab'), 'Ready')).toMatchObject({
      status: 'False',
      reason: 'InUse',
    });
    expect(condition(await fetchVnet('lab'), 'Ready')?.message).toContain('vnet-test/user');
    expect(await (await lookup(uid))?.isActive()).toBe(true);

    await domain.destroy(); // a transient domain: gone once stopped
    await converge(ctx, reconcileVirtualNetwork, 'lab', {
      until: async () => !(await fetchVnet('lab')),
    });
    expect(await lookup(uid)).toBeUndefined();
    await k.remove('VirtualMachine', 'vnet-test', 'user');
  });
});

describe('deletion while guests are attached by their running definition', () => {
  it('waits for every running domain with an interface on it, whatever VM specs now say', async () => {
    await k.namespace('vnet-test');
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'moved' },
      spec: { mode: 'isolated', ipv4: { cidr: '10.69.0.1/24' } },
    });
    await converge(ctx, reconcileVirtualNetwork, 'moved', { until: readyTrue('moved') });
    const uid = String(created.metadata.uid);
    // A VirtualMachine whose NIC was switched to another network: the change waits for a
    // restart, so its running guest is still on 'moved'. And a domain the operator did not
    // define, attached to the network by hand.
    const vm = await k.create<{ metadata: { uid: string } }>('VirtualMachine', {
      metadata: { name: 'switched', namespace: 'vnet-test' },
      spec: {
        nodeName: NODE,
        vcpus: 1,
        memory: '64Mi',
        interfaces: [{ name: 'eth0', network: 'elsewhere' }],
      },
    });
    const onMoved = (name: string, uuid: string) =>
      `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid>` +
      `<memory unit='KiB'>65536</memory><os><type arch='i686'>hvm</type></os><devices>` +
      `<interface type='network'><source network='moved'/></interface></devices></domain>`;
    const switched = await conn.createDomainXML(onMoved('vnet-switched', vm.metadata.uid));
    const handmade = await conn.createDomainXML(onMoved('vnet-handmade', randomUUID()));

    await k.remove(KIND, undefined, 'moved');
    expect(await pass('moved')).toMatchObject({ kind: 'requeueAfter', ms: expect.any(Number) });
    const ready = condition(await fetchVnet('moved'), 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'InUse' });
    expect(ready?.message).toContain('vnet-test/switched');
    expect(ready?.message).toContain("libvirt domain 'vnet-handmade'");
    expect(await (await lookup(uid))?.isActive()).toBe(true);

    await switched.destroy();
    await handmade.destroy();
    await converge(ctx, reconcileVirtualNetwork, 'moved', {
      until: async () => !(await fetchVnet('moved')),
    });
    expect(await lookup(uid)).toBeUndefined();
    await k.remove('VirtualMachine', 'vnet-test', 'switched');
  });
});

describe('a foreign network with the same name', () => {
  it('is reported as NameConflict and never touched, also when the object is deleted', async () => {
    const before = await networksSnapshot(conn);
    const foreign = await conn.lookupNetworkByName('default');
    const foreignXML = await foreign.getXMLDesc();
    await k.create(KIND, { metadata: { name: 'default' }, spec: { mode: 'isolated' } });

    expect(await pass('default')).toMatchObject({ kind: 'requeueAfter', ms: expect.any(Number) });
    const stored = await fetchVnet('default');
    expect(condition(stored, 'Ready')).toMatchObject({ status: 'False', reason: 'NameConflict' });
    expect(entryOf(stored)).toMatchObject({ active: false });
    expect(entryOf(stored)?.uuid).toBeUndefined();
    expect(
      ctx.events.some(
        (e) => e.key === 'default' && e.type === 'Warning' && e.reason === 'NameConflict',
      ),
    ).toBe(true);
    // A second pass in the same state writes nothing more (no status change, no new Event).
    const writes = ctx.writes;
    await pass('default');
    expect(ctx.writes).toBe(writes);

    await deleteAndConverge('default');
    expect(await foreign.getXMLDesc()).toBe(foreignXML);
    expect(await foreign.isActive()).toBe(true);
    expect(await networksSnapshot(conn)).toEqual(before);
  });
  it('is reported as NameConflict even in a mode the operator does not model', async () => {
    const foreign = await conn.defineNetworkXML(
      buildXML('network', {
        name: 'open-fwd',
        forward: { '@mode': 'open' },
        bridge: { '@name': 'lvoopen' },
        ip: { '@address': '10.55.0.1', '@prefix': 24 },
      }),
    );
    const foreignXML = await foreign.getXMLDesc();
    await k.create(KIND, { metadata: { name: 'open-fwd' }, spec: { mode: 'isolated' } });
    await pass('open-fwd');
    expect(condition(await fetchVnet('open-fwd'), 'Ready')).toMatchObject({
      status: 'False',
      reason: 'NameConflict',
    });
    await deleteAndConverge('open-fwd');
    expect(await foreign.getXMLDesc()).toBe(foreignXML);
    await foreign.undefine();
  });
});

describe('node selection', () => {
  it('creates nothing on a node the selector does not match', async () => {
    await k.node(NODE, { 'virt.dev/role': 'compute' });
    const before = await networksSnapshot(conn);
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'elsewhere' },
      spec: { mode: 'isolated', nodeSelector: { matchLabels: { 'virt.dev/role': 'storage' } } },
    });
    const writes = ctx.writes;
    expect(await pass('elsewhere')).toEqual({ kind: 'done' });
    // One write: the summary saying that the selector selects no Node (no entry, no finalizer).
    expect(ctx.writes).toBe(writes + 1);
    expect(await networksSnapshot(conn)).toEqual(before);
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();
    const stored = await fetchVnet('elsewhere');
    expect(stored?.metadata.finalizers ?? []).toEqual([]);
    expect(stored?.status?.nodes ?? []).toEqual([]);
    const top = (type: string) => stored?.status?.conditions?.find((c) => c.type === type);
    expect(top('Ready')).toMatchObject({
      status: 'False',
      reason: 'NoMatchingNodes',
    });
    expect(top('Stalled')).toMatchObject({ status: 'True' });
    // Converged: the next pass writes nothing.
    expect(await pass('elsewhere')).toEqual({ kind: 'done' });
    expect(ctx.writes).toBe(writes + 1);
    await deleteAndConverge('elsewhere');
  });

  it('removes the network from a node the selector stops matching', async () => {
    await k.node(NODE, { 'virt.dev/role': 'compute' });
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'compute-net' },
      spec: {
        mode: 'isolated',
        nodeSelector: {
          matchExpressions: [{ key: 'virt.dev/role', operator: 'In', values: ['compute'] }],
        },
      },
    });
    const uid = String(created.metadata.uid);
    await converge(ctx, reconcileVirtualNetwork, 'compute-net', {
      until: readyTrue('compute-net'),
    });
    expect(await (await lookup(uid))?.isActive()).toBe(true);
    expect(await (await lookup(uid))?.getBridgeName()).toMatch(/^lvo[0-9a-f]{10}$/);

    await k.node(NODE, { 'virt.dev/role': 'storage' });
    await converge(ctx, reconcileVirtualNetwork, 'compute-net', {
      until: async () =>
        condition(await fetchVnet('compute-net'), 'Ready')?.reason === 'NotSelected',
    });
    expect(await lookup(uid)).toBeUndefined();
    const stored = await fetchVnet('compute-net');
    expect(stored?.metadata.finalizers ?? []).not.toContain(nodeFinalizer(NODE));
    expect(entryOf(stored)).toMatchObject({ active: false });
    await deleteAndConverge('compute-net');
    await k.node(NODE, {});
  });
});

describe('two nodes', () => {
  it('keep their own status entries and finalizers, and each cleans its own host', async () => {
    // A second host: a test-driver connection with its own state, loaded from an empty node.
    const dir = mkdtempSync(join(tmpdir(), 'lvo-vnet-host-'));
    writeFileSync(join(dir, 'host.xml'), '<node/>');
    const connB = await Connect.open(`test://${join(dir, 'host.xml')}`);
    try {
      const ctxB = snapshotContext({
        kubeConfig: getCp().kubeConfig,
        conn: connB,
        nodeName: 'vnet-node-2',
        stateDir: dir,
      });
      const created = await k.create<VirtualNetwork>(KIND, {
        metadata: { name: 'shared' },
        spec: { mode: 'isolated' },
      });
      const uid = String(created.metadata.uid);
      const readyOn = (node: string) => async () =>
        (await fetchVnet('shared'))?.status?.nodes
          ?.find((n) => n.nodeName === node)
          ?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      await converge(ctx, reconcileVirtualNetwork, 'shared', { until: readyOn(NODE) });
      await converge(ctxB, reconcileVirtualNetwork, 'shared', { until: readyOn('vnet-node-2') });

      const stored = await fetchVnet('shared');
      expect(stored?.status?.nodes?.map((n) => [n.nodeName, n.active, n.uuid]).sort()).toEqual([
        [NODE, true, uid],
        ['vnet-node-2', true, uid],
      ]);
      expect(stored?.metadata.finalizers?.sort()).toEqual(
        [nodeFinalizer(NODE), nodeFinalizer('vnet-node-2')].sort(),
      );
      expect((await connB.lookupNetworkByUUIDString(uid)).getName()).toBe('shared');
      // The other node's entry is not this node's business: still nothing to write here.
      const writes = ctx.writes;
      expect(await pass('shared')).toEqual({ kind: 'done' });
      expect(ctx.writes).toBe(writes);

      await k.remove(KIND, undefined, 'shared');
      await converge(ctx, reconcileVirtualNetwork, 'shared');
      expect((await fetchVnet('shared'))?.metadata.finalizers).toEqual([
        nodeFinalizer('vnet-node-2'),
      ]);
      await converge(ctxB, reconcileVirtualNetwork, 'shared', {
        until: async () => !(await fetchVnet('shared')),
      });
      expect(await lookup(uid)).toBeUndefined();
      expect(await connB.listAllNetworks()).toEqual([]);
    } finally {
      await connB.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('resuming after a crash', () => {
  it('finishes a network that was defined but never started, with no duplicate', async () => {
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'half-made' },
      spec: { mode: 'isolated', autostart: false, ipv4: { cidr: '10.77.0.1/24' } },
    });
    // The first pass died right after define.
    await conn.defineNetworkXML(buildNetworkXML(desiredNetwork(created)));
    await converge(ctx, reconcileVirtualNetwork, 'half-made', { until: readyTrue('half-made') });
    const mine = (await conn.listAllNetworks()).filter((n) => n.getName() === 'half-made');
    expect(mine).toHaveLength(1);
    expect(mine[0]?.getUUIDString()).toBe(created.metadata.uid);
    expect(await mine[0]?.isActive()).toBe(true);
    expect(await mine[0]?.getAutostart()).toBe(false);
    await deleteAndConverge('half-made');
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();
  });

  it('lets deletion finish when the network is already gone from the host', async () => {
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'vanished' },
      spec: { mode: 'isolated' },
    });
    await converge(ctx, reconcileVirtualNetwork, 'vanished', { until: readyTrue('vanished') });
    const network = (await lookup(String(created.metadata.uid)))!;
    await network.destroy();
    await network.undefine();
    await deleteAndConverge('vanished');
  });
});

describe('what the host cannot do', () => {
  it('reports an MTU on a host bridge as Unsupported without calling libvirt to create', async () => {
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'bridged' },
      spec: { mode: 'bridge', bridge: 'br-lvo-test', mtu: 9000 },
    });
    expect(await pass('bridged')).toEqual({ kind: 'done' });
    expect(condition(await fetchVnet('bridged'), 'Ready')).toMatchObject({
      status: 'False',
      reason: 'Unsupported',
    });
    expect(condition(await fetchVnet('bridged'), 'Ready')?.message).toContain('spec.mtu');
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();

    // Fixing the spec is all it takes.
    await k.patchSpec(KIND, undefined, 'bridged', { mtu: null });
    await converge(ctx, reconcileVirtualNetwork, 'bridged', { until: readyTrue('bridged') });
    expect(entryOf(await fetchVnet('bridged'))).toMatchObject({
      active: true,
      bridge: 'br-lvo-test',
    });
    await deleteAndConverge('bridged');
  });

  it('says a problem once its status says so, not with every retry of a refused write', async () => {
    const name = `mtu-${randomBytes(3).toString('hex')}`;
    await k.create<VirtualNetwork>(KIND, {
      metadata: { name },
      spec: { mode: 'bridge', bridge: 'br-lvo-test', mtu: 9000 },
    });
    const warned = () =>
      ctx.events.filter((e) => e.key === name && e.reason === 'Unsupported').length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    await toldOnceDespiteRefusals(ctx, reconcileVirtualNetwork, name, warned);
    expect(condition(await fetchVnet(name), 'Ready')?.reason).toBe('Unsupported');
    await deleteAndConverge(name);
  });

  it('refuses mode bridge on the bridge another libvirt network made for itself (BridgeInUse)', async () => {
    // The test driver's running 'default' network (NAT) made virbr0: guests attached to it as
    // a "host bridge" would be on that network, and lose their link whenever it stops.
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'onto-default' },
      spec: { mode: 'bridge', bridge: 'virbr0' },
    });
    await pass('onto-default');
    const ready = condition(await fetchVnet('onto-default'), 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'BridgeInUse' });
    expect(ready?.message).toContain("libvirt network 'default'");
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();

    await k.patchSpec(KIND, undefined, 'onto-default', { bridge: 'br-lvo-own' });
    await converge(ctx, reconcileVirtualNetwork, 'onto-default', {
      until: readyTrue('onto-default'),
    });
    await deleteAndConverge('onto-default');
  });

  it('reports a DHCP range libvirt would refuse as InvalidAddress, retries with backoff, recovers', async () => {
    // The CRD accepts a range that starts at the network address (it is inside the cidr);
    // libvirt refuses it at define, in words a retry cannot change, so the agent judges it
    // first and calls libvirt for nothing.
    const ipv4 = (rangeStart: string) => ({
      cidr: '10.66.0.1/24',
      dhcp: { rangeStart, rangeEnd: '10.66.0.20' },
    });
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'refused' },
      spec: { mode: 'nat', ipv4: ipv4('10.66.0.0') },
    });
    const action = await pass('refused');
    expect(requeueMs(action)).toBeGreaterThanOrEqual(5_000);
    const ready = condition(await fetchVnet('refused'), 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'InvalidAddress' });
    expect(ready?.message).toContain('is the network address');
    expect(
      ctx.events.some(
        (e) => e.key === 'refused' && e.type === 'Warning' && e.reason === 'InvalidAddress',
      ),
    ).toBe(true);
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();

    await k.patchSpec(KIND, undefined, 'refused', { ipv4: ipv4('10.66.0.10') });
    await converge(ctx, reconcileVirtualNetwork, 'refused', { until: readyTrue('refused') });
    expect(await (await lookup(String(created.metadata.uid)))?.isActive()).toBe(true);
    await deleteAndConverge('refused');
  });
});

describe('dual stack and the network form', () => {
  it('a network-form IPv4 and an IPv6 network with DHCPv6 converge and then plan nothing', async () => {
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'dual' },
      spec: {
        mode: 'nat',
        ipv4: {
          cidr: '10.67.0.0/24',
          dhcp: { rangeStart: '10.67.0.100', rangeEnd: '10.67.0.199' },
        },
        ipv6: {
          cidr: 'FD00:67:0:0::/64',
          dhcp: { rangeStart: 'fd00:67::0100', rangeEnd: 'fd00:67::1ff' },
        },
      },
    });
    await converge(ctx, reconcileVirtualNetwork, 'dual', { until: readyTrue('dual') });
    const network = await lookup(String(created.metadata.uid));
    const doc = parseNetworkXML(await network!.getXMLDesc());
    expect(doc.ips).toEqual([
      {
        address: '10.67.0.1',
        prefix: 24,
        dhcp: { ranges: [{ start: '10.67.0.100', end: '10.67.0.199' }], hosts: [] },
      },
      {
        family: 'ipv6',
        address: 'fd00:67::1',
        prefix: 64,
        dhcp: { ranges: [{ start: 'fd00:67::100', end: 'fd00:67::1ff' }], hosts: [] },
      },
    ]);
    // libvirt's read-back (its own spelling) is what the operator wrote: nothing to do.
    const vnet = (await fetchVnet('dual'))!;
    const observed = await observeNetwork(conn, vnet);
    expect(observed.state).toBe('ours');
    if (observed.state === 'ours')
      expect(planUpdate(desiredNetwork(vnet), true, observed).steps).toEqual([]);
    await deleteAndConverge('dual');
  });

  it('reports a reversed DHCPv6 range as InvalidAddress without creating anything', async () => {
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name: 'reversed6' },
      spec: {
        mode: 'isolated',
        ipv6: {
          cidr: 'fd00:68::1/64',
          dhcp: { rangeStart: 'fd00:68::1ff', rangeEnd: 'fd00:68::100' },
        },
      },
    });
    await pass('reversed6');
    const ready = condition(await fetchVnet('reversed6'), 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'InvalidAddress' });
    expect(ready?.message).toContain('spec.ipv6.dhcp.rangeEnd');
    expect(await lookup(String(created.metadata.uid))).toBeUndefined();
    await deleteAndConverge('reversed6');
  });
});
