// VirtualMachineRestore status from what the pass did. Pure.
import { conditionTime, setCondition, withProgressConditions } from '../../api/conditions.js';
import type {
  VirtualMachineRestore,
  VirtualMachineRestoreStatus,
} from '../../api/generated/types.js';
import type { RevertedFacts } from './plan.js';

export type RestoreFacts =
  | { phase: 'Pending' | 'InProgress' | 'Failed'; reason: string; message: string }
  | { phase: 'Succeeded'; message: string };

/**
 * `vmUid` and `snapshotUid`: the machine's and the snapshot object's, recorded once the revert
 * begins (in the write that says InProgress), and kept; so is `reverted`, what the steps after
 * the revert need of the snapshot (includesMemory, ofRunningMachine, disks), which must not
 * depend on its object still being there. `nodeName`: the node of
 * the machine's agent, which claims the restore with it (the admission policy then lets no
 * other node's agent write it); absent from the report of an agent that found no machine.
 */
export function restoreStatus(
  restore: VirtualMachineRestore,
  facts: RestoreFacts,
  now: Date,
  who: { nodeName?: string; vmUid?: string; snapshotUid?: string; reverted?: RevertedFacts } = {},
): VirtualMachineRestoreStatus {
  const { vmUid, snapshotUid } = who;
  const previous = restore.status;
  const observedGeneration = restore.metadata.generation ?? 0;
  const status: VirtualMachineRestoreStatus = { phase: facts.phase, observedGeneration };
  const nodeName = who.nodeName ?? previous?.nodeName;
  if (nodeName !== undefined) status.nodeName = nodeName;
  // When the revert began: a restore that failed before one (its snapshot failed or is gone)
  // has none.
  const began = facts.phase === 'InProgress' || facts.phase === 'Succeeded';
  const startTime = previous?.startTime ?? (began ? conditionTime(now) : undefined);
  if (startTime !== undefined) status.startTime = startTime;
  const machine = previous?.vmUid ?? (began ? vmUid : undefined);
  if (machine !== undefined) status.vmUid = machine;
  // Which snapshot object the revert began on: snapshotOfRevert takes no other for it.
  const snapshot = previous?.snapshotUid ?? (began ? snapshotUid : undefined);
  if (snapshot !== undefined) status.snapshotUid = snapshot;
  // All three or none, and only in the write that says InProgress: a restore begun by an
  // earlier version has none to keep (revertedFacts then reads the object, as before).
  const reverted =
    previous?.includesMemory !== undefined
      ? previous
      : facts.phase === 'InProgress'
        ? who.reverted
        : undefined;
  if (reverted?.includesMemory !== undefined) {
    status.includesMemory = reverted.includesMemory;
    if (reverted.ofRunningMachine !== undefined)
      status.ofRunningMachine = reverted.ofRunningMachine;
    status.disks = (reverted.disks ?? []).map((d) => ({ ...d }));
  }
  if (facts.phase === 'Succeeded' || facts.phase === 'Failed')
    status.completionTime = previous?.completionTime ?? conditionTime(now);
  status.conditions = setCondition(
    previous?.conditions,
    facts.phase === 'Succeeded'
      ? {
          type: 'Ready',
          status: 'True',
          reason: 'Restored',
          message: facts.message,
          observedGeneration,
        }
      : {
          type: 'Ready',
          status: 'False',
          reason: facts.reason,
          message: facts.message,
          observedGeneration,
        },
    now,
  );
  // Reconciling and Stalled from Ready, as on every kind: a Failed restore is Stalled (final).
  status.conditions = withProgressConditions(status.conditions, now);
  return status;
}
