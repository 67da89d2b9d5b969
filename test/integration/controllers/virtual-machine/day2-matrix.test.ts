// Each day-2 edit of a running machine, one machine per row, against a real API server and
// libvirt's test driver: what the agent does with it (applies it live; records it in
// RestartRequired and keeps the guest running; under updatePolicy Restart, restarts once), that
// status then tells the truth (observedGeneration, RestartRequired naming the field, Synced),
// and that the agent is quiet afterwards: further passes write nothing to libvirt nor to the
// API server. The test driver cannot hotplug (VIR_ERR_NO_SUPPORT), so here every interface
// added, removed or given a new MAC is a refused live change, restart-time for this run; the
// live attach and detach themselves are covered on a real libvirtd (test/e2e/operator/day2).
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { DomainXMLFlags, type Connect } from '../../../../src/libvirt/index.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import { buildDomainXML, parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { openMachineBench, readyVolume, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-matrix';
const DIR = '/var/lib/libvirt-operator-test';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;

beforeAll(async () => {
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k } = bench);
  for (const [name, format] of [
    ['root', 'qcow2'],
    ['data', 'raw'],
    ['iso1', 'raw'],
    ['iso2', 'raw'],
    ['kernel', 'raw'],
  ] as const) {
    await readyVolume(k, { namespace: NS, nodeName: NODE }, name, format, `${DIR}/${NS}_${name}`);
  }
  for (const net of ['net-a', 'net-b']) {
    await k.create('VirtualNetwork', { metadata: { name: net }, spec: { mode: 'isolated' } });
    await k.patchStatus('VirtualNetwork', undefined, net, {
      nodes: [{ nodeName: NODE, active: true }],
    });
  }
});

afterAll(async () => {
  await bench?.close();
});

const key = (name: string) => `${NS}/${name}`;
const vmOf = (name: string) => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);
const runID = async (uid: string) => (await conn.lookupDomainByUUIDString(uid)).getID();

