// A restart whose start fails for a while (a disk file or lock not yet free, QEMU exiting at
// start: refused here through the recording connection, as the test driver never fails a
// start) must be retried until it succeeds, whatever runStrategy: a requested restart under
// Manual, a rerun after a failure under RerunOnFailure. The restart is counted once.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { RESTART_ANNOTATION } from '../../../../src/controllers/virtual-machine/plan.js';
import { DomainXMLFlags, type Connect } from '../../../../src/libvirt/index.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { annotate } from '../../../harness/kubectl.js';
import { openMachineBench, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-restart-fail';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;

beforeAll(async () => {
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k } = bench);
});

afterAll(async () => {
  rec?.refuse('Domain.create', undefined);
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
const ready = (name: string) => stored(name, (vm) => condition(vm, 'Ready')?.status === 'True');
const domainOf = (vm: VirtualMachine) => conn.lookupDomainByUUIDString(String(vm.metadata.uid));
const isActive = async (name: string) => (await domainOf(vmOf(name)!)).isActive();

async function runningVM(runStrategy: string, interfaces: object[] = []): Promise<string> {
  const name = await createdVM(runStrategy, interfaces);
  await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
  return name;
}

async function createdVM(runStrategy: string, interfaces: object[] = []): Promise<string> {
  const name = `rf-${randomBytes(3).toString('hex')}`;
  await k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS },
    spec: {
      nodeName: NODE,
      domainType: 'qemu',
      vcpus: 1,
      memory: '128Mi',
      disks: [],
      interfaces,
      runStrategy,
      terminationGracePeriodSeconds: 30,
    },
  });
  return name;
}

/** Passes (each on a fresh snapshot) while every start is refused, as a transient failure. */
async function passesWithFailingStart(name: string, passes: number): Promise<void> {
  // What QEMU's driver reports when the process exits at start (a disk still locked, say).
  const exited = new LibvirtError('internal error: QEMU exited while starting (injected)', {
    code: ErrorCode.VIR_ERR_INTERNAL_ERROR,
    domain: ErrorDomain.VIR_FROM_QEMU,
    level: 2,
  });
  rec.refuse('Domain.create', exited);
  try {
    for (let i = 0; i < passes; i++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key(name), ctx);
    }
  } finally {
    rec.refuse('Domain.create', undefined);
  }
}

async function remove(name: string): Promise<void> {
  await k.remove('VirtualMachine', NS, name);
  await converge(ctx, reconcileVirtualMachine, key(name), {
    until: async () => (await k.get('VirtualMachine', NS, name)) === undefined,
  });
}

