// What a pass does for a live (not deleting) VirtualMachineSnapshot, from what was observed.
// Pure. A snapshot is taken once: after that the pass only checks that libvirt still has it.
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../api/generated/types.js';
import {
  isCleanupRecord,
  parseRecord,
  type SnapshotDecision,
  type SnapshotRecord,
} from './desired.js';
import type { FoundSnapshot } from '../shared/machine-snapshot.js';
import { findCondition } from '../../api/conditions.js';

export type SnapshotStep =
  /**
   * The machine has no domain here yet (being defined), or its domain waits for the machine's
   * first start (firstStartWait): look again shortly.
   */
  | { op: 'wait'; reason: string; message: string }
  /** libvirt has our snapshot: record it (again) in status. */
  | { op: 'record'; found: FoundSnapshot; record: SnapshotRecord }
  /**
   * Take it now; with `cleanUp`, after removing what an interrupted take may have left in the
   * disks without libvirt's record of it (act.ts, removeUnrecorded): `unrecorded` defines a
   * record to delete, `leftover` deletes the one a cleanup that died left behind.
   */
  | {
      op: 'take';
      decision: Extract<SnapshotDecision, { kind: 'take' }>;
      cleanUp?: 'unrecorded' | 'leftover';
    }
  /** It cannot be taken, or it is gone: a terminal Failed. */
  | { op: 'fail'; reason: string; message: string }
  /** Failed before: stays so (a snapshot is never taken later than asked). */
  | { op: 'none' };

export function planSnapshot(input: {
  snap: VirtualMachineSnapshot;
  domainFound: boolean;
  found: FoundSnapshot | undefined;
  decision: SnapshotDecision | undefined;
  /** A take of this object was sent by this process and never answered (libvirtd died). */
  cutShort: boolean;
  /** Why the take waits for the machine's first start, if it does (firstStartWait). */
  firstStart?: { reason: string; message: string };
}): SnapshotStep {
  const { snap } = input;
  const phase = snap.status?.phase;
  // A cleanup's own record, left by a pass that died inside the cleanup: not a snapshot.
  const leftover =
    input.found !== undefined &&
    isCleanupRecord(input.found.doc.description, String(snap.metadata.uid));
  const found = leftover ? undefined : input.found;
  if (found) {
    const record = parseRecord(found.doc.description);
    if (!record || record.uid !== snap.metadata.uid) {
      return {
        op: 'fail',
        reason: 'NameConflict',
        message: `a libvirt snapshot named ${found.doc.name} exists that this object did not take`,
      };
    }
    return { op: 'record', found, record };
  }
  if (phase === 'Failed') return { op: 'none' };
  if (phase === 'Ready') {
    return {
      op: 'fail',
      reason: 'SnapshotMissing',
      message: `the libvirt snapshot ${snap.status?.snapshotName ?? ''} no longer exists on the host`,
    };
  }
  if (!input.domainFound || !input.decision) {
    return {
      op: 'wait',
      reason: 'VirtualMachineNotDefined',
      message: `the domain of VirtualMachine ${snap.spec.vmName} is not defined on this host yet`,
    };
  }
  if (input.decision.kind === 'unsupported') {
    return { op: 'fail', reason: 'Unsupported', message: input.decision.message };
  }
  // An earlier take may have been cut short (takeMayBeCutShort). That can leave the disks
  // with the snapshot and libvirt without its record, and taking it again would add a
  // second of the same name (qemu-img, on a shut-off machine) or depend on QEMU replacing it
  // (libvirt 9.0's savevm does, newer libvirt's snapshot-save refuses). A cleanup's leftover
  // record must go too: the take would find the name taken and adopt that record.
  const cleanUp = leftover
    ? 'leftover'
    : takeMayBeCutShort(snap, input.cutShort)
      ? 'unrecorded'
      : undefined;
  // Only before any take was sent: one that may have reached libvirt is cleaned up and taken
  // again now, as it began.
  if (input.firstStart && !cleanUp) return { op: 'wait', ...input.firstStart };
  return { op: 'take', decision: input.decision, ...(cleanUp ? { cleanUp } : {}) };
}

/** Ready=False while the snapshot of a machine that has not run yet waits for its first start. */
export const WAITING_FOR_FIRST_START = 'WaitingForFirstStart';

