// One pass for one VirtualMachineRestore: cache -> observe -> plan -> act -> status -> Action.
// The agent of the machine's node acts (its cache holds that node's machines only); a restore
// no such agent has reported on may name a machine that exists nowhere, which any agent
// reports (../shared/missing-machine.ts). No finalizer: a restore leaves nothing on the host to
// clean up. A machine's restores go with it, as its snapshots do: deleted here once it is being
// deleted, and by its removal (which holds its finalizer until then) whatever this controller
// did not see.
//
// Exactly once: Succeeded and Failed are terminal; the marker (desired.ts) tells a pass after a
// crash whether the revert already happened. While a restore runs, the VirtualMachine
// controller stands aside (../shared/restores.ts), so it neither redefines the domain (which would
// drop the marker) nor starts or stops it mid-revert; afterwards its runStrategy applies.
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
  Volume,
} from '../../api/generated/types.js';
import { INDEX_SOURCE_VOLUME } from '../indexes.js';
import {
  done,
  requeueAfter,
  type Action,
  type ControllerContext,
  type KindReconcile,
} from '../context.js';
import { observeMachineDomain, observeSnapshot } from '../shared/machine-snapshot.js';
import { powerOff, recordRefusal, revert, setMarker } from './act.js';
import { isMarkerOf, refusalIn } from './desired.js';
import { observeMarker } from './observe.js';
import {
  mayActOnDomain,
  needsPowerOff,
  planRestore,
  restoredDisksWording,
  restoredWording,
  revertFailedDisksWording,
  revertPaused,
  revertedFacts,
  snapshotFacts,
  snapshotOfRevert,
  type RevertedFacts,
} from './plan.js';
import { restoreStatus, type RestoreFacts } from './status.js';
import { cachedByKey, newProblem } from '../kit.js';
import { findCondition, REASON_CLASSES } from '../../api/conditions.js';
import { isRestoreOf } from '../shared/restores.js';
import {
  machineNotFound,
  planMachineCheck,
  reportedByMachineAgent,
} from '../shared/missing-machine.js';

const KIND = 'VirtualMachineRestore';
const WAIT_MS = 5_000;

export const reconcileVirtualMachineRestore: KindReconcile = async (key, ctx) => {
  const restore = cachedByKey<VirtualMachineRestore>(ctx, KIND, key);
  if (!restore || restore.metadata.deletionTimestamp) return done;
  const found = ctx.get<VirtualMachine>(
    'VirtualMachine',
    restore.metadata.namespace,
    restore.spec.vmName,
  );
  // Another node's machine (or none): the agent of its node, if any, acts. A cache that holds
  // other nodes' machines (the tests') already shows that it exists; ours cannot.
  if (!found) return reportIfMachineMissing(restore, ctx);
  if (found.spec.nodeName !== ctx.nodeName) return done;
  // Its machine is going, or went (this is a new one of its name): never revert it, the
  // restore goes with it.
  if (found.metadata.deletionTimestamp || !isRestoreOf(restore, found)) {
    await ctx.deleteObject(KIND, restore);
    return done;
  }
  const phase = restore.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return done;
  const vmUid = String(found.metadata.uid);
  const uid = String(restore.metadata.uid);
  const running = ctx.host.restores;
  const other = running.get(vmUid);
  const blocking = otherRestore(restore, found, other !== uid ? other : undefined, ctx);
  if (blocking !== undefined) {
    // Named, so the user can tell which restore to wait for (or look at, if it is stuck).
    await report(ctx, restore, {
      phase: 'Pending',
      reason: 'AnotherRestoreInProgress',
      message:
        `VirtualMachineRestore ${blocking} of VirtualMachine ${restore.spec.vmName} is ` +
        'running; this one waits for it',
    });
    return requeueAfter(WAIT_MS);
  }
  // Not one created under the name after the revert began (a finalizer removed by hand).
  const snapshot = snapshotOfRevert(
    restore,
    ctx.get<VirtualMachineSnapshot>(
      'VirtualMachineSnapshot',
      restore.metadata.namespace,
      restore.spec.snapshotName,
    ),
  );
  const overlays = overlaysOfSnapshot(snapshot, ctx);
  // Marked only for a pass that may revert (plan.ts mayActOnDomain): one that waits for its
  // snapshot must not hold back that snapshot's take, which would wait for it in turn.
  if (!mayActOnDomain({ restore, snapshot, overlays }))
    return converge(restore, found, snapshot, overlays, ctx);
  running.set(vmUid, uid);
  try {
    return await converge(restore, found, snapshot, overlays, ctx);
  } finally {
    // The machine's controller, which stood aside, looks again when this restore's status
    // write (or deletion) wakes it, or on its own requeue (a pass that wrote nothing).
    running.delete(vmUid);
  }
};

/**
 * A restore whose machine is not on this node and that no machine's agent has reported on:
 * asks the API server whether the machine exists anywhere, and if not, says so (Pending; the
 * machine's agent replaces it once the machine is created).
 */
