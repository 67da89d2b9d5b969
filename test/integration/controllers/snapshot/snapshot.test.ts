// VirtualMachineSnapshot and VirtualMachineRestore reconciles against a real API server and
// libvirt's test driver: the machine's own controller defines and runs the domain, then the
// snapshot and restore controllers act on it. The real libvirtd with a guest is in
// test/e2e/operator/snapshot.test.ts.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../../../src/api/generated/types.js';
import { HOST_FINALIZER, nodeFinalizer } from '../../../../src/controllers/context.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { reconcileVirtualMachineRestore } from '../../../../src/controllers/virtual-machine-restore/index.js';
import { reconcileVirtualMachineSnapshot } from '../../../../src/controllers/virtual-machine-snapshot/index.js';
import { CLAIM_GRACE_MS } from '../../../../src/controllers/shared/missing-machine.js';
import {
  Connect,
  DomainMetadataType,
  DomainModificationImpact,
  DomainXMLFlags,
  type Domain,
} from '../../../../src/libvirt/index.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import {
  ErrorCode,
  ErrorDomain,
  ErrorLevel,
  LibvirtError,
} from '../../../../src/libvirt/errors.js';
import { KubeApiError } from '../../../../src/runtime/kube-client.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import {
  converge,
  toldOnceDespiteRefusals,
  snapshotContext,
  type SnapshotContext,
  requeueMs,
  withFinalizerRemovalRefused,
} from '../../../harness/controller-context.js';
import { kube, type Kube } from '../../../harness/kube-objects.js';
import { recording, type Recording } from '../virtual-machine/fixtures.js';

const run = promisify(execFile);
const NODE = 'node-snap';
const NS = 'vm-snapshots';
const controlPlane = useControlPlane();
let conn: Connect;
let ctx: SnapshotContext;
let k: Kube;
let stateDir: string;

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  stateDir = mkdtempSync(join(tmpdir(), 'lvo-snap-'));
  const { kubeConfig } = controlPlane();
  ctx = snapshotContext({ kubeConfig, conn, nodeName: NODE, stateDir });
  k = kube(kubeConfig);
  await k.namespace(NS);
  // Shared by the tests, which never change them.
  await availableVolume('root');
  await availableVolume('raw', 'raw');
});

afterAll(async () => {
  await conn?.close();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

const key = (name: string) => `${NS}/${name}`;
/** A name of the test's own: the tests share the namespace, and each must run alone too. */
const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

async function availableVolume(name: string, format: 'qcow2' | 'raw' = 'qcow2') {
  await k.create('Volume', {
    metadata: { name, namespace: NS },
    spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format },
  });
  await k.patchStatus('Volume', NS, name, {
    phase: 'Available',
    path: join(stateDir, `${name}.img`),
  });
}
const snapOf = (name: string) =>
  ctx.get<VirtualMachineSnapshot>('VirtualMachineSnapshot', NS, name);
const restoreOf = (name: string) =>
  ctx.get<VirtualMachineRestore>('VirtualMachineRestore', NS, name);
const stored =
  <T>(read: () => T | undefined, test: (o: T | undefined) => boolean) =>
  async () => {
    await ctx.refresh();
    return test(read());
  };

async function runningVm(name: string, volume: string): Promise<Domain> {
  const vm = await k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS },
    spec: {
      nodeName: NODE,
      domainType: 'qemu',
      vcpus: 1,
      memory: '128Mi',
      disks: [{ name: 'root', volume }],
    },
  });
  await converge(ctx, reconcileVirtualMachine, key(name), {
    until: stored(
      () => ctx.get<VirtualMachine>('VirtualMachine', NS, name),
      (o) => o?.status?.phase === 'Running',
    ),
  });
  return conn.lookupDomainByUUIDString(String(vm.metadata.uid));
}

async function snapshot(name: string, vmName: string, includeMemory?: boolean) {
  await k.create('VirtualMachineSnapshot', {
    metadata: { name, namespace: NS },
    spec: { vmName, ...(includeMemory === undefined ? {} : { includeMemory }) },
  });
  await converge(ctx, reconcileVirtualMachineSnapshot, key(name), {
    until: stored(
      () => snapOf(name),
      (o) => o?.status?.phase === 'Ready' || o?.status?.phase === 'Failed',
    ),
  });
  return snapOf(name)!;
}

/** A running machine of the test's own, on the shared Volume root. */
async function ownVm(): Promise<{ name: string; domain: Domain }> {
  const name = unique('web');
  return { name, domain: await runningVm(name, 'root') };
}

/**
 * A disks-only snapshot (includeMemory false) of a running machine, as an interrupted pass
 * leaves it: the libvirt snapshot, with our record in its description, and no status; then
 * adopted by the snapshot's reconcile.
 */
async function adoptedDisksOnly(name: string, vmName: string, domain: Domain) {
  const created = await k.create<VirtualMachineSnapshot>('VirtualMachineSnapshot', {
    metadata: { name, namespace: NS },
    spec: { vmName, includeMemory: false },
  });
  const { buildSnapshotXML } = await import('../../../../src/libvirt/xml/snapshot.js');
  const { recordDescription, libvirtSnapshotName } =
    await import('../../../../src/controllers/virtual-machine-snapshot/desired.js');
  await domain.createSnapshotXML(
    buildSnapshotXML({
      name: libvirtSnapshotName(created),
      description: recordDescription(created, {
        uid: String(created.metadata.uid),
        includeMemory: false,
        quiesced: false,
      }),
      memory: 'internal',
      disks: [{ name: 'vda', snapshot: 'internal' }],
    }),
  );
  await converge(ctx, reconcileVirtualMachineSnapshot, key(name), {
    until: stored(
      () => snapOf(name),
      (o) => o?.status?.phase === 'Ready',
    ),
  });
  return snapOf(name)!;
}

/**
 * A begun restore (InProgress, marked) whose snapshot name now holds another object: it ends
 * Failed SnapshotMissing, and the snapshot made again is then taken.
 */
async function expectBegunRestoreEndsMissing(back: string, snap: string, maxPasses?: number) {
  await converge(ctx, reconcileVirtualMachineRestore, key(back), {
    ...(maxPasses === undefined ? {} : { maxPasses }),
    until: stored(
      () => restoreOf(back),
      (o) => o?.status?.phase !== 'InProgress',
    ),
  });
  expect(restoreOf(back)?.status).toMatchObject({
    phase: 'Failed',
    conditions: expect.arrayContaining([
      expect.objectContaining({ type: 'Ready', reason: 'SnapshotMissing' }),
    ]),
  });
  await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
    until: stored(
      () => snapOf(snap),
      (o) => o?.status?.phase === 'Ready',
    ),
  });
}

/** Restores machine `name` to its snapshot `<name>-1` (restore `<name>-back`), to Succeeded. */
async function restoreToFirst(name: string) {
  await k.create('VirtualMachineRestore', {
    metadata: { name: `${name}-back`, namespace: NS },
    spec: { vmName: name, snapshotName: `${name}-1` },
  });
  await converge(ctx, reconcileVirtualMachineRestore, key(`${name}-back`), {
    until: stored(
      () => restoreOf(`${name}-back`),
      (o) => o?.status?.phase === 'Succeeded',
    ),
  });
}

/**
 * A running machine under updatePolicy Restart, converged with RestartRequired False, and what
 * its tests read: the runtime ID of its domain as it is now (a handle keeps the one it was
 * looked up with) and its graceful stops (ShuttingDown Events) so far.
 */
async function restartPolicyVm(name: string) {
  const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
  const vm = await k.create<VirtualMachine>('VirtualMachine', {
    metadata: { name, namespace: NS },
    spec: {
      nodeName: NODE,
      domainType: 'qemu',
      updatePolicy: 'Restart',
      vcpus: 1,
      memory: '128Mi',
      disks: [{ name: 'root', volume: 'root' }],
    },
  });
  const runningSynced = stored(
    vmOf,
    (o) =>
      o?.status?.phase === 'Running' &&
      o.status.observedGeneration === o.metadata.generation &&
      o.status.conditions?.find((c) => c.type === 'RestartRequired')?.status === 'False',
  );
  await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
  return {
    vm,
    vmOf,
    runningSynced,
    runId: async () => (await conn.lookupDomainByUUIDString(String(vm.metadata.uid))).getID(),
    stops: () =>
      ctx.events.filter((e) => e.key === key(name) && e.reason === 'ShuttingDown').length,
  };
}

/**
 * A successor agent (a fresh context: nothing in memory of what the restore did) runs the
 * machine's passes until it is Running again, and must count no restart for the restore's
 * power-off: restartCount 0 and no Restarted Event.
 */
async function expectSuccessorCountsNoRestart(name: string): Promise<void> {
  const successor = snapshotContext({
    kubeConfig: controlPlane().kubeConfig,
    conn,
    nodeName: NODE,
    stateDir,
  });
  await successor.refresh();
  await converge(successor, reconcileVirtualMachine, key(name), {
    until: async () => {
      await successor.refresh();
      return successor.get<VirtualMachine>('VirtualMachine', NS, name)?.status?.phase === 'Running';
    },
  });
  const vm = successor.get<VirtualMachine>('VirtualMachine', NS, name)!;
  expect(vm.status?.restartCount ?? 0).toBe(0);
  expect(successor.events.filter((e) => e.reason === 'Restarted')).toEqual([]);
  await ctx.refresh();
}

