// Day-2 machines against a real API server and libvirt's test driver: CPU model and topology
// and a cdrom reach the domain XML and read back without drift; pause and restart annotations
// written by `libvirt-operator vm` are carried out (one restart per value). The test driver has
// no virDomainAttachDeviceFlags (VIR_ERR_NO_SUPPORT), so here a disk added to a running machine
// becomes a restart-time change; live attach and detach are covered by
// test/e2e/operator/day2.test.ts on the real libvirtd.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { VirtualMachine, Volume } from '../../../../src/api/generated/types.js';
import { main as vmCommand } from '../../../../src/commands/vm.js';
import {
  HOST_FINALIZER,
  VOLUME_PROTECTION_FINALIZER,
} from '../../../../src/controllers/context.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { HOST_LACK_LONGEST_RECHECK_MS } from '../../../../src/controllers/virtual-machine/status.js';
import { reconcileVolume } from '../../../../src/controllers/volume/index.js';
import { Connect, DomainXMLFlags } from '../../../../src/libvirt/index.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, requeueMs, type SnapshotContext } from '../../../harness/controller-context.js';
import { argoHealth, kstatus } from '../../../harness/health-tools.js';
import { annotate } from '../../../harness/kubectl.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { openMachineBench, readyVolume, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-day2';
const ROOT_PATH = '/var/lib/libvirt-operator-test/vm-day2_root.qcow2';
const DATA_PATH = '/var/lib/libvirt-operator-test/vm-day2_data.raw';
const ISO_PATH = '/var/lib/libvirt-operator-test/vm-day2_install.iso';
const HELD_PATH = '/var/lib/libvirt-operator-test/vm-day2_held.qcow2';
const STOP_HELD_PATH = '/var/lib/libvirt-operator-test/vm-day2_stopheld.qcow2';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;

beforeAll(async () => {
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k } = bench);
  for (const [name, format, path] of [
    ['root', 'qcow2', ROOT_PATH],
    ['data', 'raw', DATA_PATH],
    ['install', 'raw', ISO_PATH],
  ] as const) {
    await readyVolume(k, { namespace: NS, nodeName: NODE }, name, format, path);
  }
});

afterAll(async () => {
  await bench?.close();
});

const key = (name: string) => `${NS}/${name}`;
const vmOf = (name: string) => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);
const stored = (name: string, test: (vm: VirtualMachine | undefined) => boolean) => async () => {
  await ctx.refresh();
  return test(vmOf(name));
};
const domainOf = (vm: VirtualMachine) => conn.lookupDomainByUUIDString(String(vm.metadata.uid));
const vm = (...args: string[]) =>
  vmCommand([...args, '-n', NS, '--kubeconfig', controlPlane().kubeconfigPath]);

/** Sets (or, for undefined, removes) virt.dev/paused on VM `name` with kubectl, as a user does. */
const setPausedAnnotation = (name: string, value: string | undefined) =>
  annotate(controlPlane(), ['vm', name, '-n', NS], { 'virt.dev/paused': value });

