// One pass for one VirtualMachineSnapshot: cache -> finalizer table -> observe -> desired ->
// plan -> act -> status -> Action.
//
// Which agent: the one whose node runs the machine. Every agent watches every snapshot (there
// is no node in the spec to select on), and each acts only on those whose VirtualMachine is
// in its cache, which holds its own node's machines only. Its claim is its node finalizer
// (node.virt.dev/<node>): once the machine is gone from the cache, that finalizer is how the
// agent knows the snapshot was its own, to delete it with the machine. A snapshot nobody
// claims may name a machine that exists nowhere: any agent reports that
// (../shared/missing-machine.ts).
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
  VirtualMachineSnapshotStatus,
  Volume,
} from '../../api/generated/types.js';
import {
  done,
  NODE_FINALIZER_PREFIX,
  nodeFinalizer,
  requeueAfter,
  type Action,
  type ControllerContext,
  type KindReconcile,
} from '../context.js';
import { checkpointRoom, deleteSnapshot, removeUnrecorded, takeSnapshot, thaw } from './act.js';
import {
  cleanupDescription,
  desiredSnapshot,
  libvirtSnapshotName,
  recordDescription,
} from './desired.js';
import { observeMachineDomain, observeSnapshot } from '../shared/machine-snapshot.js';
import { machineNotFound, planMachineCheck } from '../shared/missing-machine.js';
import { INDEX_SNAPSHOT } from '../indexes.js';
import {
  checkpointSpaceProblem,
  type CheckpointRoom,
  INSUFFICIENT_SPACE,
  firstStartWait,
  isOwnSnapshot,
  liveDeleteBlocker,
  planSnapshot,
  revertingRestores,
  takeMayBeCutShort,
} from './plan.js';
import {
  deletionStatus,
  saysDeletion,
  snapshotStatus,
  type DeletionWait,
  type SnapshotFacts,
} from './status.js';
import { cachedByKey, retryDelay, withFinalizer } from '../kit.js';
import { findCondition } from '../../api/conditions.js';
import { restoreInProgress } from '../shared/restores.js';
import { tellAfterWrite } from '../shared/after-write.js';

const KIND = 'VirtualMachineSnapshot';
/**
 * A machine whose domain is being defined gets it within seconds, and one defined starts as
 * soon (its status write, which marks the start, wakes the snapshot too).
 */
const WAIT_MS = 5_000;
/**
 * How soon a deletion that waits for the domain to stop looks again (the machine's status
 * changes when it stops, and that wakes it too).
 */
const DELETE_WAIT_MS = 10_000;

export const reconcileVirtualMachineSnapshot: KindReconcile = async (key, ctx) => {
  const snap = cachedByKey<VirtualMachineSnapshot>(ctx, KIND, key);
  if (!snap) return done;
  const finalizer = nodeFinalizer(ctx.nodeName);
  const held = snap.metadata.finalizers?.includes(finalizer) ?? false;
  const found = ctx.get<VirtualMachine>(
    'VirtualMachine',
    snap.metadata.namespace,
    snap.spec.vmName,
  );
  const vm = found?.spec.nodeName === ctx.nodeName ? found : undefined;
  // Another node's machine, or no machine, and never ours: not ours to act on. A cache that
  // holds other nodes' machines (the tests') already shows that it exists; ours cannot.
  if (!vm && !held) return found ? done : reportIfMachineMissing(snap, ctx);
  // The machine is gone or going: its snapshots go with it (the machine's own removal deletes
  // what is left in libvirt before it undefines the domain).
  if (!snap.metadata.deletionTimestamp && (!vm || vm.metadata.deletionTimestamp)) {
    await ctx.deleteObject(KIND, snap);
    return done;
  }
  return withFinalizer(ctx, KIND, snap, finalizer, {
    // Not deleting: the machine is here and alive (above).
    apply: (snap) => (vm ? converge(snap, vm, ctx) : Promise.resolve(done)),
    cleanup: (snap) => removeSnapshot(snap, vm, finalizer, ctx),
  });
};

