// The VirtualMachine controller against a real API server and libvirt's test driver: a machine
// becomes Ready, takes memory and vCPU changes live, reports restart-time changes, is restarted
// after a destroy behind the operator's back, shuts down gracefully when Halted, and leaves the
// host clean when deleted. A converged machine costs no libvirt write and no API write.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { defaultMacAddress } from '../../../../src/api/names.js';
import { FIELD_MANAGER } from '../../../../src/agent/kube-writes.js';
import { HOST_FINALIZER } from '../../../../src/controllers/context.js';
import { createHostState } from '../../../../src/controllers/host-state.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { Connect, DomainVcpuFlags, DomainXMLFlags } from '../../../../src/libvirt/index.js';
import { DomainDeviceModifyFlags, DomainMetadataType } from '../../../../src/libvirt/constants.js';
import { KubeApiError } from '../../../../src/runtime/kube-client.js';
import { CallLanes } from '../../../../src/libvirt/lanes.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import {
  RESTARTS_NAMESPACE,
  RESTARTS_PREFIX,
  buildRestartsXML,
  stampOf,
} from '../../../../src/ownership/metadata.js';
import { firstStartWait } from '../../../../src/controllers/virtual-machine-snapshot/plan.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import {
  converge,
  toldOnceDespiteRefusals,
  withStatusUnanswered,
  type SnapshotContext,
  requeueMs,
} from '../../../harness/controller-context.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { openMachineBench, readyVolume, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-life';
const ROOT_PATH = '/var/lib/libvirt-operator-test/vm-life_root.qcow2';
const DATA_PATH = '/var/lib/libvirt-operator-test/vm-life_data.raw';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;

beforeAll(async () => {
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k } = bench);
  await readyVolume(k, { namespace: NS, nodeName: NODE }, 'root', 'qcow2', ROOT_PATH);
  await readyVolume(k, { namespace: NS, nodeName: NODE }, 'data', 'raw', DATA_PATH);
  await k.create('VirtualNetwork', { metadata: { name: 'life-net' }, spec: { mode: 'isolated' } });
  await k.patchStatus('VirtualNetwork', undefined, 'life-net', {
    nodes: [{ nodeName: NODE, active: true }],
  });
});

afterAll(async () => {
  await bench?.close();
});

async function createVM(name: string, spec: Record<string, unknown>, annotations = {}) {
  return k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS, annotations },
    spec: {
      nodeName: NODE,
      domainType: 'qemu',
      vcpus: 1,
      maxVcpus: 2,
      memory: '256Mi',
      maxMemory: '512Mi',
      disks: [{ name: 'root', volume: 'root', bootOrder: 1 }],
      interfaces: [{ name: 'eth0', network: 'life-net' }],
      terminationGracePeriodSeconds: 30,
      ...spec,
    },
  });
}

const key = (name: string) => `${NS}/${name}`;
const vmOf = (name: string) => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);
/** converge's until: true once the stored object (read afresh) satisfies `test`. */
const stored = (name: string, test: (vm: VirtualMachine | undefined) => boolean) => async () => {
  await ctx.refresh();
  return test(vmOf(name));
};
const ready = (name: string) => stored(name, (vm) => condition(vm, 'Ready')?.status === 'True');
const eventReasons = (name: string) =>
  ctx.events.filter((e) => e.key === key(name)).map((e) => e.reason);

async function domainOf(vm: VirtualMachine) {
  return conn.lookupDomainByUUIDString(String(vm.metadata.uid));
}