/**
 * Why the snapshot of a shut-off machine waits for the machine's first start, if it does: a
 * VirtualMachine and its snapshot applied together ask for a checkpoint of the running machine
 * (includeMemory defaults to true for a running machine), and the agent defines a new machine's
 * domain a moment before it starts it. Taken in between, the snapshot would be of the disks of a
 * machine that never ran.
 *
 * "Never ran" is the machine's status without `startedAt`: the machine controller writes it
 * once it sees the domain run and judges its own first start by it (plan.ts powerPlan,
 * `initial`), and it lives in the API server, so it holds across agent restarts. libvirt's
 * shut-off reason cannot tell: it is `unknown` both before the first start and after a restart
 * of libvirtd. A machine whose status was lost but whose domain has run (the run record,
 * `lvorun:run`, in its persistent definition: plan.ts firstStartDue) is not started again,
 * and the machine controller's next status, of the spec's generation, says Stopped: no wait
 * from then on (below).
 *
 * No wait for a machine meant to stay off, or one that cannot start without a user: runStrategy
 * Halted; a machine that has run (Manual then leaves its power to the user; a restart under
 * the others is not what a snapshot applied with its machine waits for); a status, of the
 * spec's generation, that says the machine is not on its way up (Failed: a start or define
 * refused for its definition; Stopped: a start held back, e.g. VolumeHasOverlays). Those get
 * disks only, as a stopped machine's snapshot does. Nor for a machine on UEFI firmware:
 * libvirt takes no snapshot of it running (desiredSnapshot: pflash, Unsupported for good), so
 * the start would turn the disks-only snapshot it can have now into a Failed one. The spec
 * tells, not the shut-off domain alone: libvirt 9.0 (measured, and the test driver) picks the
 * pflash loader of `<os firmware='efi'>` only at the start, and the definition before it names
 * none. Nor for a snapshot of the disks alone (includeMemory false). Pure.
 */
export function firstStartWait(
  vm: Pick<VirtualMachine, 'metadata' | 'spec' | 'status'>,
  machine: { active: boolean; pflash?: boolean },
  snap: Pick<VirtualMachineSnapshot, 'spec'>,
): { reason: string; message: string } | undefined {
  if (machine.active || vm.status?.startedAt) return undefined;
  // Disks only asked for: the disks as they are now are that, and taken of the running machine
  // it would be an internal snapshot holding its memory all the same (desired.ts), for nothing.
  if (snap.spec.includeMemory === false) return undefined;
  if (vm.spec.firmware === 'uefi' || machine.pflash === true) return undefined;
  const strategy = vm.spec.runStrategy ?? 'Always';
  if (strategy === 'Halted') return undefined;
  // A status of an older generation judged another spec (a start refused for a definition the
  // user has since fixed): the machine controller's next pass judges this one.
  const judged = vm.status?.observedGeneration === vm.metadata.generation;
  const phase = vm.status?.phase;
  if (judged && (phase === 'Failed' || phase === 'Stopped')) return undefined;
  // A start that fails and is retried (StartFailed: QEMU exiting at start, a lock not yet
  // free) may fail for as long as the cause lasts: said here, or the snapshot alone would not
  // tell a user why it still waits, nor where to look. The reason only: the machine's message
  // changes with each try, and each change would be a status write of the snapshot.
  const ready = findCondition(vm.status?.conditions, 'Ready');
  const failing = judged && ready?.status === 'False' && ready.reason === 'StartFailed';
  return {
    reason: WAITING_FOR_FIRST_START,
    message:
      `VirtualMachine ${vm.metadata.name} has not run yet and runStrategy ${strategy} starts ` +
      `it: the snapshot waits for that first start, to be taken of the running machine (of ` +
      `its disks alone if the start is refused or runStrategy becomes Halted)` +
      (failing
        ? `; its start has failed so far and is retried (the machine's Ready condition, ` +
          `reason StartFailed, says why)`
        : ''),
  };
}

/**
 * Whether a libvirt snapshot with the object's name is the object's own to delete: our record
 * of its uid, or the record a cleanup of its own defined. A foreign one under the name (the
 * object's NameConflict) is someone else's and stays. Pure.
 */
export function isOwnSnapshot(description: string | undefined, uid: string): boolean {
  return parseRecord(description)?.uid === uid || isCleanupRecord(description, uid);
}

/**
 * Whether a take of this object may have reached libvirt without the pass seeing its end:
 * InProgress is written before every take, and `cutShort` is a take this process sent and
 * got no answer to (which the cache may not show as InProgress yet).
 */
export function takeMayBeCutShort(snap: VirtualMachineSnapshot, cutShort: boolean): boolean {
  return snap.status?.phase === 'InProgress' || cutShort;
}

/**
 * Why libvirt cannot delete this internal snapshot of the machine now, if it cannot. Before a
 * live delete, libvirt 9.0 compares each disk the snapshot lists with the running domain's disk
 * of that target: a target the domain no longer has (a disk detached since) is a NULL it
 * dereferences, and libvirtd dies (measured: a segfault in libvirt_driver_qemu.so on every
 * retry, taking every other client's calls with it); a target now on another file is refused.
 * Every disk counts, those left out of the snapshot too (measured: a CD-ROM given other media
 * since is refused). Shut off, libvirt deletes the snapshot from the files it was taken of
 * (qemu-img), so such a delete waits for the domain to stop. Pure.
 */