async function converge(
  snap: VirtualMachineSnapshot,
  vm: VirtualMachine,
  ctx: ControllerContext,
): Promise<Action> {
  const conn = ctx.libvirt();
  const machine = await observeMachineDomain(conn, vm);
  const found = machine
    ? await observeSnapshot(machine.domain, snap.status?.snapshotName ?? libvirtSnapshotName(snap))
    : undefined;
  const decision = machine
    ? desiredSnapshot(snap, machine, diskVolumes(vm.metadata.namespace, machine.disks, ctx))
    : undefined;
  const uid = String(snap.metadata.uid);
  const step = planSnapshot({
    snap,
    domainFound: machine !== undefined,
    found,
    decision,
    cutShort: ctx.host.snapshotTakesCutShort.has(uid),
    // Not while a restore holds the machine: no start comes before the revert has finished,
    // and the take below says that it waits for the restore (RestoreInProgress).
    firstStart:
      machine && !restoreInProgress(vm, ctx) ? firstStartWait(vm, machine, snap) : undefined,
  });
  // Settled either way: a take this process lost track of was made after all, or no longer
  // matters.
  if (step.op !== 'take' && step.op !== 'wait') ctx.host.snapshotTakesCutShort.delete(uid);
  switch (step.op) {
    case 'none':
      return done;
    case 'wait':
      await report(ctx, snap, { phase: 'Pending', reason: step.reason, message: step.message });
      return requeueAfter(WAIT_MS);
    case 'fail':
      await report(ctx, snap, { phase: 'Failed', reason: step.reason, message: step.message });
      return done;
    case 'record':
      // A pass that froze the guest and died before thawing it: thaw now (a no-op otherwise).
      if (snap.status?.phase !== 'Ready' && step.record.quiesced && machine?.active)
        await thaw(machine.domain);
      await report(ctx, snap, {
        phase: 'Ready',
        found: step.found,
        record: step.record,
        volumes: diskVolumes(vm.metadata.namespace, step.found.doc.disks, ctx),
      });
      return done;
    case 'take': {
      const { decision: d } = step;
      const m = machine!;
      // Not while a restore reverts the machine: its domain passes through states nobody asked
      // to keep (a checkpoint reverted paused before its power-off, a guest the revert shut
      // off before runStrategy boots it). libvirt's job lock only orders the calls. The
      // snapshot waits, InProgress kept as it was (a take cut short is still cleaned up).
      if (restoreInProgress(vm, ctx)) {
        await report(ctx, snap, {
          phase: snap.status?.phase === 'InProgress' ? 'InProgress' : 'Pending',
          reason: 'RestoreInProgress',
          message: `a VirtualMachineRestore is reverting VirtualMachine ${vm.metadata.name}; the snapshot is taken once it has finished`,
        });
        return requeueAfter(WAIT_MS);
      }
      // A checkpoint (a running machine's snapshot always is one) waits for room for the
      // guest's memory, before anything is written: the machine is left as it runs. After a
      // take that may have been cut short, only once its cleanup below has run: what it left
      // in the disk may hold the very room needed.
      const noRoom = async () => {
        const room = d.doc.memory === 'internal' ? await checkpointRoom(m) : undefined;
        return room && checkpointSpaceProblem(room, volumeOf(vm, room, ctx));
      };
      if (!step.cleanUp) {
        const short = await noRoom();
        if (short) return waitForSpace(ctx, snap, short.message);
      }
      // InProgress first, so a long checkpoint shows; then the status write after the
      // snapshot is made against this write's answer, not the stale cached object.
      const inProgress =
        snap.status?.phase === 'InProgress'
          ? snap
          : ((await report(ctx, snap, {
              phase: 'InProgress',
              reason: 'SnapshotInProgress',
              message: `taking ${d.includesMemory ? 'a checkpoint' : 'a disks-only snapshot'} of the ${m.stateName} machine`,
            })) ?? snap);
      if (step.cleanUp) {
        const leftover = step.cleanUp === 'leftover' ? found?.snapshot : undefined;
        // A leftover record is deleted as it stands, with the disks it names: one a running
        // machine no longer has would crash libvirt 9.0 (liveDeleteBlocker). It waits.
        const blocker = leftover && found && liveDeleteBlocker(found.doc, m);
        if (blocker) {
          leftover.free();
          await report(ctx, inProgress, {
            phase: 'InProgress',
            reason: 'SnapshotInProgress',
            message: `an interrupted cleanup left a record of this snapshot's name: ${blocker}`,
          });
          return requeueAfter(DELETE_WAIT_MS);
        }
        const cleaned = await removeUnrecorded(
          m,
          d.doc,
          cleanupDescription(snap),
          ctx.now(),
          leftover,
        );
        if (cleaned.kind === 'refused') {
          ctx.host.snapshotTakesCutShort.delete(uid);
          await report(ctx, inProgress, {
            phase: 'Failed',
            reason: 'SnapshotFailed',
            message: cleaned.message,
          });
          return done;
        }
        // Every retry after a failed checkpoint comes this way (it waits InProgress): without
        // this look each one ran savevm into a file system with no room again.
        const short = await noRoom();
        if (short) return waitForSpace(ctx, inProgress, short.message);
      }
      // Until libvirt answers: if it never does, the next pass must assume it did some of it.
      ctx.host.snapshotTakesCutShort.add(uid);
      const outcome = await takeSnapshot(m.domain, d.doc, d.freeze, (quiesced) =>
        recordDescription(snap, {
          uid: String(snap.metadata.uid),
          includeMemory: d.includesMemory,
          ...(quiesced === undefined ? {} : { quiesced }),
        }),
      );
      ctx.host.snapshotTakesCutShort.delete(uid);
      if (outcome.kind === 'refused') {
        // A checkpoint that ran out of room while QEMU wrote it (the file system filled after
        // the check above, or could not be read then) fails with QEMU's "Error while writing
        // VM state: Input/output error", which does not say so. The room looked at again
        // tells: short of the guest's memory now, it waits for space as it would have.
        const short = await noRoom();
        if (short) return waitForSpace(ctx, inProgress, short.message);
        // report() records the Warning Event of the transition to Failed.
        await report(ctx, inProgress, {
          phase: 'Failed',
          reason: 'SnapshotFailed',
          message: outcome.message,
        });
        return done;
      }
      ctx.event(KIND, snap, 'Normal', 'SnapshotTaken', `libvirt snapshot ${d.doc.name} taken`);
      await report(ctx, inProgress, {
        phase: 'Ready',
        found: outcome.found,
        record: {
          uid: String(snap.metadata.uid),
          includeMemory: d.includesMemory,
          ...(outcome.quiesced === undefined ? {} : { quiesced: outcome.quiesced }),
        },
        volumes: diskVolumes(vm.metadata.namespace, outcome.found.doc.disks, ctx),
      });
      return done;
    }
  }
}