describe('a restart whose start fails for a while', () => {
  it('under runStrategy Manual, a requested restart keeps being retried until it starts', async () => {
    const name = await runningVM('Manual');
    const at = new Date().toISOString();
    await annotate(controlPlane(), ['vm', name, '-n', NS], { [RESTART_ANNOTATION]: at });
    // The stop (ACPI: the test driver's guest goes at once), then starts that fail.
    await passesWithFailingStart(name, 4);
    expect(await isActive(name)).toBe(false);
    await ctx.refresh();
    const failing = vmOf(name);
    expect(failing?.status?.phase).toBe('Starting');
    expect(condition(failing, 'Synced')).toMatchObject({ status: 'False', reason: 'StartFailed' });
    expect(condition(failing, 'Synced')?.message).toContain('QEMU exited while starting');
    expect(condition(failing, 'ShutdownRequested')).toMatchObject({
      status: 'True',
      reason: 'RestartRequested',
    });

    // The failure clears: the next pass starts the machine, and the restart is over.
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    expect(await isActive(name)).toBe(true);
    const vm = vmOf(name);
    expect(vm?.status?.phase).toBe('Running');
    expect(condition(vm, 'ShutdownRequested')).toBeUndefined();
    expect(condition(vm, 'Synced')?.status).toBe('True');
    // Asked for, not a restart after a failure: not counted.
    expect(vm?.status?.restartCount).toBe(0);
    await remove(name);
  });

  it('under runStrategy Manual, a first start that fails is retried until it starts', async () => {
    const name = await createdVM('Manual');
    // The define, then starts that fail: no run record is written (it follows the start), so
    // the domain has not run under the agent and its first start is still owed.
    await passesWithFailingStart(name, 3);
    const domain = await domainOf(vmOf(name)!);
    expect(await domain.isActive()).toBe(false);
    const config = async () => parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect((await config()).startedUnder).toBeUndefined();
    await ctx.refresh();
    const failing = vmOf(name);
    expect(failing?.status?.phase).toBe('Starting');
    expect(condition(failing, 'Ready')).toMatchObject({ status: 'False', reason: 'StartFailed' });

    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    expect(await domain.isActive()).toBe(true);
    expect(vmOf(name)?.status?.phase).toBe('Running');
    expect((await config()).startedUnder).toBe(vmOf(name)?.metadata.generation);
    await remove(name);
  });

  it('under runStrategy RerunOnFailure, a rerun after a failure is retried until it runs, counted once', async () => {
    const name = await runningVM('RerunOnFailure');
    await (await domainOf(vmOf(name)!)).destroy();
    await passesWithFailingStart(name, 3);
    expect(await isActive(name)).toBe(false);
    await ctx.refresh();
    const failing = vmOf(name);
    expect(failing?.status?.phase).toBe('Starting');
    expect(condition(failing, 'Synced')).toMatchObject({ status: 'False', reason: 'StartFailed' });
    expect(failing?.status?.restartCount).toBe(0);

    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    expect(await isActive(name)).toBe(true);
    const vm = vmOf(name);
    expect(vm?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    const restarted = ctx.events.filter((e) => e.key === key(name) && e.reason === 'Restarted');
    expect(restarted).toHaveLength(1);
    await remove(name);
  });

  it('under runStrategy Always, a restart that failed first counts once, with one Event', async () => {
    const name = await runningVM('Always');
    await (await domainOf(vmOf(name)!)).destroy();
    await passesWithFailingStart(name, 3);
    expect(await isActive(name)).toBe(false);
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    expect(vmOf(name)?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    const restarted = ctx.events.filter((e) => e.key === key(name) && e.reason === 'Restarted');
    expect(restarted).toHaveLength(1);
    await remove(name);
  });

  it('a restart given up by a switch to Manual is not counted when a user starts the machine', async () => {
    const name = await runningVM('Always');
    await (await domainOf(vmOf(name)!)).destroy();
    // The restart's start fails: its count (1) is in the stopped domain's definition.
    await passesWithFailingStart(name, 2);
    expect(await isActive(name)).toBe(false);
    // The user takes the power over, and later starts the machine by hand.
    await k.patchSpec('VirtualMachine', NS, name, { runStrategy: 'Manual' });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    await (await domainOf(vmOf(name)!)).create();
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(name, (vm) => vm?.status?.phase === 'Running'),
    });
    // A user's start: no restart the operator made, so not counted, and no Restarted Event.
    expect(vmOf(name)?.status?.restartCount).toBe(0);
    const restarted = ctx.events.filter((e) => e.key === key(name) && e.reason === 'Restarted');
    expect(restarted).toHaveLength(0);
    await remove(name);
  });

  it('under runStrategy RerunOnFailure, a rerun held back by its network runs once the network is back', async () => {
    const net = `rf-net-${randomBytes(3).toString('hex')}`;
    await k.create('VirtualNetwork', { metadata: { name: net }, spec: { mode: 'isolated' } });
    const onNode = (active: boolean) =>
      k.patchStatus('VirtualNetwork', undefined, net, { nodes: [{ nodeName: NODE, active }] });
    await onNode(true);
    const name = await runningVM('RerunOnFailure', [{ name: 'eth0', network: net }]);
    // The guest crashes while its network is not active here: the start waits for it.
    await onNode(false);
    await (await domainOf(vmOf(name)!)).destroy();
    for (let i = 0; i < 3; i++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key(name), ctx);
    }
    expect(await isActive(name)).toBe(false);
    await ctx.refresh();
    expect(condition(vmOf(name), 'Synced')).toMatchObject({ status: 'False' });
    expect(vmOf(name)?.status?.state?.state).toBe('shutoff');

    await onNode(true);
    await converge(ctx, reconcileVirtualMachine, key(name), { until: ready(name) });
    expect(await isActive(name)).toBe(true);
    expect(vmOf(name)?.status).toMatchObject({ phase: 'Running', restartCount: 1 });
    const restarted = ctx.events.filter((e) => e.key === key(name) && e.reason === 'Restarted');
    expect(restarted).toHaveLength(1);
    await remove(name);
    await k.remove('VirtualNetwork', undefined, net);
  });
});
