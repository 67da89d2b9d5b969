// What the VirtualMachine controller needs to know of restores: whether one of its machine
// holds it (a revert running: it stands aside, as redefining, starting or stopping the domain
// would fight the revert; a begun revert waiting for a user: it keeps the domain's definition),
// and which restores and snapshot objects to delete with the machine.
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../api/generated/types.js';
import { findCondition, isStalledReason } from '../../api/conditions.js';
import { isForbidden } from '../../runtime/kube-client.js';
import { keyOf, type ControllerContext } from '../context.js';
import { INDEX_VM } from '../indexes.js';

/**
 * A restore that holds a machine back. `waiting`: its revert has not happened and waits for
 * what only a user can end (its Ready reason is Stalled: VolumeHasOverlays, after an agent died
 * between the InProgress write and the revert). Without it, a revert runs (a pass of it now,
 * or one recorded InProgress whose next pass reverts or finishes at once).
 */
export interface RestoreHold {
  /** The restore's name; `with uid …` for one this process runs that the cache lacks. */
  name: string;
  waiting?: { reason: string };
}

/**
 * How a restore holds `vm`, from the restores and the one this process runs for it now
 * (HostState restores), if any. Pure.
 */
export function restoreHoldOf(
  vm: VirtualMachine,
  restores: readonly VirtualMachineRestore[],
  runningUid: string | undefined,
): RestoreHold | undefined {
  const mine = restores.filter((r) => isRestoreOf(r, vm));
  // This process's own restores first: the cache shows InProgress only once our own status
  // write comes back through the watch.
  if (runningUid !== undefined) {
    const running = mine.find((r) => r.metadata.uid === runningUid);
    return { name: running ? String(running.metadata.name) : `with uid ${runningUid}` };
  }
  const begun = mine.find((r) => r.status?.phase === 'InProgress');
  if (!begun) return undefined;
  const reason = findCondition(begun.status?.conditions, 'Ready')?.reason;
  const name = String(begun.metadata.name);
  return reason !== undefined && isStalledReason(reason) ? { name, waiting: { reason } } : { name };
}

/** restoreHoldOf over the cache and this process's running restores. */
export function restoreHold(vm: VirtualMachine, ctx: ControllerContext): RestoreHold | undefined {
  return restoreHoldOf(
    vm,
    ctx.list<VirtualMachineRestore>('VirtualMachineRestore'),
    ctx.host.restores.get(String(vm.metadata.uid)),
  );
}

/** Whether a restore of `vm` has begun and not ended (snapshots are not taken meanwhile). */
export function restoreInProgress(vm: VirtualMachine, ctx: ControllerContext): boolean {
  return restoreHold(vm, ctx) !== undefined;
}

/**
 * Whether `r` is a restore of that very machine: its name, and the uid the revert began on
 * (status.vmUid) when recorded. A restore of an earlier machine of the same name is not.
 */
export function isRestoreOf(r: VirtualMachineRestore, vm: VirtualMachine): boolean {
  const uid = r.status?.vmUid;
  return (
    r.metadata.namespace === vm.metadata.namespace &&
    r.spec.vmName === vm.metadata.name &&
    (uid === undefined || uid === vm.metadata.uid)
  );
}

/**
 * Whether a finished restore powered off the machine's current run: a revert to a disks-only
 * snapshot of a running machine ends with a power-off (virtual-machine-restore finish), which
 * is asked for, not a crash to count. The process that powered it off remembers that
 * (HostState restoreStops); this is what its successor can tell from the objects, when the
 * agent died between that power-off and the machine's next pass. The revert began (startTime)
 * in a later second than the run was first seen (startedAt); an earlier restore, which ended
 * before this run began, never passes. Times have whole seconds: a revert begun in the second
 * the run was first seen is not recognised (the restart is counted). Whether the snapshot held
 * memory is what the restore's InProgress write recorded (status.includesMemory); `snapshotOf`
 * is read only for a restore begun by an earlier version, which recorded nothing. Pure.
 */
export function restoreStoppedRun(
  vm: VirtualMachine,
  restores: readonly VirtualMachineRestore[],
  snapshotOf: (r: VirtualMachineRestore) => VirtualMachineSnapshot | undefined,
): boolean {
  const startedAt = Date.parse(vm.status?.startedAt ?? '');
  if (Number.isNaN(startedAt)) return false;
  return restores.some(
    (r) =>
      r.status?.phase === 'Succeeded' &&
      r.status.vmUid === vm.metadata.uid &&
      Date.parse(r.status.startTime ?? '') > startedAt &&
      // A checkpoint with memory resumes the run it restores: nothing is powered off. As the
      // InProgress write recorded it: the object of the name may have gone or been made again
      // since. Only a restore begun by an earlier version (none recorded) reads the object.
      (r.status.includesMemory ?? snapshotOf(r)?.status?.includesMemory) === false,
  );
}

