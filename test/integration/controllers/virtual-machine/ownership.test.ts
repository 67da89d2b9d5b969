// What the VirtualMachine controller must never do, and what it does with input only the host
// can judge: a foreign domain with the machine's name or UUID is reported and never modified
// or deleted; libvirt's own objects stay as they were; missing or unready Volumes and
// networks, and unsupported fields, become conditions and Events, not crashes; machines of
// other nodes are not touched; interrupted passes resume without duplicates.
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { HOST_FINALIZER } from '../../../../src/controllers/context.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import {
  desiredDomain,
  machineInputs,
} from '../../../../src/controllers/virtual-machine/desired.js';
import { observeDomain } from '../../../../src/controllers/virtual-machine/observe.js';
import { domainName } from '../../../../src/api/names.js';
import { Connect, DomainXMLFlags, type Domain } from '../../../../src/libvirt/index.js';
import { buildDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext, requeueMs } from '../../../harness/controller-context.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { openMachineBench, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-own';
/** The test driver's own running domain, present in every process. */
const TEST_DOMAIN_UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;
let stateDir: string;
let driverObjects: string[];

/** The test driver's own domain, network and pool, as text. */
async function driverSnapshot(): Promise<string[]> {
  const domain = await conn.lookupDomainByName('test');
  const network = await conn.lookupNetworkByName('default');
  const pool = await conn.lookupStoragePoolByName('default-pool');
  return [
    await domain.getXMLDesc(),
    await domain.getXMLDesc(DomainXMLFlags.INACTIVE),
    JSON.stringify(await domain.getState()),
    await network.getXMLDesc(),
    await pool.getXMLDesc(),
  ];
}

beforeAll(async () => {
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k, stateDir } = bench);
  driverObjects = await driverSnapshot();
});

afterAll(async () => {
  await bench?.close();
});

async function createVM(name: string, spec: Record<string, unknown> = {}) {
  return k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS },
    spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi', ...spec },
  });
}

const key = (name: string) => `${NS}/${name}`;
const vmOf = (name: string) => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);
const stored = (name: string, test: (vm: VirtualMachine | undefined) => boolean) => async () => {
  await ctx.refresh();
  return test(vmOf(name));
};
const ready = (name: string) => stored(name, (vm) => condition(vm, 'Ready')?.status === 'True');
const eventsOf = (name: string) => ctx.events.filter((e) => e.key === key(name));

/** One pass on a fresh snapshot, then a fresh snapshot to read what it wrote. */
async function pass(name: string) {
  await ctx.refresh();
  const action = await reconcileVirtualMachine(key(name), ctx);
  await ctx.refresh();
  return action;
}

async function domainText(domain: Domain): Promise<string[]> {
  return [
    await domain.getXMLDesc(),
    await domain.getXMLDesc(DomainXMLFlags.INACTIVE),
    JSON.stringify(await domain.getState()),
  ];
}

