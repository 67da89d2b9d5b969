// What a pass does for a VirtualMachineRestore, from the cache and the host. Pure.
import { findCondition } from '../../api/conditions.js';
import type {
  VirtualMachineRestore,
  VirtualMachineSnapshot,
  VirtualMachineSnapshotStatusDisk,
} from '../../api/generated/types.js';

export type RestoreStep =
  /** Terminal already: a restore runs once. */
  | { op: 'none' }
  /**
   * Not possible yet (the snapshot is being taken, the domain being defined). `phase`: the one
   * to keep, InProgress for a revert that began (never back to Pending); else Pending.
   */
  | { op: 'wait'; reason: string; message: string; phase?: 'InProgress' }
  | { op: 'fail'; reason: string; message: string }
  /** Mark, record InProgress, revert, then finish. */
  | { op: 'revert'; snapshotName: string }
  /** The revert happened (its marker is gone) but was not recorded: only finish. */
  | { op: 'finish' };

/**
 * The snapshot object a restore reverts to: the one of its name, except, once the revert has
 * begun (InProgress), only the very object it began on. Another under the name can only have
 * come by the first one's finalizer removed by hand (the one reverted to was Ready before the
 * revert began, and while the restore runs its deletion waits). Taken for the one begun on, it
 * would return the restore to Pending (SnapshotNotReady: the new one waits for this restore)
 * and then revert the machine to whatever the new one holds. Undefined for it instead: the
 * restore ends as for a snapshot object gone. Likewise one of another machine (vmName is
 * immutable, so also another object): a begun restore waiting on it (SnapshotOfAnotherMachine)
 * would never end.
 *
 * The object begun on is the one whose uid the InProgress write recorded (status.snapshotUid).
 * A restore begun by an earlier version has none: there, one created in a later second than
 * the restore's `startTime` is another; times have whole seconds, so one created in the second
 * the revert began is not told apart. Pure.
 */
export function snapshotOfRevert(
  restore: VirtualMachineRestore,
  snapshot: VirtualMachineSnapshot | undefined,
): VirtualMachineSnapshot | undefined {
  if (!snapshot || restore.status?.phase !== 'InProgress') return snapshot;
  if (snapshot.spec.vmName !== restore.spec.vmName) return undefined;
  const begunOn = restore.status.snapshotUid;
  if (begunOn !== undefined) return snapshot.metadata.uid === begunOn ? snapshot : undefined;
  const began = Date.parse(restore.status.startTime ?? '');
  const created = Date.parse(snapshot.metadata.creationTimestamp ?? '');
  return created > began ? undefined : snapshot;
}