async function patchMetadata(name: string, metadata: object): Promise<void> {
  const custom = controlPlane().kubeConfig.makeApiClient(CustomObjectsApi);
  await custom.patchNamespacedCustomObject(
    {
      ...{ group: 'virt.dev', version: 'v1alpha1', plural: 'virtualmachines' },
      namespace: NS,
      name,
      body: { metadata },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** Passes until the machine is converged on its current generation. */
async function settle(name: string): Promise<void> {
  await converge(ctx, reconcileVirtualMachine, key(name), {
    until: async () => {
      await ctx.refresh();
      const v = vmOf(name);
      return (
        v?.status?.observedGeneration === v?.metadata.generation &&
        condition(v, 'Ready')?.status === 'True'
      );
    },
    maxPasses: 40,
  });
}

const BASE = {
  nodeName: NODE,
  domainType: 'qemu',
  vcpus: 2,
  maxVcpus: 4,
  memory: '256Mi',
  maxMemory: '512Mi',
  disks: [
    { name: 'root', volume: 'root', bootOrder: 1 },
    { name: 'data', volume: 'data' },
    { name: 'cd', volume: 'iso1', device: 'cdrom' },
  ],
  interfaces: [{ name: 'eth0', network: 'net-a' }],
  terminationGracePeriodSeconds: 5,
};
const [ROOT, DATA, CD] = BASE.disks as [object, object, object];
const ETH0 = BASE.interfaces[0]!;

interface Row {
  edit: string;
  spec?: object;
  metadata?: object;
  /** Extra spec of the machine before the edit. */
  base?: object;
  /** A second edit after the first converged (e.g. undoing it). */
  then?: object;
  /** What the agent does: live (no restart, nothing pending), a pending field, or a restart. */
  expect: 'live' | 'restart' | { pending: string };
}

const pending = (field: string) => ({ pending: field });
const ROWS: Row[] = [
  { edit: 'memory within maxMemory', spec: { memory: '128Mi' }, expect: 'live' },
  { edit: 'vcpus down', spec: { vcpus: 1 }, expect: pending('spec.vcpus') },
  { edit: 'vcpus down, then back', spec: { vcpus: 1 }, then: { vcpus: 2 }, expect: 'live' },
  { edit: 'maxMemory', spec: { maxMemory: '1Gi' }, expect: pending('spec.maxMemory') },
  {
    edit: 'cpu topology',
    spec: { cpu: { topology: { sockets: 1, cores: 2, threads: 2 } } },
    expect: pending('spec.cpu'),
  },
  {
    edit: 'cpu model, then back',
    spec: { cpu: { mode: 'custom', model: 'Haswell' } },
    then: { cpu: null },
    expect: 'live',
  },
  { edit: 'disk renamed', spec: { disks: [ROOT, { ...DATA, name: 'data2' }, CD] }, expect: 'live' },
  { edit: 'disks reordered', spec: { disks: [DATA, ROOT, CD] }, expect: 'live' },
  {
    edit: 'disk readOnly',
    spec: { disks: [ROOT, { ...DATA, readOnly: true }, CD] },
    expect: pending('spec.disks[data]'),
  },
  {
    edit: 'disk bus',
    spec: { disks: [ROOT, { ...DATA, bus: 'scsi' }, CD] },
    expect: pending('spec.disks[data]'),
  },
  {
    edit: 'cdrom media change',
    spec: { disks: [ROOT, DATA, { ...CD, volume: 'iso2' }] },
    expect: pending('spec.disks[cd], spec.disks (removed vm-matrix_iso1)'),
  },
  {
    edit: 'cdrom eject',
    spec: { disks: [ROOT, DATA] },
    expect: pending('spec.disks (removed vm-matrix_iso1)'),
  },
  {
    edit: 'interface model',
    spec: { interfaces: [{ ...ETH0, model: 'e1000' }] },
    expect: pending('spec.interfaces[eth0]'),
  },
  {
    edit: 'interface network',
    spec: { interfaces: [{ ...ETH0, network: 'net-b' }] },
    expect: pending('spec.interfaces[eth0]'),
  },
  {
    edit: 'interface added (attach refused)',
    spec: { interfaces: [ETH0, { name: 'eth1', network: 'net-b' }] },
    expect: pending('spec.interfaces[eth1]'),
  },
  {
    edit: 'interface removed (detach refused)',
    spec: { interfaces: [] },
    expect: pending('spec.interfaces (removed'),
  },
  {
    edit: 'interface MAC (detach and attach refused)',
    spec: { interfaces: [{ ...ETH0, macAddress: '52:54:00:aa:bb:cc' }] },
    expect: pending('spec.interfaces (removed 52:54:00:'),
  },
  {
    edit: 'direct kernel boot',
    spec: { boot: { kernel: { volume: 'kernel' }, cmdline: 'console=ttyS0' } },
    expect: pending('spec.boot'),
  },
  {
    edit: 'cloudInit',
    spec: { cloudInit: { userData: '#cloud-config\n' } },
    expect: pending('spec.cloudInit'),
  },
  { edit: 'firmware uefi', spec: { firmware: 'uefi' }, expect: pending('spec.firmware') },
  {
    edit: 'console-log annotation',
    metadata: { annotations: { 'virt.dev/console-log': 'true' } },
    expect: pending(`metadata.annotations['virt.dev/console-log']`),
  },
  {
    edit: 'labels and foreign annotations',
    metadata: { labels: { team: 'a' }, annotations: { 'example.com/note': 'x' } },
    expect: 'live',
  },
  { edit: 'runStrategy Manual', spec: { runStrategy: 'Manual' }, expect: 'live' },
  {
    edit: 'updatePolicy Restart: cpu model',
    base: { updatePolicy: 'Restart' },
    spec: { cpu: { mode: 'custom', model: 'Haswell' } },
    expect: 'restart',
  },
  {
    edit: 'updatePolicy Restart: interface added (attach refused)',
    base: { updatePolicy: 'Restart' },
    spec: { interfaces: [ETH0, { name: 'eth1', network: 'net-b' }] },
    expect: 'restart',
  },
  {
    edit: 'updatePolicy Restart set while a change is pending',
    spec: { cpu: { mode: 'custom', model: 'Haswell' } },
    then: { updatePolicy: 'Restart' },
    expect: 'restart',
  },
];

describe('a day-2 edit of a running machine on test:///default', () => {
  ROWS.forEach((row, i) => {
    it(`${row.edit}: ${typeof row.expect === 'string' ? row.expect : 'pending'}`, async () => {
      const name = `edit-${i}`;
      await k.create<VirtualMachine>('VirtualMachine', {
        metadata: { name, namespace: NS },
        spec: { ...BASE, ...row.base },
      });
      await settle(name);
      const uid = String(vmOf(name)!.metadata.uid);
      const run = await runID(uid);

      if (row.spec) await k.patchSpec('VirtualMachine', NS, name, row.spec);
      if (row.metadata) await patchMetadata(name, row.metadata);
      await settle(name);
      if (row.then) {
        await k.patchSpec('VirtualMachine', NS, name, row.then);
        await settle(name);
      }

      const edited = vmOf(name)!;
      if (row.expect === 'restart') expect(await runID(uid)).not.toBe(run);
      else expect(await runID(uid)).toBe(run);
      expect(edited.status?.observedGeneration).toBe(edited.metadata.generation);
      expect(condition(edited, 'Synced')?.status).toBe('True');
      const required = condition(edited, 'RestartRequired');
      if (typeof row.expect === 'object') {
        expect(required).toMatchObject({
          status: 'True',
          message: expect.stringContaining(`pending: ${row.expect.pending}`) as string,
        });
      } else expect(required?.status).toBe('False');

      // Converged.
      await quiet(name);
    });
  });
});

// An operator upgrade that renders a default differently (here on_crash, which an older agent
// is made to have written): the running guest's definition differs from what this agent wants
// though nobody changed the spec. Under updatePolicy Restart it is not restarted for that; the
// next spec change is.
describe('a run an older agent started, under updatePolicy Restart', () => {
  it('is held with RestartRequired saying why, its definition saved, until the spec changes', async () => {
    const name = 'upgrade-held';
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name, namespace: NS },
      spec: { ...BASE, updatePolicy: 'Restart' },
    });
    await settle(name);
    const uid = String(vmOf(name)!.metadata.uid);
    const generation = vmOf(name)!.metadata.generation;
    // The agent is stopped; the older agent had started the guest from its own rendering and
    // recorded no generation (the record is this version's).
    const domain = await conn.lookupDomainByUUIDString(uid);
    const saved = parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect(saved.startedUnder).toBe(generation);
    await domain.destroy();
    await conn.defineDomainXML(buildDomainXML({ ...saved, onCrash: 'restart' }));
    await domain.create();
    const run = await runID(uid);
    const older = parseDomainXML(await domain.getXMLDesc());
    expect({ onCrash: older.onCrash, startedUnder: older.startedUnder }).toEqual({
      onCrash: 'restart',
      startedUnder: undefined,
    });
    const restarts = vmOf(name)!.status?.restartCount;

    // The new agent's passes: the same run goes on, its saved definition is this agent's.
    await settle(name);
    for (let pass = 0; pass < 3; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key(name), ctx);
    }
    const held = vmOf(name)!;
    expect(await runID(uid)).toBe(run);
    expect(held.status?.restartCount).toBe(restarts);
    expect(condition(held, 'RestartRequired')).toMatchObject({
      status: 'True',
      message:
        `pending: operator domain defaults; the running definition differs though the spec ` +
        `has not changed since generation ${generation}, which this run (run ${run}) started ` +
        `under or took on live ` +
        `(e.g. the agent's defaults changed), so updatePolicy Restart does not restart it for ` +
        `them; they apply at the next start, at once after a change of the spec or with ` +
        `virt.dev/restart-requested-at`,
    });
    expect(parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE)).onCrash).toBe(
      'destroy',
    );
    // The run got the record it lacked, once: the generation the status had observed.
    const adopted = parseDomainXML(await domain.getXMLDesc());
    expect({ onCrash: adopted.onCrash, startedUnder: adopted.startedUnder }).toEqual({
      onCrash: 'restart',
      startedUnder: generation,
    });
    await quiet(name);

    // A spec change (one that changes nothing in the domain) restarts it, once.
    await k.patchSpec('VirtualMachine', NS, name, { terminationGracePeriodSeconds: 6 });
    await settle(name);
    const restarted = await runID(uid);
    expect(restarted).not.toBe(run);
    const edited = vmOf(name)!;
    expect(condition(edited, 'RestartRequired')?.status).toBe('False');
    const live = parseDomainXML(await domain.getXMLDesc());
    expect({ onCrash: live.onCrash, startedUnder: live.startedUnder }).toEqual({
      onCrash: 'destroy',
      startedUnder: edited.metadata.generation,
    });
    await quiet(name);
    expect(await runID(uid)).toBe(restarted);
  });
});