describe('VirtualMachine ownership and host-judged input on test:///default', () => {
  it('reports a foreign domain with its name as NameConflict, and never modifies or deletes it', async () => {
    const foreignUuid = randomUUID();
    const foreign = await conn.defineDomainXML(
      buildDomainXML({
        type: 'qemu',
        name: `${NS}_clash`,
        uuid: foreignUuid,
        memoryKiB: 65536,
        vcpu: { current: 1, max: 1 },
        os: { type: 'hvm', arch: 'x86_64' },
        features: { acpi: false, apic: false },
        devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
      }),
    );
    await foreign.create();
    const before = await domainText(foreign);
    await createVM('clash');
    rec.reset();

    const action = await pass('clash');
    expect(requeueMs(action)).toBeGreaterThan(0);
    const vm = vmOf('clash');
    expect(vm?.status?.phase).toBe('Failed');
    expect(condition(vm, 'Ready')).toMatchObject({ status: 'False', reason: 'NameConflict' });
    expect(condition(vm, 'Synced')).toMatchObject({ status: 'False', reason: 'NameConflict' });
    expect(condition(vm, 'Synced')?.message).toContain(foreignUuid);
    expect(eventsOf('clash').map((e) => `${e.type} ${e.reason}`)).toEqual(['Warning NameConflict']);

    // Again: the same condition, no new Event, no status write.
    const writes = ctx.writes;
    await pass('clash');
    expect(ctx.writes).toBe(writes);
    expect(eventsOf('clash')).toHaveLength(1);

    await k.remove('VirtualMachine', NS, 'clash');
    await converge(ctx, reconcileVirtualMachine, key('clash'), {
      until: stored('clash', (v) => !v),
    });
    expect(rec.writes()).toEqual([]);
    const still = await conn.lookupDomainByUUIDString(foreignUuid);
    expect(await domainText(still)).toEqual(before);
  });

  it('reports a domain with its UUID but without our stamp as UUIDConflict and leaves it alone', async () => {
    await createVM('twin', { uuid: TEST_DOMAIN_UUID });
    rec.reset();
    await pass('twin');
    const vm = vmOf('twin');
    expect(condition(vm, 'Synced')).toMatchObject({ status: 'False', reason: 'UUIDConflict' });
    expect(condition(vm, 'Synced')?.message).toContain("'test'");
    await k.remove('VirtualMachine', NS, 'twin');
    await converge(ctx, reconcileVirtualMachine, key('twin'), {
      until: stored('twin', (v) => !v),
    });
    expect(rec.writes()).toEqual([]);
    expect(await driverSnapshot()).toEqual(driverObjects);
  });

  it('takes a domain undefined between its lookup and its first read as absent, not as an error', async () => {
    // Two objects naming one UUID: the other one's deletion can undefine the domain while this
    // pass holds its handle. libvirt then answers the next read with VIR_ERR_NO_DOMAIN.
    const uuid = randomUUID();
    const vm = await createVM('raced', { uuid });
    const lookups: string[] = [];
    const racing = new Proxy(conn, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop !== 'lookupDomainByUUIDString' && prop !== 'lookupDomainByName') {
          return typeof v === 'function' ? v.bind(target) : v;
        }
        return async (id: string) => {
          lookups.push(String(prop));
          const found = await (v as (id: string) => Promise<Domain>).call(target, id);
          await found.undefine();
          return found;
        };
      },
    });
    for (const name of [`${NS}_someone-else`, domainName(vm)]) {
      const defined = await conn.defineDomainXML(
        buildDomainXML({
          type: 'qemu',
          name,
          uuid: name === domainName(vm) ? randomUUID() : uuid,
          memoryKiB: 65536,
          vcpu: { current: 1, max: 1 },
          os: { type: 'hvm', arch: 'x86_64' },
          features: { acpi: false, apic: false },
          devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
        }),
      );
      expect(await defined.isPersistent()).toBe(true);
    }
    expect(await observeDomain(racing, vm)).toEqual({ state: 'absent' });
    expect(lookups).toEqual(['lookupDomainByUUIDString', 'lookupDomainByName']);
    await k.remove('VirtualMachine', NS, 'raced');
    await converge(ctx, reconcileVirtualMachine, key('raced'), {
      until: stored('raced', (v) => !v),
    });
  });

  it('waits with VolumeNotReady / NetworkNotReady, naming each field, until the references are ready', async () => {
    await createVM('late', {
      disks: [{ name: 'root', volume: 'late-root' }],
      interfaces: [{ name: 'eth0', network: 'late-net' }],
    });
    const action = await pass('late');
    expect(requeueMs(action)).toBeGreaterThan(0);
    let vm = vmOf('late');
    expect(vm?.status?.phase).toBe('Pending');
    expect(condition(vm, 'Synced')).toMatchObject({ status: 'False', reason: 'VolumeNotReady' });
    expect(condition(vm, 'Synced')?.message).toBe(
      `spec.disks[0].volume: Volume 'late-root' does not exist in namespace '${NS}' on node '${NODE}'; ` +
        "spec.interfaces[0].network: VirtualNetwork 'late-net' does not exist",
    );
    await expect(conn.lookupDomainByName(`${NS}_late`)).rejects.toMatchObject({ code: 42 });
    expect(eventsOf('late').map((e) => `${e.type} ${e.reason}`)).toEqual([
      'Warning VolumeNotReady',
    ]);

    // A Volume on another node, and a network not active on this one.
    await k.create('Volume', {
      metadata: { name: 'late-root', namespace: NS },
      spec: { nodeName: 'node-b', pool: 'images', capacity: '1Gi' },
    });
    await k.create('VirtualNetwork', {
      metadata: { name: 'late-net' },
      spec: { mode: 'isolated' },
    });
    await k.patchStatus('VirtualNetwork', undefined, 'late-net', {
      nodes: [{ nodeName: 'node-b', active: true }],
    });
    await pass('late');
    vm = vmOf('late');
    expect(condition(vm, 'Synced')?.message).toBe(
      "spec.disks[0].volume: Volume 'late-root' is on node 'node-b', not on this machine's node " +
        "'node-a'; a machine can only use Volumes on its own node: name a Volume on node " +
        "'node-a' (spec.nodeName cannot change: create one there); " +
        "spec.interfaces[0].network: VirtualNetwork 'late-net' is not active on node 'node-a'",
    );

    // On this node but still importing; the network comes up here.
    await k.remove('Volume', NS, 'late-root');
    await k.create('Volume', {
      metadata: { name: 'late-root', namespace: NS },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi' },
    });
    await k.patchStatus('Volume', NS, 'late-root', { phase: 'Importing' });
    await k.patchStatus('VirtualNetwork', undefined, 'late-net', {
      nodes: [{ nodeName: NODE, active: true }],
    });
    await pass('late');
    expect(condition(vmOf('late'), 'Synced')?.message).toBe(
      "spec.disks[0].volume: Volume 'late-root' is not ready yet (phase Importing)",
    );

    await k.patchStatus('Volume', NS, 'late-root', {
      phase: 'Available',
      path: '/var/lib/lvo-test/late-root.qcow2',
    });
    await converge(ctx, reconcileVirtualMachine, key('late'), { until: ready('late') });
    vm = vmOf('late');
    expect(vm?.status?.phase).toBe('Running');
    expect(condition(vm, 'Synced')?.status).toBe('True');
  });

  it('starts no machine onto a network being deleted; one already running on it stays', async () => {
    // A finalizer of the network controller keeps the deleted network (still active, waiting
    // InUse for its guests) in the API server.
    const holder = 'node.virt.dev/node-a';
    await k.create('VirtualNetwork', {
      metadata: { name: 'leaving-net', finalizers: [holder] },
      spec: { mode: 'isolated' },
    });
    await k.patchStatus('VirtualNetwork', undefined, 'leaving-net', {
      nodes: [{ nodeName: NODE, active: true }],
    });
    const nic = { interfaces: [{ name: 'eth0', network: 'leaving-net' }] };
    await createVM('stays', nic);
    await converge(ctx, reconcileVirtualMachine, key('stays'), { until: ready('stays') });
    await k.remove('VirtualNetwork', undefined, 'leaving-net');

    // Running on it: one of the guests the removal waits for, left as it is.
    await pass('stays');
    expect(vmOf('stays')?.status?.phase).toBe('Running');
    expect(condition(vmOf('stays'), 'Synced')?.status).toBe('True');

    // A new machine is not created onto it, and says why.
    await createVM('arrives', nic);
    await pass('arrives');
    const message =
      "spec.interfaces[0].network: VirtualNetwork 'leaving-net' is being deleted: the machine " +
      'is not started on it; name another network, or wait until it is gone and create it again';
    expect(condition(vmOf('arrives'), 'Synced')).toMatchObject({
      status: 'False',
      reason: 'NetworkNotReady',
      message,
    });
    await expect(conn.lookupDomainByName(`${NS}_arrives`)).rejects.toMatchObject({ code: 42 });

    // The running one stopped behind our back is not started onto it again.
    const stays = await conn.lookupDomainByName(`${NS}_stays`);
    await stays.destroy();
    await pass('stays');
    expect(await stays.isActive()).toBe(false);
    expect(condition(vmOf('stays'), 'Synced')).toMatchObject({
      reason: 'NetworkNotReady',
      message,
    });

    for (const name of ['stays', 'arrives']) {
      await k.remove('VirtualMachine', NS, name);
      await converge(ctx, reconcileVirtualMachine, key(name), { until: stored(name, (v) => !v) });
    }
    await ctx.refresh();
    const vnet = ctx.get('VirtualNetwork', undefined, 'leaving-net');
    if (vnet) await ctx.removeFinalizer('VirtualNetwork', vnet, holder);
  });

  it('refuses a MAC a running guest still holds on a network its spec switched away from', async () => {
    for (const name of ['mac-a', 'mac-b']) {
      await k.create('VirtualNetwork', { metadata: { name }, spec: { mode: 'isolated' } });
      await k.patchStatus('VirtualNetwork', undefined, name, {
        nodes: [{ nodeName: NODE, active: true }],
      });
    }
    const mac = '52:54:00:5a:11:ce';
    const on = (network: string) => ({ interfaces: [{ name: 'eth0', network, macAddress: mac }] });
    await createVM('mover', on('mac-a'));
    await converge(ctx, reconcileVirtualMachine, key('mover'), { until: ready('mover') });
    // The switch waits for a restart: the guest stays on mac-a with its MAC.
    await k.patchSpec('VirtualMachine', NS, 'mover', on('mac-b'));
    await pass('mover');
    expect(condition(vmOf('mover'), 'RestartRequired')?.status).toBe('True');

    // No spec names mac-a with that MAC any more, but the guest on it does.
    await createVM('taker', on('mac-a'));
    await pass('taker');
    expect(condition(vmOf('taker'), 'Synced')).toMatchObject({
      status: 'False',
      reason: 'MACAddressInUse',
      message:
        `spec.interfaces[0].macAddress: ${mac} is in use on VirtualNetwork 'mac-a' by the ` +
        `running guest of VirtualMachine ${NS}/mover (its interface stays on that network ` +
        'until the guest restarts)',
    });
    await expect(conn.lookupDomainByName(`${NS}_taker`)).rejects.toMatchObject({ code: 42 });

    for (const name of ['mover', 'taker']) {
      await k.remove('VirtualMachine', NS, name);
      await converge(ctx, reconcileVirtualMachine, key(name), { until: stored(name, (v) => !v) });
    }
    for (const name of ['mac-a', 'mac-b']) await k.remove('VirtualNetwork', undefined, name);
  });

  it('never touches a machine placed on another node', async () => {
    await createVM('elsewhere', { nodeName: 'node-b' });
    rec.reset();
    const writes = ctx.writes;
    expect(await pass('elsewhere')).toEqual({ kind: 'done' });
    expect(rec.calls).toEqual([]);
    expect(ctx.writes).toBe(writes);
    const vm = vmOf('elsewhere');
    // Only the schema's default: nothing written (kstatus reads it InProgress, not Current).
    expect(vm?.status).toEqual({ observedGeneration: 0 });
    expect(vm?.metadata.finalizers ?? []).not.toContain(HOST_FINALIZER);
  });

  it('reports cloudInit.secretRef as Unsupported and waits for a spec change', async () => {
    await createVM('secret', { cloudInit: { secretRef: { name: 'seed' } } });
    rec.reset();
    expect(await pass('secret')).toEqual({ kind: 'done' });
    const vm = vmOf('secret');
    expect(condition(vm, 'Synced')).toMatchObject({ status: 'False', reason: 'Unsupported' });
    expect(condition(vm, 'Synced')?.message).toContain('spec.cloudInit.secretRef');
    expect(rec.writes()).toEqual([]);
    await expect(conn.lookupDomainByName(`${NS}_secret`)).rejects.toMatchObject({ code: 42 });
  });

  it('resumes a pass interrupted between define and start: one domain, started, no restart counted', async () => {
    const created = await createVM('resume');
    await ctx.refresh();
    const vm = vmOf('resume')!;
    // What the interrupted pass left: the domain defined from the spec, never started.
    const resolved = machineInputs(
      vm,
      { volume: () => undefined, network: () => undefined },
      NODE,
      stateDir,
    );
    if (!('inputs' in resolved)) throw new Error('the spec has no references to resolve');
    await conn.defineDomainXML(buildDomainXML(desiredDomain(vm, resolved.inputs)));

    await converge(ctx, reconcileVirtualMachine, key('resume'), { until: ready('resume') });
    const same = (await conn.listAllDomains()).filter(
      (d) => d.getName() === `${NS}_resume` || d.getUUIDString() === created.metadata.uid,
    );
    expect(same).toHaveLength(1);
    expect((await same[0]!.getState()).stateName).toBe('running');
    expect(vmOf('resume')?.status?.restartCount).toBe(0);
    expect(eventsOf('resume').map((e) => e.reason)).toEqual(['Started']);
  });

  it('finishes a deletion at once when the domain is already gone from the host', async () => {
    const created = await createVM('vanished');
    await converge(ctx, reconcileVirtualMachine, key('vanished'), { until: ready('vanished') });
    const domain = await conn.lookupDomainByUUIDString(String(created.metadata.uid));
    await domain.destroy();
    await domain.undefine();
    await k.remove('VirtualMachine', NS, 'vanished');
    const passes = await converge(ctx, reconcileVirtualMachine, key('vanished'), {
      until: stored('vanished', (v) => !v),
    });
    expect(passes).toBe(1);
  });

  it('deletes a UEFI machine where the driver refuses the NVRAM flag of undefine', async () => {
    const created = await createVM('efi', { firmware: 'uefi' });
    await converge(ctx, reconcileVirtualMachine, key('efi'), { until: ready('efi') });
    const domain = await conn.lookupDomainByUUIDString(String(created.metadata.uid));
    expect(await domain.getXMLDesc()).toContain("firmware='efi'");
    await k.remove('VirtualMachine', NS, 'efi');
    await converge(ctx, reconcileVirtualMachine, key('efi'), { until: stored('efi', (v) => !v) });
    await expect(conn.lookupDomainByUUIDString(String(created.metadata.uid))).rejects.toMatchObject(
      { code: 42 },
    );
  });

  it('defines UEFI with secure boot and a TPM, names a secureBoot change, deletes it all', async () => {
    const created = await createVM('sb', {
      firmware: 'uefi',
      secureBoot: true,
      tpm: { version: '2.0' },
    });
    const uid = String(created.metadata.uid);
    await converge(ctx, reconcileVirtualMachine, key('sb'), { until: ready('sb') });
    const domain = await conn.lookupDomainByUUIDString(uid);
    const xml = await domain.getXMLDesc(DomainXMLFlags.INACTIVE);
    const nvram = join(stateDir, 'nvram', `${uid}_VARS.fd`);
    expect(xml).toContain("<loader secure='yes'/>");
    expect(xml).toContain(`<nvram>${nvram}</nvram>`);
    expect(xml).toContain("<feature enabled='yes' name='secure-boot'/>");
    expect(xml).toContain("<smm state='on'/>");
    expect(xml).toMatch(/<tpm model='tpm-crb'>\s*<backend type='emulator' version='2.0'\/>/);
    // The test driver keeps no variable store; stand in for the one QEMU would have copied.
    writeFileSync(nvram, 'vars');

    await k.patchSpec('VirtualMachine', NS, 'sb', { secureBoot: false });
    await converge(ctx, reconcileVirtualMachine, key('sb'), {
      until: stored('sb', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });
    expect(condition(vmOf('sb'), 'RestartRequired')?.message).toContain('spec.secureBoot');
    expect(await domain.getXMLDesc(DomainXMLFlags.INACTIVE)).toContain(
      "<feature enabled='no' name='secure-boot'/>",
    );
    // The store held the secure build's variables: the next start copies the plain template.
    // The running guest's store is moved aside, not removed: a revert gives it back.
    expect(existsSync(nvram)).toBe(false);
    const stashes = () => readdirSync(dirname(nvram)).filter((f) => f.startsWith(`${uid}_`));
    expect(stashes()).toEqual([expect.stringMatching(/_VARS\.fd\.[0-9a-f]{12}$/)]);

    await k.patchSpec('VirtualMachine', NS, 'sb', { secureBoot: true });
    await converge(ctx, reconcileVirtualMachine, key('sb'), {
      until: stored('sb', (vm) => condition(vm, 'RestartRequired')?.status === 'False'),
    });
    expect(readFileSync(nvram, 'utf8')).toBe('vars');
    expect(stashes()).toEqual([`${uid}_VARS.fd`]);

    await k.patchSpec('VirtualMachine', NS, 'sb', { secureBoot: false });
    await converge(ctx, reconcileVirtualMachine, key('sb'), {
      until: stored('sb', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });
    writeFileSync(nvram, 'vars of the plain build');

    await k.remove('VirtualMachine', NS, 'sb');
    await converge(ctx, reconcileVirtualMachine, key('sb'), { until: stored('sb', (v) => !v) });
    await expect(conn.lookupDomainByUUIDString(uid)).rejects.toMatchObject({ code: 42 });
    expect(existsSync(nvram)).toBe(false);
    expect(stashes()).toEqual([]);
  });

  it("leaves the test driver's own domain, network and pool exactly as they were", async () => {
    expect(await driverSnapshot()).toEqual(driverObjects);
  });
});
