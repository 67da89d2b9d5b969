// Volume.status, rebuilt each pass from what was observed. Deterministic so a converged Volume
// costs no write: conditions keep their lastTransitionTime, sizes are exact byte quantities
// except allocation (rounded down to MiB, it moves as the guest writes), usedBy is sorted.
// status.path doubles as the record that this Volume created its file (see plan.ownsVolume),
// so it is carried over while the file cannot be observed, unless it is known to be gone.
import {
  findCondition,
  isStalledReason,
  progressConditions,
  removeCondition,
  setCondition,
  type Condition,
  type ConditionUpdate,
} from '../../api/conditions.js';
import type {
  Volume,
  VolumeStatus,
  VolumeStatusProgress,
  VolumeStatusUsedBy,
} from '../../api/generated/types.js';
import type { ObservedVolume } from '../../libvirt/xml/volume.js';
import { bytesQuantity, floorMiB } from '../../api/quantity.js';
import { listed, type Problem } from '../kit.js';
import { IMPORTED, RESIZED } from './plan.js';
import { requestedCapacity } from './desired.js';

export const READY = 'Ready';
export const DELETION_BLOCKED = 'DeletionBlocked';
const OWN_TYPES = [READY, RESIZED, IMPORTED, DELETION_BLOCKED, 'Reconciling', 'Stalled'];

export interface VolumeFacts {
  /** The volume file, when it exists and is ours. */
  observed?: ObservedVolume;
  problem?: Problem;
  importing?: { progress: VolumeStatusProgress; path?: string };
  /**
   * The Volume's file is known not to exist (an import that failed before or while making it,
   * and removed what it began): status.path is not carried over, as it would name a file that
   * is not the Volume's. Left unset when the file may exist: the path is the ownership record.
   */
  noFile?: boolean;
  resizeProblem?: Problem;
  /** An HTTP import finished in this pass: the verified image now in the file. */
  imported?: { sha256: string; bytes: bigint; format: string };
  usedBy: VolumeStatusUsedBy[];
  /** Deletion was requested while usedBy is not empty. */
  deletionBlocked?: boolean;
}

export function volumeStatus(vol: Volume, facts: VolumeFacts, now: Date): VolumeStatus {
  const generation = vol.metadata.generation ?? 0;
  const growTo = pendingGrow(vol, facts);
  const status: VolumeStatus = {
    phase: phaseOf(facts, growTo),
    observedGeneration: generation,
    conditions: conditionsFor(vol, facts, now, growTo),
  };
  const path =
    facts.observed?.path ?? facts.importing?.path ?? (facts.noFile ? undefined : vol.status?.path);
  if (path !== undefined) status.path = path;
  if (facts.observed) {
    status.capacity = bytesQuantity(facts.observed.capacity);
    status.allocation = bytesQuantity(floorMiB(facts.observed.allocation ?? 0n));
  }
  if (facts.usedBy.length > 0) status.usedBy = facts.usedBy;
  if (facts.importing && !facts.problem) status.progress = facts.importing.progress;
  return status;
}

function phaseOf(
  facts: VolumeFacts,
  growTo: bigint | undefined,
): NonNullable<VolumeStatus['phase']> {
  // Failed exactly when Stalled says a user must act: a failure that is retried and may pass
  // by itself (CreateFailed, ImportFailed) read Failed beside Reconciling=True.
  if (facts.problem) return isStalledReason(facts.problem.reason) ? 'Failed' : 'Pending';
  if (facts.importing) return 'Importing';
  if (!facts.observed || growTo !== undefined) return 'Pending';
  return facts.usedBy.length > 0 ? 'InUse' : 'Available';
}

/**
 * spec.capacity, when the file is smaller and no grow has been tried on it yet: an import's
 * upload pass, whose grow comes in the next pass. Until then the Volume is not Available, or a
 * copy or overlay of it made meanwhile would get the image's size instead of spec.capacity.
 * A grow that was tried and failed (Resized=False) leaves the file usable, as said there.
 */
function pendingGrow(vol: Volume, facts: VolumeFacts): bigint | undefined {
  const requested = requestedCapacity(vol);
  const actual = facts.observed?.capacity;
  if (requested === undefined || actual === undefined || actual >= requested) return undefined;
  if (facts.resizeProblem || findCondition(vol.status?.conditions, RESIZED)?.status === 'False')
    return undefined;
  return requested;
}