/** The Volume of the checkpoint's disk, named in its InsufficientSpace message. */
function volumeOf(
  vm: VirtualMachine,
  room: CheckpointRoom,
  ctx: ControllerContext,
): string | undefined {
  return diskVolumes(vm.metadata.namespace, [{ name: room.disk, source: room.path }], ctx).get(
    room.disk,
  );
}

/**
 * A checkpoint without room (InsufficientSpace): Pending (InProgress kept after a take that
 * may have been cut short, so its cleanup still runs), looked at again with the usual backoff
 * (a full disk clears when a user frees space; the status write of the same message wakes
 * nothing).
 */
async function waitForSpace(
  ctx: ControllerContext,
  snap: VirtualMachineSnapshot,
  message: string,
): Promise<Action> {
  const phase = snap.status?.phase === 'InProgress' ? 'InProgress' : 'Pending';
  const ready = findCondition(snap.status?.conditions, 'Ready');
  // After the write: one refused is retried, and would send the Warning again each time.
  await tellAfterWrite(
    () => report(ctx, snap, { phase, reason: INSUFFICIENT_SPACE, message }),
    () => {
      if (ready?.reason !== INSUFFICIENT_SPACE)
        ctx.event(KIND, snap, 'Warning', INSUFFICIENT_SPACE, message);
    },
    { skipUnwritten: true },
  );
  return requeueAfter(
    retryDelay(ready?.reason === INSUFFICIENT_SPACE ? ready : undefined, ctx.now(), ctx.retryMinMs),
  );
}