export function liveDeleteBlocker(
  snapshot: { disks: ReadonlyArray<{ name: string; source?: string }> },
  machine: { active: boolean; disks: ReadonlyArray<{ name: string; source?: string }> },
): string | undefined {
  if (!machine.active) return undefined;
  const running = machine.disks;
  const problems: string[] = [];
  for (const disk of snapshot.disks) {
    const now = running.find((d) => d.name === disk.name);
    if (!now) problems.push(`disk ${disk.name} is no longer attached`);
    else if (disk.source !== undefined && now.source !== disk.source)
      problems.push(`disk ${disk.name} is now ${now.source ?? 'empty'}, not ${disk.source}`);
  }
  if (problems.length === 0) return undefined;
  return (
    `libvirt cannot delete this snapshot while the machine runs (${problems.join('; ')}); ` +
    'it is deleted once the domain is shut off (runStrategy Halted, or the machine deleted)'
  );
}

/**
 * The restores of this snapshot's machine that are reverting to it (InProgress): deleting the
 * snapshot waits for them. Deleted under such a restore, the libvirt snapshot could go before
 * the revert reaches libvirt (it fails), and the object before a restore whose agent died after
 * the revert records it (it would wait for a snapshot that no longer exists, Pending for good).
 * `running` is the uid of the restore of this machine whose pass this agent is in (HostState
 * restores): the cache shows it InProgress only once that status write comes back through the
 * watch, and a pass that read the snapshot before its deletion reverts to it meanwhile. Pure.
 */
export function revertingRestores(
  snap: VirtualMachineSnapshot,
  restores: readonly VirtualMachineRestore[],
  running?: string,
): string[] {
  return restores
    .filter(
      (r) =>
        r.metadata.namespace === snap.metadata.namespace &&
        r.spec.snapshotName === snap.metadata.name &&
        r.spec.vmName === snap.spec.vmName &&
        // One begun on another object of this name (this one re-created since) never reverts
        // to this one (snapshotOfRevert): its deletion need not wait for it.
        (r.status?.snapshotUid === undefined || r.status.snapshotUid === snap.metadata.uid) &&
        (r.status?.phase === 'InProgress' || (running !== undefined && r.metadata.uid === running)),
    )
    .map((r) => String(r.metadata.name));
}

/** Ready=False while a checkpoint waits for room in its disk's file system: retried. */
export const INSUFFICIENT_SPACE = 'InsufficientSpace';

/**
 * Where a running machine's checkpoint goes and the room there: QEMU's savevm writes the
 * guest's memory into the first writable disk, `path` of target `disk`: only the pages the
 * guest touched (zero pages are a flag), so far less than its size for most guests (a 512 MiB
 * guest's checkpoint grew its qcow2 by about 2 MiB, measured).
 */
export interface CheckpointRoom {
  disk: string;
  path: string;
  /** The machine's memory (its maximum), bytes: no checkpoint writes more. */
  memory: bigint;
  /**
   * The resident memory of its QEMU process (virDomainMemoryStats `rss`), bytes; undefined
   * when libvirt did not report it.
   */
  rss?: bigint;
  /** Bytes free to unprivileged writers on that file's file system (statfs bavail). */
  free: bigint;
}

/**
 * The room a checkpoint is taken to need: the QEMU process's resident memory (every guest page
 * it ever touched is in it, plus QEMU's own, a margin), capped at the guest's memory, which no
 * checkpoint exceeds. Undefined without an rss: nothing to judge by, the snapshot is not held
 * back (the guest's whole memory, taken instead, refused checkpoints that fit by far). Pure.
 */
export function checkpointNeeds(room: CheckpointRoom): bigint | undefined {
  if (room.rss === undefined) return undefined;
  return room.rss < room.memory ? room.rss : room.memory;
}

/**
 * Why a checkpoint is not taken now, if it is not: its disk's file system has less room than
 * the checkpoint is taken to need (checkpointNeeds). Taken anyway, QEMU's savevm fails
 * part-way with "Error while writing VM state: Input/output error" (measured) after filling
 * the file system, where the guest's own disk writes then fail too (a guest paused on an I/O
 * error). Waits, retried with backoff: freeing space fixes it. The message names no moving
 * figure (the rss changes from pass to pass) and the free space MiB-rounded, so a pass that
 * finds a few bytes more or less writes no new status. Pure.
 */
export function checkpointSpaceProblem(
  room: CheckpointRoom,
  volume?: string,
): { reason: string; message: string } | undefined {
  const needs = checkpointNeeds(room);
  if (needs === undefined || room.free >= needs) return undefined;
  const mib = (b: bigint) => `${b / 2n ** 20n} MiB`;
  return {
    reason: INSUFFICIENT_SPACE,
    message:
      `the checkpoint writes the memory the guest uses (as much as its QEMU process holds, up ` +
      `to ${mib(room.memory)}) into disk ${room.disk}'s file ${room.path}` +
      `${volume ? ` (Volume ${volume})` : ''}, whose file system has ${mib(room.free)} free; ` +
      `free space there, and the snapshot is taken then (retried)`,
  };
}
