// VirtualMachine definitions a real libvirtd with QEMU refuses at define time (a private
// daemon, so other tests starting or stopping the system one cannot disturb it), where the test
// driver accepts anything it can parse: QEMU 7.2's q35 machine type takes at most 288 vCPUs,
// the CRD up to 512 (a newer QEMU takes more). No retry changes that, so the machine must be
// Stalled with libvirt's message, not Reconciling for ever. A user's own <metadata>, as libvirt
// writes it back, survives the agent's redefinitions, the same bytes at each. And a guest that
// takes its time to shut down for its machine's deletion, which the test driver's instant stop
// never shows. And day-2 edits under updatePolicy Restart on QEMU, whose running definitions
// differ from the test driver's: a field libvirt or QEMU rewrites that read as a pending change
// would restart such a machine at every start, for ever. And a machine under runStrategy Manual
// whose QEMU dies (SIGKILL, as the OOM killer sends): libvirt shuts the domain off with reason
// `crashed`, and nothing starts it again; it read Ready=True ManualPower (kstatus Current, Argo
// CD Healthy) for a guest down without anyone choosing it, and must read Stalled, also after a
// restart of libvirtd, which forgets the reason (last here: it restarts this file's daemon).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { DomainVcpuFlags, DomainXMLFlags } from '../../../../src/libvirt/constants.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import type { Action } from '../../../../src/runtime/controller.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, requeueMs, type SnapshotContext } from '../../../harness/controller-context.js';
import { argoHealth, kstatus } from '../../../harness/health-tools.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';
import { recording } from './fixtures.js';