async function reportIfMachineMissing(
  restore: VirtualMachineRestore,
  ctx: ControllerContext,
): Promise<Action> {
  const claimed = restore.status?.nodeName !== undefined || reportedByMachineAgent(restore);
  const check = planMachineCheck(restore, claimed, ctx.now());
  if (check.op === 'none') return done;
  if (check.op === 'wait') return requeueAfter(check.ms);
  const { namespace } = restore.metadata;
  if (await ctx.getFromServer('VirtualMachine', namespace, restore.spec.vmName)) return done;
  const problem = machineNotFound(namespace, restore.spec.vmName);
  // As for snapshots: conditional on the resourceVersion read, so a write that raced another
  // agent's is a conflict; only the agent whose write landed records the Event.
  const written = await report(ctx, restore, { phase: 'Pending', ...problem }, undefined, false);
  if (written) ctx.event(KIND, restore, 'Warning', problem.reason, problem.message);
  return done;
}

async function converge(
  restore: VirtualMachineRestore,
  vm: VirtualMachine,
  snapshot: VirtualMachineSnapshot | undefined,
  overlays: Map<string, string[]>,
  ctx: ControllerContext,
): Promise<Action> {
  const uid = String(restore.metadata.uid);
  const machine = await observeMachineDomain(ctx.libvirt(), vm);
  const marker = machine ? await observeMarker(machine.domain) : undefined;
  const libvirtName = snapshot?.status?.snapshotName;
  const found =
    machine && libvirtName ? await observeSnapshot(machine.domain, libvirtName) : undefined;
  found?.snapshot.free();
  const step = planRestore({
    restore,
    snapshot,
    domainFound: machine !== undefined,
    markerPresent: isMarkerOf(marker, uid),
    refused: refusalIn(marker, uid),
    libvirtSnapshotFound: found !== undefined,
    overlays,
  });
  switch (step.op) {
    case 'none':
      return done;
    case 'wait':
      await report(ctx, restore, {
        phase: step.phase ?? 'Pending',
        reason: step.reason,
        message: step.message,
      });
      return requeueAfter(WAIT_MS);
    case 'fail':
      await report(ctx, restore, { phase: 'Failed', reason: step.reason, message: step.message });
      return done;
    case 'revert': {
      const m = machine!;
      // The marker before InProgress: a crash between the two leaves a Pending restore whose
      // next pass marks and reverts; the other order could leave InProgress without a marker,
      // which reads as "reverted" although nothing happened.
      await setMarker(m.domain, uid, m.active);
      // Written again only by a begun restore that waited (VolumeHasOverlays): its Ready
      // condition says Reverting again while it does.
      const waited = findCondition(restore.status?.conditions, 'Ready')?.reason;
      const inProgress =
        restore.status?.phase === 'InProgress' && (waited === undefined || waited === 'Reverting')
          ? restore
          : ((await report(
              ctx,
              restore,
              {
                phase: 'InProgress',
                reason: 'Reverting',
                message: `reverting to libvirt snapshot ${step.snapshotName}`,
              },
              // In this very write: a pass after a crash reverts only to this object, and
              // finishes (powers off, names the disks) even if the object goes meanwhile.
              {
                vmUid: String(vm.metadata.uid),
                snapshotUid: String(snapshot!.metadata.uid),
                reverted: snapshotFacts(snapshot!, found?.doc.state),
              },
            )) ?? restore);
      const outcome = await revert(
        m.domain,
        step.snapshotName,
        revertPaused(snapshot!, found?.doc.state),
      );
      if (outcome.kind === 'refused') {
        // libvirt may have reverted some disks before it refused: the user must know which
        // disks to check before relying on them.
        const disks = revertFailedDisksWording(snapshot!.status?.disks ?? [], vm.spec.disks ?? []);
        const message = `${outcome.message}; ${disks}`;
        // On the domain first: the refusal may have removed the marker, and a pass after a
        // failed status write would then read "reverted" (desired.ts).
        await recordRefusal(m.domain, uid, message);
        await report(ctx, inProgress, { phase: 'Failed', reason: 'RevertFailed', message });
        return done;
      }
      return finish(
        inProgress,
        vm,
        revertedFacts(inProgress, snapshot, found?.doc.state)!,
        ctx,
        m.active,
      );
    }
    case 'finish': {
      const reverted = revertedFacts(restore, snapshot, found?.doc.state);
      if (!reverted) {
        // Reverted by an earlier version, which recorded nothing of the snapshot, and its
        // object gone since: what it held is not known any more.
        const message = `reverted to VirtualMachineSnapshot ${restore.spec.snapshotName}, deleted since: which disks it held is not known`;
        ctx.event(
          KIND,
          restore,
          'Normal',
          'Restored',
          `VirtualMachine ${vm.metadata.name} ${message}`,
        );
        await report(
          ctx,
          restore,
          { phase: 'Succeeded', message },
          { vmUid: String(vm.metadata.uid) },
        );
        return done;
      }
      return finish(restore, vm, reverted, ctx);
    }
  }
}