/**
 * A snapshot whose machine is not on this node and that no agent has claimed: asks the API
 * server whether the machine exists anywhere, and if not, says so (Pending, so the snapshot is
 * taken once the machine is created; its agent then replaces this status).
 */
async function reportIfMachineMissing(
  snap: VirtualMachineSnapshot,
  ctx: ControllerContext,
): Promise<Action> {
  const claimed = snap.metadata.finalizers?.some((f) => f.startsWith(NODE_FINALIZER_PREFIX));
  const check = planMachineCheck(snap, claimed ?? false, ctx.now());
  if (check.op === 'none') return done;
  if (check.op === 'wait') return requeueAfter(check.ms);
  const { namespace } = snap.metadata;
  // On another node: its agent claims the snapshot (or will, once it runs).
  if (await ctx.getFromServer('VirtualMachine', namespace, snap.spec.vmName)) return done;
  const problem = machineNotFound(namespace, snap.spec.vmName);
  // Conditional on the resourceVersion this pass read: had the machine's agent or another agent
  // written meanwhile, the write is a conflict, and the next pass finds the snapshot claimed
  // or the status written. Only the agent whose write landed records the Event.
  const written = await report(ctx, snap, { phase: 'Pending', ...problem });
  if (written) ctx.event(KIND, snap, 'Warning', problem.reason, problem.message);
  return done;
}

/** Deleting the object: the libvirt snapshot first (when the machine's domain is still here). */
async function removeSnapshot(
  snap: VirtualMachineSnapshot,
  vm: VirtualMachine | undefined,
  finalizer: string,
  ctx: ControllerContext,
): Promise<Action> {
  const uid = String(snap.metadata.uid);
  // Not under a restore reverting to it (plan.ts); a machine being deleted takes its restores
  // with it, so only a live machine's restores are waited for. The restore's end wakes this key.
  const reverting =
    vm && !vm.metadata.deletionTimestamp
      ? revertingRestores(
          snap,
          ctx.byIndex<VirtualMachineRestore>(
            'VirtualMachineRestore',
            INDEX_SNAPSHOT,
            `${snap.metadata.namespace}/${snap.metadata.name}`,
          ),
          ctx.host.restores.get(String(vm.metadata.uid)),
        )
      : [];
  if (reverting.length > 0) {
    const list = reverting.join(', ');
    await reportDeletion(ctx, snap, 'Normal', {
      reason: 'RestoreInProgress',
      message:
        `the deletion waits for VirtualMachineRestore ${list}, reverting the machine to this ` +
        `snapshot: it goes on by itself once ${reverting.length === 1 ? 'that restore has' : 'they have'} finished`,
    });
    return requeueAfter(DELETE_WAIT_MS);
  }
  const machine = vm ? await observeMachineDomain(ctx.libvirt(), vm) : undefined;
  let failed: (() => void) | undefined;
  if (machine) {
    const name = snap.status?.snapshotName ?? libvirtSnapshotName(snap);
    const named = await observeSnapshot(machine.domain, name);
    // A foreign snapshot holding the name (NameConflict) is not the object's: neither deleted
    // nor cleaned up after (a redefine would write over it).
    if (named && !isOwnSnapshot(named.doc.description, uid)) {
      named.snapshot.free();
      ctx.host.snapshotTakesCutShort.delete(uid);
      await ctx.removeFinalizer(KIND, snap, finalizer);
      return done;
    }
    const found = named;
    // Kept while the domain runs without the disks it names: libvirt 9.0 would crash
    // (liveDeleteBlocker). The machine's own removal stops the domain first, then deletes it.
    const blocker = found && liveDeleteBlocker(found.doc, machine);
    if (found && blocker) {
      found.snapshot.free();
      await reportDeletion(ctx, snap, 'Warning', { reason: 'DisksChanged', message: blocker });
      return requeueAfter(DELETE_WAIT_MS);
    }
    // The wait is over: the condition goes before the delete, so a delete that fails and is
    // retried does not keep saying what no longer holds it.
    if (found) await reportDeletion(ctx, snap, 'Normal', undefined);
    if (found) await deleteSnapshot(found);
    const deleted = found !== undefined;
    // Deleted while a take may have been cut short: what that take left in the disks, without
    // libvirt's record, goes too (a checkpoint is as big as the guest's RAM).
    // The disks as the take saw them: vCPUs added since do not stop the cleanup.
    const decision =
      !deleted && takeMayBeCutShort(snap, ctx.host.snapshotTakesCutShort.has(uid))
        ? desiredSnapshot(snap, { active: machine.active, disks: machine.disks })
        : undefined;
    if (decision?.kind === 'take') {
      const cleaned = await removeUnrecorded(
        machine,
        decision.doc,
        cleanupDescription(snap),
        ctx.now(),
      );
      if (cleaned.kind === 'refused')
        failed = () => ctx.event(KIND, snap, 'Warning', 'CleanupFailed', cleaned.message);
    }
  }
  ctx.host.snapshotTakesCutShort.delete(uid);
  // Told after the finalizer is gone: a removal refused (a conflict, the API server down) is
  // retried, and would say it again at each retry.
  await tellAfterWrite(
    () => ctx.removeFinalizer(KIND, snap, finalizer),
    () => failed?.(),
  );
  return done;
}