// A run whose spec was edited live (or by an edit that changes nothing in the domain) reflects
// the new generation: its record moves on, so that a later upgrade's defaults hold it as they
// hold a run nobody edited, instead of restarting it for an edit it has already applied.
describe('a run edited live since it started, under updatePolicy Restart', () => {
  it.each([
    ['memory within maxMemory', { memory: '128Mi' }],
    ['a field the domain does not hold', { terminationGracePeriodSeconds: 7 }],
  ])('records the generation it reflects: %s', async (_what, spec) => {
    const name = `caught-up-${'memory' in spec ? 'memory' : 'grace'}`;
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name, namespace: NS },
      spec: { ...BASE, updatePolicy: 'Restart' },
    });
    await settle(name);
    const uid = String(vmOf(name)!.metadata.uid);
    const run = await runID(uid);
    const domain = await conn.lookupDomainByUUIDString(uid);
    const started = vmOf(name)!.metadata.generation;
    expect(parseDomainXML(await domain.getXMLDesc()).startedUnder).toBe(started);

    await k.patchSpec('VirtualMachine', NS, name, spec);
    await settle(name);
    const edited = vmOf(name)!;
    expect(edited.metadata.generation).toBeGreaterThan(started ?? 0);
    expect(await runID(uid)).toBe(run);
    expect(condition(edited, 'RestartRequired')?.status).toBe('False');
    expect(parseDomainXML(await domain.getXMLDesc()).startedUnder).toBe(edited.metadata.generation);
    await quiet(name);
  });
});

