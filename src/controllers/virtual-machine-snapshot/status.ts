// VirtualMachineSnapshot status, rebuilt each pass from what was observed or done. Pure.
import {
  findCondition,
  removeCondition,
  setCondition,
  withProgressConditions,
} from '../../api/conditions.js';
import type {
  VirtualMachineSnapshot,
  VirtualMachineSnapshotStatus,
} from '../../api/generated/types.js';
import type { SnapshotRecord } from './desired.js';
import type { FoundSnapshot } from '../shared/machine-snapshot.js';

const READY = 'Ready';
/** True while the deletion of the object waits; absent otherwise (as on Volumes and pools). */
export const DELETION_BLOCKED = 'DeletionBlocked';

export type SnapshotFacts =
  | { phase: 'Pending' | 'InProgress'; reason: string; message: string }
  | { phase: 'Failed'; reason: string; message: string }
  | {
      phase: 'Ready';
      found: FoundSnapshot;
      record: SnapshotRecord;
      /** Disk target -> Volume name, for the machine's disks that are Volumes. */
      volumes: ReadonlyMap<string, string>;
    };

export function snapshotStatus(
  snap: VirtualMachineSnapshot,
  facts: SnapshotFacts,
  now: Date,
): VirtualMachineSnapshotStatus {
  const generation = snap.metadata.generation ?? 0;
  const previous = snap.status;
  const status: VirtualMachineSnapshotStatus = {
    phase: facts.phase,
    observedGeneration: generation,
  };
  // What was taken stays known after the libvirt snapshot disappears (Failed SnapshotMissing).
  for (const key of [
    'creationTime',
    'snapshotName',
    'includesMemory',
    'quiesced',
    'disks',
  ] as const)
    if (previous?.[key] !== undefined) (status as Record<string, unknown>)[key] = previous[key];
  if (facts.phase !== 'Ready') {
    status.conditions = setCondition(
      previous?.conditions,
      {
        type: READY,
        status: 'False',
        reason: facts.reason,
        message: facts.message,
        observedGeneration: generation,
      },
      now,
    );
    status.conditions = withProgressConditions(status.conditions, now);
    return status;
  }
  const { doc } = facts.found;
  status.snapshotName = doc.name;
  if (doc.creationTime !== undefined)
    status.creationTime = new Date(doc.creationTime * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const active =
    doc.state !== undefined && doc.state !== 'shutoff' && doc.state !== 'disk-snapshot';
  status.includesMemory = active && facts.record.includeMemory;
  if (facts.record.quiesced !== undefined) status.quiesced = facts.record.quiesced;
  else delete status.quiesced;
  status.disks = doc.disks
    .filter((d) => d.snapshot === 'internal')
    .map((d) => {
      const volume = facts.volumes.get(d.name);
      return volume === undefined ? { name: d.name } : { name: d.name, volume };
    });
  status.conditions = setCondition(
    previous?.conditions,
    {
      type: READY,
      status: 'True',
      ...readyWording(status, doc.state),
      observedGeneration: generation,
    },
    now,
  );
  // Reconciling and Stalled from Ready, as on every kind, for kstatus and Argo CD: a Failed
  // snapshot is Stalled (final), a Pending or InProgress one Reconciling.
  status.conditions = withProgressConditions(status.conditions, now);
  return status;
}

function readyWording(
  status: VirtualMachineSnapshotStatus,
  state: string | undefined,
): { reason: string; message: string } {
  const disks = (status.disks ?? []).map((d) => d.name).join(', ');
  if (status.includesMemory)
    return {
      reason: 'Checkpoint',
      message: `libvirt snapshot ${status.snapshotName}: memory and disks (${disks}) of the ${state ?? ''} machine`,
    };
  if (status.quiesced === false)
    return {
      reason: 'CrashConsistent',
      message:
        `libvirt snapshot ${status.snapshotName}: disks (${disks}) only, crash-consistent: ` +
        'the guest agent did not answer, so the filesystems were not frozen',
    };
  if (status.quiesced === true)
    return {
      reason: 'Quiesced',
      message: `libvirt snapshot ${status.snapshotName}: disks (${disks}) only, filesystems frozen by the guest agent`,
    };
  return {
    reason: 'DisksOnly',
    message: `libvirt snapshot ${status.snapshotName}: disks (${disks}) of the stopped machine`,
  };
}

/** Why a deletion waits: the condition's reason and message (what for, and what lets it go). */
export interface DeletionWait {
  reason: string;
  message: string;
}

/**
 * The status of a snapshot being deleted: as it stands, with DeletionBlocked saying why the
 * deletion waits (`wait`) or without it (`undefined`: the wait is over). An Event alone left
 * `kubectl get` and kstatus readers with a deleting object and nothing saying why it stays.
 * Unchanged when the condition already says so, so a waiting pass writes nothing.
 */
export function deletionStatus(
  snap: VirtualMachineSnapshot,
  wait: DeletionWait | undefined,
  now: Date,
): VirtualMachineSnapshotStatus {
  const previous = snap.status ?? {};
  const conditions = wait
    ? setCondition(
        previous.conditions,
        {
          type: DELETION_BLOCKED,
          status: 'True',
          ...wait,
          observedGeneration: snap.metadata.generation ?? 0,
        },
        now,
      )
    : removeCondition(previous.conditions, DELETION_BLOCKED);
  return { ...previous, conditions };
}

/** Whether the object's status already says this about its deletion (no write, no Event). */
export function saysDeletion(
  snap: VirtualMachineSnapshot,
  wait: DeletionWait | undefined,
): boolean {
  const current = findCondition(snap.status?.conditions, DELETION_BLOCKED);
  if (!wait) return current === undefined;
  return (
    current?.status === 'True' && current.reason === wait.reason && current.message === wait.message
  );
}