/**
 * Says on the object why its deletion waits (DeletionBlocked), with one Event `DeletePending`
 * when that changes, or clears the condition once the wait is over. Writes nothing when the
 * status already says so: a deletion that waits for minutes is looked at every 10 s. The
 * Event follows the write: a write that fails is retried at the error pace, and an Event sent
 * before it would be sent again with each retry.
 */
async function reportDeletion(
  ctx: ControllerContext,
  snap: VirtualMachineSnapshot,
  type: 'Normal' | 'Warning',
  wait: DeletionWait | undefined,
): Promise<void> {
  if (saysDeletion(snap, wait)) return;
  await tellAfterWrite(
    () => ctx.applyStatus(KIND, snap, deletionStatus(snap, wait, ctx.now())),
    () => {
      if (wait) ctx.event(KIND, snap, type, 'DeletePending', wait.message);
    },
    { skipUnwritten: true },
  );
}

async function report(
  ctx: ControllerContext,
  snap: VirtualMachineSnapshot,
  facts: SnapshotFacts,
): Promise<VirtualMachineSnapshot | undefined> {
  const status: VirtualMachineSnapshotStatus = snapshotStatus(snap, facts, ctx.now());
  // After the write: one refused is retried, and would send the Warning again each time.
  const updated = await tellAfterWrite(
    () => ctx.applyStatus(KIND, snap, status),
    () => {
      if (facts.phase === 'Failed' && snap.status?.phase !== 'Failed')
        ctx.event(KIND, snap, 'Warning', facts.reason, facts.message);
    },
    { skipUnwritten: true },
  );
  return updated as VirtualMachineSnapshot | undefined;
}

/**
 * Which Volume of the namespace each disk is (target -> Volume name), by the file the
 * Volume's status names. For a snapshot, its own disks: those of the domain when it was taken,
 * which the machine may have dropped or moved to another target since.
 */
function diskVolumes(
  namespace: string | undefined,
  disks: ReadonlyArray<{ name: string; source?: string }>,
  ctx: ControllerContext,
): Map<string, string> {
  const byPath = new Map<string, string>();
  for (const volume of ctx.list<Volume>('Volume')) {
    const path = volume.status?.path;
    if (path && volume.metadata.namespace === namespace)
      byPath.set(path, String(volume.metadata.name));
  }
  const out = new Map<string, string>();
  for (const d of disks) {
    const volume = d.source === undefined ? undefined : byPath.get(d.source);
    if (volume) out.set(d.name, volume);
  }
  return out;
}