describe('day-2 machines on test:///default', () => {
  it('defines CPU model and topology and a boot cdrom, and reads them back without drift', async () => {
    const created = await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'cpu', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 2,
        maxVcpus: 4,
        memory: '256Mi',
        cpu: { mode: 'custom', model: 'qemu64', topology: { sockets: 2, cores: 2, threads: 1 } },
        disks: [
          { name: 'root', volume: 'root' },
          { name: 'install', volume: 'install', device: 'cdrom', bootOrder: 1 },
        ],
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('cpu'), {
      until: stored('cpu', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    const doc = parseDomainXML(await (await domainOf(created)).getXMLDesc(DomainXMLFlags.INACTIVE));
    expect(doc.cpu).toEqual({
      mode: 'custom',
      model: 'qemu64',
      topology: { sockets: 2, cores: 2, threads: 1 },
    });
    expect(doc.devices.disks[1]).toMatchObject({
      device: 'cdrom',
      source: { type: 'file', file: ISO_PATH },
      target: { dev: 'sda', bus: 'sata' },
      readonly: true,
      bootOrder: 1,
    });
    // Converged: another pass writes nothing to libvirt and nothing is pending.
    rec.reset();
    await converge(ctx, reconcileVirtualMachine, key('cpu'));
    expect(rec.writes()).toEqual([]);
    expect(condition(vmOf('cpu'), 'RestartRequired')?.status).toBe('False');
  });

  it('names a CPU change in RestartRequired and keeps the machine running', async () => {
    const id = (await domainOf(vmOf('cpu')!)).getID();
    await k.patchSpec('VirtualMachine', NS, 'cpu', {
      cpu: { mode: 'custom', model: 'Haswell', topology: { sockets: 1, cores: 4, threads: 1 } },
    });
    await converge(ctx, reconcileVirtualMachine, key('cpu'), {
      until: stored('cpu', (v) => condition(v, 'RestartRequired')?.status === 'True'),
    });
    expect(condition(vmOf('cpu'), 'RestartRequired')?.message).toContain('spec.cpu');
    expect((await domainOf(vmOf('cpu')!)).getID()).toBe(id);
  });

  it('keeps naming a pending change while the spec names a Volume that does not exist', async () => {
    // The pass has no desired definition then; the saved one still differs from the running one.
    await k.patchSpec('VirtualMachine', NS, 'cpu', {
      disks: [
        { name: 'root', volume: 'root' },
        { name: 'install', volume: 'install', device: 'cdrom', bootOrder: 1 },
        { name: 'extra', volume: 'missing' },
      ],
    });
    // A problem is retried (requeued), never done: one pass, then the stored object.
    await ctx.refresh();
    await reconcileVirtualMachine(key('cpu'), ctx);
    await ctx.refresh();
    expect(condition(vmOf('cpu'), 'Ready')?.reason).toBe('VolumeNotReady');
    expect(condition(vmOf('cpu'), 'RestartRequired')).toMatchObject({
      status: 'True',
      message: expect.stringContaining('pending: spec.cpu;') as string,
    });
  });

  it('keeps reporting that problem through a requested restart', async () => {
    const warned = () =>
      ctx.events.filter((e) => e.key === key('cpu') && e.reason === 'VolumeNotReady').length;
    const before = warned();
    expect(await vm('restart', 'cpu')).toBe(0);
    // The pass that records the request and asks the guest to shut down.
    await ctx.refresh();
    await reconcileVirtualMachine(key('cpu'), ctx);
    await ctx.refresh();
    const restarting = vmOf('cpu');
    expect(restarting?.status?.lastRestartRequest).toBeDefined();
    expect(condition(restarting, 'ShutdownRequested')?.reason).toBe('RestartRequested');
    expect(condition(restarting, 'Synced')).toMatchObject({
      status: 'False',
      reason: 'VolumeNotReady',
    });
    // The next passes start it again with the saved definition; the problem is not new.
    await ctx.refresh();
    await reconcileVirtualMachine(key('cpu'), ctx);
    expect(warned()).toBe(before);
  });

  it('without hotplug in the driver, a disk added to a running machine waits for a restart', async () => {
    await k.patchSpec('VirtualMachine', NS, 'cpu', {
      disks: [
        { name: 'root', volume: 'root' },
        { name: 'install', volume: 'install', device: 'cdrom', bootOrder: 1 },
        { name: 'data', volume: 'data' },
      ],
    });
    await converge(ctx, reconcileVirtualMachine, key('cpu'), {
      until: stored('cpu', (v) =>
        (condition(v, 'RestartRequired')?.message ?? '').includes('spec.disks[data]'),
      ),
    });
    const machine = vmOf('cpu')!;
    expect(condition(machine, 'Synced')?.status).toBe('True');
    expect(rec.calls).toContain('Domain.attachDeviceFlags');
    const config = parseDomainXML(
      await (await domainOf(machine)).getXMLDesc(DomainXMLFlags.INACTIVE),
    );
    expect(config.devices.disks.map((d) => d.source.type === 'file' && d.source.file)).toContain(
      DATA_PATH,
    );
  });

  it('with updatePolicy Restart, restarts to apply a disk the driver could not attach live', async () => {
    const EXTRA_PATH = '/var/lib/libvirt-operator-test/vm-day2_extra.qcow2';
    await readyVolume(k, { namespace: NS, nodeName: NODE }, 'extra', 'qcow2', EXTRA_PATH);
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'plug', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        updatePolicy: 'Restart',
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('plug'), {
      until: stored('plug', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    const id = (await domainOf(vmOf('plug')!)).getID();
    rec.reset();
    await k.patchSpec('VirtualMachine', NS, 'plug', {
      disks: [{ name: 'extra', volume: 'extra' }],
    });
    // The attach fails (VIR_ERR_NO_SUPPORT): a restart-time change, which this policy applies
    // by a graceful restart, as RestartRequired says, not by waiting for someone else's. The
    // pass that learns it looks again soon: its own status write wakes nothing.
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachine(key('plug'), ctx))).toBeDefined();
    await converge(ctx, reconcileVirtualMachine, key('plug'), {
      until: stored(
        'plug',
        (v) =>
          condition(v, 'Ready')?.status === 'True' &&
          condition(v, 'RestartRequired')?.status === 'False',
      ),
      maxPasses: 40,
    });
    const domain = await domainOf(vmOf('plug')!);
    expect(domain.getID()).not.toBe(id);
    const live = parseDomainXML(await domain.getXMLDesc());
    expect(live.devices.disks.map((d) => d.source.type === 'file' && d.source.file)).toEqual([
      EXTRA_PATH,
    ]);
    expect(rec.writes().filter((w) => w === 'Domain.shutdown' || w === 'Domain.create')).toEqual([
      'Domain.shutdown',
      'Domain.create',
    ]);
    expect(vmOf('plug')?.status?.restartCount).toBe(0);
  });

  it('pauses and resumes with `vm pause` / `vm unpause`', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'power', namespace: NS },
      spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    });
    await converge(ctx, reconcileVirtualMachine, key('power'), {
      until: stored('power', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    expect(await vm('pause', 'power')).toBe(0);
    await converge(ctx, reconcileVirtualMachine, key('power'), {
      until: stored('power', (v) => v?.status?.phase === 'Paused'),
    });
    const paused = vmOf('power')!;
    expect(condition(paused, 'Paused')).toMatchObject({
      status: 'True',
      reason: 'PausedByRequest',
    });
    expect((await (await domainOf(paused)).getState()).stateName).toBe('paused');
    expect(ctx.events.filter((e) => e.key === key('power')).map((e) => e.reason)).toContain(
      'Paused',
    );

    expect(await vm('unpause', 'power')).toBe(0);
    await converge(ctx, reconcileVirtualMachine, key('power'), {
      until: stored('power', (v) => v?.status?.phase === 'Running'),
    });
    expect(condition(vmOf('power'), 'Paused')?.status).toBe('False');
    expect(vmOf('power')?.metadata.annotations?.['virt.dev/paused']).toBeUndefined();
  });

  it('starts a machine annotated paused and suspends it in the same pass', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'born-paused', namespace: NS, annotations: { 'virt.dev/paused': 'true' } },
      spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    });
    // The first pass adds the finalizer; the one that defines and starts also suspends.
    await converge(ctx, reconcileVirtualMachine, key('born-paused'), {
      until: stored('born-paused', (v) => v?.status?.startedAt !== undefined),
    });
    const machine = vmOf('born-paused')!;
    expect(machine.status?.phase).toBe('Paused');
    expect(condition(machine, 'Ready')?.reason).toBe('PausedByRequest');
    expect((await (await domainOf(machine)).getState()).stateName).toBe('paused');
  });

  it('leaves a paused machine paused for a virt.dev/paused value it does not understand', async () => {
    const setPaused = (value: string) => setPausedAnnotation('born-paused', value);
    // A typo for "true": read as "not paused" it would resume the guest.
    await setPaused('yes');
    // Passes by hand: a guest paused against no valid request is Ready=False, so each pass
    // asks to look again (converge waits for a pass that does not).
    for (let pass = 0; pass < 4; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key('born-paused'), ctx);
    }
    const machine = vmOf('born-paused')!;
    expect((await (await domainOf(machine)).getState()).stateName).toBe('paused');
    expect(machine.status?.phase).toBe('Paused');
    const paused = condition(machine, 'Paused');
    expect(paused?.status).toBe('True');
    expect(paused?.message).toContain('virt.dev/paused is "yes"');
    expect(paused?.message).toContain('only "true" (pause) and "false" (run)');
    const warnings = ctx.events.filter(
      (e) => e.key === key('born-paused') && e.reason === 'InvalidAnnotation',
    );
    expect(warnings.map((e) => e.type)).toEqual(['Warning']);
    // Nothing resumes it until a user fixes the value: GitOps tools must read a failure, not
    // wait for ever (it was Ready=False Paused, Reconciling: InProgress and Progressing).
    expect(condition(machine, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'InvalidAnnotation',
    });
    expect(condition(machine, 'Stalled')?.status).toBe('True');
    expect(condition(machine, 'Reconciling')?.status).toBe('False');
    expect(kstatus([machine]).get('VirtualMachine/born-paused')?.status).toBe('Failed');
    expect(argoHealth(machine)).toMatchObject({ status: 'Degraded' });
    expect(argoHealth(machine).message).toContain('virt.dev/paused is "yes"');

    await setPaused('false');
    await converge(ctx, reconcileVirtualMachine, key('born-paused'), {
      until: stored('born-paused', (v) => v?.status?.phase === 'Running'),
    });
    expect(condition(vmOf('born-paused'), 'Paused')?.reason).toBe('NotPaused');
  });

  it('under runStrategy Manual, reads a machine an invalid virt.dev/paused value leaves paused or running as Stalled', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'manual-pause', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        runStrategy: 'Manual',
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('manual-pause'), {
      until: stored('manual-pause', (v) => v?.status?.phase === 'Running'),
    });
    expect(await vm('pause', 'manual-pause')).toBe(0);
    await converge(ctx, reconcileVirtualMachine, key('manual-pause'), {
      until: stored('manual-pause', (v) => condition(v, 'Paused')?.reason === 'PausedByRequest'),
    });
    const setPaused = (value: string) => setPausedAnnotation('manual-pause', value);
    await setPaused('yes');
    // Passes by hand: a Stalled machine asks to be looked at again (with backoff).
    for (let pass = 0; pass < 3; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key('manual-pause'), ctx);
    }
    const machine = vmOf('manual-pause')!;
    expect((await (await domainOf(machine)).getState()).stateName).toBe('paused');
    expect(machine.status?.phase).toBe('Paused');
    // It read Ready=True ManualPower: kstatus Current, Argo CD Suspended, for a guest nothing
    // resumes until a user fixes the value.
    const ready = condition(machine, 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'InvalidAnnotation' });
    expect(ready?.message).toContain('virt.dev/paused is "yes"');
    expect(condition(machine, 'Stalled')?.status).toBe('True');
    const verdict = kstatus([machine]).get('VirtualMachine/manual-pause');
    expect(verdict?.status).toBe('Failed');
    expect(verdict?.message).toContain('virt.dev/paused is "yes"');
    expect(argoHealth(machine)).toMatchObject({ status: 'Degraded' });
    expect(argoHealth(machine).message).toContain('virt.dev/paused is "yes"');

    // The pause is still the operator's: "false" undoes it, Manual or not (it stayed paused,
    // Ready=True ManualPower, once the pass with "yes" had dropped PausedByRequest).
    await setPaused('false');
    await converge(ctx, reconcileVirtualMachine, key('manual-pause'), {
      until: stored('manual-pause', (v) => v?.status?.phase === 'Running'),
    });
    expect((await (await domainOf(vmOf('manual-pause')!)).getState()).stateName).toBe('running');
    expect(condition(vmOf('manual-pause'), 'Ready')).toMatchObject({
      status: 'True',
      reason: 'ManualPower',
    });

    // A running guest whose value asks nothing ("True" for "true") is left running, and says
    // so: it read Ready=True, kstatus Current and Argo CD Healthy, with the pause not made.
    await setPaused('True');
    for (let pass = 0; pass < 3; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key('manual-pause'), ctx);
    }
    const running = vmOf('manual-pause')!;
    expect((await (await domainOf(running)).getState()).stateName).toBe('running');
    expect(condition(running, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'InvalidAnnotation',
    });
    expect(kstatus([running]).get('VirtualMachine/manual-pause')?.status).toBe('Failed');
    expect(argoHealth(running)).toMatchObject({ status: 'Degraded' });
    expect(argoHealth(running).message).toContain('virt.dev/paused is "True"');
    await setPausedAnnotation('manual-pause', undefined);
    await converge(ctx, reconcileVirtualMachine, key('manual-pause'), {
      until: stored('manual-pause', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    expect(kstatus([vmOf('manual-pause')]).get('VirtualMachine/manual-pause')?.status).toBe(
      'Current',
    );
  });

  it('restarts once per `vm restart`, and never again for the same value', async () => {
    const before = (await domainOf(vmOf('power')!)).getID();
    expect(await vm('restart', 'power')).toBe(0);
    await ctx.refresh();
    const value = vmOf('power')?.metadata.annotations?.['virt.dev/restart-requested-at'];
    expect(value).toMatch(/^\d{4}-\d\d-\d\dT/);
    await converge(ctx, reconcileVirtualMachine, key('power'), {
      until: stored(
        'power',
        (v) =>
          v?.status?.lastRestartRequest === value &&
          condition(v, 'Ready')?.status === 'True' &&
          condition(v, 'ShutdownRequested') === undefined,
      ),
      maxPasses: 40,
    });
    const after = (await domainOf(vmOf('power')!)).getID();
    expect(after).not.toBe(before);
    // More passes (as after an agent restart): the same value does nothing.
    rec.reset();
    for (let i = 0; i < 3; i++) await converge(ctx, reconcileVirtualMachine, key('power'));
    expect(rec.writes()).toEqual([]);
    expect((await domainOf(vmOf('power')!)).getID()).toBe(after);
  });

  it('with a grace period of 0, restarts by a destroy at once, as every other stop', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'quick', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        terminationGracePeriodSeconds: 0,
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('quick'), {
      until: stored('quick', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    const before = (await domainOf(vmOf('quick')!)).getID();
    expect(await vm('restart', 'quick')).toBe(0);
    // The pass that records the request stops the domain: a destroy, no ACPI request.
    rec.reset();
    await ctx.refresh();
    await reconcileVirtualMachine(key('quick'), ctx);
    expect(rec.writes()).toContain('Domain.destroy');
    expect(rec.writes()).not.toContain('Domain.shutdown');
    await converge(ctx, reconcileVirtualMachine, key('quick'), {
      until: stored(
        'quick',
        (v) => condition(v, 'Ready')?.status === 'True' && !condition(v, 'ShutdownRequested'),
      ),
    });
    expect((await domainOf(vmOf('quick')!)).getID()).not.toBe(before);
    expect(rec.writes()).not.toContain('Domain.shutdown');
    await k.remove('VirtualMachine', NS, 'quick');
    await converge(ctx, reconcileVirtualMachine, key('quick'), {
      until: stored('quick', (v) => v === undefined),
    });
  });

  it('reports a requested restart whose ACPI request libvirt refused, and asks again', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'refused', namespace: NS },
      spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    });
    await converge(ctx, reconcileVirtualMachine, key('refused'), {
      until: stored('refused', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    const before = (await domainOf(vmOf('refused')!)).getID();
    // QEMU's driver refuses the request of a guest that is not running (one that did not wake
    // from suspend to RAM in time, say); the test driver never does.
    rec.refuse(
      'Domain.shutdown',
      new LibvirtError('Requested operation is not valid: domain is not running', {
        code: ErrorCode.VIR_ERR_OPERATION_INVALID,
        domain: ErrorDomain.VIR_FROM_QEMU,
        level: 2,
      }),
    );
    try {
      expect(await vm('restart', 'refused')).toBe(0);
      await ctx.refresh();
      await reconcileVirtualMachine(key('refused'), ctx);
      await ctx.refresh();
      const v = vmOf('refused');
      expect(condition(v, 'Synced')).toMatchObject({
        status: 'False',
        reason: 'ShutdownFailed',
        message: expect.stringContaining('domain is not running') as string,
      });
      expect(condition(v, 'ShutdownRequested')?.message).toContain('no ACPI request sent yet');
      expect(
        ctx.events.filter((e) => e.key === key('refused') && e.reason === 'ShutdownFailed'),
      ).toMatchObject([{ type: 'Warning' }]);
    } finally {
      rec.refuse('Domain.shutdown', undefined);
    }
    // The next passes ask the guest (not a destroy at the end of the grace period).
    rec.reset();
    await converge(ctx, reconcileVirtualMachine, key('refused'), {
      until: stored(
        'refused',
        (v) => condition(v, 'Ready')?.status === 'True' && !condition(v, 'ShutdownRequested'),
      ),
      maxPasses: 40,
    });
    expect(rec.writes()).toContain('Domain.shutdown');
    expect(rec.writes()).not.toContain('Domain.destroy');
    expect((await domainOf(vmOf('refused')!)).getID()).not.toBe(before);
    await k.remove('VirtualMachine', NS, 'refused');
    await converge(ctx, reconcileVirtualMachine, key('refused'), {
      until: stored('refused', (v) => v === undefined),
    });
  });

  it('keeps naming pending changes while a requested restart stops the machine', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'pending', namespace: NS },
      spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    });
    await converge(ctx, reconcileVirtualMachine, key('pending'), {
      until: stored('pending', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    await k.patchSpec('VirtualMachine', NS, 'pending', {
      cpu: { mode: 'custom', model: 'Haswell' },
    });
    await converge(ctx, reconcileVirtualMachine, key('pending'), {
      until: stored('pending', (v) => condition(v, 'RestartRequired')?.status === 'True'),
    });
    const announced = () =>
      ctx.events.filter((e) => e.key === key('pending') && e.reason === 'RestartRequired').length;
    expect(announced()).toBe(1);
    // The pass that records the request and sends the ACPI request: the change is still
    // pending (it applies when the domain starts again). The guest of a real QEMU takes a
    // while to shut down, and the passes meanwhile name it too: no False in between.
    expect(await vm('restart', 'pending')).toBe(0);
    await ctx.refresh();
    await reconcileVirtualMachine(key('pending'), ctx);
    await ctx.refresh();
    expect(condition(vmOf('pending'), 'ShutdownRequested')?.reason).toBe('RestartRequested');
    expect(condition(vmOf('pending'), 'RestartRequired')).toMatchObject({
      status: 'True',
      message: expect.stringContaining('pending: spec.cpu;') as string,
    });
    expect(announced()).toBe(1);
    await converge(ctx, reconcileVirtualMachine, key('pending'), {
      until: stored(
        'pending',
        (v) =>
          condition(v, 'Ready')?.status === 'True' &&
          condition(v, 'RestartRequired')?.status === 'False',
      ),
      maxPasses: 40,
    });
    expect(announced()).toBe(1);
    await k.remove('VirtualMachine', NS, 'pending');
    await converge(ctx, reconcileVirtualMachine, key('pending'), {
      until: stored('pending', (v) => v === undefined),
      maxPasses: 40,
    });
  });

  it('looks again within about a minute (51-69 s) at a restart waiting for OVMF, and begins it once installed', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'noovmf', namespace: NS },
      spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    });
    await converge(ctx, reconcileVirtualMachine, key('noovmf'), {
      until: stored('noovmf', (v) => condition(v, 'Ready')?.status === 'True'),
    });
    const first = await (await domainOf(vmOf('noovmf')!)).getID();
    // The test driver has no domain capabilities: a read just made found no OVMF, as QEMU's on
    // a node without the package does.
    ctx.host.firmware.set('qemu', { readAt: ctx.now().getTime(), offers: { efi: false } });
    await k.patchSpec('VirtualMachine', NS, 'noovmf', { firmware: 'uefi' });
    expect(await vm('restart', 'noovmf')).toBe(0);
    await ctx.refresh();
    // Nothing wakes the machine when the package is installed: the pass itself looks again.
    const waiting = await reconcileVirtualMachine(key('noovmf'), ctx);
    expect(requeueMs(waiting)).toBeLessThanOrEqual(HOST_LACK_LONGEST_RECHECK_MS);
    await ctx.refresh();
    expect(condition(vmOf('noovmf'), 'Ready')?.message).toContain('waits for it');
    expect(await (await domainOf(vmOf('noovmf')!)).getID()).toBe(first);
    // Each such look, while the node still lacks it, is quiet: no status write, no Event (a
    // minute's requeue of every waiting machine must not become a write per machine a minute).
    const quiet = { writes: ctx.writes, events: ctx.events.length };
    ctx.host.firmware.set('qemu', { readAt: ctx.now().getTime(), offers: { efi: false } });
    expect(requeueMs(await reconcileVirtualMachine(key('noovmf'), ctx))).toBeLessThanOrEqual(
      HOST_LACK_LONGEST_RECHECK_MS,
    );
    expect({ writes: ctx.writes, events: ctx.events.length }).toEqual(quiet);
    // That look a minute on, after the install (the driver now says nothing is missing): the
    // read is made again rather than trusted for the ten minutes a complete one is.
    ctx.host.firmware.set('qemu', { readAt: ctx.now().getTime() - 61_000, offers: { efi: false } });
    const value = vmOf('noovmf')!.metadata.annotations?.['virt.dev/restart-requested-at'];
    await converge(ctx, reconcileVirtualMachine, key('noovmf'), {
      until: stored(
        'noovmf',
        (v) => v?.status?.lastRestartRequest === value && condition(v, 'Ready')?.status === 'True',
      ),
      maxPasses: 20,
    });
    expect(await (await domainOf(vmOf('noovmf')!)).getID()).not.toBe(first);
    ctx.host.firmware.delete('qemu');
    await k.remove('VirtualMachine', NS, 'noovmf');
    await converge(ctx, reconcileVirtualMachine, key('noovmf'), {
      until: stored('noovmf', (v) => v === undefined),
      maxPasses: 40,
    });
  });

  it('refuses `vm restart` of a stopped machine, saying why and how to start it', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'halted', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        runStrategy: 'Halted',
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('halted'), {
      until: stored('halted', (v) => v?.status?.phase === 'Stopped'),
    });
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => {
      errors.push(String(line));
    });
    try {
      expect(await vm('restart', 'halted')).toBe(1);
    } finally {
      spy.mockRestore();
    }
    expect(errors.join('\n')).toMatch(
      /virtualmachine vm-day2\/halted is not running \(phase Stopped\).*runStrategy Halted keeps it stopped.*"runStrategy":"Always"/,
    );
    // No request was written: nothing is left for a later start to misread.
    await ctx.refresh();
    expect(vmOf('halted')?.metadata.annotations?.['virt.dev/restart-requested-at']).toBeUndefined();
  });

  it('rejects a missing machine and a wrong action with clear messages', async () => {
    expect(await vm('pause', 'no-such-machine')).toBe(1);
    expect(await vm('frobnicate', 'power')).toBe(2);
    // A namespace that does not exist is named as the cause, not left for the user to find.
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => {
      errors.push(String(line));
    });
    try {
      const kubeconfig = controlPlane().kubeconfigPath;
      expect(
        await vmCommand(['pause', 'power', '-n', 'no-such-ns', '--kubeconfig', kubeconfig]),
      ).toBe(1);
      expect(
        await vmCommand(['pause', 'no-such-machine', '-n', NS, '--kubeconfig', kubeconfig]),
      ).toBe(1);
    } finally {
      spy.mockRestore();
    }
    expect(errors).toEqual([
      'libvirt-operator vm: virtualmachine no-such-ns/power not found: namespace no-such-ns does not exist',
      `libvirt-operator vm: virtualmachine ${NS}/no-such-machine not found`,
    ]);
  });

  /**
   * A Ready machine `machine` running with the Volume `volume` (its file at `path`) as disk
   * `disk`; the Volume carries the finalizers the agent (or the API server's policy) puts on.
   */
  async function runningWithVolume(volume: string, path: string, machine: string, disk: string) {
    await k.create('Volume', {
      metadata: {
        name: volume,
        namespace: NS,
        finalizers: [HOST_FINALIZER, VOLUME_PROTECTION_FINALIZER],
      },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi' },
    });
    await k.patchStatus('Volume', NS, volume, { phase: 'Available', path });
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: machine, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: disk, volume }],
      },
    });
    await converge(ctx, reconcileVirtualMachine, key(machine), {
      until: stored(machine, (v) => condition(v, 'Ready')?.status === 'True'),
    });
  }

  it('keeps a Volume whose disk the running domain still holds after the spec dropped it', async () => {
    await runningWithVolume('held', HELD_PATH, 'holder', 'held');
    // The test driver cannot detach live: the running domain keeps the disk until a restart
    // (on QEMU, a guest that has not released it yet does the same). A GitOps prune then
    // removes the disk from the spec and deletes its Volume at once.
    await k.patchSpec('VirtualMachine', NS, 'holder', { disks: [] });
    await converge(ctx, reconcileVirtualMachine, key('holder'), {
      until: stored('holder', (v) => condition(v, 'RestartRequired')?.status === 'True'),
    });
    const volume = async () => (await k.get<Volume>('Volume', NS, 'held'))!;
    await k.remove('Volume', NS, 'held');
    for (let i = 0; i < 3; i++) {
      await ctx.refresh();
      expect(requeueMs(await reconcileVolume(key('held'), ctx))).toBeGreaterThan(0);
    }
    const blocked = await volume();
    expect(blocked.metadata.finalizers).toContain(HOST_FINALIZER);
    expect(blocked.status?.usedBy).toEqual([{ kind: 'VirtualMachine', name: 'holder' }]);
    expect(
      blocked.status?.conditions?.find((c) => c.type === 'DeletionBlocked')?.message,
    ).toContain('VirtualMachine holder');

    // Once the domain lets go (here: the machine is deleted), the Volume goes.
    await k.remove('VirtualMachine', NS, 'holder');
    await converge(ctx, reconcileVirtualMachine, key('holder'), {
      until: stored('holder', (v) => v === undefined),
      maxPasses: 40,
    });
    await converge(ctx, reconcileVolume, key('held'), {
      until: async () => (await k.get<Volume>('Volume', NS, 'held')) === undefined,
    });
  });

  it('keeps a Volume dropped in the same apply as a restart request while the guest shuts down', async () => {
    await runningWithVolume('stopheld', STOP_HELD_PATH, 'stopper', 'data');
    // One apply drops the disk and asks for a restart. The pass that sends the ACPI request
    // takes no live detach (the domain is being stopped) and writes this status: the new
    // generation observed, ShutdownRequested, and neither DetachRequested nor RestartRequired.
    // The test driver's guest powers off at once, so the status of a real guest still shutting
    // down (with the disk open) is written here as that pass writes it.
    await k.patchSpec('VirtualMachine', NS, 'stopper', { disks: [] });
    const current = (await k.get<VirtualMachine>('VirtualMachine', NS, 'stopper'))!;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    await k.patchStatus('VirtualMachine', NS, 'stopper', {
      observedGeneration: current.metadata.generation,
      lastRestartRequest: 'now',
      conditions: [
        ...(current.status?.conditions ?? []).filter((c) => c.type !== 'Ready'),
        {
          type: 'Ready',
          status: 'False',
          reason: 'Restarting',
          message: 'restarting the domain gracefully, as virt.dev/restart-requested-at asks',
          lastTransitionTime: now,
        },
        {
          type: 'ShutdownRequested',
          status: 'True',
          reason: 'RestartRequested',
          message: 'ACPI shutdown requested (a restart requested by virt.dev/restart-requested-at)',
          lastTransitionTime: now,
        },
      ],
    });
    expect(condition(current, 'RestartRequired')?.status).not.toBe('True');
    // The domain still has the disk: the Volume's file must stay.
    const domain = await domainOf(current);
    expect(await domain.getXMLDesc()).toContain(STOP_HELD_PATH);
    await k.remove('Volume', NS, 'stopheld');
    await ctx.refresh();
    expect(requeueMs(await reconcileVolume(key('stopheld'), ctx))).toBeGreaterThan(0);
    const blocked = (await k.get<Volume>('Volume', NS, 'stopheld'))!;
    expect(blocked.metadata.finalizers).toContain(HOST_FINALIZER);
    expect(blocked.status?.usedBy).toEqual([{ kind: 'VirtualMachine', name: 'stopper' }]);

    // The guest is off (here: destroyed, as the grace period would): the file can go.
    await domain.destroy();
    await converge(ctx, reconcileVolume, key('stopheld'), {
      until: async () => (await k.get<Volume>('Volume', NS, 'stopheld')) === undefined,
    });
    await k.remove('VirtualMachine', NS, 'stopper');
    await converge(ctx, reconcileVirtualMachine, key('stopper'), {
      until: stored('stopper', (v) => v === undefined),
      maxPasses: 40,
    });
  });
});