export function planRestore(input: {
  restore: VirtualMachineRestore;
  snapshot: VirtualMachineSnapshot | undefined;
  domainFound: boolean;
  markerPresent: boolean;
  /** The refused revert this restore's marker records (desired.ts refusalIn). */
  refused?: string;
  libvirtSnapshotFound: boolean;
  /**
   * Volume the snapshot holds -> the Volumes layered on it (backingVolume) now. Default:
   * none.
   */
  overlays?: ReadonlyMap<string, readonly string[]>;
}): RestoreStep {
  const { restore, snapshot } = input;
  const phase = restore.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return { op: 'none' };
  const name = restore.spec.snapshotName;
  // Begun, and its domain is gone (undefined by hand: the machine's controller stands aside
  // while a restore runs). The marker went with it, so whether the revert happened cannot be
  // told, and the libvirt snapshot went too: Pending would let a later pass revert a domain
  // defined again, to a snapshot taken since under the name. It ends here.
  if (!input.domainFound && phase === 'InProgress') {
    return {
      op: 'fail',
      reason: 'DomainMissing',
      message:
        `the domain of VirtualMachine ${restore.spec.vmName} was removed from the host while ` +
        'this restore reverted it: whether its disks were reverted is not known; check them, ' +
        'and create a new VirtualMachineRestore to revert again',
    };
  }
  // libvirt refused the revert, and the Failed write that said so did not land (desired.ts):
  // written now, whatever else changed since.
  if (phase === 'InProgress' && input.refused !== undefined) {
    return { op: 'fail', reason: 'RevertFailed', message: input.refused };
  }
  // A revert that began never goes back to Pending: that status would let a later pass revert
  // again, to whatever snapshot is then created under the name. Its object went (a finalizer
  // removed by hand, a deletion that did not see this restore): the marker says whether the
  // revert happened (finish, without the snapshot's details) or not (it never will).
  if (!snapshot && phase === 'InProgress') {
    return input.markerPresent
      ? {
          op: 'fail',
          reason: 'SnapshotMissing',
          message: `VirtualMachineSnapshot ${name} was deleted before this restore reverted to it`,
        }
      : { op: 'finish' };
  }
  if (!snapshot) {
    return {
      op: 'wait',
      reason: 'SnapshotNotFound',
      message: `no VirtualMachineSnapshot ${name} of VirtualMachine ${restore.spec.vmName}`,
    };
  }
  // Both vmNames are immutable: only the user (a new restore, or that snapshot deleted and
  // created again for this machine) can change this, so it is Stalled, not a wait that a
  // GitOps tool would watch until its timeout. Still Pending: a snapshot of the right machine
  // created under that name is restored.
  if (snapshot.spec.vmName !== restore.spec.vmName) {
    return {
      op: 'wait',
      reason: 'SnapshotOfAnotherMachine',
      message:
        `VirtualMachineSnapshot ${name} is of VirtualMachine ${snapshot.spec.vmName}, not ` +
        `${restore.spec.vmName}; name a snapshot of ${restore.spec.vmName} in a new ` +
        'VirtualMachineRestore (spec.snapshotName is immutable)',
    };
  }
  if (!input.domainFound) {
    return {
      op: 'wait',
      reason: 'VirtualMachineNotDefined',
      message: `the domain of VirtualMachine ${restore.spec.vmName} is not defined on this host`,
    };
  }
  if (phase === 'InProgress' && !input.markerPresent) return { op: 'finish' };
  // Its deletion can wait a long time for the machine to stop (the snapshot controller's
  // liveDeleteBlocker): a restore that has not begun must not bring back what is being deleted.
  if (snapshot.metadata.deletionTimestamp && phase !== 'InProgress') {
    return {
      op: 'wait',
      reason: 'SnapshotNotFound',
      message: `VirtualMachineSnapshot ${name} is being deleted`,
    };
  }
  if (snapshot.status?.phase === 'Failed') {
    // Why it failed is on the snapshot; said here too, so the restore names the problem.
    const why = findCondition(snapshot.status.conditions, 'Ready')?.message;
    return {
      op: 'fail',
      reason: 'SnapshotFailed',
      message: `VirtualMachineSnapshot ${name} failed${why ? `: ${why}` : ''}`,
    };
  }
  if (snapshot.status?.phase !== 'Ready' || !snapshot.status.snapshotName) {
    // Begun (its marker is still there) on a Ready snapshot: one not Ready is another, made
    // since under the name (the first one's finalizer removed by hand). Waiting would never
    // end, as that snapshot is not taken while this restore is InProgress; nor is it the
    // snapshot the revert began on.
    if (phase === 'InProgress') {
      return {
        op: 'fail',
        reason: 'SnapshotMissing',
        message: `VirtualMachineSnapshot ${name} was deleted and made again before this restore reverted to it`,
      };
    }
    return {
      op: 'wait',
      reason: 'SnapshotNotReady',
      message: `VirtualMachineSnapshot ${name} is not Ready yet`,
    };
  }
  if (!input.libvirtSnapshotFound) {
    return {
      op: 'fail',
      reason: 'SnapshotMissing',
      message: `the libvirt snapshot ${snapshot.status.snapshotName} no longer exists on the host`,
    };
  }
  // An overlay reads its backing file and cannot tell that it changed: reverting a base image
  // rewrites what every overlay on it reads (and a checkpoint's guest would write it on), the
  // corruption the machine controller refuses to start it for (VolumeHasOverlays). It waits
  // for the overlays to go, as the machine does.
  // A begun one (an agent that died between InProgress and the revert, an overlay created
  // meanwhile; its marker says nothing was reverted) waits too, but stays InProgress: Pending
  // would let a later pass revert to another object made under the name (snapshotOfRevert
  // pins the one begun on only while InProgress). Not failed: the user's request still stands
  // and deleting the overlays lets it go on. The machine's controller meanwhile keeps the
  // domain's definition (redefining it would drop the marker) but applies runStrategy
  // (restoreHold): only a running revert makes it stand aside altogether.
  const bases = [...(input.overlays ?? [])].filter(([, on]) => on.length > 0);
  if (bases.length > 0) {
    const list = bases
      .map(([base, on]) => `Volume ${base} is the backing file of ${on.join(', ')}`)
      .join('; ');
    const them = bases.length === 1 && bases[0]![1].length === 1 ? 'that Volume' : 'those Volumes';
    const message = `${list}: reverting it would corrupt what they read; delete ${them} first (the restore waits)`;
    if (phase !== 'InProgress') return { op: 'wait', reason: 'VolumeHasOverlays', message };
    // Begun: the machine keeps its definition while this waits (its spec changes wait too),
    // which matters most when the overlay is one of its own disks (dropping that disk needs a
    // redefinition). Deleting the restore, which has reverted nothing, gives it back.
    return {
      op: 'wait',
      reason: 'VolumeHasOverlays',
      message:
        `${message}, or delete this restore, which has reverted nothing yet: until then ` +
        `VirtualMachine ${restore.spec.vmName} keeps its domain definition and its spec changes wait`,
      phase,
    };
  }
  return { op: 'revert', snapshotName: snapshot.status.snapshotName };
}

