// What a pass does for a live (not deleting) VirtualMachineSnapshot, from what was observed.
// Pure. A snapshot is taken once: after that the pass only checks that libvirt still has it.
import type { VirtualMachineSnapshot } from '../../api/generated/types.js';
import { parseRecord, type SnapshotDecision, type SnapshotRecord } from './desired.js';
import type { FoundSnapshot } from '../shared/machine-snapshot.js';

export type SnapshotStep =
  /** The machine has no domain here yet (being defined): look again shortly. */
  | { op: 'wait'; reason: string; message: string }
  /** libvirt has our snapshot: record it (again) in status. */
  | { op: 'record'; found: FoundSnapshot; record: SnapshotRecord }
  /** Take it now. */
  | { op: 'take'; decision: Extract<SnapshotDecision, { kind: 'take' }> }
  /** It cannot be taken, or it is gone: a terminal Failed. */
  | { op: 'fail'; reason: string; message: string }
  /** Failed before: stays so (a snapshot is never taken later than asked). */
  | { op: 'none' };

export function planSnapshot(input: {
  snap: VirtualMachineSnapshot;
  domainFound: boolean;
  found: FoundSnapshot | undefined;
  decision: SnapshotDecision | undefined;
}): SnapshotStep {
  const { snap, found } = input;
  const phase = snap.status?.phase;
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
  return { op: 'take', decision: input.decision };
}