describe('VirtualMachine reconcile on test:///default', () => {
  it('makes a machine Ready: the domain is found by UUID and status matches libvirt', async () => {
    const created = await createVM('web', {});
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });

    const vm = vmOf('web');
    const domain = await domainOf(created);
    expect(domain.getName()).toBe(`${NS}_web`);
    expect(domain.getUUIDString()).toBe(created.metadata.uid);
    const state = await domain.getState();
    expect(state.stateName).toBe('running');
    const live = parseDomainXML(await domain.getXMLDesc());
    const stamp = stampOf(await domain.getXMLDesc());
    expect(stamp).toMatchObject({ kind: 'VirtualMachine', namespace: NS, name: 'web' });
    expect(stamp?.uid).toBe(created.metadata.uid);
    expect(live.devices.disks).toEqual([
      expect.objectContaining({
        device: 'disk',
        source: { type: 'file', file: ROOT_PATH },
        driver: { name: 'qemu', type: 'qcow2' },
        target: { dev: 'vda', bus: 'virtio' },
        bootOrder: 1,
      }),
    ]);
    const mac = defaultMacAddress(String(created.metadata.uid), 'eth0');
    expect(live.devices.interfaces).toEqual([
      expect.objectContaining({ source: { network: 'life-net' }, mac, model: 'virtio' }),
    ]);

    expect(vm?.metadata.finalizers).toContain(HOST_FINALIZER);
    expect(vm?.status).toMatchObject({
      phase: 'Running',
      observedGeneration: created.metadata.generation,
      uuid: created.metadata.uid,
      domainName: `${NS}_web`,
      nodeName: NODE,
      state: { state: 'running', reason: state.reasonName },
      memory: { target: '256Mi', actual: '256Mi' },
      vcpus: { current: 1, max: 2 },
      interfaces: [{ name: 'eth0', macAddress: mac }],
      restartCount: 0,
    });
    expect(vm?.status?.startedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(condition(vm, 'Synced')?.status).toBe('True');
    expect(condition(vm, 'RestartRequired')?.status).toBe('False');
    // Its first status tells of the new domain; an Event would only repeat it (one more write).
    expect(eventReasons('web')).toEqual([]);
  });

  it('makes no libvirt write and no API write when re-reconciling a converged machine', async () => {
    await ctx.refresh();
    const vm = vmOf('web');
    const domain = await domainOf(vm!);
    const id = domain.getID();
    const liveXML = await domain.getXMLDesc();
    const configXML = await domain.getXMLDesc(DomainXMLFlags.INACTIVE);
    const writes = ctx.writes;
    const events = ctx.events.length;
    rec.reset();

    for (let pass = 0; pass < 3; pass++) {
      await ctx.refresh();
      expect(await reconcileVirtualMachine(key('web'), ctx)).toEqual({ kind: 'done' });
    }

    expect(rec.calls.length).toBeGreaterThan(0); // it did look at the host
    expect(rec.writes()).toEqual([]);
    expect(ctx.writes).toBe(writes);
    expect(ctx.events.length).toBe(events);
    const again = await domainOf(vm!);
    expect(again.getID()).toBe(id);
    expect(await again.getXMLDesc()).toBe(liveXML);
    expect(await again.getXMLDesc(DomainXMLFlags.INACTIVE)).toBe(configXML);
  });

  it('applies memory and vCPU changes to the running machine live, without a restart', async () => {
    const before = await domainOf(vmOf('web')!);
    const id = before.getID();
    rec.reset();

    await k.patchSpec('VirtualMachine', NS, 'web', { memory: '384Mi', vcpus: 2 });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => vm?.status?.vcpus?.current === 2),
    });

    const after = await domainOf(vmOf('web')!);
    expect(after.getID()).toBe(id);
    expect((await after.getState()).stateName).toBe('running');
    expect((await after.getInfo()).memory).toBe(384n * 1024n);
    expect(await after.getVcpusFlags(DomainVcpuFlags.LIVE)).toBe(2);
    const config = parseDomainXML(await after.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect(config.currentMemoryKiB).toBe(384 * 1024);
    expect(config.vcpu.current).toBe(2);
    // And the run's record moves on to the generation it now reflects (plan.ts runCaughtUp).
    expect(rec.writes().every((c) => /^Domain\.(setMemory|setVcpus|setMetadata)$/.test(c))).toBe(
      true,
    );
    expect(parseDomainXML(await after.getXMLDesc()).startedUnder).toBe(
      vmOf('web')?.metadata.generation,
    );
    // In the persistent definition too, which the edit also went to: a `virsh start` from it
    // is a run of this generation, not one of the last start's to restart for any difference.
    expect(config.startedUnder).toBe(vmOf('web')?.metadata.generation);
    expect(rec.writes()).toEqual(expect.arrayContaining(['Domain.setMemory', 'Domain.setVcpus']));

    const vm = vmOf('web');
    expect(vm?.status).toMatchObject({
      phase: 'Running',
      observedGeneration: vm?.metadata.generation,
      memory: { target: '384Mi', actual: '384Mi' },
      vcpus: { current: 2, max: 2 },
      restartCount: 0,
    });
    expect(condition(vm, 'RestartRequired')?.status).toBe('False');
    expect(eventReasons('web')).toEqual(expect.arrayContaining(['MemoryChanged', 'VcpusChanged']));
  });

  it('saves a restart-time change and names it in RestartRequired, keeping the machine running', async () => {
    const id = (await domainOf(vmOf('web')!)).getID();
    await k.patchSpec('VirtualMachine', NS, 'web', {
      maxMemory: '1Gi',
      disks: [
        { name: 'root', volume: 'root', bootOrder: 1 },
        { name: 'data', volume: 'data', bus: 'scsi' },
      ],
    });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });

    const vm = vmOf('web');
    const message = condition(vm, 'RestartRequired')?.message ?? '';
    expect(message).toContain('spec.maxMemory');
    expect(message).toContain('spec.disks');
    expect(message).not.toContain('spec.memory,');
    expect(condition(vm, 'Ready')?.status).toBe('True');
    const domain = await domainOf(vm!);
    expect(domain.getID()).toBe(id);
    expect(parseDomainXML(await domain.getXMLDesc()).memoryKiB).toBe(512 * 1024);
    const config = parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect(config.memoryKiB).toBe(1024 * 1024);
    expect(config.devices.disks.map((d) => [d.target.dev, d.source])).toEqual([
      ['vda', { type: 'file', file: ROOT_PATH }],
      ['sda', { type: 'file', file: DATA_PATH }],
    ]);
    expect(eventReasons('web')).toEqual(expect.arrayContaining(['Updated', 'RestartRequired']));
    // The Updated Event names the pending fields once, not RestartRequired's whole message.
    const updated = ctx.events.filter((e) => e.key === key('web') && e.reason === 'Updated');
    expect(updated.at(-1)?.message).toMatch(
      /; it applies at the next start \(pending: spec\.maxMemory, spec\.disks\S*; updatePolicy Manual\)$/,
    );
  });

  // KubeVirt's RestartRequired blocks live updates until a restart, even after the change that
  // needs one is undone (kubevirt#16719). Here neither: live changes go on, and undoing the
  // restart-time change drops the condition without a restart.
  it('applies live changes while a restart-time change waits, and forgets it when undone', async () => {
    const id = (await domainOf(vmOf('web')!)).getID();
    await k.patchSpec('VirtualMachine', NS, 'web', { memory: '448Mi' });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => vm?.status?.memory?.actual === '448Mi'),
    });
    expect((await (await domainOf(vmOf('web')!)).getInfo()).memory).toBe(448n * 1024n);
    expect(condition(vmOf('web'), 'RestartRequired')?.status).toBe('True');

    const restartTime = { maxMemory: '1Gi', disks: vmOf('web')!.spec.disks };
    await k.patchSpec('VirtualMachine', NS, 'web', {
      maxMemory: '512Mi',
      disks: [{ name: 'root', volume: 'root', bootOrder: 1 }],
    });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => condition(vm, 'RestartRequired')?.status === 'False'),
    });
    const domain = await domainOf(vmOf('web')!);
    expect(domain.getID()).toBe(id);
    expect(condition(vmOf('web'), 'Ready')?.status).toBe('True');
    const config = parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect([config.memoryKiB, config.currentMemoryKiB]).toEqual([512 * 1024, 448 * 1024]);

    // Pending again, for the next test.
    await k.patchSpec('VirtualMachine', NS, 'web', restartTime);
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });
  });

  it('applies restart-time changes by a graceful restart with updatePolicy Restart', async () => {
    const id = (await domainOf(vmOf('web')!)).getID();
    rec.reset();
    await k.patchSpec('VirtualMachine', NS, 'web', { updatePolicy: 'Restart' });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored(
        'web',
        (vm) =>
          condition(vm, 'Ready')?.status === 'True' &&
          condition(vm, 'RestartRequired')?.status === 'False',
      ),
    });

    const vm = vmOf('web');
    const domain = await domainOf(vm!);
    expect(domain.getID()).not.toBe(id);
    expect(parseDomainXML(await domain.getXMLDesc()).memoryKiB).toBe(1024 * 1024);
    // The start records the generation it runs under once the domain runs (act.ts).
    expect(rec.writes()).toEqual(['Domain.shutdown', 'Domain.create', 'Domain.setMetadata']);
    expect(parseDomainXML(await domain.getXMLDesc()).startedUnder).toBe(vm?.metadata.generation);
    expect(vm?.status?.restartCount).toBe(0);
    expect(condition(vm, 'ShutdownRequested')).toBeUndefined();
  });

  it('starts a domain destroyed behind its back again, counting the restart, with an Event', async () => {
    const vm = vmOf('web')!;
    const domain = await domainOf(vm);
    const id = domain.getID();
    await domain.destroy();
    expect((await domain.getState()).reasonName).toBe('destroyed');

    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => vm?.status?.restartCount === 1),
    });

    const after = await domainOf(vm);
    expect((await after.getState()).stateName).toBe('running');
    expect(after.getID()).not.toBe(id);
    expect(vmOf('web')?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    const restarted = ctx.events.filter((e) => e.key === key('web') && e.reason === 'Restarted');
    expect(restarted).toHaveLength(1);
    expect(restarted[0]?.type).toBe('Warning');
    expect(restarted[0]?.message).toContain('shutoff (destroyed)');
  });

  it('shuts the machine down gracefully (ACPI, not destroy) when runStrategy becomes Halted', async () => {
    rec.reset();
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => vm?.status?.phase === 'Stopped'),
    });

    const vm = vmOf('web');
    const state = await (await domainOf(vm!)).getState();
    expect(state).toMatchObject({ stateName: 'shutoff', reasonName: 'shutdown' });
    expect(rec.writes()).toEqual(['Domain.shutdown']);
    expect(vm?.status?.state).toEqual({ state: 'shutoff', reason: 'shutdown' });
    expect(condition(vm, 'Ready')).toMatchObject({ status: 'True', reason: 'Halted' });
    expect(condition(vm, 'ShutdownRequested')).toMatchObject({
      status: 'True',
      reason: 'RunStrategyHalted',
    });
    expect(vm?.status?.restartCount).toBe(1);
    expect(eventReasons('web')).toContain('ShuttingDown');

    // Back to Always: a start the user asked for, not a restart.
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    expect((await (await domainOf(vm!)).getState()).stateName).toBe('running');
    expect(vmOf('web')?.status?.restartCount).toBe(1);
    expect(condition(vmOf('web'), 'ShutdownRequested')).toBeUndefined();
  });

  it('destroys a guest that ignores the ACPI request once the grace period, kept in status, has passed', async () => {
    // An agent restart in the middle of a graceful stop: the request time is all that
    // survives, as the ShutdownRequested condition in status.
    const vm = vmOf('web')!;
    const domain = await domainOf(vm);
    const requestedAt = (secondsAgo: number) =>
      new Date(Date.now() - secondsAgo * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
    const withRequest = (secondsAgo: number, notSyncedFor?: number) => ({
      ...vm.status,
      conditions: [
        ...(vm.status?.conditions ?? []).filter(
          (c) =>
            c.type !== 'ShutdownRequested' && (notSyncedFor === undefined || c.type !== 'Synced'),
        ),
        {
          type: 'ShutdownRequested',
          status: 'True',
          reason: 'RunStrategyHalted',
          message: 'ACPI shutdown requested',
          lastTransitionTime: requestedAt(secondsAgo),
        },
        ...(notSyncedFor === undefined
          ? []
          : [
              {
                type: 'Synced',
                status: 'False',
                reason: 'VolumeNotReady',
                message: 'not ready',
                lastTransitionTime: requestedAt(notSyncedFor),
              },
            ]),
      ],
    });
    const writeStatus = (status: object) => applyStatusAsOperator('web', status);
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });

    // Within the grace period (30 s): nothing is done, the next look is scheduled, and soon
    // even while a problem (a Volume not ready for 10 minutes) backs off for 5 minutes.
    await writeStatus(withRequest(10, 600));
    await k.patchStatus('Volume', NS, 'data', { phase: 'Pending' });
    await ctx.refresh();
    rec.reset();
    const waiting = await reconcileVirtualMachine(key('web'), ctx);
    expect(requeueMs(waiting)).toBeGreaterThan(0);
    expect(requeueMs(waiting)).toBeLessThanOrEqual(2_000);
    expect(rec.writes()).toEqual([]);
    expect((await domain.getState()).stateName).toBe('running');
    await ctx.refresh();
    expect(condition(vmOf('web'), 'Synced')?.reason).toBe('VolumeNotReady');
    await k.patchStatus('Volume', NS, 'data', { phase: 'Available' });

    // Past it: destroyed.
    await writeStatus(withRequest(31));
    await converge(ctx, reconcileVirtualMachine, key('web'), {
      until: stored('web', (vm) => vm?.status?.phase === 'Stopped'),
    });
    expect(rec.writes()).toEqual(['Domain.destroy']);
    expect((await domain.getState()).reasonName).toBe('destroyed');
    expect(eventReasons('web')).toContain('GracePeriodExpired');
    expect(vmOf('web')?.status?.restartCount).toBe(1);
  });

  /** Status written as the operator's own field manager would have written it before a restart. */
  async function applyStatusAsOperator(name: string, status: object) {
    const res = await controlPlane().kubectl(
      [
        'apply',
        '--server-side',
        '--subresource=status',
        `--field-manager=${FIELD_MANAGER}`,
        '-f',
        '-',
      ],
      {
        input: JSON.stringify({
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'VirtualMachine',
          metadata: { name, namespace: NS },
          status,
        }),
      },
    );
    expect(res.code, res.stderr).toBe(0);
  }

  /** Status as the operator wrote it before an agent restart: a stop requested at `since`. */
  async function writeShutdownRequest(vm: VirtualMachine, since: Date, message: string) {
    await applyStatusAsOperator(vm.metadata.name!, {
      ...vm.status,
      conditions: [
        ...(vm.status?.conditions ?? []).filter((c) => c.type !== 'ShutdownRequested'),
        {
          type: 'ShutdownRequested',
          status: 'True',
          reason: 'RunStrategyHalted',
          message,
          lastTransitionTime: since.toISOString().replace(/\.\d+Z$/, 'Z'),
        },
      ],
    });
  }

  /**
   * A running 'web' set to Halted, with an ACPI request recorded as sent 0.7 s into a second
   * 40 s ago: lastTransitionTime says only the second, the message the millisecond. Returns
   * the machine and the end of its 30 s grace period.
   */
  async function haltedAfterRequestMidSecond(): Promise<{ vm: VirtualMachine; end: number }> {
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    const vm = vmOf('web')!;
    const second = Math.floor(Date.now() / 1000) * 1000 - 40_000;
    const sentAt = new Date(second + 700);
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });
    await writeShutdownRequest(
      vm,
      new Date(second),
      `ACPI shutdown requested at ${sentAt.toISOString()} (runStrategy Halted)`,
    );
    return { vm, end: sentAt.getTime() + 30_000 };
  }

  it('counts the grace period from the millisecond status records, and looks again exactly at its end', async () => {
    const { vm, end } = await haltedAfterRequestMidSecond();
    const domain = await domainOf(vm);
    const realClock = ctx.now;
    try {
      // 300 ms before the end, in a pass whose own calls take 200 ms: the next look is due
      // 100 ms after the pass (counted from the second, it would be 600 ms after it).
      let reads = 0;
      ctx.now = () => new Date(end - 300 + (reads++ === 0 ? 0 : 200));
      await ctx.refresh();
      rec.reset();
      expect(requeueMs(await reconcileVirtualMachine(key('web'), ctx))).toBe(100);
      expect(rec.writes()).toEqual([]);
      // At the end of the grace period to the millisecond: destroyed.
      ctx.now = () => new Date(end);
      await ctx.refresh();
      await reconcileVirtualMachine(key('web'), ctx);
      expect(rec.writes()).toEqual(['Domain.destroy']);
    } finally {
      ctx.now = realClock;
    }
    expect((await domain.getState()).reasonName).toBe('destroyed');
  });

  it('decides on the clock read after observing the host: a grace period that ended meanwhile takes no other pass', async () => {
    const { end } = await haltedAfterRequestMidSecond();
    const realClock = ctx.now;
    try {
      // The grace period ends while the pass observes the host (its first libvirt calls).
      ctx.now = () => new Date(rec.calls.length === 0 ? end - 1 : end);
      await ctx.refresh();
      rec.reset();
      await reconcileVirtualMachine(key('web'), ctx);
      expect(rec.writes()).toEqual(['Domain.destroy']);
    } finally {
      ctx.now = realClock;
    }
  });

  it('destroys on a connection of its own when the agent has lanes, not on the main one', async () => {
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    const vm = vmOf('web')!;
    const domain = await domainOf(vm);
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });
    await writeShutdownRequest(vm, new Date(Date.now() - 31_000), 'ACPI shutdown requested');
    const lanes = new CallLanes('test:///default', { lanes: 1 });
    let laneCalls = 0;
    ctx.onLane = (fn) => {
      laneCalls++;
      return lanes.run(fn);
    };
    try {
      await ctx.refresh();
      rec.reset();
      await reconcileVirtualMachine(key('web'), ctx);
      // The recording view is the main connection: the destroy did not go through it.
      expect(rec.writes()).toEqual([]);
      expect(laneCalls).toBe(1);
      expect((await domain.getState()).reasonName).toBe('destroyed');
    } finally {
      delete ctx.onLane;
      await lanes.close();
    }
  });

  it('takes a request it sent from memory while its cache lacks it: no second ACPI request', async () => {
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    const vm = vmOf('web')!;
    const domain = await domainOf(vm);
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });
    // Sent 31 s ago (grace 30 s) to this run; the status write has not come back yet.
    const uid = String(vm.metadata.uid);
    const sent = { reason: 'RunStrategyHalted' as const, sentAt: new Date(Date.now() - 31_000) };
    ctx.host.shutdowns.set(uid, { ...sent, run: domain.getID() + 1 });
    await ctx.refresh();
    rec.reset();
    // Sent to another run of the domain: that stop is over; a new request is sent (and kept).
    await reconcileVirtualMachine(key('web'), ctx);
    expect(rec.writes()).toEqual(['Domain.shutdown']);
    expect(ctx.host.shutdowns.get(uid)?.sentAt.getTime()).toBeGreaterThan(Date.now() - 5_000);

    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Halted' });
    const run = (await domainOf(vm)).getID();
    ctx.host.shutdowns.set(uid, { ...sent, run });
    await ctx.refresh();
    rec.reset();
    // To this run: its grace period has passed, so the domain is destroyed, not asked again.
    await reconcileVirtualMachine(key('web'), ctx);
    expect(rec.writes()).toEqual(['Domain.destroy']);
    // The next pass finds the domain stopped: the memory goes.
    await ctx.refresh();
    await reconcileVirtualMachine(key('web'), ctx);
    expect(ctx.host.shutdowns.has(uid)).toBe(false);
  });

  it('keeps the count of a restart whose status write failed: the next pass writes it', async () => {
    await createVM('crashy', { disks: [], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key('crashy'), { until: ready('crashy') });
    const vm = vmOf('crashy')!;
    await (await domainOf(vm)).destroy();
    // The pass that starts the domain again has its status write refused, as a conflict with
    // another writer would be; the pass after it finds the domain running under a new ID.
    const applyStatus = ctx.applyStatus;
    ctx.applyStatus = () =>
      Promise.reject(new KubeApiError(409, 'Conflict', 'injected', 'PATCH', '/status'));
    try {
      await ctx.refresh();
      await expect(reconcileVirtualMachine(key('crashy'), ctx)).rejects.toThrow(/409 Conflict/);
    } finally {
      ctx.applyStatus = applyStatus;
    }
    expect((await (await domainOf(vm)).getState()).stateName).toBe('running');
    expect(vmOf('crashy')?.status?.restartCount).toBe(0);
    // What the pass did is said although its write was refused: the next pass does not redo it.
    expect(eventReasons('crashy')).toContain('Restarted');

    await converge(ctx, reconcileVirtualMachine, key('crashy'), {
      until: stored('crashy', (vm) => vm?.status?.restartCount === 1),
    });
    expect(vmOf('crashy')?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    // Once the cache shows the count, the memory of it goes.
    await ctx.refresh();
    await reconcileVirtualMachine(key('crashy'), ctx);
    expect(ctx.host.restarts.has(String(vm.metadata.uid))).toBe(false);
    await k.remove('VirtualMachine', NS, 'crashy');
    await converge(ctx, reconcileVirtualMachine, key('crashy'), {
      until: async () => (await k.get('VirtualMachine', NS, 'crashy')) === undefined,
    });
  });

  it('keeps the count of a restart whose agent died before its status write', async () => {
    await createVM('killed', { disks: [], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key('killed'), { until: ready('killed') });
    const vm = vmOf('killed')!;
    await (await domainOf(vm)).destroy();
    // The pass that starts the domain again is cut short before its status write, as a
    // SIGKILL right after the start would; the agent that follows has none of its memory.
    const applyStatus = ctx.applyStatus;
    const host = ctx.host;
    ctx.applyStatus = () => Promise.reject(new Error('killed after the start'));
    try {
      await ctx.refresh();
      await expect(reconcileVirtualMachine(key('killed'), ctx)).rejects.toThrow(/killed/);
    } finally {
      ctx.applyStatus = applyStatus;
    }
    expect((await (await domainOf(vm)).getState()).stateName).toBe('running');
    expect(vmOf('killed')?.status?.restartCount).toBe(0);
    ctx.host = createHostState();
    try {
      await converge(ctx, reconcileVirtualMachine, key('killed'), {
        until: stored('killed', (vm) => vm?.status?.restartCount === 1),
      });
    } finally {
      ctx.host = host;
    }
    expect(vmOf('killed')?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    await k.remove('VirtualMachine', NS, 'killed');
    await converge(ctx, reconcileVirtualMachine, key('killed'), {
      until: async () => (await k.get('VirtualMachine', NS, 'killed')) === undefined,
    });
  });

  it("leaves a Manual machine a user stopped off when its status is lost; a redefine keeps its records and a user's metadata", async () => {
    const name = 'manual-lost';
    await createVM(name, { runStrategy: 'Manual', disks: [], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    const vm = vmOf(name)!;
    const domain = await domainOf(vm);
    const config = async () => parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect((await config()).startedUnder).toBe(vm.metadata.generation);
    // The user stops it, and the status sees that; then the status is lost (restored from a
    // backup without it, wiped by a tool): every field removed through /status.
    await domain.destroy();
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(name, (vm) => vm?.status?.phase === 'Stopped'),
    });
    const wiped = Object.fromEntries(Object.keys(vmOf(name)!.status!).map((f) => [f, null]));
    await k.patchStatus('VirtualMachine', NS, name, wiped);
    await ctx.refresh();
    expect(vmOf(name)?.status?.startedAt).toBeUndefined();
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(name, (vm) => condition(vm, 'Ready')?.reason === 'ManualPower'),
    });
    await ctx.refresh();
    await reconcileVirtualMachine(key(name), ctx);
    expect(await domain.isActive()).toBe(false);
    const stopped = vmOf(name);
    expect(stopped?.status).toMatchObject({
      phase: 'Stopped',
      observedGeneration: vm.metadata.generation,
    });
    expect(condition(stopped, 'Ready')?.status).toBe('True');
    // A snapshot asked now does not wait for a first start that never comes.
    expect(
      firstStartWait(stopped!, { active: false }, { spec: { vmName: name, includeMemory: true } }),
    ).toBeUndefined();

    // A user's own metadata element (as `virsh metadata` puts it) and the restart count in
    // the persistent definition; then a spec change the stopped domain takes by a define.
    const APP = 'http://example.com/app';
    const config_ = DomainDeviceModifyFlags.CONFIG;
    const note = '<note owner="ops &amp; dev">keep me</note>';
    await domain.setMetadata(DomainMetadataType.ELEMENT, note, 'app', APP, config_);
    const restarts = buildRestartsXML(0);
    await domain.setMetadata(
      DomainMetadataType.ELEMENT,
      restarts,
      RESTARTS_PREFIX,
      RESTARTS_NAMESPACE,
      config_,
    );
    // And one a user's `virsh edit` put in with its prefix declared on <metadata>, where
    // libvirt leaves that declaration.
    const OS = 'http://example.com/os';
    const edited = (await domain.getXMLDesc(DomainXMLFlags.INACTIVE))
      .replace('<metadata>', `<metadata xmlns:os="${OS}">`)
      .replace('</metadata>', '<os:info id="deb12"/></metadata>');
    (await conn.defineDomainXML(edited)).free();
    expect(await domain.getMetadata(DomainMetadataType.ELEMENT, OS, config_)).toContain('deb12');
    rec.reset();
    await k.patchSpec('VirtualMachine', NS, name, { maxMemory: '768Mi' });
    const generation = (await k.get<VirtualMachine>('VirtualMachine', NS, name))!.metadata
      .generation;
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(name, (vm) => vm?.status?.observedGeneration === generation),
    });
    expect(rec.writes()).toContain('Connect.defineDomainXML');
    expect(await domain.isActive()).toBe(false);
    const redefined = await config();
    expect(redefined.memoryKiB).toBe(768 * 1024);
    // The run record now names the generation the definition holds; the rest as it was.
    expect(redefined.startedUnder).toBe(generation);
    expect(redefined.restarts).toBe(0);
    const kept = await domain.getMetadata(DomainMetadataType.ELEMENT, APP, config_);
    expect(kept).toMatch(/<note owner="ops &amp; dev">keep me<\/note>/);
    expect(await domain.getMetadata(DomainMetadataType.ELEMENT, OS, config_)).toContain('deb12');
    expect(vmOf(name)?.status?.phase).toBe('Stopped');
    expect(await domain.isActive()).toBe(false);

    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: async () => (await k.get('VirtualMachine', NS, name)) === undefined,
    });
  });

  it('undefines right after a destroy, in the same pass, with one look at the host in between', async () => {
    await createVM('brief', { disks: [], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key('brief'), { until: ready('brief') });
    // Deleted once its grace period has passed (a guest that ignored the ACPI request).
    await writeShutdownRequest(
      vmOf('brief')!,
      new Date(Date.now() - 31_000),
      'ACPI shutdown requested',
    );
    await k.remove('VirtualMachine', NS, 'brief');
    await ctx.refresh();
    rec.reset();
    await reconcileVirtualMachine(key('brief'), ctx);
    expect(rec.writes()).toEqual(['Domain.destroy', 'Domain.undefine']);
    // Looks at the host: before the destroy, before the undefine, and the one finding it gone.
    expect(rec.calls.filter((c) => c === 'Connect.lookupDomainByUUIDString')).toHaveLength(3);
    expect(await k.get('VirtualMachine', NS, 'brief')).toBeUndefined();
  });

  it('says a problem once its status says so, not with every retry of a refused write', async () => {
    const name = `flaky-${randomBytes(3).toString('hex')}`;
    const volume = `${name}-disk`;
    const ref = { namespace: NS, nodeName: NODE };
    await readyVolume(k, ref, volume, 'qcow2', `/var/lib/libvirt-operator-test/${volume}.qcow2`);
    await createVM(name, { disks: [{ name: 'root', volume, bootOrder: 1 }], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    // Its disk's Volume stops being ready: Synced=False, said once by a Warning. The status
    // writes are refused (as a conflict with another writer would be) on two passes.
    await k.patchStatus('Volume', NS, volume, { phase: 'Pending' });
    const warned = () => eventReasons(name).filter((r) => r === 'VolumeNotReady').length;
    await toldOnceDespiteRefusals(ctx, reconcileVirtualMachine, key(name), warned);
    expect(condition(vmOf(name), 'Synced')?.reason).toBe('VolumeNotReady');
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), { until: stored(name, (vm) => !vm) });
    await k.remove('Volume', NS, volume);
  });

  it('says a problem whose status write was applied but not answered', async () => {
    const name = `mute-${randomBytes(3).toString('hex')}`;
    const volume = `${name}-disk`;
    const ref = { namespace: NS, nodeName: NODE };
    await readyVolume(k, ref, volume, 'qcow2', `/var/lib/libvirt-operator-test/${volume}.qcow2`);
    await createVM(name, { disks: [{ name: 'root', volume, bootOrder: 1 }], interfaces: [] });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    await k.patchStatus('Volume', NS, volume, { phase: 'Pending' });
    const warned = () => eventReasons(name).filter((r) => r === 'VolumeNotReady').length;
    // The write lands, its answer does not: the next pass finds VolumeNotReady already stored.
    await withStatusUnanswered(ctx, async () => {
      await ctx.refresh();
      await expect(reconcileVirtualMachine(key(name), ctx)).rejects.toThrow(/no response/);
    });
    await ctx.refresh();
    expect(condition(vmOf(name), 'Synced')?.reason).toBe('VolumeNotReady');
    await reconcileVirtualMachine(key(name), ctx);
    expect(warned()).toBe(1);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), { until: stored(name, (vm) => !vm) });
    await k.remove('Volume', NS, volume);
  });

  it('removes the domain when the machine is deleted, after a graceful stop', async () => {
    await k.patchSpec('VirtualMachine', NS, 'web', { runStrategy: 'Always' });
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: ready('web') });
    const vm = vmOf('web')!;
    await k.remove('VirtualMachine', NS, 'web');
    await converge(ctx, reconcileVirtualMachine, key('web'), { until: stored('web', (vm) => !vm) });

    await expect(conn.lookupDomainByUUIDString(String(vm.metadata.uid))).rejects.toMatchObject({
      code: 42,
    });
    await expect(conn.lookupDomainByName(`${NS}_web`)).rejects.toMatchObject({ code: 42 });
    expect(await k.get('VirtualMachine', NS, 'web')).toBeUndefined();
    expect(eventReasons('web')).toEqual(expect.arrayContaining(['ShuttingDown', 'Deleted']));
  });
});