const NODE = 'node-define-real';
const NS = 'define-real';
const VM = `wide-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-define-real-',
  async cleanup(conn) {
    for (const d of await conn.listAllDomains().catch(() => [])) {
      await d.destroy().catch(() => undefined);
      await d.undefine().catch(() => undefined);
    }
    for (const n of await conn.listAllNetworks().catch(() => [])) {
      await n.destroy().catch(() => undefined);
      await n.undefine().catch(() => undefined);
    }
  },
});
let conn: Connect;
let k: Kube;
let ctx: SnapshotContext;

beforeAll(() => {
  ({ conn, k, ctx } = lv());
});

const getVm = () => k.get<VirtualMachine>('VirtualMachine', NS, VM);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);

/** Passes until Ready names one of `reasons`; the last pass's action. */
async function passUntil(reasons: string[]): Promise<Action> {
  for (let pass = 0; pass < 10; pass++) {
    await ctx.refresh();
    const action = await reconcileVirtualMachine(`${NS}/${VM}`, ctx);
    if (reasons.includes(condition(await getVm(), 'Ready')?.reason ?? '')) return action;
  }
  throw new Error(`Ready never became ${reasons.join(' or ')}: ${JSON.stringify(await getVm())}`);
}

/** What a GitOps tool reads: phase, Ready's reason and message, Reconciling, Stalled. */
async function health() {
  const vm = await getVm();
  return {
    phase: vm?.status?.phase,
    reason: condition(vm, 'Ready')?.reason,
    message: condition(vm, 'Ready')?.message,
    reconciling: condition(vm, 'Reconciling')?.status,
    stalled: condition(vm, 'Stalled')?.status,
  };
}

const refused = {
  phase: 'Failed',
  reason: 'DefineRefused',
  message:
    'libvirt refused the domain definition: unsupported configuration: Maximum CPUs greater ' +
    'than specified machine type limit 288',
  reconciling: 'False',
  stalled: 'True',
};

describe('a definition QEMU refuses at define', () => {
  it("is Stalled with libvirt's message, retried, and defined once the spec is fixed", async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: VM, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        maxVcpus: 300,
        memory: '32Mi',
      },
    });
    const action = await passUntil(['DefineRefused', 'DefineFailed']);
    expect(await health()).toEqual(refused);
    // Still retried with backoff: a newer QEMU on the host takes it without a spec change.
    expect(requeueMs(action)).toBeGreaterThan(0);
    expect(await conn.listAllDomains()).toHaveLength(0);
    expect(ctx.events).toContainEqual(
      expect.objectContaining({ key: `${NS}/${VM}`, type: 'Warning', reason: 'DefineRefused' }),
    );

    await k.patchSpec('VirtualMachine', NS, VM, { maxVcpus: 2 });
    await passUntil(['Halted']);
    expect(await health()).toMatchObject({ reconciling: 'False', stalled: 'False' });
    const [domain] = await conn.listAllDomains();
    expect(domain).toBeDefined();

    // A user's `virsh edit` of <metadata>: a prefix declared on <metadata> (where libvirt
    // keeps it), an element named like Object's own `constructor`, text mixed with children.
    // Spec changes redefine the domain: all kept, and the same bytes at every define.
    const metadataOf = async () =>
      /<metadata>[^]*<\/metadata>/.exec(await domain!.getXMLDesc(DomainXMLFlags.INACTIVE))?.[0];
    const edited = (await domain!.getXMLDesc(DomainXMLFlags.INACTIVE))
      .replace('<metadata>', '<metadata xmlns:os="urn:os">')
      .replace(
        '</metadata>',
        '<os:info id="deb&amp;12"><os:v/></os:info><constructor xmlns="urn:c"/>' +
          '<mix xmlns="urn:m">a<b/>c</mix></metadata>',
      );
    (await conn.defineDomainXML(edited)).free();
    const redefined: (string | undefined)[] = [];
    for (const maxVcpus of [3, 2]) {
      await k.patchSpec('VirtualMachine', NS, VM, { maxVcpus });
      await passUntil(['Halted']);
      expect(await domain!.getVcpusFlags(DomainVcpuFlags.CONFIG | DomainVcpuFlags.MAXIMUM)).toBe(
        maxVcpus,
      );
      redefined.push(await metadataOf());
    }
    expect(redefined[0]).toMatch(/<os:info xmlns:os="urn:os" id="deb&amp;12">\s*<os:v\/>/);
    expect(redefined[0]).toContain('<constructor xmlns="urn:c"/>');
    expect(redefined[0]).toMatch(/<mix xmlns="urn:m">\s*<b\/>\s*ac\s*<\/mix>/);
    expect(redefined[1]).toBe(redefined[0]);

    // The same refusal for the definition of a machine already defined: the old one stays.
    await k.patchSpec('VirtualMachine', NS, VM, { maxVcpus: 300 });
    await passUntil(['DefineRefused', 'DefineFailed']);
    expect(await health()).toEqual(refused);
    expect(await domain!.getVcpusFlags(DomainVcpuFlags.CONFIG | DomainVcpuFlags.MAXIMUM)).toBe(2);

    await k.remove('VirtualMachine', NS, VM);
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 120_000);
});

// kubectl delete on a running machine read Ready=True `Running` beside phase Stopping for the
// whole grace period, while runStrategy Halted's stop reads Ready=False `Stopping`.
describe('a running machine being deleted', () => {
  it('is not Ready while its guest shuts down (Deleting), and goes once the domain does', async () => {
    const name = `leaving-${randomBytes(3).toString('hex')}`;
    const key = `${NS}/${name}`;
    const get = () => k.get<VirtualMachine>('VirtualMachine', NS, name);
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name, namespace: NS },
      // No bootable disk: nothing answers the ACPI request, so the stop lasts the grace period.
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '32Mi',
        terminationGracePeriodSeconds: 600,
      },
    });
    await converge(ctx, reconcileVirtualMachine, key, {
      until: async () => (await get())?.status?.phase === 'Running',
    });
    expect(condition(await get(), 'Ready')).toMatchObject({ status: 'True', reason: 'Running' });

    await k.remove('VirtualMachine', NS, name);
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachine(key, ctx))).toBeGreaterThan(0);
    const leaving = await get();
    expect(leaving?.status?.phase).toBe('Stopping');
    expect(condition(leaving, 'ShutdownRequested')?.reason).toBe('Deleting');
    expect(condition(leaving, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'Deleting',
      message:
        'the machine is being deleted: waiting for the guest to shut down ' +
        '(terminationGracePeriodSeconds 600s; destroyed if it still runs then), then the ' +
        'domain is undefined',
    });
    expect(condition(leaving, 'Reconciling')?.status).toBe('True');
    expect(condition(leaving, 'Stalled')?.status).toBe('False');
    // Further passes within the grace period write nothing. One more write is allowed for
    // what changed since the first pass looked (CI at load once saw one: which, it did not
    // say), but not one per pass: the second pass after it must write nothing.
    const seen: string[] = [];
    let writes = -1;
    for (let pass = 0; pass < 2 && writes !== 0; pass++) {
      await ctx.refresh();
      ctx.writes = 0;
      const events = ctx.events.length;
      await reconcileVirtualMachine(key, ctx);
      writes = ctx.writes;
      const now = await get();
      seen.push(
        JSON.stringify({
          writes,
          events: ctx.events.slice(events).map((e) => `${e.reason}: ${e.message}`),
          phase: now?.status?.phase,
          state: now?.status?.state,
          conditions: now?.status?.conditions?.map((c) => `${c.type}=${c.status} ${c.message}`),
        }),
      );
    }
    expect(writes, seen.join('\n')).toBe(0);

    // No grace left: destroyed and undefined.
    await k.patchSpec('VirtualMachine', NS, name, { terminationGracePeriodSeconds: 0 });
    await converge(ctx, reconcileVirtualMachine, key, {
      until: async () => (await get()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 120_000);
});

describe('day-2 edits of a running machine under updatePolicy Restart', () => {
  const name = `edited-${randomBytes(3).toString('hex')}`;
  const key = `${NS}/${name}`;
  const net = `day2-${randomBytes(3).toString('hex')}`;
  const get = () => k.get<VirtualMachine>('VirtualMachine', NS, name);
  const runID = async () =>
    (await conn.lookupDomainByUUIDString(String((await get())?.metadata.uid))).getID();

  /** Passes until the machine is Ready and Synced on its generation, and not being stopped. */
  async function settle(): Promise<VirtualMachine> {
    for (let pass = 0; pass < 60; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key, ctx).catch(() => undefined);
      const vm = await get();
      const settled =
        vm?.status?.observedGeneration === vm?.metadata.generation &&
        condition(vm, 'Ready')?.status === 'True' &&
        condition(vm, 'Synced')?.status === 'True' &&
        condition(vm, 'ShutdownRequested')?.status !== 'True';
      if (settled) return vm!;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${key} did not settle: ${JSON.stringify((await get())?.status)}`);
  }

  /** Two more passes write nothing: to libvirt, to the API server, no Event. */
  async function quiet(): Promise<void> {
    const rec = recording(conn);
    const libvirt = ctx.libvirt;
    Object.assign(ctx, { libvirt: () => rec.conn });
    try {
      for (let pass = 0; pass < 2; pass++) {
        const writes = ctx.writes;
        await ctx.refresh();
        await reconcileVirtualMachine(key, ctx);
        expect({ pass, libvirt: rec.writes(), api: ctx.writes - writes }).toEqual({
          pass,
          libvirt: [],
          api: 0,
        });
      }
    } finally {
      Object.assign(ctx, { libvirt });
    }
  }

  it('hot-plugs without a restart, restarts once for a restart-time change, then is quiet', async () => {
    const { tmp } = lv();
    const files: Array<[string, 'qcow2' | 'raw']> = [
      ['root', 'qcow2'],
      ['data', 'raw'],
      ['install', 'raw'],
      ['extra', 'raw'],
    ];
    for (const [volume, format] of files) {
      const file = path.join(tmp, `${volume}.${format}`);
      execFileSync('qemu-img', ['create', '-q', '-f', format, file, '8M']);
      await k.create('Volume', {
        metadata: { name: volume, namespace: NS },
        spec: { nodeName: NODE, pool: 'images', capacity: '8Mi', format },
      });
      await k.patchStatus('Volume', NS, volume, { phase: 'Available', path: file });
    }
    const bridge = `lvo${net.slice(-6)}`;
    await (
      await conn.defineNetworkXML(
        `<network><name>${net}</name><bridge name='${bridge}'/></network>`,
      )
    ).create();
    await k.create('VirtualNetwork', { metadata: { name: net }, spec: { mode: 'isolated' } });
    await k.patchStatus('VirtualNetwork', undefined, net, {
      nodes: [{ nodeName: NODE, active: true }],
    });
    const disks = [
      { name: 'root', volume: 'root', bootOrder: 1 },
      { name: 'data', volume: 'data', bus: 'scsi', readOnly: true },
      { name: 'install', volume: 'install', device: 'cdrom' },
    ];
    const interfaces = [
      { name: 'eth0', network: net },
      { name: 'eth1', network: net, model: 'e1000' },
    ];
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name, namespace: NS, annotations: { 'virt.dev/console-log': 'true' } },
      // No bootable disk: nothing answers ACPI, so each restart is a destroy after 1 s.
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        updatePolicy: 'Restart',
        vcpus: 1,
        maxVcpus: 2,
        memory: '64Mi',
        maxMemory: '128Mi',
        cpu: { mode: 'custom', model: 'qemu64', topology: { sockets: 1, cores: 2, threads: 1 } },
        disks,
        interfaces,
        cloudInit: { userData: '#cloud-config\n' },
        terminationGracePeriodSeconds: 1,
      },
    });
    await settle();
    const booted = await runID();
    await quiet();

    // Live: memory, a vCPU, a virtio disk and a NIC hot-plugged, the same run.
    await k.patchSpec('VirtualMachine', NS, name, {
      memory: '96Mi',
      vcpus: 2,
      disks: [...disks, { name: 'extra', volume: 'extra' }],
      interfaces: [...interfaces, { name: 'eth2', network: net }],
    });
    const edited = await settle();
    expect(condition(edited, 'RestartRequired')?.status).toBe('False');
    expect(await runID()).toBe(booted);
    await quiet();
    // The run's record moved on in both definitions: a `virsh start` from the persistent one,
    // which the edit also went to, is a run of this generation, not of the first start's.
    const domain = await conn.lookupDomainByUUIDString(String(edited.metadata.uid));
    for (const flags of [0, DomainXMLFlags.INACTIVE])
      expect(parseDomainXML(await domain.getXMLDesc(flags)).startedUnder).toBe(
        edited.metadata.generation,
      );

    // Restart-time: one graceful restart (destroyed after the grace period), then nothing.
    await k.patchSpec('VirtualMachine', NS, name, {
      disks: [
        ...disks.map((d) => (d.name === 'install' ? { ...d, bootOrder: 2 } : d)),
        { name: 'extra', volume: 'extra' },
      ],
    });
    const restarted = await settle();
    expect(condition(restarted, 'RestartRequired')?.status).toBe('False');
    expect(restarted.status?.restartCount).toBe(0);
    expect(await runID()).not.toBe(booted);
    await quiet();
  }, 180_000);
});