// The first pass after an upgrade whose status lags: a run an older agent started (no record),
// its spec edited while no agent ran by an edit the run takes live. That pass leaves the run
// reflecting the spec's generation, and records that once, not first the status's older one
// (plan.ts runRecord).
describe('a run without a record, edited live while no agent ran', () => {
  it.each([
    ['memory within maxMemory', { memory: '128Mi' }],
    ['a field the domain does not hold', { terminationGracePeriodSeconds: 8 }],
  ])('gets the generation it reflects as its record in one write: %s', async (_what, spec) => {
    const name = `lagging-${'memory' in spec ? 'memory' : 'grace'}`;
    const { uid, observed, domain, run } = await olderAgentsRun(name);
    await k.patchSpec('VirtualMachine', NS, name, spec);

    await ctx.refresh();
    const edited = vmOf(name)!;
    expect(edited.metadata.generation).toBeGreaterThan(observed ?? 0);
    expect(edited.status?.observedGeneration).toBe(observed);
    rec.reset();
    await reconcileVirtualMachine(key(name), ctx);
    expect(rec.writes().filter((c) => c === 'Domain.setMetadata')).toHaveLength(1);
    expect(await runID(uid)).toBe(run);
    for (const flags of [0, DomainXMLFlags.INACTIVE])
      expect(parseDomainXML(await domain.getXMLDesc(flags)).startedUnder).toBe(
        edited.metadata.generation,
      );
    await settle(name);
    expect(await runID(uid)).toBe(run);
    await quiet(name);
  });

  // A pass that fails at a step still records the run it leaves running: left without, the run
  // was judged against an observedGeneration that the failing pass moved on (plan.ts runRecord).
  it('gets the generation it started under from a pass that fails at a step', async () => {
    const name = 'lagging-failing';
    const { uid, observed, domain, run } = await olderAgentsRun(name);
    await k.patchSpec('VirtualMachine', NS, name, { memory: '384Mi' });
    rec.refuse(
      'Domain.setMemory',
      new LibvirtError('operation failed: balloon busy (injected)', {
        code: ErrorCode.VIR_ERR_OPERATION_FAILED,
        domain: ErrorDomain.VIR_FROM_DOMAIN,
        level: 2,
      }),
    );
    try {
      await ctx.refresh();
      await reconcileVirtualMachine(key(name), ctx);
    } finally {
      rec.refuse('Domain.setMemory', undefined);
    }
    await ctx.refresh();
    const failed = vmOf(name)!;
    expect(condition(failed, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'MemoryChangeFailed',
    });
    expect(failed.status?.observedGeneration).toBe(failed.metadata.generation);
    expect(await runID(uid)).toBe(run);
    expect(parseDomainXML(await domain.getXMLDesc()).startedUnder).toBe(observed);
    // The change goes through at a later pass, which moves the record on to what the run
    // now reflects.
    await settle(name);
    expect(await runID(uid)).toBe(run);
    for (const flags of [0, DomainXMLFlags.INACTIVE])
      expect(parseDomainXML(await domain.getXMLDesc(flags)).startedUnder).toBe(
        failed.metadata.generation,
      );
    await quiet(name);
  });
});

/**
 * A machine under updatePolicy Restart, converged, whose run is then one an older agent
 * started: from this agent's definition, without the run's record.
 */
async function olderAgentsRun(name: string) {
  await k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS },
    spec: { ...BASE, updatePolicy: 'Restart' },
  });
  await settle(name);
  const uid = String(vmOf(name)!.metadata.uid);
  const observed = vmOf(name)!.metadata.generation;
  const domain = await conn.lookupDomainByUUIDString(uid);
  await domain.destroy();
  await conn.defineDomainXML(
    buildDomainXML(parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE))),
  );
  await domain.create();
  const run = await runID(uid);
  expect(parseDomainXML(await domain.getXMLDesc()).startedUnder).toBeUndefined();
  return { uid, observed, domain, run };
}

/** The next passes write nothing, to libvirt or to the API server. */
async function quiet(name: string): Promise<void> {
  for (let pass = 0; pass < 2; pass++) {
    rec.reset();
    const writes = ctx.writes;
    await ctx.refresh();
    await reconcileVirtualMachine(key(name), ctx);
    expect({ pass, libvirt: rec.writes(), api: ctx.writes - writes }).toEqual({
      pass,
      libvirt: [],
      api: 0,
    });
  }
}