/**
 * Whether a pass of `restore` may act on the domain (revert, or finish: power it off), judged
 * from the cache before the host is looked at, with the host facts that let it act most: the
 * domain and libvirt snapshot found, its marker either way (planRestore acts on no more when
 * any of them is missing). The pass marks the machine as being reverted (HostState restores)
 * only then, and from its start, so that nothing begins on the domain while it looks; a pass
 * that can only wait (its snapshot not Ready yet, overlays on a base image) marks nothing: the
 * snapshot it waits for must be taken meanwhile, and that take defers to a marked machine.
 * Pure.
 */
export function mayActOnDomain(input: {
  restore: VirtualMachineRestore;
  snapshot: VirtualMachineSnapshot | undefined;
  overlays?: ReadonlyMap<string, readonly string[]>;
}): boolean {
  return [true, false].some((markerPresent) => {
    const { op } = planRestore({
      ...input,
      domainFound: true,
      markerPresent,
      libvirtSnapshotFound: true,
    });
    return op === 'revert' || op === 'finish';
  });
}

/** What the steps after a revert (power-off, Ready message) need of the snapshot. */
export interface RevertedFacts {
  includesMemory: boolean;
  /** Whether the snapshot is of the running machine (a checkpoint, memory used or not). */
  ofRunningMachine: boolean;
  disks: VirtualMachineSnapshotStatusDisk[];
}

/**
 * RevertedFacts of a snapshot object, recorded with InProgress. Whether it is of the running
 * machine: from the libvirt snapshot's state when found; else a disks-only snapshot of a
 * running machine records quiesced, one of a stopped machine not. Pure.
 */