const CRASH_VM = `crash-${randomBytes(3).toString('hex')}`;
const getCrashVm = () => k.get<VirtualMachine>('VirtualMachine', NS, CRASH_VM);

async function crashPass(): Promise<VirtualMachine | undefined> {
  await ctx.refresh();
  await reconcileVirtualMachine(`${NS}/${CRASH_VM}`, ctx);
  return getCrashVm();
}

/** The QEMU process this file's daemon runs for the domain (its -name says guest=NAME). */
async function qemuPid(domainName: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    const named = args.some(
      (a) => a === `guest=${domainName}` || a.startsWith(`guest=${domainName},`),
    );
    if (args[0]?.includes('qemu-system') && named) return Number(entry);
  }
  throw new Error(`no QEMU process for domain ${domainName}`);
}

const stateOf = async (uid: string) =>
  (await (await conn.lookupDomainByUUIDString(uid)).getState()).stateName;

describe('runStrategy Manual after a crash', () => {
  it('a guest whose QEMU died reads Stalled (StoppedByCrash), also after a libvirtd restart', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: CRASH_VM, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Manual',
        // No guest OS to answer ACPI: the deletion at the end destroys at once.
        terminationGracePeriodSeconds: 0,
        vcpus: 1,
        memory: '64Mi',
      },
    });
    await converge(ctx, reconcileVirtualMachine, `${NS}/${CRASH_VM}`, {
      until: async () => (await getCrashVm())?.status?.phase === 'Running',
    });
    const running = (await getCrashVm())!;
    expect(condition(running, 'Ready')).toMatchObject({ status: 'True', reason: 'ManualPower' });
    const domainName = running.status!.domainName!;
    process.kill(await qemuPid(domainName), 'SIGKILL');
    const uid = String(running.metadata.uid);
    const deadline = Date.now() + 30_000;
    while ((await stateOf(uid)) !== 'shutoff' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    expect(await stateOf(uid)).toBe('shutoff');

    for (const when of ['after the crash', 'after a libvirtd restart']) {
      if (when !== 'after the crash') conn = await lv().restart();
      await crashPass();
      const vm = (await crashPass())!;
      expect(vm.status?.state, when).toEqual({ state: 'shutoff', reason: 'crashed' });
      expect(vm.status?.phase, when).toBe('Stopped');
      const ready = condition(vm, 'Ready');
      expect(ready, when).toMatchObject({ status: 'False', reason: 'StoppedByCrash' });
      expect(ready?.message, when).toContain('runStrategy Manual does not start it again');
      expect(condition(vm, 'Stalled')?.status, when).toBe('True');
      expect(kstatus([vm]).get(`VirtualMachine/${CRASH_VM}`)?.status, when).toBe('Failed');
      expect(argoHealth(vm).status, when).toBe('Degraded');
      // Left off, as Manual asks: the operator never starts it for the crash.
      expect(await stateOf(uid), when).toBe('shutoff');
    }

    // Started by the user: the user's power state again.
    await (await conn.lookupDomainByUUIDString(uid)).create();
    const restarted = (await crashPass())!;
    expect(condition(restarted, 'Ready')).toMatchObject({ status: 'True', reason: 'ManualPower' });
    expect(kstatus([restarted]).get(`VirtualMachine/${CRASH_VM}`)?.status).toBe('Current');

    await k.remove('VirtualMachine', NS, CRASH_VM);
    await converge(ctx, reconcileVirtualMachine, `${NS}/${CRASH_VM}`, {
      until: async () => (await getCrashVm()) === undefined,
    });
    const left = await Promise.all((await conn.listAllDomains()).map((d) => d.getUUIDString()));
    expect(left).not.toContain(uid);
  }, 180_000);
});