/** restoreStoppedRun over the cache's restores and snapshots of `vm`. */
export function stoppedByRestore(vm: VirtualMachine, ctx: ControllerContext): boolean {
  return restoreStoppedRun(
    vm,
    ctx.byIndex<VirtualMachineRestore>('VirtualMachineRestore', INDEX_VM, keyOf(vm)),
    (r) =>
      ctx.get<VirtualMachineSnapshot>(
        'VirtualMachineSnapshot',
        r.metadata.namespace,
        r.spec.snapshotName,
      ),
  );
}

/**
 * A machine's restores go with it, as its snapshots do: a garbage collector would follow owner
 * references, which local control planes lack. Called by the machine's removal before it
 * releases its finalizer, so that none is left behind however the restore passes are ordered.
 * Returns the restores the admission policy refused to delete (claimed by another node's
 * agent, status.nodeName): the removal waits for them and says so (restoresRefusedMessage),
 * rather than leave a restore no agent but that node's may ever delete.
 */
export async function deleteRestoresOf(
  vm: VirtualMachine,
  ctx: ControllerContext,
): Promise<VirtualMachineRestore[]> {
  const restores = ctx.byIndex<VirtualMachineRestore>('VirtualMachineRestore', INDEX_VM, keyOf(vm));
  const refused: VirtualMachineRestore[] = [];
  for (const r of restores) {
    try {
      await ctx.deleteObject('VirtualMachineRestore', r);
    } catch (err) {
      if (!isForbidden(err)) throw err;
      refused.push(r);
    }
  }
  return refused;
}

/**
 * Why a machine's deletion waits for restores it may not delete, and what to do. Pure. In name
 * order, not the cache's (the order their last changes arrived, by name after an agent
 * restart): the message is compared with the status's (saysDeletion), and the same wait in
 * another order was one more status write and DeletePending Event.
 */
export function restoresRefusedMessage(refused: readonly VirtualMachineRestore[]): string {
  const name = (r: VirtualMachineRestore) => r.metadata.name ?? '';
  const byName = [...refused].sort((a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0));
  const parts = byName.map((r) => {
    const node = r.status?.nodeName;
    // Unclaimed yet refused: not another node's claim but this agent's own permissions (an
    // RBAC rule or admission policy changed by hand), which forget-node cannot mend.
    if (node === undefined) {
      return (
        `the API server refused this agent the deletion of VirtualMachineRestore ` +
        `${r.metadata.namespace}/${r.metadata.name}, which no node claims: check the agent's ` +
        `RBAC and the admission policy from manifests/, or delete the restore with the ` +
        `cluster admin's credentials (kubectl delete vmrestore ${r.metadata.name} ` +
        `-n ${r.metadata.namespace})`
      );
    }
    return (
      `VirtualMachineRestore ${r.metadata.namespace}/${r.metadata.name} is claimed by node ` +
      `${node} (status.nodeName), whose agent alone may delete it: if that host is retired, ` +
      `run 'libvirt-operator forget-node ${node}'; otherwise delete the restore with the ` +
      `cluster admin's credentials (kubectl delete vmrestore ${r.metadata.name} ` +
      `-n ${r.metadata.namespace})`
    );
  });
  return `deletion waits: ${parts.join('; ')}`;
}

/**
 * A machine's snapshot objects go with it too. The snapshot controller deletes them when it
 * sees the machine deleting, but a pass that comes only after the machine is gone (an agent
 * restarted in between) may find a new machine of the same name, and would keep the old
 * machine's snapshot, Failed SnapshotMissing, among the new one's. Deleted here, each keeps its
 * node finalizer until the snapshot controller has had libvirt delete what is left (the
 * machine's removal deletes its libvirt snapshots before the domain is undefined anyway).
 */
export async function deleteSnapshotsOf(vm: VirtualMachine, ctx: ControllerContext): Promise<void> {
  const snapshots = ctx.byIndex<VirtualMachineSnapshot>(
    'VirtualMachineSnapshot',
    INDEX_VM,
    keyOf(vm),
  );
  for (const s of snapshots)
    if (!s.metadata.deletionTimestamp) await ctx.deleteObject('VirtualMachineSnapshot', s);
}