export function snapshotFacts(
  snapshot: VirtualMachineSnapshot,
  snapshotState: string | undefined,
): RevertedFacts {
  return {
    includesMemory: snapshot.status?.includesMemory === true,
    ofRunningMachine:
      snapshotState !== undefined
        ? snapshotState !== 'shutoff' && snapshotState !== 'disk-snapshot'
        : snapshot.status?.quiesced !== undefined,
    disks: (snapshot.status?.disks ?? []).map((d) => ({ ...d })),
  };
}

/**
 * RevertedFacts of a begun restore: those its InProgress write recorded, which hold when the
 * snapshot object has gone since (or another was created under its name); a restore begun by
 * an earlier version recorded none and reads them off the object, if there. Undefined when
 * neither: what the snapshot held is not known. Pure.
 */
export function revertedFacts(
  restore: VirtualMachineRestore,
  snapshot: VirtualMachineSnapshot | undefined,
  snapshotState: string | undefined,
): RevertedFacts | undefined {
  const s = restore.status;
  if (s?.includesMemory !== undefined) {
    return {
      includesMemory: s.includesMemory,
      ofRunningMachine:
        s.ofRunningMachine ??
        (snapshot ? snapshotFacts(snapshot, snapshotState).ofRunningMachine : false),
      disks: s.disks ?? [],
    };
  }
  return snapshot ? snapshotFacts(snapshot, snapshotState) : undefined;
}

/**
 * A disks-only snapshot of a running machine is held as a checkpoint (see the snapshot
 * controller's desired.ts): after reverting to it the domain runs the saved memory, which the
 * user did not ask for. Powering it off leaves the restored disks, and the machine's
 * runStrategy then boots it from them.
 */
export function needsPowerOff(reverted: RevertedFacts, domainActive: boolean): boolean {
  return domainActive && !reverted.includesMemory;
}

/**
 * Whether to revert paused: for a disks-only snapshot of a running machine, which the restore
 * powers off right after (needsPowerOff). Its checkpoint's memory must not run, not even for
 * the moment before the power-off, or the guest writes to the disks just restored. Never for
 * a snapshot of a stopped machine: asked to revert one paused, libvirt boots it.
 */
export function revertPaused(
  snapshot: VirtualMachineSnapshot,
  snapshotState: string | undefined,
): boolean {
  return (
    snapshot.status?.includesMemory === false &&
    snapshotState !== undefined &&
    snapshotState !== 'shutoff' &&
    snapshotState !== 'disk-snapshot'
  );
}

/**
 * What a finished restore says it did, in its Ready message and Event. A restore that stopped
 * the running guest says so, and what happens next: the power-off after a disks-only revert,
 * and also a revert to a snapshot of the stopped machine, which libvirt makes by shutting the
 * running domain off (reason from_snapshot). Which runStrategy starts it again from the
 * restored disks: Always and RerunOnFailure (a stop the user did not ask for); Manual and
 * Halted leave it shut off. A checkpoint with memory runs again: under Halted, until the
 * shutdown Halted then asks for. Pure.
 */
export function restoredWording(input: {
  includesMemory: boolean;
  /** The restore left shut off a machine that ran when it began. */
  stoppedRun: boolean;
  /** Whether the snapshot is of the running machine (a checkpoint, memory used or not). */
  ofRunningMachine: boolean;
  runStrategy: string | undefined;
}): string {
  const strategy = input.runStrategy ?? 'Always';
  // The checkpoint's guest runs again, also on a machine Halted keeps off: until the shutdown
  // Halted asks for, which the user should not have to guess from a "memory and disks".
  if (input.includesMemory)
    return strategy === 'Halted'
      ? 'memory and disks; the guest runs, and runStrategy Halted shuts it down'
      : 'memory and disks';
  if (!input.stoppedRun) return 'disks';
  const boots = strategy === 'Always' || strategy === 'RerunOnFailure';
  if (input.ofRunningMachine)
    return boots
      ? 'disks; powered off to boot from them'
      : `disks; powered off, and runStrategy ${strategy} leaves it shut off`;
  const stopped = 'disks of the stopped machine; the revert shut the running guest off';
  return boots
    ? `${stopped}, and runStrategy ${strategy} boots it from them`
    : `${stopped}, and runStrategy ${strategy} leaves it shut off`;
}