async function finish(
  restore: VirtualMachineRestore,
  vm: VirtualMachine,
  reverted: RevertedFacts,
  ctx: ControllerContext,
  /** Whether the domain ran before this pass reverted it; unknown when an earlier pass did. */
  wasActive?: boolean,
): Promise<Action> {
  const machine = await observeMachineDomain(ctx.libvirt(), vm);
  const off = machine !== undefined && needsPowerOff(reverted, machine.active);
  if (off) {
    await powerOff(machine.domain);
    // Asked for: the machine's controller starts it again without counting a restart.
    ctx.host.restoreStops.add(String(vm.metadata.uid));
  }
  const { ofRunningMachine } = reverted;
  // Whether the restore left shut off a machine that ran: powered off now, or by the revert
  // itself (libvirt shuts a running domain off to revert it to a snapshot of the stopped
  // machine). A machine that was off before is no stopped run, though a disks-only checkpoint
  // was reverted paused and powered off. After an agent killed before its status write, the
  // domain tells: found off, an earlier pass powered it off (disks-only of a running machine),
  // or libvirt's reason says the revert stopped it; the machine's controller stands aside
  // until this status, so neither has changed since.
  const offNow = off || machine?.active === false;
  const stoppedRun =
    wasActive !== undefined
      ? wasActive && offNow
      : offNow && (ofRunningMachine || machine?.reasonName === 'from_snapshot');
  const what = restoredWording({
    includesMemory: reverted.includesMemory,
    stoppedRun,
    ofRunningMachine,
    runStrategy: vm.spec.runStrategy,
  });
  // Which disk came back, and which kept what it has now.
  const disks = restoredDisksWording(reverted.disks, vm.spec.disks ?? []);
  const name = restore.spec.snapshotName;
  ctx.event(
    KIND,
    restore,
    'Normal',
    'Restored',
    `VirtualMachine ${vm.metadata.name} reverted to ${name} (${what}); ${disks}`,
  );
  await report(
    ctx,
    restore,
    {
      phase: 'Succeeded',
      message: `reverted to VirtualMachineSnapshot ${name} (${what}); ${disks}`,
    },
    { vmUid: String(vm.metadata.uid) },
  );
  return done;
}

/**
 * The Volumes layered (backingVolume) on each Volume the snapshot holds: the files a revert
 * rewrites are those the snapshot was taken of (status.disks), whatever the machine has now.
 */
function overlaysOfSnapshot(
  snapshot: VirtualMachineSnapshot | undefined,
  ctx: ControllerContext,
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const ns = snapshot?.metadata.namespace;
  for (const disk of snapshot?.status?.disks ?? []) {
    const base = disk.volume;
    if (base === undefined || out.has(base)) continue;
    out.set(
      base,
      ctx
        .byIndex<Volume>('Volume', INDEX_SOURCE_VOLUME, `${ns}/${base}`)
        .filter((v) => v.spec.source?.backingVolume?.volume === base)
        .map((v) => String(v.metadata.name)),
    );
  }
  return out;
}

/**
 * The name of another restore of this machine that runs: the one this agent is reverting now
 * (`runningUid`, from ctx.host.restores), or one recorded InProgress. Undefined if none.
 */
function otherRestore(
  restore: VirtualMachineRestore,
  vm: VirtualMachine,
  runningUid: string | undefined,
  ctx: ControllerContext,
): string | undefined {
  const others = ctx
    .list<VirtualMachineRestore>(KIND)
    .filter((r) => r.metadata.uid !== restore.metadata.uid && isRestoreOf(r, vm));
  if (runningUid !== undefined) {
    const running = others.find((r) => r.metadata.uid === runningUid);
    // Not in the cache (deleted while its pass runs): still running, named by its uid.
    return running ? String(running.metadata.name) : `with uid ${runningUid}`;
  }
  const recorded = others.find((r) => r.status?.phase === 'InProgress');
  return recorded ? String(recorded.metadata.name) : undefined;
}

async function report(
  ctx: ControllerContext,
  restore: VirtualMachineRestore,
  facts: RestoreFacts,
  /**
   * The machine's and snapshot object's uids, and what the later steps need of the snapshot,
   * recorded when the revert begins (restoreStatus).
   */
  began: { vmUid?: string; snapshotUid?: string; reverted?: RevertedFacts } = {},
  /** Only the report that the machine exists nowhere leaves the restore unclaimed. */
  claim = true,
): Promise<VirtualMachineRestore | undefined> {
  const status = restoreStatus(restore, facts, ctx.now(), {
    ...(claim ? { nodeName: ctx.nodeName } : {}),
    ...began,
  });
  const failed = facts.phase === 'Failed' && restore.status?.phase !== 'Failed';
  // A wait only the user can end (Stalled: another machine's snapshot, a base image with
  // overlays) is said once as a Warning too, as a machine's problems are.
  const stalled =
    (facts.phase === 'Pending' || facts.phase === 'InProgress') &&
    REASON_CLASSES[facts.reason] === 'stalled' &&
    newProblem(restore.status?.conditions, status.conditions, 'Ready') !== undefined;
  const updated = await ctx.applyStatus(KIND, restore, status);
  // After the write: one that fails is retried, and would send the Warning again each time.
  if (failed || stalled) ctx.event(KIND, restore, 'Warning', facts.reason, facts.message);
  return updated as VirtualMachineRestore | undefined;
}