describe('VirtualMachineSnapshot and VirtualMachineRestore on test:///default', () => {
  it('takes a checkpoint of a running machine once, and records it', async () => {
    // A Volume of its own: the index below counts every snapshot holding it.
    const volume = unique('disk');
    await availableVolume(volume);
    const name = unique('web');
    const domain = await runningVm(name, volume);
    const snap = await snapshot(`${name}-1`, name);
    expect(snap.status).toMatchObject({
      phase: 'Ready',
      includesMemory: true,
      disks: [{ name: 'vda', volume }],
    });
    expect(snap.status?.snapshotName).toBe(`${name}-1-${String(snap.metadata.uid).slice(0, 8)}`);
    expect(snap.metadata.finalizers).toContain(`node.virt.dev/${NODE}`);
    expect((await domain.listAllSnapshots()).map((s) => s.getName())).toEqual([
      snap.status?.snapshotName,
    ]);
    // Another pass takes nothing more and writes nothing.
    const writes = ctx.writes;
    await converge(ctx, reconcileVirtualMachineSnapshot, key(`${name}-1`));
    expect(await domain.numOfSnapshots()).toBe(1);
    expect(ctx.writes).toBe(writes);
    // The Volume holding the disk names the snapshot among its users.
    expect(ctx.byIndex('VirtualMachineSnapshot', 'volume', `${NS}/${volume}`).length).toBe(1);
  });

  it('adopts the snapshot an interrupted pass made instead of taking a second one', async () => {
    const { name, domain } = await ownVm();
    const snap = await adoptedDisksOnly(`${name}-2`, name, domain);
    expect(snap.status).toMatchObject({ phase: 'Ready', includesMemory: false, quiesced: false });
    expect(snap.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe(
      'CrashConsistent',
    );
    expect(await domain.numOfSnapshots()).toBe(1);
  });

  it('leaves a foreign snapshot that holds its name alone when the object is deleted', async () => {
    const { name: vmName, domain } = await ownVm();
    const own = `${vmName}-4`;
    const created = await k.create<VirtualMachineSnapshot>('VirtualMachineSnapshot', {
      metadata: { name: own, namespace: NS },
      spec: { vmName },
    });
    const { buildSnapshotXML } = await import('../../../../src/libvirt/xml/snapshot.js');
    const { libvirtSnapshotName } =
      await import('../../../../src/controllers/virtual-machine-snapshot/desired.js');
    const name = libvirtSnapshotName(created);
    // Someone's own snapshot (virsh) under the name the object would take.
    await domain.createSnapshotXML(
      buildSnapshotXML({
        name,
        description: 'made by hand',
        memory: 'internal',
        disks: [{ name: 'vda', snapshot: 'internal' }],
      }),
    );
    await converge(ctx, reconcileVirtualMachineSnapshot, key(own), {
      until: stored(
        () => snapOf(own),
        (o) => o?.status?.phase === 'Failed',
      ),
    });
    expect(snapOf(own)?.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe(
      'NameConflict',
    );
    await k.remove('VirtualMachineSnapshot', NS, own);
    await converge(ctx, reconcileVirtualMachineSnapshot, key(own), {
      until: stored(
        () => snapOf(own),
        (o) => o === undefined,
      ),
    });
    // Not the object's: still there, as it was.
    const foreign = await domain.lookupSnapshotByName(name);
    expect(await foreign.getXMLDesc()).toContain('made by hand');
    await foreign.delete(0);
    foreign.free();
  });

  it('refuses raw disks: Failed, Ready=False reason Unsupported', async () => {
    await runningVm('rawvm', 'raw');
    const snap = await snapshot('raw-1', 'rawvm');
    expect(snap.status?.phase).toBe('Failed');
    const ready = snap.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'Unsupported' });
    expect(ready?.message).toMatch(/vda \(raw, Volume raw\)/);
  });

  it('says Failed once its status says so, not with every retry of a refused write', async () => {
    const vmName = unique('rawvm');
    await runningVm(vmName, 'raw');
    const snap = `${vmName}-1`;
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: snap, namespace: NS },
      spec: { vmName },
    });
    await ctx.refresh();
    const warned = () =>
      ctx.events.filter((e) => e.reason === 'Unsupported' && e.key === key(snap)).length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    await toldOnceDespiteRefusals(ctx, reconcileVirtualMachineSnapshot, key(snap), warned);
    expect(snapOf(snap)?.status?.phase).toBe('Failed');
  });

  it('says InsufficientSpace once its status says so, not with every retry of a refused write', async () => {
    // The disk's directory is a 1 MiB file system: no room for the guest's memory (128 MiB;
    // the test driver says its QEMU process holds 1 GiB), so the checkpoint waits for room.
    const vmName = unique('full');
    const dir = mkdtempSync(join(stateDir, 'full-'));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    const snap = `${vmName}-1`;
    try {
      await k.create('Volume', {
        metadata: { name: vmName, namespace: NS },
        spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2' },
      });
      await k.patchStatus('Volume', NS, vmName, {
        phase: 'Available',
        path: join(dir, `${vmName}.img`),
      });
      await runningVm(vmName, vmName);
      await k.create('VirtualMachineSnapshot', {
        metadata: { name: snap, namespace: NS },
        spec: { vmName },
      });
      const warned = () =>
        ctx.events.filter((e) => e.reason === 'InsufficientSpace' && e.key === key(snap)).length;
      // The status write is refused (as a conflict with another writer would be) on two passes.
      await toldOnceDespiteRefusals(ctx, reconcileVirtualMachineSnapshot, key(snap), warned);
      const ready = snapOf(snap)?.status?.conditions?.find((c) => c.type === 'Ready');
      expect(ready?.reason, JSON.stringify(ready)).toBe('InsufficientSpace');
      // Clean up: the snapshot (never taken) and the machine go.
      await k.remove('VirtualMachineSnapshot', NS, snap);
      await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
        until: stored(
          () => snapOf(snap),
          (o) => o === undefined,
        ),
      });
      await k.remove('VirtualMachine', NS, vmName);
      await converge(ctx, reconcileVirtualMachine, key(vmName), {
        until: stored(
          () => ctx.get('VirtualMachine', NS, vmName),
          (o) => o === undefined,
        ),
      });
    } finally {
      await run('umount', [dir]);
    }
  });

  it('restores once: the marker goes with the revert, a later pass does nothing', async () => {
    const uri = 'http://virt.dev/libvirt-operator/restore/v1';
    const { name, domain } = await ownVm();
    await snapshot(`${name}-1`, name);
    const back = `${name}-back`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-1` },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    const restored = restoreOf(back)!;
    expect(restored.status?.completionTime).toBeTruthy();
    expect(restored.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('Restored');
    expect(await (await domain.currentSnapshot()).getName()).toBe(
      snapOf(`${name}-1`)?.status?.snapshotName,
    );
    await expect(
      domain.getMetadata(DomainMetadataType.ELEMENT, uri, DomainModificationImpact.CONFIG),
    ).rejects.toThrow(/metadata/);
    // Terminal: another pass neither reverts nor writes.
    const writes = ctx.writes;
    await converge(ctx, reconcileVirtualMachineRestore, key(back));
    expect(ctx.writes).toBe(writes);
  });

  it('finishes without reverting again when a crash left InProgress and no marker', async () => {
    const { name, domain } = await ownVm();
    await snapshot(`${name}-1`, name);
    const back = `${name}-back`;
    await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-1` },
    });
    // The state after a revert whose agent died before recording it.
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await domain.suspend();
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    // A revert to the running checkpoint would have resumed the domain.
    expect((await domain.getState()).stateName).toBe('paused');
    await domain.resume();
  });

  it('never returns a begun restore to Pending when its snapshot object is gone', async () => {
    const uri = 'http://virt.dev/libvirt-operator/restore/v1';
    const { name: vmName, domain } = await ownVm();
    const [marked, reverted] = [`${vmName}-marked`, `${vmName}-reverted`];
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    // Both began (InProgress) on a snapshot whose object went since; one still has its marker
    // (not reverted), the other not (reverted).
    for (const name of [marked, reverted]) {
      const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
        metadata: { name, namespace: NS },
        spec: { vmName, snapshotName: name === marked ? 'gone-marked' : 'gone-reverted' },
      });
      await k.patchStatus('VirtualMachineRestore', NS, name, { phase: 'InProgress' });
      if (name === marked) await setMarker(domain, String(r.metadata.uid), true);
      await converge(ctx, reconcileVirtualMachineRestore, key(name), {
        until: stored(
          () => restoreOf(name),
          (o) => o?.status?.phase !== 'InProgress',
        ),
      });
    }
    expect(restoreOf(marked)?.status).toMatchObject({
      phase: 'Failed',
      conditions: expect.arrayContaining([
        expect.objectContaining({
          type: 'Ready',
          reason: 'SnapshotMissing',
          message:
            'VirtualMachineSnapshot gone-marked was deleted before this restore reverted to it',
        }),
      ]),
    });
    expect(restoreOf(reverted)?.status).toMatchObject({ phase: 'Succeeded' });
    // Terminal: a snapshot created under the name later is never reverted to.
    const writes = ctx.writes;
    await converge(ctx, reconcileVirtualMachineRestore, key(marked));
    expect(ctx.writes).toBe(writes);
    await domain
      .setMetadata(
        DomainMetadataType.ELEMENT,
        null,
        null,
        uri,
        DomainModificationImpact.LIVE | DomainModificationImpact.CONFIG,
      )
      .catch(async () => {
        await domain.setMetadata(
          DomainMetadataType.ELEMENT,
          null,
          null,
          uri,
          DomainModificationImpact.LIVE,
        );
        await domain.setMetadata(
          DomainMetadataType.ELEMENT,
          null,
          null,
          uri,
          DomainModificationImpact.CONFIG,
        );
      });
  });

  it('says a restore Failed once its status says so, not with every retry of a refused write', async () => {
    const { name: vmName, domain } = await ownVm();
    const back = `${vmName}-back`;
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    // Begun (InProgress, marked) on a snapshot whose object went since: it ends Failed.
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: `${vmName}-gone` },
    });
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await setMarker(domain, String(r.metadata.uid), true);
    await ctx.refresh();
    const warned = () =>
      ctx.events.filter((e) => e.reason === 'SnapshotMissing' && e.key === key(back)).length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    await toldOnceDespiteRefusals(ctx, reconcileVirtualMachineRestore, key(back), warned);
    expect(restoreOf(back)?.status?.phase).toBe('Failed');
  });

  it('fails a begun restore whose snapshot was made again under its name, never waits for it', async () => {
    // Marked and InProgress, then its snapshot's finalizer removed by hand and the snapshot
    // applied again (GitOps): the new one is not taken while the restore is InProgress, and
    // a restore waiting for it to be Ready would wait for ever.
    const { name: vmName, domain } = await ownVm();
    const [again, back] = [`${vmName}-again`, `${vmName}-back`];
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: again },
    });
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await setMarker(domain, String(r.metadata.uid), true);
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: again, namespace: NS },
      spec: { vmName },
    });
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key(again), ctx))).toBe(5_000);
    // Never waits for it; the restore over, the snapshot is taken.
    await expectBegunRestoreEndsMissing(back, again, 3);
  });

  it('never reverts a begun restore to a snapshot object created under its name since', async () => {
    const { name: vmName, domain } = await ownVm();
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    const old = await snapshot(snap, vmName);
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // An agent that died after marking the domain and recording InProgress, before the revert.
    const began = new Date(Date.now() - 2000).toISOString().replace(/\.\d+Z$/, 'Z');
    await k.patchStatus('VirtualMachineRestore', NS, back, {
      phase: 'InProgress',
      startTime: began,
    });
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    await setMarker(domain, String(r.metadata.uid), true);
    // Meanwhile the snapshot object went by its finalizer removed by hand, and another was
    // created under its name (a GitOps tool re-applying it).
    await ctx.removeFinalizer('VirtualMachineSnapshot', old, nodeFinalizer(NODE));
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: snap, namespace: NS },
      spec: { vmName },
    });
    // Before: Pending (SnapshotNotReady), then a revert to the new snapshot once taken. The new
    // one is taken now that no restore runs, and never reverted to.
    await expectBegunRestoreEndsMissing(back, snap);
    await converge(ctx, reconcileVirtualMachineRestore, key(back));
    expect(restoreOf(back)?.status?.phase).toBe('Failed');
  });

  it('tells the snapshot it began on from one re-created under its name in the same second', async () => {
    const { name: vmName, domain } = await ownVm();
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    const old = await snapshot(snap, vmName);
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // The agent reverts, then dies before it records Succeeded. Its clock runs 30 s ahead of
    // the API server's: every snapshot object created in the next 30 s has a creationTimestamp
    // no later than startTime, as one created in the very second the revert began would.
    const { applyStatus, now } = ctx;
    ctx.now = () => new Date(Date.now() + 30_000);
    ctx.applyStatus = async (kind, obj, status) => {
      if ((status as { phase?: string }).phase === 'Succeeded') throw new Error('agent killed');
      return applyStatus(kind, obj, status);
    };
    try {
      await ctx.refresh();
      await expect(reconcileVirtualMachineRestore(key(back), ctx)).rejects.toThrow(/killed/);
    } finally {
      Object.assign(ctx, { applyStatus, now });
    }
    await ctx.refresh();
    // Recorded in the InProgress write: the very object the revert began on.
    expect(restoreOf(back)?.status).toMatchObject({
      phase: 'InProgress',
      snapshotUid: old.metadata.uid,
    });
    expect(await (await domain.currentSnapshot()).getName()).toBe(old.status?.snapshotName);
    // Meanwhile the snapshot object went by its finalizer removed by hand, and another was
    // created under its name (a GitOps tool re-applying it).
    await ctx.removeFinalizer('VirtualMachineSnapshot', old, nodeFinalizer(NODE));
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: snap, namespace: NS },
      spec: { vmName },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase !== 'InProgress',
      ),
    });
    // Without the uid, the new object (not taken yet: no disks) was taken for the one reverted
    // to: "disks reverted: none", which is false. What it held was recorded with InProgress.
    const ready = restoreOf(back)?.status?.conditions?.find((c) => c.type === 'Ready');
    expect(restoreOf(back)?.status?.phase).toBe('Succeeded');
    expect(ready?.message).toBe(
      `reverted to VirtualMachineSnapshot ${snap} (memory and disks); ` +
        'disks reverted: vda (Volume root)',
    );
    // The restore over, the new snapshot is taken.
    await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
      until: stored(
        () => snapOf(snap),
        (o) => o?.status?.phase === 'Ready',
      ),
    });
  });

  it('deletes a snapshot only once the restore reverting to it has finished', async () => {
    const { name: vmName, domain } = await ownVm();
    const [snap, back] = [`${vmName}-3`, `${vmName}-back`];
    await snapshot(snap, vmName);
    const before = await domain.numOfSnapshots();
    await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // A revert whose agent died before recording it; the user deletes the snapshot meanwhile.
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key(snap), ctx))).toBeGreaterThan(0);
    await ctx.refresh();
    expect(snapOf(snap)?.metadata.deletionTimestamp).toBeTruthy();
    expect(await domain.numOfSnapshots()).toBe(before);
    expect(ctx.events.at(-1)).toMatchObject({ reason: 'DeletePending' });
    // Said in status too, for kubectl get and kstatus readers: what it waits for.
    expect(
      snapOf(snap)?.status?.conditions?.find((c) => c.type === 'DeletionBlocked'),
    ).toMatchObject({
      status: 'True',
      reason: 'RestoreInProgress',
      message:
        `the deletion waits for VirtualMachineRestore ${back}, reverting the machine to ` +
        'this snapshot: it goes on by itself once that restore has finished',
    });
    // Waiting on: no further write, no further Event.
    const [writes, events] = [ctx.writes, ctx.events.length];
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key(snap), ctx))).toBeGreaterThan(0);
    expect([ctx.writes, ctx.events.length]).toEqual([writes, events]);
    // The restore finishes (it needs the snapshot for that), then the snapshot goes.
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
      until: stored(
        () => snapOf(snap),
        (o) => o === undefined,
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(before - 1);
  });

  it('says DeletePending once its status says so, not with every retry of a refused write', async () => {
    const { name: vmName } = await ownVm();
    const [snap, back] = [`${vmName}-4`, `${vmName}-back`];
    await snapshot(snap, vmName);
    await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await ctx.refresh();
    const pending = () =>
      ctx.events.filter((e) => e.reason === 'DeletePending' && e.key === key(snap)).length;
    // The status write is refused (as a conflict with another writer would be) on two passes.
    const passes = await toldOnceDespiteRefusals(
      ctx,
      reconcileVirtualMachineSnapshot,
      key(snap),
      pending,
    );
    for (const action of passes) expect(requeueMs(action)).toBeGreaterThan(0);
    expect(
      snapOf(snap)?.status?.conditions?.find((c) => c.type === 'DeletionBlocked')?.reason,
    ).toBe('RestoreInProgress');
    // Clean up: the restore finishes, then the snapshot goes.
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
      until: stored(
        () => snapOf(snap),
        (o) => o === undefined,
      ),
    });
  });

  it('keeps a snapshot whose restore this agent runs before the cache shows it InProgress', async () => {
    const { name: vmName, domain } = await ownVm();
    const [snap, back] = [`${vmName}-5`, `${vmName}-back`];
    await snapshot(snap, vmName);
    const before = await domain.numOfSnapshots();
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // The restore's pass reads the cache from before the user deleted the snapshot, the
    // snapshot's pass the one from after: both in one agent (one HostState), at once.
    const early = snapshotContext({
      kubeConfig: controlPlane().kubeConfig,
      conn,
      nodeName: NODE,
      stateDir,
      host: ctx.host,
    });
    await early.refresh();
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await ctx.refresh();
    const restoring = reconcileVirtualMachineRestore(key(back), early);
    const deleting = await reconcileVirtualMachineSnapshot(key(snap), ctx);
    await restoring;
    // The deletion waited for the revert instead of pulling the snapshot from under it.
    expect(requeueMs(deleting)).toBeGreaterThan(0);
    await ctx.refresh();
    expect(restoreOf(back)?.status?.phase).toBe('Succeeded');
    expect(
      snapOf(snap)?.status?.conditions?.find((c) => c.type === 'DeletionBlocked'),
    ).toMatchObject({
      reason: 'RestoreInProgress',
      message: expect.stringContaining(`VirtualMachineRestore ${back},`),
    });
    await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
      until: stored(
        () => snapOf(snap),
        (o) => o === undefined,
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(before - 1);
  });

  it('holds the machine controller back while a restore is InProgress', async () => {
    const { name } = await ownVm();
    const back = `${name}-back`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: 'missing' },
    });
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await ctx.refresh();
    const action = await reconcileVirtualMachine(key(name), ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'Failed' });
  });

  it('takes no snapshot while a restore reverts the machine, and takes it after', async () => {
    const { name: vmName, domain } = await ownVm();
    const [back, mid] = [`${vmName}-back`, `${vmName}-mid`];
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: 'missing' },
    });
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    const before = await domain.numOfSnapshots();
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: mid, namespace: NS },
      spec: { vmName },
    });
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key(mid), ctx))).toBe(5_000);
    expect(await domain.numOfSnapshots()).toBe(before);
    await stored(
      () => snapOf(mid),
      () => true,
    )();
    expect(snapOf(mid)?.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      reason: 'RestoreInProgress',
    });
    expect(snapOf(mid)?.status?.phase).toBe('Pending');
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'Failed' });
    await converge(ctx, reconcileVirtualMachineSnapshot, key(mid), {
      until: stored(
        () => snapOf(mid),
        (o) => o?.status?.phase === 'Ready',
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(before + 1);
    await k.remove('VirtualMachineSnapshot', NS, mid);
    await converge(ctx, reconcileVirtualMachineSnapshot, key(mid), {
      until: stored(
        () => snapOf(mid),
        (o) => o === undefined,
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(before);
  });

  it('takes the snapshots of a machine while its restore only waits for one of them', async () => {
    // GitOps applies a snapshot and its restore together: the restore's passes wait for the
    // snapshot (SnapshotNotReady) while the same agent's snapshot passes run, concurrently.
    // Once each deferred to the other (RestoreInProgress), in step for ever.
    const { name: vmName, domain } = await ownVm();
    const [snap, other, back] = [`${vmName}-w`, `${vmName}-o`, `${vmName}-back`];
    const before = await domain.numOfSnapshots();
    for (const name of [snap, other])
      await k.create('VirtualMachineSnapshot', {
        metadata: { name, namespace: NS },
        spec: { vmName },
      });
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    await ctx.refresh();
    // The restore's pass is held inside its status write, after it found the snapshot not
    // Ready, while the snapshots' passes run: its own snapshot, and another of the machine.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const atWrite = new Promise<void>((r) => (reached = r));
    const holding: SnapshotContext = {
      ...ctx,
      async applyStatus(kind, obj, status) {
        reached();
        await held;
        return ctx.applyStatus(kind, obj, status);
      },
    };
    const waiting = reconcileVirtualMachineRestore(key(back), holding);
    try {
      await atWrite;
      for (const name of [snap, other]) {
        const action = await reconcileVirtualMachineSnapshot(key(name), ctx);
        await ctx.refresh();
        expect(snapOf(name)?.status?.conditions?.find((c) => c.type === 'Ready')?.reason).not.toBe(
          'RestoreInProgress',
        );
        expect(requeueMs(action)).toBeUndefined();
      }
    } finally {
      release();
    }
    expect(requeueMs(await waiting)).toBe(5_000);
    for (const name of [snap, other])
      await converge(ctx, reconcileVirtualMachineSnapshot, key(name), {
        until: stored(
          () => snapOf(name),
          (o) => o?.status?.phase === 'Ready',
        ),
      });
    expect(await domain.numOfSnapshots()).toBe(before + 2);
    // Ready now: the restore marks the machine and reverts it.
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect(
      ctx.host.restores.has(
        String(ctx.get<VirtualMachine>('VirtualMachine', NS, vmName)?.metadata.uid),
      ),
    ).toBe(false);
  });

  it('boots the machine after a disks-only restore without counting a restart', async () => {
    const { name, domain } = await ownVm();
    await adoptedDisksOnly(`${name}-2`, name, domain);
    const back = `${name}-back`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-2` },
    });
    const events: string[] = [];
    const id = await conn.domainEventLifecycleRegister(
      (e) => events.push(`${e.eventName} ${e.detailName}`),
      { domain },
    );
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await conn.domainEventDeregister(id);
    // Powered off after the revert, so that the machine boots from the restored disks; the
    // checkpoint's memory never ran in between (reverted paused), so it wrote nothing to them.
    expect((await domain.getState()).stateName).toBe('shutoff');
    // The test driver starts the domain from the checkpoint, then pauses it as asked: without
    // the pause it would be running until the destroy.
    expect(events.slice(-2)).toEqual(['suspended from_snapshot', 'stopped destroyed']);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get<VirtualMachine>('VirtualMachine', NS, name),
        (o) => o?.status?.phase === 'Running',
      ),
    });
    // The restore asked for that stop: no crash to count or warn about.
    const vm = ctx.get<VirtualMachine>('VirtualMachine', NS, name)!;
    expect(vm.status?.restartCount ?? 0).toBe(0);
    expect(ctx.events.filter((e) => e.key === key(name) && e.reason === 'Restarted')).toEqual([]);
  });

  it('does not count that power-off as a crash after an agent killed right after it', async () => {
    const { name, domain } = await ownVm();
    await adoptedDisksOnly(`${name}-2`, name, domain);
    const back = `${name}-back`;
    // Times in status have whole seconds: the revert must begin in a later second than the
    // run it stops was first seen (status.startedAt).
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-2` },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect((await domain.getState()).stateName).toBe('shutoff');
    // The agent dies here; its successor knows nothing of what the restore did in memory.
    await expectSuccessorCountsNoRestart(name);
  });

  it('still says it powered the machine off when a killed pass did that before its status write', async () => {
    const { name, domain } = await ownVm();
    await adoptedDisksOnly(`${name}-2`, name, domain);
    const back = `${name}-back`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-2` },
    });
    // What the killed pass left: reverted (no marker), powered off, status still InProgress.
    await k.patchStatus('VirtualMachineRestore', NS, back, { phase: 'InProgress' });
    await domain.destroy();
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    const ready = restoreOf(back)?.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.message).toBe(
      `reverted to VirtualMachineSnapshot ${name}-2 (disks; powered off to boot from them); ` +
        'disks reverted: vda (Volume root)',
    );
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get<VirtualMachine>('VirtualMachine', NS, name),
        (o) => o?.status?.phase === 'Running',
      ),
    });
  });

  it('powers off a disks-only checkpoint whose snapshot object went after the revert', async () => {
    const { name, domain } = await ownVm();
    const snap = `${name}-2`;
    const taken = await adoptedDisksOnly(snap, name, domain);
    const back = `${name}-back`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: snap },
    });
    // The agent reverts, then dies before the power-off (the pass's second look at the host).
    const { libvirt } = ctx;
    let looks = 0;
    ctx.libvirt = () => {
      if (++looks === 2) throw new Error('agent killed');
      return libvirt();
    };
    try {
      await ctx.refresh();
      await expect(reconcileVirtualMachineRestore(key(back), ctx)).rejects.toThrow(/killed/);
    } finally {
      ctx.libvirt = libvirt;
    }
    await ctx.refresh();
    // Reverted paused, and what the power-off needs recorded in the InProgress write.
    expect((await domain.getState()).stateName).toBe('paused');
    expect(restoreOf(back)?.status).toMatchObject({
      phase: 'InProgress',
      snapshotUid: taken.metadata.uid,
      includesMemory: false,
      ofRunningMachine: true,
      disks: [{ name: 'vda', volume: 'root' }],
    });
    // Meanwhile the snapshot object went (its finalizer removed by hand).
    await ctx.removeFinalizer('VirtualMachineSnapshot', taken, nodeFinalizer(NODE));
    await k.remove('VirtualMachineSnapshot', NS, snap);
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase !== 'InProgress',
      ),
    });
    // Without the record it finished "deleted since" and left the checkpoint paused for ever.
    expect((await domain.getState()).stateName).toBe('shutoff');
    const ready = restoreOf(back)?.status?.conditions?.find((c) => c.type === 'Ready');
    expect(restoreOf(back)?.status?.phase).toBe('Succeeded');
    expect(ready?.message).toBe(
      `reverted to VirtualMachineSnapshot ${snap} (disks; powered off to boot from them); ` +
        'disks reverted: vda (Volume root)',
    );
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get<VirtualMachine>('VirtualMachine', NS, name),
        (o) => o?.status?.phase === 'Running',
      ),
    });
    expect(ctx.get<VirtualMachine>('VirtualMachine', NS, name)?.status?.restartCount ?? 0).toBe(0);
  });

  it('does not count a restore’s power-off as a crash once its snapshot object went', async () => {
    const { name, domain } = await ownVm();
    const snap = `${name}-2`;
    const taken = await adoptedDisksOnly(snap, name, domain);
    const back = `${name}-back`;
    // Times in status have whole seconds: the revert must begin in a later second than the
    // run it stops was first seen (status.startedAt).
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: snap },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect((await domain.getState()).stateName).toBe('shutoff');
    // The snapshot object goes, and the agent dies before the machine's next pass: its
    // successor has only the restore to tell that the stop was asked for.
    await ctx.removeFinalizer('VirtualMachineSnapshot', taken, nodeFinalizer(NODE));
    await k.remove('VirtualMachineSnapshot', NS, snap);
    // Without the recorded includesMemory, the stop read as a crash: restartCount 1.
    await expectSuccessorCountsNoRestart(name);
  });

  it('keeps naming the Volumes the snapshot holds after the machine’s disks change', async () => {
    // A stopped machine, so that its new disks are a plain redefinition.
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'moved', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'data', volume: 'root' }],
      },
    });
    const stopped = stored(
      () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'moved'),
      (o) => o?.status?.phase === 'Stopped',
    );
    await converge(ctx, reconcileVirtualMachine, key('moved'), { until: stopped });
    expect((await snapshot('moved-1', 'moved')).status?.disks).toEqual([
      { name: 'vda', volume: 'root' },
    ]);
    // The data disk leaves the spec, and another Volume takes its target (vda).
    await k.patchSpec('VirtualMachine', NS, 'moved', {
      disks: [{ name: 'other', volume: 'raw', readOnly: true }],
    });
    await converge(ctx, reconcileVirtualMachine, key('moved'), {
      until: stored(
        () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'moved'),
        (o) => o?.status?.observedGeneration === o?.metadata.generation,
      ),
    });
    await converge(ctx, reconcileVirtualMachineSnapshot, key('moved-1'));
    await ctx.refresh();
    // Still the Volume whose file holds it: the one its Volume protection must keep.
    expect(snapOf('moved-1')?.status?.disks).toEqual([{ name: 'vda', volume: 'root' }]);
  });

  it('deletes the libvirt snapshot with the object, and the machine’s snapshots with it', async () => {
    const { name, domain } = await ownVm();
    const [first, second] = [`${name}-1`, `${name}-2`];
    await snapshot(first, name);
    await snapshot(second, name);
    await k.remove('VirtualMachineSnapshot', NS, second);
    await converge(ctx, reconcileVirtualMachineSnapshot, key(second), {
      until: stored(
        () => snapOf(second),
        (o) => o === undefined,
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(1);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, name),
        (o) => o === undefined,
      ),
    });
    await expect(domain.isActive()).rejects.toThrow(/domain/i);
    // The snapshot object of the deleted machine: deleted by the agent, finalizer released.
    await converge(ctx, reconcileVirtualMachineSnapshot, key(first), {
      until: stored(
        () => snapOf(first),
        (o) => o === undefined,
      ),
    });
  });

  it('says CleanupFailed once, not with every retry of a refused finalizer removal', async () => {
    const { name: vmName } = await ownVm();
    const name = `${vmName}-cut`;
    // Held by this node and InProgress with no libvirt snapshot: a take that may have been cut
    // short, whose leftovers the deletion cleans up.
    await k.create('VirtualMachineSnapshot', {
      metadata: { name, namespace: NS, finalizers: [nodeFinalizer(NODE)] },
      spec: { vmName },
    });
    await k.patchStatus('VirtualMachineSnapshot', NS, name, { phase: 'InProgress' });
    await k.remove('VirtualMachineSnapshot', NS, name);
    // libvirt refuses the cleanup's record (its redefine), as it refuses one it cannot align.
    const { LibvirtError, ErrorCode, ErrorDomain, ErrorLevel } =
      await import('../../../../src/libvirt/errors.js');
    const refused = new LibvirtError('operation failed: disk vda cannot be redefined', {
      code: ErrorCode.VIR_ERR_OPERATION_FAILED,
      domain: ErrorDomain.VIR_FROM_DOMAIN_SNAPSHOT,
      level: ErrorLevel.VIR_ERR_ERROR,
    });
    // Every method as it is, but the one named, which `replace` stands in for.
    const except = <T extends object>(target: T, name: string, replace: unknown) =>
      new Proxy(target, {
        get(t, p) {
          if (p === name) return replace;
          const v = Reflect.get(t, p, t) as unknown;
          return typeof v === 'function' ? (v as () => unknown).bind(t) : v;
        },
      });
    const { libvirt } = ctx;
    ctx.libvirt = () => {
      const conn = libvirt();
      return except(conn, 'lookupDomainByUUIDString', async (uuid: string) =>
        except(await conn.lookupDomainByUUIDString(uuid), 'createSnapshotXML', () =>
          Promise.reject(refused),
        ),
      );
    };
    const told = () =>
      ctx.events.filter((e) => e.key === key(name) && e.reason === 'CleanupFailed');
    try {
      await withFinalizerRemovalRefused(ctx, async () => {
        for (let pass = 0; pass < 2; pass++) {
          await ctx.refresh();
          await expect(reconcileVirtualMachineSnapshot(key(name), ctx)).rejects.toThrow(/409/);
        }
      });
      // Before: one Warning per refused removal.
      expect(told()).toEqual([]);
      await converge(ctx, reconcileVirtualMachineSnapshot, key(name), {
        until: stored(
          () => snapOf(name),
          (o) => o === undefined,
        ),
      });
    } finally {
      ctx.libvirt = libvirt;
    }
    expect(told()).toMatchObject([
      { type: 'Warning', message: expect.stringContaining('disk vda cannot be redefined') },
    ]);
  });

  it('deletes the restores of a deleted machine with it, finished or not', async () => {
    const { name } = await ownVm();
    await snapshot(`${name}-1`, name);
    const [done, failed, untouched] = [`${name}-done`, `${name}-failed`, `${name}-untouched`];
    for (const back of [done, failed, untouched])
      await k.create('VirtualMachineRestore', {
        metadata: { name: back, namespace: NS },
        spec: { vmName: name, snapshotName: back === failed ? 'missing' : `${name}-1` },
      });
    await converge(ctx, reconcileVirtualMachineRestore, key(done), {
      until: stored(
        () => restoreOf(done),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    await k.patchStatus('VirtualMachineRestore', NS, failed, { phase: 'Failed' });
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, name),
        (o) => o === undefined,
      ),
    });
    await ctx.refresh();
    for (const back of [done, failed, untouched]) expect(restoreOf(back), back).toBeUndefined();
  });

  it('says DeletePending of a deleted machine once its status says so, not with every refused write', async () => {
    const { name, domain } = await ownVm();
    const back = `${name}-claimed`;
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-1` },
    });
    // Claimed by a node that died: the admission policy refuses this agent its deletion (as in
    // test/integration/deploy/deletion-blocked.test.ts; here the refusal is injected).
    await k.patchStatus('VirtualMachineRestore', NS, back, { nodeName: 'node-gone' });
    await k.remove('VirtualMachine', NS, name);
    const { applyStatus, deleteObject } = ctx;
    ctx.deleteObject = (kind, obj) =>
      kind === 'VirtualMachineRestore'
        ? Promise.reject(new KubeApiError(403, 'Forbidden', 'injected', 'DELETE', '/restores'))
        : deleteObject(kind, obj);
    const pending = () =>
      ctx.events.filter((e) => e.reason === 'DeletePending' && e.key === key(name)).length;
    try {
      // The machine's status writes are refused (as a conflict with another writer would be).
      ctx.applyStatus = () =>
        Promise.reject(new KubeApiError(409, 'Conflict', 'injected', 'PATCH', '/status'));
      let refused = 0;
      for (let i = 0; i < 4; i++) {
        await ctx.refresh();
        await reconcileVirtualMachine(key(name), ctx).catch(() => refused++);
      }
      // The domain is gone: the passes reached the wait and its write, refused each time.
      expect(
        await domain.getState().then(
          () => 'there',
          () => 'gone',
        ),
      ).toBe('gone');
      expect(refused).toBe(4);
      expect(pending()).toBe(0);
      ctx.applyStatus = applyStatus;
      for (let i = 0; i < 2; i++) {
        await ctx.refresh();
        await reconcileVirtualMachine(key(name), ctx);
      }
      await ctx.refresh();
      expect(pending()).toBe(1);
      expect(
        ctx
          .get<VirtualMachine>('VirtualMachine', NS, name)
          ?.status?.conditions?.find((c) => c.type === 'DeletionBlocked')?.reason,
      ).toBe('RestoreClaimedElsewhere');
    } finally {
      ctx.applyStatus = applyStatus;
      ctx.deleteObject = deleteObject;
    }
    // The claim let go (an admin's forget-node): the machine goes, and its restore with it.
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, name),
        (o) => o === undefined,
      ),
    });
    await ctx.refresh();
    expect(restoreOf(back)).toBeUndefined();
  });

  it('holds back only the machine a restore left InProgress, not a new one of its name', async () => {
    const old = await runningVm('again', 'root');
    await snapshot('again-1', 'again');
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'again-back', namespace: NS },
      spec: { vmName: 'again', snapshotName: 'again-1' },
    });
    // An agent that died mid-restore; then the machine went without it (its finalizer
    // released by hand, its domain removed).
    await ctx.refresh();
    const gone = ctx.get<VirtualMachine>('VirtualMachine', NS, 'again')!;
    await k.patchStatus('VirtualMachineRestore', NS, 'again-back', {
      phase: 'InProgress',
      vmUid: gone.metadata.uid,
    });
    await k.remove('VirtualMachine', NS, 'again');
    await ctx.removeFinalizer('VirtualMachine', gone, HOST_FINALIZER);
    await old.destroy();
    for (const s of await old.listAllSnapshots(0)) await s.delete();
    await old.undefine();
    await ctx.refresh();
    expect(ctx.get('VirtualMachine', NS, 'again')).toBeUndefined();
    // The new machine is not held back; the old one's restore goes, never to revert this one.
    await runningVm('again', 'root');
    await converge(ctx, reconcileVirtualMachineRestore, key('again-back'), {
      until: stored(
        () => restoreOf('again-back'),
        (o) => o === undefined,
      ),
    });
    await k.remove('VirtualMachine', NS, 'again');
    await converge(ctx, reconcileVirtualMachine, key('again'), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, 'again'),
        (o) => o === undefined,
      ),
    });
  });

  it('names the restore another waits for, and fails one whose domain went mid-revert', async () => {
    const dom = await runningVm('lost', 'root');
    await snapshot('lost-1', 'lost');
    await ctx.refresh();
    const vm = ctx.get<VirtualMachine>('VirtualMachine', NS, 'lost')!;
    for (const name of ['lost-back-1', 'lost-back-2'])
      await k.create('VirtualMachineRestore', {
        metadata: { name, namespace: NS },
        spec: { vmName: 'lost', snapshotName: 'lost-1' },
      });
    // An agent that died mid-revert of the first.
    await k.patchStatus('VirtualMachineRestore', NS, 'lost-back-1', {
      phase: 'InProgress',
      vmUid: vm.metadata.uid,
    });
    // It waits (requeued), so one pass.
    await ctx.refresh();
    await reconcileVirtualMachineRestore(key('lost-back-2'), ctx);
    await ctx.refresh();
    expect(
      restoreOf('lost-back-2')?.status?.conditions?.find((c) => c.type === 'Ready'),
    ).toMatchObject({
      reason: 'AnotherRestoreInProgress',
      message:
        'VirtualMachineRestore lost-back-1 of VirtualMachine lost is running; this one waits ' +
        'for it',
    });
    // Its domain removed by hand meanwhile (the machine's controller stands aside): the
    // marker went with it, so the restore cannot tell whether it reverted. Never Pending.
    await dom.destroy();
    for (const s of await dom.listAllSnapshots(0)) await s.delete();
    await dom.undefine();
    await converge(ctx, reconcileVirtualMachineRestore, key('lost-back-1'), {
      until: stored(
        () => restoreOf('lost-back-1'),
        (o) => o?.status?.phase !== 'InProgress',
      ),
    });
    expect(restoreOf('lost-back-1')?.status).toMatchObject({
      phase: 'Failed',
      conditions: expect.arrayContaining([
        expect.objectContaining({
          type: 'Ready',
          reason: 'DomainMissing',
          message: expect.stringMatching(/^the domain of VirtualMachine lost was removed/),
        }),
        expect.objectContaining({ type: 'Stalled', status: 'True' }),
      ]),
    });
    await k.remove('VirtualMachine', NS, 'lost');
    await converge(ctx, reconcileVirtualMachine, key('lost'), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, 'lost'),
        (o) => o === undefined,
      ),
    });
  });

  it('never reverts a machine being deleted: its restore goes at once', async () => {
    await runningVm('going', 'root');
    await snapshot('going-1', 'going');
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'going-back', namespace: NS },
      spec: { vmName: 'going', snapshotName: 'going-1' },
    });
    // The machine's finalizer keeps it, deleting, until its own removal runs.
    await k.remove('VirtualMachine', NS, 'going');
    await ctx.refresh();
    expect(
      ctx.get<VirtualMachine>('VirtualMachine', NS, 'going')?.metadata.deletionTimestamp,
    ).toBeTruthy();
    await converge(ctx, reconcileVirtualMachineRestore, key('going-back'), {
      until: stored(
        () => restoreOf('going-back'),
        (o) => o === undefined || o.status?.phase !== undefined,
      ),
    });
    expect(restoreOf('going-back')).toBeUndefined();
    await converge(ctx, reconcileVirtualMachine, key('going'), {
      until: stored(
        () => ctx.get('VirtualMachine', NS, 'going'),
        (o) => o === undefined,
      ),
    });
  });

  it('says that reverting to the stopped machine’s snapshot shut the running guest off', async () => {
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'halt');
    const vm = await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'halt', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: 'root' }],
      },
    });
    const phaseIs = (want: string) =>
      stored(
        vmOf,
        (o) => o?.status?.phase === want && o.status.observedGeneration === o.metadata.generation,
      );
    await converge(ctx, reconcileVirtualMachine, key('halt'), { until: phaseIs('Stopped') });
    const taken = await snapshot('halt-1', 'halt');
    expect(taken.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('DisksOnly');
    const halt = await conn.lookupDomainByUUIDString(String(vm.metadata.uid));
    const restoreWhileRunning = async (name: string, runStrategy: string) => {
      await k.patchSpec('VirtualMachine', NS, 'halt', { runStrategy });
      if (!(await halt.isActive())) await halt.create();
      await converge(ctx, reconcileVirtualMachine, key('halt'), { until: phaseIs('Running') });
      await k.create('VirtualMachineRestore', {
        metadata: { name, namespace: NS },
        spec: { vmName: 'halt', snapshotName: 'halt-1' },
      });
      await converge(ctx, reconcileVirtualMachineRestore, key(name), {
        until: stored(
          () => restoreOf(name),
          (o) => o?.status?.phase === 'Succeeded',
        ),
      });
      // libvirt reverts a running domain to a snapshot of the stopped one by shutting it off.
      expect(await halt.getState()).toMatchObject({
        stateName: 'shutoff',
        reasonName: 'from_snapshot',
      });
      return restoreOf(name)?.status?.conditions?.find((c) => c.type === 'Ready')?.message;
    };
    const stoppedAndBooted =
      'reverted to VirtualMachineSnapshot halt-1 (disks of the stopped machine; the revert shut ' +
      'the running guest off, and runStrategy Always boots it from them); ' +
      'disks reverted: vda (Volume root)';
    expect(await restoreWhileRunning('halt-back-1', 'Always')).toBe(stoppedAndBooted);
    expect(ctx.events.at(-1)).toMatchObject({
      key: key('halt-back-1'),
      reason: 'Restored',
      message: expect.stringContaining('the revert shut the running guest off'),
    });
    // As said: booted again, and not counted as a crash.
    await converge(ctx, reconcileVirtualMachine, key('halt'), { until: phaseIs('Running') });
    expect(vmOf()?.status?.restartCount ?? 0).toBe(0);
    // An agent killed after the revert, before its status write: the domain's reason tells.
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'halt-back-2', namespace: NS },
      spec: { vmName: 'halt', snapshotName: 'halt-1' },
    });
    await k.patchStatus('VirtualMachineRestore', NS, 'halt-back-2', { phase: 'InProgress' });
    const libvirtSnapshot = await halt.lookupSnapshotByName(String(taken.status?.snapshotName));
    await libvirtSnapshot.revert(0);
    libvirtSnapshot.free();
    await converge(ctx, reconcileVirtualMachineRestore, key('halt-back-2'), {
      until: stored(
        () => restoreOf('halt-back-2'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect(
      restoreOf('halt-back-2')?.status?.conditions?.find((c) => c.type === 'Ready')?.message,
    ).toBe(stoppedAndBooted);
    // Under Manual nothing starts it again, and the restore says so.
    expect(await restoreWhileRunning('halt-back-3', 'Manual')).toBe(
      'reverted to VirtualMachineSnapshot halt-1 (disks of the stopped machine; the revert shut ' +
        'the running guest off, and runStrategy Manual leaves it shut off); ' +
        'disks reverted: vda (Volume root)',
    );
    await converge(ctx, reconcileVirtualMachine, key('halt'), { until: phaseIs('Stopped') });
    expect(await halt.isActive()).toBe(false);
    // Restored while it is off: nothing was shut off, though libvirt's reason still reads
    // from_snapshot (from the restore before).
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'halt-back-4', namespace: NS },
      spec: { vmName: 'halt', snapshotName: 'halt-1' },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key('halt-back-4'), {
      until: stored(
        () => restoreOf('halt-back-4'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect(
      restoreOf('halt-back-4')?.status?.conditions?.find((c) => c.type === 'Ready')?.message,
    ).toBe('reverted to VirtualMachineSnapshot halt-1 (disks); disks reverted: vda (Volume root)');
    await k.remove('VirtualMachine', NS, 'halt');
    await converge(ctx, reconcileVirtualMachine, key('halt'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('keeps a begun restore InProgress while it waits for overlays made after it began', async () => {
    const [base, layered, vmName] = [unique('base'), unique('layered'), unique('golden')];
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    await k.create('Volume', {
      metadata: { name: base, namespace: NS },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2' },
    });
    await k.patchStatus('Volume', NS, base, {
      phase: 'Available',
      path: join(stateDir, `${base}.img`),
    });
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, vmName);
    const vm = await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: vmName, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: base }],
      },
    });
    await converge(ctx, reconcileVirtualMachine, key(vmName), {
      until: stored(vmOf, (o) => o?.status?.phase === 'Stopped'),
    });
    const taken = await snapshot(snap, vmName);
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // An agent that died after marking the domain and recording InProgress, before the revert;
    // meanwhile a Volume is layered on the snapshot's disk.
    await k.patchStatus('VirtualMachineRestore', NS, back, {
      phase: 'InProgress',
      vmUid: vm.metadata.uid,
      snapshotUid: taken.metadata.uid,
    });
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    const domain = await conn.lookupDomainByUUIDString(String(vm.metadata.uid));
    await setMarker(domain, String(r.metadata.uid), false);
    await k.create('Volume', {
      metadata: { name: layered, namespace: NS },
      spec: {
        nodeName: NODE,
        pool: 'images',
        capacity: '1Gi',
        format: 'qcow2',
        source: { backingVolume: { volume: base } },
      },
    });
    await ctx.refresh();
    for (let i = 0; i < 2; i++) {
      expect(requeueMs(await reconcileVirtualMachineRestore(key(back), ctx))).toBeGreaterThan(0);
      await ctx.refresh();
    }
    // Before: written back to Pending, where a later pass would revert to whatever object is
    // then under the name. Still InProgress, the wait said, once as a Warning.
    const waiting = restoreOf(back)!;
    expect(waiting.status?.phase).toBe('InProgress');
    expect(waiting.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      reason: 'VolumeHasOverlays',
      message:
        `Volume ${base} is the backing file of ${layered}: reverting it would corrupt what ` +
        'they read; delete that Volume first (the restore waits), or delete this restore, ' +
        `which has reverted nothing yet: until then VirtualMachine ${vmName} keeps its domain ` +
        'definition and its spec changes wait',
    });
    expect(
      ctx.events.filter((e) => e.key === key(back) && e.reason === 'VolumeHasOverlays'),
    ).toMatchObject([{ type: 'Warning' }]);
    // Nothing reverted yet: the marker is still there.
    const { observeMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/observe.js');
    expect(await observeMarker(domain)).toContain(String(r.metadata.uid));
    // Once the overlay is gone, the restore runs, saying Reverting again meanwhile.
    await k.remove('Volume', NS, layered);
    const written: string[] = [];
    const { applyStatus } = ctx;
    ctx.applyStatus = (kind, obj, status) => {
      const ready = (status as VirtualMachineRestore['status'])?.conditions?.find(
        (c) => c.type === 'Ready',
      );
      if (kind === 'VirtualMachineRestore') written.push(String(ready?.reason));
      return applyStatus(kind, obj, status);
    };
    try {
      await converge(ctx, reconcileVirtualMachineRestore, key(back), {
        until: stored(
          () => restoreOf(back),
          (o) => o?.status?.phase === 'Succeeded',
        ),
      });
    } finally {
      ctx.applyStatus = applyStatus;
    }
    expect(written).toEqual(['Reverting', 'Restored']);
    await k.remove('VirtualMachine', NS, vmName);
    await converge(ctx, reconcileVirtualMachine, key(vmName), {
      until: stored(vmOf, (o) => o === undefined),
    });
    await k.remove('Volume', NS, base);
  });

  it('fails a restore whose revert libvirt refused after replacing the definition, also after a failed write', async () => {
    const { name: vmName, domain } = await ownVm();
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    await snapshot(snap, vmName);
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // libvirt reverts (the definition, marker and all, replaced by the snapshot's), then fails,
    // as qemuDomainRevertToSnapshot does when QEMU does not start from the snapshot or its
    // snapshot metadata cannot be written; and the Failed status write is refused.
    const { LibvirtError, ErrorCode, ErrorDomain, ErrorLevel } =
      await import('../../../../src/libvirt/errors.js');
    const failAfter = <T extends object>(target: T, name: string, wrap: (v: never) => unknown) =>
      new Proxy(target, {
        get(t, p) {
          const v = Reflect.get(t, p, t) as unknown;
          if (typeof v !== 'function') return v;
          const bound = (v as (...a: unknown[]) => unknown).bind(t);
          return p === name ? async (...a: unknown[]) => wrap((await bound(...a)) as never) : bound;
        },
      });
    const refused = new LibvirtError('operation failed: failed to write snapshot metadata', {
      code: ErrorCode.VIR_ERR_OPERATION_FAILED,
      domain: ErrorDomain.VIR_FROM_QEMU,
      level: ErrorLevel.VIR_ERR_ERROR,
    });
    const { libvirt, applyStatus } = ctx;
    ctx.libvirt = () =>
      failAfter(libvirt(), 'lookupDomainByUUIDString', (d: Domain) =>
        failAfter(d, 'lookupSnapshotByName', (s: object) =>
          failAfter(s, 'revert', () => {
            throw refused;
          }),
        ),
      );
    ctx.applyStatus = (kind, obj, status) =>
      (status as { phase?: string }).phase === 'Failed'
        ? Promise.reject(new KubeApiError(409, 'Conflict', 'injected', 'PATCH', '/status'))
        : applyStatus(kind, obj, status);
    try {
      await ctx.refresh();
      await expect(reconcileVirtualMachineRestore(key(back), ctx)).rejects.toThrow(/409/);
    } finally {
      Object.assign(ctx, { libvirt, applyStatus });
    }
    await ctx.refresh();
    expect(restoreOf(back)?.status?.phase).toBe('InProgress');
    // The revert did replace the definition.
    expect(await (await domain.currentSnapshot()).getName()).toBe(
      snapOf(snap)?.status?.snapshotName,
    );
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase !== 'InProgress',
      ),
    });
    // Before: no marker, read as reverted: Succeeded, and no Warning ever.
    const ready = restoreOf(back)?.status?.conditions?.find((c) => c.type === 'Ready');
    expect(restoreOf(back)?.status?.phase).toBe('Failed');
    expect(ready).toMatchObject({
      reason: 'RevertFailed',
      message: expect.stringMatching(
        new RegExp(
          `^libvirt could not revert to ${snapOf(snap)?.status?.snapshotName}: .*failed to write snapshot metadata; `,
        ),
      ) as unknown,
    });
    expect(
      ctx.events.filter((e) => e.key === key(back) && e.reason === 'RevertFailed'),
    ).toMatchObject([{ type: 'Warning', message: ready?.message }]);
  });

  it('lets a machine whose begun restore waits for overlays follow runStrategy, keeping its definition', async () => {
    const [base, layered, vmName] = [unique('base'), unique('layered'), unique('held')];
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    await availableVolume(base);
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, vmName);
    const domain = await runningVm(vmName, base);
    const vm = vmOf()!;
    const taken = await snapshot(snap, vmName);
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // An agent that died after marking the domain and recording InProgress, before the revert;
    // meanwhile a Volume is layered on the snapshot's disk: the restore waits for a user.
    await k.patchStatus('VirtualMachineRestore', NS, back, {
      phase: 'InProgress',
      vmUid: vm.metadata.uid,
      snapshotUid: taken.metadata.uid,
    });
    const { setMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/act.js');
    const { observeMarker } =
      await import('../../../../src/controllers/virtual-machine-restore/observe.js');
    await setMarker(domain, String(r.metadata.uid), true);
    await k.create('Volume', {
      metadata: { name: layered, namespace: NS },
      spec: {
        nodeName: NODE,
        pool: 'images',
        capacity: '1Gi',
        format: 'qcow2',
        source: { backingVolume: { volume: base } },
      },
    });
    await ctx.refresh();
    for (let i = 0; i < 2; i++) {
      await reconcileVirtualMachineRestore(key(back), ctx);
      await ctx.refresh();
    }
    const waiting = restoreOf(back)!;
    expect(waiting.status?.phase).toBe('InProgress');
    // It says how to give the machine back.
    expect(waiting.status?.conditions?.find((c) => c.type === 'Ready')?.message).toContain(
      `or delete this restore, which has reverted nothing yet: until then VirtualMachine ${vmName}`,
    );
    // Passes whatever they return (a machine with a problem requeues, converge wants done).
    const passesUntil = async (test: () => boolean | Promise<boolean>) => {
      for (let pass = 0; pass < 20; pass++) {
        await ctx.refresh();
        const action = await reconcileVirtualMachine(key(vmName), ctx);
        if (await test()) return action;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error(`${vmName} did not get there in 20 passes`);
    };
    // `vm stop` and a spec change: the stop is carried out, the definition is kept (the marker
    // with it), and the machine names the restore that holds its spec changes back. Before:
    // the pass stood aside (requeue 1 s), the guest kept running, the status said nothing.
    await k.patchSpec('VirtualMachine', NS, vmName, { runStrategy: 'Halted', memory: '256Mi' });
    await passesUntil(async () => !(await domain.isActive()));
    await ctx.refresh();
    expect(vmOf()?.status?.phase).toBe('Stopped');
    const synced = vmOf()?.status?.conditions?.find((c) => c.type === 'Synced');
    expect(synced?.status).toBe('False');
    expect(synced?.message).toContain(
      `VirtualMachineRestore ${back} has not reverted the domain yet and waits ` +
        '(VolumeHasOverlays, see its status): runStrategy applies meanwhile, but spec changes ' +
        `wait, as redefining the domain would lose the restore's record that nothing was ` +
        `reverted; delete the restore (kubectl delete vmrestore ${back} -n ${NS})`,
    );
    expect(await observeMarker(domain)).toContain(String(r.metadata.uid));
    const memoryKiB = async () =>
      Number(/<memory unit='KiB'>(\d+)</.exec(await domain.getXMLDesc(0))?.[1]);
    expect(await memoryKiB()).toBe(128 * 1024);
    // Deleting the restore gives the machine back: it no longer names it, and its spec change
    // is applied once its own problem (its writable disk under the overlay) is gone too.
    await k.remove('VirtualMachineRestore', NS, back);
    await passesUntil(() => {
      const now = vmOf()?.status?.conditions?.find((c) => c.type === 'Synced');
      return now?.reason === 'VolumeHasOverlays' && !now.message.includes(back);
    });
    await k.remove('Volume', NS, layered);
    await passesUntil(async () => (await memoryKiB()) === 256 * 1024);
    await k.remove('VirtualMachine', NS, vmName);
    await converge(ctx, reconcileVirtualMachine, key(vmName), {
      until: stored(vmOf, (o) => o === undefined),
    });
    await k.remove('Volume', NS, base);
  });

  it('says once which restore a machine stands aside for, and looks again at a sane pace', async () => {
    const { name } = await ownVm();
    const vm = ctx.get<VirtualMachine>('VirtualMachine', NS, name)!;
    const back = `${name}-back`;
    const r = await k.create<VirtualMachineRestore>('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName: name, snapshotName: `${name}-none` },
    });
    await ctx.refresh();
    // A pass of the restore reverting the machine right now.
    ctx.host.restores.set(String(vm.metadata.uid), String(r.metadata.uid));
    const written: unknown[] = [];
    const { applyStatus } = ctx;
    ctx.applyStatus = (kind, obj, status) => {
      if (kind === 'VirtualMachine') written.push(status);
      return applyStatus(kind, obj, status);
    };
    try {
      for (let i = 0; i < 3; i++) {
        // Before: every second, for as long as the restore stayed InProgress.
        expect(requeueMs(await reconcileVirtualMachine(key(name), ctx))).toBe(10_000);
        await ctx.refresh();
      }
    } finally {
      ctx.applyStatus = applyStatus;
      ctx.host.restores.delete(String(vm.metadata.uid));
    }
    // Said once (before: never), not with every pass.
    expect(written).toHaveLength(1);
    const conditions = ctx.get<VirtualMachine>('VirtualMachine', NS, name)?.status?.conditions;
    expect(conditions?.find((c) => c.type === 'Synced')).toMatchObject({
      status: 'False',
      reason: 'RestoreInProgress',
      message:
        `VirtualMachineRestore ${back} is reverting the domain: the machine is left alone ` +
        'until it has finished, then its spec and runStrategy apply again',
    });
    // Running as asked: Ready stays, Reconciling says why it is not converged.
    expect(conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(conditions?.find((c) => c.type === 'Reconciling')).toMatchObject({
      status: 'True',
      reason: 'RestoreInProgress',
    });
    await k.remove('VirtualMachineRestore', NS, back);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(
        () => ctx.get<VirtualMachine>('VirtualMachine', NS, name),
        (o) => o === undefined,
      ),
    });
  });

  it('does not revert a base image that other Volumes are layered on until they are gone', async () => {
    const volume = (name: string, source?: object) =>
      k.create('Volume', {
        metadata: { name, namespace: NS },
        spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2', source },
      });
    await volume('base');
    await k.patchStatus('Volume', NS, 'base', {
      phase: 'Available',
      path: join(stateDir, 'base.img'),
    });
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'golden');
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'golden', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: 'base' }],
      },
    });
    await converge(ctx, reconcileVirtualMachine, key('golden'), {
      until: stored(vmOf, (o) => o?.status?.phase === 'Stopped'),
    });
    expect((await snapshot('golden-1', 'golden')).status?.disks).toEqual([
      { name: 'vda', volume: 'base' },
    ]);
    // Later the machine's disk becomes the base image of another Volume.
    await volume('layered', { backingVolume: { volume: 'base' } });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'golden-back', namespace: NS },
      spec: { vmName: 'golden', snapshotName: 'golden-1' },
    });
    await ctx.refresh();
    const action = await reconcileVirtualMachineRestore(key('golden-back'), ctx);
    expect(requeueMs(action)).toBeGreaterThan(0);
    await stored(
      () => restoreOf('golden-back'),
      (o) => o?.status?.phase !== undefined,
    )();
    const waiting = restoreOf('golden-back')!;
    expect(waiting.status?.phase).toBe('Pending');
    expect(waiting.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      reason: 'VolumeHasOverlays',
      message:
        'Volume base is the backing file of layered: reverting it would corrupt what they ' +
        'read; delete that Volume first (the restore waits)',
    });
    // Said once as a Warning Event too, not on every pass that finds it still so.
    await reconcileVirtualMachineRestore(key('golden-back'), ctx);
    expect(
      ctx.events.filter((e) => e.key === key('golden-back') && e.reason === 'VolumeHasOverlays'),
    ).toMatchObject([{ type: 'Warning' }]);
    // Once the overlay is gone, the restore runs.
    await k.remove('Volume', NS, 'layered');
    await converge(ctx, reconcileVirtualMachineRestore, key('golden-back'), {
      until: stored(
        () => restoreOf('golden-back'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    await k.remove('VirtualMachine', NS, 'golden');
    await converge(ctx, reconcileVirtualMachine, key('golden'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('names the disks a restore reverted and the Volumes it left as they are', async () => {
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'named');
    await k.create('Volume', {
      metadata: { name: 'scratch', namespace: NS },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2' },
    });
    await k.patchStatus('Volume', NS, 'scratch', {
      phase: 'Available',
      path: join(stateDir, 'scratch.img'),
    });
    // Stopped, so that its later disks are a plain redefinition on the test driver.
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'named', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Halted',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: 'root' }],
      },
    });
    const synced = stored(
      vmOf,
      (o) =>
        o?.status?.phase === 'Stopped' && o.status.observedGeneration === o.metadata.generation,
    );
    await converge(ctx, reconcileVirtualMachine, key('named'), { until: synced });
    await snapshot('named-1', 'named');
    // Attached after the snapshot: a writable disk, and a read-only one (never in a snapshot).
    await k.patchSpec('VirtualMachine', NS, 'named', {
      disks: [
        { name: 'root', volume: 'root' },
        { name: 'scratch', volume: 'scratch' },
        { name: 'iso', volume: 'raw', readOnly: true },
      ],
    });
    await converge(ctx, reconcileVirtualMachine, key('named'), { until: synced });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'named-back', namespace: NS },
      spec: { vmName: 'named', snapshotName: 'named-1' },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key('named-back'), {
      until: stored(
        () => restoreOf('named-back'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    const said =
      'disks reverted: vda (Volume root); not reverted: Volume scratch (not in the snapshot), ' +
      'Volume raw (read-only)';
    expect(
      restoreOf('named-back')?.status?.conditions?.find((c) => c.type === 'Ready')?.message,
    ).toBe(`reverted to VirtualMachineSnapshot named-1 (disks); ${said}`);
    expect(ctx.events.at(-1)).toMatchObject({
      key: key('named-back'),
      reason: 'Restored',
      message: `VirtualMachine named reverted to named-1 (disks); ${said}`,
    });
    // The root disk leaves the machine: the snapshot still reverts its Volume, and says so.
    await k.patchSpec('VirtualMachine', NS, 'named', {
      disks: [{ name: 'scratch', volume: 'scratch' }],
    });
    await converge(ctx, reconcileVirtualMachine, key('named'), { until: synced });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'named-back-2', namespace: NS },
      spec: { vmName: 'named', snapshotName: 'named-1' },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key('named-back-2'), {
      until: stored(
        () => restoreOf('named-back-2'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect(
      restoreOf('named-back-2')?.status?.conditions?.find((c) => c.type === 'Ready')?.message,
    ).toBe(
      'reverted to VirtualMachineSnapshot named-1 (disks); disks reverted: vda (Volume root, ' +
        'no longer attached); not reverted: Volume scratch (not in the snapshot)',
    );
    await k.remove('VirtualMachine', NS, 'named');
    await converge(ctx, reconcileVirtualMachine, key('named'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('does not restart a restored checkpoint under updatePolicy Restart until the spec changes', async () => {
    const { vm, vmOf, runningSynced, runId, stops } = await restartPolicyVm('keep');
    await snapshot('keep-1', 'keep');
    // A restart-time change after the checkpoint: applied by a restart, as the policy says.
    await k.patchSpec('VirtualMachine', NS, 'keep', { maxMemory: '256Mi' });
    await converge(ctx, reconcileVirtualMachine, key('keep'), { until: runningSynced });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'keep-back', namespace: NS },
      spec: { vmName: 'keep', snapshotName: 'keep-1' },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key('keep-back'), {
      until: stored(
        () => restoreOf('keep-back'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    // The checkpoint runs with its own definition, which lacks the new maxMemory. Nobody changed
    // the spec: the restored guest is not restarted, and RestartRequired says why.
    const restored = await runId();
    expect(restored).toBeGreaterThan(0);
    expect(
      await (await conn.lookupDomainByUUIDString(String(vm.metadata.uid))).getState(),
    ).toMatchObject({
      stateName: 'running',
      reasonName: 'from_snapshot',
    });
    const before = stops();
    for (let pass = 0; pass < 3; pass++) await converge(ctx, reconcileVirtualMachine, key('keep'));
    await ctx.refresh();
    expect(await runId()).toBe(restored);
    expect(stops()).toBe(before);
    expect(vmOf()?.status?.conditions?.find((c) => c.type === 'ShutdownRequested')).toBeUndefined();
    const required = vmOf()?.status?.conditions?.find((c) => c.type === 'RestartRequired');
    expect(required).toMatchObject({ status: 'True', reason: 'PendingChanges' });
    expect(required?.message).toMatch(
      /^pending: spec\.maxMemory; this run \(run \d+\) is a checkpoint a VirtualMachineRestore brought back under generation \d+ /,
    );
    // A change of the spec is the user's: the policy restarts the machine for it, as always.
    await k.patchSpec('VirtualMachine', NS, 'keep', { maxMemory: '320Mi' });
    await converge(ctx, reconcileVirtualMachine, key('keep'), { until: runningSynced });
    expect(stops()).toBe(before + 1);
    expect(await runId()).not.toBe(restored);
    await k.remove('VirtualMachine', NS, 'keep');
    await converge(ctx, reconcileVirtualMachine, key('keep'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('restarts a restored checkpoint for a spec change made while the restore ran', async () => {
    const name = unique('edit');
    const { vmOf, runningSynced, runId, stops } = await restartPolicyVm(name);
    await snapshot(`${name}-1`, name);
    await restoreToFirst(name);
    const restored = await runId();
    // Edited while the machine's controller stood aside (it has not looked since the restore
    // began): the user's change, which the restart applies, not the restored definition's.
    await k.patchSpec('VirtualMachine', NS, name, { maxMemory: '256Mi' });
    const before = stops();
    await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
    expect(stops()).toBe(before + 1);
    expect(await runId()).not.toBe(restored);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('moves a restored checkpoint’s record on once it takes an edit live, for a later agent', async () => {
    const name = unique('live');
    const { vm, vmOf, runningSynced, runId, stops } = await restartPolicyVm(name);
    await snapshot(`${name}-1`, name);
    await restoreToFirst(name);
    await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
    const restored = await runId();
    const domain = await conn.lookupDomainByUUIDString(String(vm.metadata.uid));
    const records = async () =>
      Promise.all(
        [0, DomainXMLFlags.INACTIVE].map(
          async (flags) => parseDomainXML(await domain.getXMLDesc(flags)).startedUnder,
        ),
      );
    // An edit the run takes on live (one that changes nothing in the domain): the run now
    // reflects that generation, as a run the agent started does, and records it. Kept at the
    // generation it was brought back under, a later agent whose defaults differ restarted it
    // though nobody changed a restart-time field since (plan.ts runCaughtUp, restoredRun).
    await k.patchSpec('VirtualMachine', NS, name, { terminationGracePeriodSeconds: 9 });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
    const edited = vmOf()!.metadata.generation;
    expect(await runId()).toBe(restored);
    expect(await records()).toEqual([edited, edited]);
    // The passes after it, and a new agent's, leave it so.
    const successor = snapshotContext({
      kubeConfig: controlPlane().kubeConfig,
      conn,
      nodeName: NODE,
      stateDir,
    });
    for (const c of [ctx, successor]) {
      for (let pass = 0; pass < 2; pass++) await converge(c, reconcileVirtualMachine, key(name));
      expect(await records()).toEqual([edited, edited]);
    }
    expect(await runId()).toBe(restored);
    expect(stops()).toBe(0);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('restarts a restored checkpoint for a spec change whose first pass could not apply it', async () => {
    const name = `late-${randomBytes(3).toString('hex')}`;
    const { vmOf, runningSynced, runId, stops } = await restartPolicyVm(name);
    await snapshot(`${name}-1`, name);
    await k.patchSpec('VirtualMachine', NS, name, { maxMemory: '256Mi' });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
    await restoreToFirst(name);
    const restored = await runId();
    const before = stops();
    for (let pass = 0; pass < 2; pass++) await converge(ctx, reconcileVirtualMachine, key(name));
    expect(await runId()).toBe(restored);
    // The definition saved for the held run says it waits, as RestartRequired does.
    const updated = ctx.events.filter((e) => e.key === key(name) && e.reason === 'Updated');
    expect(updated.at(-1)?.message).toMatch(
      /it applies at the next start: the running checkpoint a VirtualMachineRestore brought back is not restarted for it \(pending: spec\.maxMemory; updatePolicy Restart/,
    );
    // The user edits the spec, adding a disk on a Volume that is not Available yet: the passes
    // until it is cannot define the domain (nor restart it), but they write observedGeneration.
    const late = `${name}-data`;
    await k.create('Volume', {
      metadata: { name: late, namespace: NS },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2' },
    });
    await k.patchSpec('VirtualMachine', NS, name, {
      disks: [
        { name: 'root', volume: 'root' },
        { name: 'data', volume: late },
      ],
    });
    // Each pass asks to be run again (the Volume): run by hand rather than to convergence.
    for (let pass = 0; pass < 3; pass++) {
      await ctx.refresh();
      await reconcileVirtualMachine(key(name), ctx);
    }
    await ctx.refresh();
    expect(vmOf()?.status?.observedGeneration).toBe(vmOf()?.metadata.generation);
    expect(await runId()).toBe(restored);
    expect(stops()).toBe(before);
    // The Volume is ready: the edit is the user's, so the policy restarts the machine for it.
    await k.patchStatus('Volume', NS, late, {
      phase: 'Available',
      path: join(stateDir, `${late}.img`),
    });
    await converge(ctx, reconcileVirtualMachine, key(name), { until: runningSynced });
    expect(stops()).toBe(before + 1);
    expect(await runId()).not.toBe(restored);
    await k.remove('VirtualMachine', NS, name);
    await converge(ctx, reconcileVirtualMachine, key(name), {
      until: stored(vmOf, (o) => o === undefined),
    });
    await k.remove('Volume', NS, late);
  });

  it('holds a restored checkpoint of a paused machine for its whole run: resumed, after an agent restart', async () => {
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'held');
    const vm = await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'held', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        updatePolicy: 'Restart',
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: 'root' }],
      },
    });
    const synced = (phase: string) =>
      stored(
        vmOf,
        (o) =>
          o?.status?.phase === phase &&
          o.status.observedGeneration === o.metadata.generation &&
          o.status.conditions?.find((c) => c.type === 'ShutdownRequested') === undefined,
      );
    await converge(ctx, reconcileVirtualMachine, key('held'), { until: synced('Running') });
    const domainNow = () => conn.lookupDomainByUUIDString(String(vm.metadata.uid));
    // Paused outside the operator (virsh suspend) and checkpointed so: the checkpoint comes
    // back paused, and the machine's controller resumes it (no virt.dev/paused asks otherwise).
    await (await domainNow()).suspend();
    const snap = await snapshot('held-1', 'held');
    expect(snap.status?.includesMemory).toBe(true);
    await converge(ctx, reconcileVirtualMachine, key('held'), { until: synced('Running') });
    // A restart-time change after the checkpoint, applied by a restart as the policy says.
    await k.patchSpec('VirtualMachine', NS, 'held', { maxMemory: '256Mi' });
    await converge(ctx, reconcileVirtualMachine, key('held'), {
      until: stored(
        vmOf,
        (o) =>
          o?.status?.phase === 'Running' &&
          o.status.conditions?.find((c) => c.type === 'RestartRequired')?.status === 'False',
      ),
    });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'held-back', namespace: NS },
      spec: { vmName: 'held', snapshotName: 'held-1' },
    });
    await converge(ctx, reconcileVirtualMachineRestore, key('held-back'), {
      until: stored(
        () => restoreOf('held-back'),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
    expect(await (await domainNow()).getState()).toMatchObject({
      stateName: 'paused',
      reasonName: 'from_snapshot',
    });
    const restored = await (await domainNow()).getID();
    const stops = () =>
      ctx.events.filter((e) => e.key === key('held') && e.reason === 'ShuttingDown').length;
    const before = stops();
    // Resumed (libvirt's reason is `unpaused` from then on): still the run the restore brought
    // back, which the policy does not restart for the fields the checkpoint's definition lacks.
    await converge(ctx, reconcileVirtualMachine, key('held'), { until: synced('Running') });
    expect((await (await domainNow()).getState()).reasonName).toBe('unpaused');
    const held = async (c: SnapshotContext) => {
      for (let pass = 0; pass < 3; pass++) await converge(c, reconcileVirtualMachine, key('held'));
      await c.refresh();
      expect(await (await domainNow()).getID()).toBe(restored);
      expect(stops()).toBe(before);
      const required = c
        .get<VirtualMachine>('VirtualMachine', NS, 'held')
        ?.status?.conditions?.find((x) => x.type === 'RestartRequired');
      expect(required?.message).toMatch(
        /^pending: spec\.maxMemory; this run \(run \d+\) is a checkpoint a VirtualMachineRestore brought back under generation \d+ /,
      );
    };
    await held(ctx);
    // A new agent (its HostState empty) tells the same from the machine's status.
    const { kubeConfig } = controlPlane();
    const restarted = snapshotContext({ kubeConfig, conn, nodeName: NODE, stateDir });
    await held(restarted);
    expect(restarted.events.filter((e) => e.reason === 'ShuttingDown')).toEqual([]);
    // A change of the spec is the user's: the policy restarts the machine for it.
    await k.patchSpec('VirtualMachine', NS, 'held', { maxMemory: '320Mi' });
    await converge(ctx, reconcileVirtualMachine, key('held'), { until: synced('Running') });
    expect(stops()).toBe(before + 1);
    expect(await (await domainNow()).getID()).not.toBe(restored);
    await k.remove('VirtualMachine', NS, 'held');
    await converge(ctx, reconcileVirtualMachine, key('held'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });

  it('leaves no snapshot object of a deleted machine to a new machine of its name', async () => {
    const vmOf = () => ctx.get<VirtualMachine>('VirtualMachine', NS, 'twice');
    await runningVm('twice', 'root');
    const old = await snapshot('twice-1', 'twice');
    expect(old.status?.phase).toBe('Ready');
    // The machine is deleted, and its agent restarts before the snapshot's own pass...
    await k.remove('VirtualMachine', NS, 'twice');
    await converge(ctx, reconcileVirtualMachine, key('twice'), {
      until: stored(vmOf, (o) => o === undefined),
    });
    // ...by which time a new machine of the same name exists.
    await runningVm('twice', 'root');
    await converge(ctx, reconcileVirtualMachineSnapshot, key('twice-1'), {
      until: stored(
        () => snapOf('twice-1'),
        (o) => o === undefined || o.status?.phase === 'Failed',
      ),
    });
    // Gone with its machine, not a Failed SnapshotMissing snapshot among the new machine's.
    expect(snapOf('twice-1')).toBeUndefined();
    await k.remove('VirtualMachine', NS, 'twice');
    await converge(ctx, reconcileVirtualMachine, key('twice'), {
      until: stored(vmOf, (o) => o === undefined),
    });
  });
});

describe('deleting a snapshot whose disks the running machine no longer has', () => {
  it('keeps it while the domain runs (libvirt 9.0 would crash), deletes it once shut off', async () => {
    await k.create('Volume', {
      metadata: { name: 'moved', namespace: NS },
      spec: { nodeName: NODE, pool: 'images', capacity: '1Gi', format: 'qcow2' },
    });
    await k.patchStatus('Volume', NS, 'moved', {
      phase: 'Available',
      path: join(stateDir, 'moved.img'),
    });
    const domain = await runningVm('moving', 'moved');
    const snap = await snapshot('moving-1', 'moving');
    const name = String(snap.status?.snapshotName);
    // The snapshot's vda is another file than the running domain's now: what a disk detached
    // or swapped since the snapshot looks like to libvirt's check before a live delete.
    const { DomainSnapshotCreateFlags } = await import('../../../../src/libvirt/index.js');
    const taken = await domain.lookupSnapshotByName(name);
    const xml = await taken.getXMLDesc();
    taken.free();
    const moved = join(stateDir, 'moved.img');
    expect(xml).toContain(moved);
    await domain.createSnapshotXML(
      xml.replaceAll(moved, join(stateDir, 'elsewhere.img')),
      DomainSnapshotCreateFlags.REDEFINE,
    );

    await k.remove('VirtualMachineSnapshot', NS, 'moving-1');
    await ctx.refresh();
    const held = await reconcileVirtualMachineSnapshot(key('moving-1'), ctx);
    expect(requeueMs(held)).toBeGreaterThan(0);
    expect(await domain.numOfSnapshots()).toBe(1);
    // Said on the object: why it waits, and what lets it through.
    expect(ctx.events.at(-1)).toMatchObject({
      key: key('moving-1'),
      type: 'Warning',
      reason: 'DeletePending',
      message:
        'libvirt cannot delete this snapshot while the machine runs (disk vda is now ' +
        `${moved}, not ${join(stateDir, 'elsewhere.img')}); it is deleted once the domain is ` +
        'shut off (runStrategy Halted, or the machine deleted)',
    });
    await ctx.refresh();
    expect(snapOf('moving-1')?.metadata.finalizers).toContain(`node.virt.dev/${NODE}`);
    // And in status, where kubectl get and kstatus readers look; once, not on every look.
    expect(
      snapOf('moving-1')?.status?.conditions?.find((c) => c.type === 'DeletionBlocked'),
    ).toMatchObject({
      status: 'True',
      reason: 'DisksChanged',
      message: ctx.events.at(-1)?.message,
    });
    const [writes, events] = [ctx.writes, ctx.events.length];
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key('moving-1'), ctx))).toBeGreaterThan(
      0,
    );
    expect([ctx.writes, ctx.events.length]).toEqual([writes, events]);

    await domain.destroy();
    await converge(ctx, reconcileVirtualMachineSnapshot, key('moving-1'), {
      until: stored(
        () => snapOf('moving-1'),
        (o) => o === undefined,
      ),
    });
    expect(await domain.numOfSnapshots()).toBe(0);
  });
});

describe('a snapshot or restore of a machine that exists nowhere', () => {
  // Two other nodes' agents, whose caches hold neither the machine nor any claim, past the
  // grace period in which the machine's own agent would have claimed a new object.
  const elsewhere = (nodeName: string) => {
    const other = snapshotContext({
      kubeConfig: controlPlane().kubeConfig,
      conn,
      nodeName,
      stateDir,
    });
    return Object.assign(other, { now: () => new Date(Date.now() + CLAIM_GRACE_MS) });
  };

  it('is reported by one agent; the other’s write conflicts, and then it reads and writes nothing', async () => {
    const [x, y] = [elsewhere('node-x'), elsewhere('node-y')];
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: 'later-1', namespace: NS },
      spec: { vmName: 'later' },
    });
    await k.create('VirtualMachineRestore', {
      metadata: { name: 'later-back', namespace: NS },
      spec: { vmName: 'later', snapshotName: 'later-1' },
    });
    await x.refresh();
    await y.refresh();
    for (const [kind, reconcile, name] of [
      ['VirtualMachineSnapshot', reconcileVirtualMachineSnapshot, 'later-1'],
      ['VirtualMachineRestore', reconcileVirtualMachineRestore, 'later-back'],
    ] as const) {
      // Both look the machine up and find it nowhere; x writes first.
      expect(await reconcile(key(name), x)).toEqual({ kind: 'done' });
      await expect(reconcile(key(name), y), kind).rejects.toThrow(/409/);
      expect([x.reads, y.reads], kind).toEqual([1, 1]);
      await x.refresh();
      const o = x.get<VirtualMachineSnapshot | VirtualMachineRestore>(kind, NS, name);
      expect(o?.status?.phase, kind).toBe('Pending');
      expect(
        o?.status?.conditions?.find((c) => c.type === 'Ready'),
        kind,
      ).toMatchObject({
        status: 'False',
        reason: 'VirtualMachineNotFound',
      });
      expect(x.events.map((e) => `${e.key} ${e.reason}`)).toEqual([
        `${key(name)} VirtualMachineNotFound`,
      ]);
      // Said once: later passes, of either agent, neither read nor write.
      await y.refresh();
      const writes = [x.writes, y.writes];
      for (const c of [x, y]) expect(await reconcile(key(name), c)).toEqual({ kind: 'done' });
      expect([x.reads, y.reads, x.writes, y.writes], kind).toEqual([1, 1, ...writes]);
      x.reads = y.reads = 0;
      x.events.length = 0;
    }
    // A snapshot of a new machine is not judged before its own agent could claim it.
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: 'later-2', namespace: NS },
      spec: { vmName: 'later' },
    });
    await ctx.refresh();
    expect(requeueMs(await reconcileVirtualMachineSnapshot(key('later-2'), ctx))).toBeGreaterThan(
      0,
    );
    expect(ctx.reads).toBe(0);
  });

  it('is replaced once the machine is created: its agent takes the snapshot and restores it', async () => {
    const vmName = unique('later');
    const [snap, back] = [`${vmName}-1`, `${vmName}-back`];
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: snap, namespace: NS },
      spec: { vmName },
    });
    await k.create('VirtualMachineRestore', {
      metadata: { name: back, namespace: NS },
      spec: { vmName, snapshotName: snap },
    });
    // Reported missing by another node's agent first (the test above).
    const x = elsewhere('node-x');
    await x.refresh();
    await reconcileVirtualMachineSnapshot(key(snap), x);
    await reconcileVirtualMachineRestore(key(back), x);
    await ctx.refresh();
    for (const o of [snapOf(snap), restoreOf(back)])
      expect(o?.status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe(
        'VirtualMachineNotFound',
      );
    await runningVm(vmName, 'root');
    await converge(ctx, reconcileVirtualMachineSnapshot, key(snap), {
      until: stored(
        () => snapOf(snap),
        (o) => o?.status?.phase === 'Ready',
      ),
    });
    expect(snapOf(snap)?.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'Checkpoint',
    });
    await converge(ctx, reconcileVirtualMachineRestore, key(back), {
      until: stored(
        () => restoreOf(back),
        (o) => o?.status?.phase === 'Succeeded',
      ),
    });
  });
});

describe('a snapshot applied with its machine, before the machine first runs', () => {
  // The machine's agent defines a new machine's domain a moment before it starts it; a start
  // that fails (refused through a recording connection, as the test driver never fails one)
  // holds that window open for as long as the test needs.
  let rec: Recording;
  let held: SnapshotContext;
  beforeAll(() => {
    rec = recording(conn);
    held = snapshotContext({
      kubeConfig: controlPlane().kubeConfig,
      conn: rec.conn,
      nodeName: NODE,
      stateDir,
      host: ctx.host,
    });
  });
  afterAll(() => rec?.refuse('Domain.create', undefined));

  const vmOf = (name: string) => held.get<VirtualMachine>('VirtualMachine', NS, name);
  const snapIn = (name: string) =>
    held.get<VirtualMachineSnapshot>('VirtualMachineSnapshot', NS, name);
  const snapReady = (name: string) => async () => {
    await held.refresh();
    return snapIn(name)?.status?.phase === 'Ready';
  };
  const ready = (o: { status?: { conditions?: Array<{ type: string }> } } | undefined) =>
    o?.status?.conditions?.find((c) => c.type === 'Ready') as
      { status: string; reason: string; message: string } | undefined;

  /** A new machine and its snapshot, applied together; the machine's starts refused by `err`. */
  async function definedNotStarted(
    err: LibvirtError,
    runStrategy: string,
    firmware: 'bios' | 'uefi' = 'bios',
    includeMemory?: boolean,
  ) {
    const vmName = unique('first');
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: vmName, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy,
        firmware,
        vcpus: 1,
        memory: '128Mi',
        disks: [{ name: 'root', volume: 'root' }],
      },
    });
    await k.create('VirtualMachineSnapshot', {
      metadata: { name: `${vmName}-1`, namespace: NS },
      spec: includeMemory === undefined ? { vmName } : { vmName, includeMemory },
    });
    rec.refuse('Domain.create', err);
    rec.reset();
    for (let i = 0; i < 3; i++) {
      await held.refresh();
      await reconcileVirtualMachine(key(vmName), held);
    }
    await held.refresh();
    // Defined by the agent, its start tried and refused: shut off, and never seen running.
    expect(rec.writes()).toContain('Domain.create');
    const domain = await conn.lookupDomainByUUIDString(String(vmOf(vmName)?.metadata.uid));
    expect(await domain.isActive()).toBe(false);
    expect(vmOf(vmName)?.status?.startedAt).toBeUndefined();
    return { vmName, snapName: `${vmName}-1`, domain };
  }

  /** The snapshot is taken at once, of the shut-off machine's disks; the start is let go. */
  async function takenDisksOnly(snapName: string, domain: Domain): Promise<void> {
    await converge(held, reconcileVirtualMachineSnapshot, key(snapName), {
      until: snapReady(snapName),
    });
    const taken = snapIn(snapName);
    expect(taken?.status?.includesMemory).toBe(false);
    expect(ready(taken)).toMatchObject({ status: 'True', reason: 'DisksOnly' });
    expect(await domain.numOfSnapshots()).toBe(1);
    rec.refuse('Domain.create', undefined);
  }

  const failure = (message: string, code: number) =>
    new LibvirtError(message, {
      code,
      domain: ErrorDomain.VIR_FROM_QEMU,
      level: ErrorLevel.VIR_ERR_ERROR,
    });

  it('waits for the first start, then takes a checkpoint of the running machine', async () => {
    const { vmName, snapName, domain } = await definedNotStarted(
      failure(
        'internal error: QEMU exited while starting (injected)',
        ErrorCode.VIR_ERR_INTERNAL_ERROR,
      ),
      'Always',
    );
    expect(vmOf(vmName)?.status?.phase).toBe('Starting');
    for (let i = 0; i < 3; i++) {
      await held.refresh();
      expect(requeueMs(await reconcileVirtualMachineSnapshot(key(snapName), held))).toBe(5_000);
    }
    await held.refresh();
    const waiting = snapIn(snapName);
    expect(waiting?.status?.phase).toBe('Pending');
    expect(ready(waiting)).toMatchObject({
      status: 'False',
      reason: 'WaitingForFirstStart',
      message: expect.stringContaining(
        `VirtualMachine ${vmName} has not run yet and runStrategy Always starts it`,
      ),
    });
    // Why it still waits, and where to look: the machine's start fails and is retried.
    expect(ready(waiting)?.message).toContain(
      "its start has failed so far and is retried (the machine's Ready condition, reason " +
        'StartFailed, says why)',
    );
    expect(await domain.numOfSnapshots()).toBe(0);

    // The start goes through: the snapshot is the checkpoint the user asked for.
    rec.refuse('Domain.create', undefined);
    await converge(held, reconcileVirtualMachine, key(vmName), {
      until: async () => {
        await held.refresh();
        return vmOf(vmName)?.status?.phase === 'Running';
      },
    });
    await converge(held, reconcileVirtualMachineSnapshot, key(snapName), {
      until: snapReady(snapName),
    });
    const taken = snapIn(snapName);
    expect(taken?.status?.includesMemory).toBe(true);
    expect(ready(taken)).toMatchObject({ status: 'True', reason: 'Checkpoint' });
    expect(await domain.numOfSnapshots()).toBe(1);
  });

  it('does not wait for a start refused for its definition: disks only, as of a stopped machine', async () => {
    const { vmName, snapName, domain } = await definedNotStarted(
      failure('unsupported configuration: injected', ErrorCode.VIR_ERR_CONFIG_UNSUPPORTED),
      'Manual',
    );
    expect(vmOf(vmName)?.status?.phase).toBe('Failed');
    await takenDisksOnly(snapName, domain);
  });

  it('does not wait for the first start for a snapshot of the disks alone (includeMemory false)', async () => {
    const { vmName, snapName, domain } = await definedNotStarted(
      failure(
        'internal error: QEMU exited while starting (injected)',
        ErrorCode.VIR_ERR_INTERNAL_ERROR,
      ),
      'Always',
      'bios',
      false,
    );
    expect(vmOf(vmName)?.status?.phase).toBe('Starting');
    await takenDisksOnly(snapName, domain);
  });

  it('says a restore reverting the machine holds it, not its first start', async () => {
    const { vmName, snapName, domain } = await definedNotStarted(
      failure(
        'internal error: QEMU exited while starting (injected)',
        ErrorCode.VIR_ERR_INTERNAL_ERROR,
      ),
      'Always',
    );
    // Its agent has begun the pass that reverts it (HostState restores): the machine stands
    // aside, and no start comes until the revert has finished.
    const vmUid = String(vmOf(vmName)?.metadata.uid);
    held.host.restores.set(vmUid, 'restore-uid');
    try {
      await held.refresh();
      expect(requeueMs(await reconcileVirtualMachineSnapshot(key(snapName), held))).toBe(5_000);
      await held.refresh();
      const waiting = snapIn(snapName);
      expect(waiting?.status?.phase).toBe('Pending');
      expect(ready(waiting)).toMatchObject({ status: 'False', reason: 'RestoreInProgress' });
      expect(await domain.numOfSnapshots()).toBe(0);
    } finally {
      held.host.restores.delete(vmUid);
      rec.refuse('Domain.create', undefined);
    }
  });

  it('does not wait for the start of a machine on UEFI firmware, whose running snapshot is refused: disks only', async () => {
    // libvirt takes no snapshot of a running machine on pflash (desiredSnapshot: Unsupported,
    // for good): waiting for the start would turn the disks-only snapshot it can have into a
    // Failed one.
    const { vmName, snapName, domain } = await definedNotStarted(
      failure(
        'internal error: QEMU exited while starting (injected)',
        ErrorCode.VIR_ERR_INTERNAL_ERROR,
      ),
      'Always',
      'uefi',
    );
    expect(vmOf(vmName)?.status?.phase).toBe('Starting');
    await takenDisksOnly(snapName, domain);
  });
});