/** How many disks each list of restoredDisksWording names before it counts the rest. */
export const DISKS_NAMED = 6;

/**
 * Which disks a restore brought back and which it did not, for its Ready message and Event: a
 * user must be able to tell which disk came back. Reverted: the disks the snapshot holds
 * (status.disks; a Volume the machine no longer lists is named so, the revert attaches it again
 * until the machine's controller detaches it). Not reverted: the machine's Volumes the snapshot
 * does not hold, which keep what they have now (attached after the snapshot, or read-only and
 * so left out of it). By Volume, not target: a disk may be on another target since. Each list
 * names at most DISKS_NAMED disks and counts the rest, so the message stays short. Pure.
 */
export function restoredDisksWording(
  snapshotDisks: ReadonlyArray<{ name: string; volume?: string }>,
  specDisks: ReadonlyArray<{ volume: string; readOnly?: boolean }>,
): string {
  const { held, kept } = diskLists(snapshotDisks, specDisks);
  const parts = [`disks reverted: ${bounded(held)}`];
  if (kept.length > 0) parts.push(`not reverted: ${bounded(kept)}`);
  return parts.join('; ');
}

/**
 * What a refused revert (RevertFailed) can honestly say of the disks, in its message and
 * Warning. libvirt reverts the snapshot's disks one after another (qemu-img snapshot -a per
 * disk of a stopped machine, QEMU's loadvm over all drives of a running one) and rolls none
 * back when one fails: each disk the snapshot holds may now hold the snapshot's data or still
 * what it held, which nothing here can tell. The machine's Volumes the snapshot does not hold
 * were not part of the revert. Lists bounded as restoredDisksWording's. Pure.
 */
export function revertFailedDisksWording(
  snapshotDisks: ReadonlyArray<{ name: string; volume?: string }>,
  specDisks: ReadonlyArray<{ volume: string; readOnly?: boolean }>,
): string {
  const { held, kept } = diskLists(snapshotDisks, specDisks);
  const parts = [
    `libvirt may have reverted some of the disks the revert covered before it failed, so ` +
      `each may hold the snapshot's data or what it held before: ${bounded(held)}`,
  ];
  if (kept.length > 0) parts.push(`not part of the revert: ${bounded(kept)}`);
  return parts.join('; ');
}

/**
 * The disks the snapshot holds, by target and Volume, and the machine's Volumes it does not
 * hold (see restoredDisksWording).
 */
function diskLists(
  snapshotDisks: ReadonlyArray<{ name: string; volume?: string }>,
  specDisks: ReadonlyArray<{ volume: string; readOnly?: boolean }>,
): { held: string[]; kept: string[] } {
  const attached = new Set(specDisks.map((d) => d.volume));
  const volumes = new Set(snapshotDisks.flatMap((d) => (d.volume === undefined ? [] : [d.volume])));
  const held = snapshotDisks.map((d) =>
    d.volume === undefined
      ? d.name
      : `${d.name} (Volume ${d.volume}${attached.has(d.volume) ? '' : ', no longer attached'})`,
  );
  const kept = [...new Map(specDisks.map((d) => [d.volume, d])).values()]
    .filter((d) => !volumes.has(d.volume))
    .map((d) => `Volume ${d.volume} (${d.readOnly ? 'read-only' : 'not in the snapshot'})`);
  return { held, kept };
}

function bounded(items: readonly string[]): string {
  if (items.length === 0) return 'none';
  const named = items.slice(0, DISKS_NAMED).join(', ');
  const more = items.length - DISKS_NAMED;
  return more > 0 ? `${named} and ${more} more` : named;
}