function readyCondition(facts: VolumeFacts, growTo: bigint | undefined): ConditionUpdate {
  if (facts.problem) return { type: READY, status: 'False', ...facts.problem };
  if (facts.importing) {
    const p = facts.importing.progress;
    const total = p.bytesTotal === undefined ? '' : ` of ${p.bytesTotal}`;
    return {
      type: READY,
      status: 'False',
      reason: 'Importing',
      message: `downloaded ${p.bytesDone ?? 0}${total} bytes`,
    };
  }
  if (!facts.observed)
    return {
      type: READY,
      status: 'False',
      reason: 'Creating',
      message: 'the volume file is being created',
    };
  if (growTo !== undefined)
    return {
      type: READY,
      status: 'False',
      reason: 'Resizing',
      message: `growing volume file ${facts.observed.path ?? facts.observed.name} from ${facts.observed.capacity} to ${growTo} bytes`,
    };
  return {
    type: READY,
    status: 'True',
    reason: 'Available',
    message: `volume file ${facts.observed.path ?? facts.observed.name}`,
  };
}

function conditionsFor(
  vol: Volume,
  facts: VolumeFacts,
  now: Date,
  growTo: bigint | undefined,
): Condition[] {
  const observedGeneration = vol.metadata.generation ?? 0;
  let conditions = (vol.status?.conditions ?? []).filter((c) => OWN_TYPES.includes(c.type));
  const ready = { ...readyCondition(facts, growTo), observedGeneration };
  conditions = setCondition(conditions, ready, now);
  const resizeProblem = facts.resizeProblem ?? belowFile(vol, facts);
  conditions = resizeProblem
    ? setCondition(
        conditions,
        { type: RESIZED, status: 'False', ...resizeProblem, observedGeneration },
        now,
      )
    : keepResizeWhilePending(conditions, vol, facts);
  if (facts.imported) {
    const { sha256, bytes, format } = facts.imported;
    conditions = setCondition(
      conditions,
      {
        type: IMPORTED,
        status: 'True',
        reason: 'Verified',
        message: `${format} image of ${bytes} bytes, sha256 ${sha256}`,
        observedGeneration,
      },
      now,
    );
  }
  conditions = facts.deletionBlocked
    ? setCondition(
        conditions,
        {
          type: DELETION_BLOCKED,
          status: 'True',
          reason: 'InUse',
          message: `deletion waits until no longer used by ${listed(facts.usedBy.map((u) => `${u.kind} ${u.name}`))}`,
          observedGeneration,
        },
        now,
      )
    : removeCondition(conditions, DELETION_BLOCKED);
  // A usable file that does not have the asked-for size yet is not converged: a grow the host
  // cannot do is for a user (Stalled), one that failed and is retried is still in progress.
  const resized = findCondition(conditions, RESIZED);
  const progress = ready.status === 'True' && resized?.status === 'False' ? resized : ready;
  for (const u of progressConditions({ ...progress, observedGeneration }))
    conditions = setCondition(conditions, u, now);
  return conditions;
}

// spec.capacity below the file's size: a copy, overlay or import of a larger source (the
// schema refuses a shrink of the spec itself). The file keeps its size, as volumes never
// shrink; said so instead of showing Ready with a capacity the spec does not ask for.
function belowFile(vol: Volume, facts: VolumeFacts): Problem | undefined {
  const requested = requestedCapacity(vol);
  const actual = facts.observed?.capacity;
  if (requested === undefined || actual === undefined || actual <= requested) return undefined;
  return {
    reason: 'ShrinkUnsupported',
    message:
      `spec.capacity (${requested} bytes) is below the volume's ${actual} bytes, the size of its ` +
      `source; a volume never shrinks: ask for at least ${actual} bytes`,
  };
}

// A ResizeUnsupported condition is the memory that keeps the resize from being retried every
// pass (plan.resizeSuspended); it stays while the file is still smaller than asked for.
function keepResizeWhilePending(
  conditions: Condition[],
  vol: Volume,
  facts: VolumeFacts,
): Condition[] {
  const requested = requestedCapacity(vol);
  const stillSmaller =
    facts.observed !== undefined && requested !== undefined && facts.observed.capacity < requested;
  return stillSmaller ? conditions : removeCondition(conditions, RESIZED);
}

/** The objects that use a Volume: VMs attaching it and Volumes cloned from or layered on it. */
export function usedByList(
  vms: readonly string[],
  volumes: readonly string[],
  snapshots: readonly string[] = [],
): VolumeStatusUsedBy[] {
  const entries: VolumeStatusUsedBy[] = [
    ...[...new Set(vms)].map((name) => ({ kind: 'VirtualMachine' as const, name })),
    ...[...new Set(volumes)].map((name) => ({ kind: 'Volume' as const, name })),
    ...[...new Set(snapshots)].map((name) => ({ kind: 'VirtualMachineSnapshot' as const, name })),
  ];
  const order = (u: VolumeStatusUsedBy) => `${u.kind}/${u.name}`;
  return entries.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
}
