// Snapshots and restores name a machine, not a node. Each agent acts on those whose machine is
// in its cache, which holds its own node's machines only, so a snapshot or restore of a machine
// that exists nowhere was acted on by no agent and had no status at all (kstatus reads an
// object without conditions as Current: a typo in spec.vmName looked like a snapshot taken).
//
// So an agent that does not have the machine asks the API server, for an object that no
// agent has claimed yet, and when the machine exists nowhere says so in its status. Any agent
// may: all write the same status, each write is conditional on the resourceVersion it read
// (a second writer gets a conflict and then finds it written), and the write is skipped when
// the status already says so. When the machine is created, its agent is woken by it (the
// kind's VirtualMachine trigger) and replaces the status with its own. Pure.
import { findCondition, type Condition } from '../../api/conditions.js';
import type { Problem } from '../kit.js';

/** The Ready=False reason: no VirtualMachine of that name in the namespace, on any node. */
export const MACHINE_NOT_FOUND = 'VirtualMachineNotFound';

/**
 * How long a new snapshot or restore is left to the agent of its machine's node, which claims
 * it within milliseconds when the machine exists. Without it, every object created would cost
 * a GET from every other agent of the cluster at once.
 */
export const CLAIM_GRACE_MS = 5_000;

/** What a snapshot or restore needs to have for the check. */
export interface MachinePart {
  metadata: {
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
  };
  status?: { phase?: string; conditions?: Condition[] };
}

export type MachineCheck =
  /** Claimed by an agent, past waiting, being deleted, or already reported: nothing to do. */
  | { op: 'none' }
  /** Too new: its machine's agent usually claims it first. Look again after `ms`. */
  | { op: 'wait'; ms: number }
  /** Ask the API server whether the machine exists anywhere. */
  | { op: 'lookUp' };

/**
 * Whether an agent that does not have `obj`'s machine in its cache should ask the API server
 * for it. `claimed`: an agent of the machine's node has acted on it (a snapshot's node
 * finalizer, a restore's status), so the machine existed there and that agent answers for it.
 */
export function planMachineCheck(obj: MachinePart, claimed: boolean, now: Date): MachineCheck {
  const phase = obj.status?.phase;
  if (claimed || obj.metadata.deletionTimestamp) return { op: 'none' };
  // Only a waiting object: a finished one keeps what it says (a machine's deletion deletes its
  // snapshots and restores anyway).
  if (phase !== undefined && phase !== 'Pending') return { op: 'none' };
  if (reportsMachineNotFound(obj)) return { op: 'none' };
  const created = Date.parse(obj.metadata.creationTimestamp ?? '');
  const age = Number.isFinite(created) ? now.getTime() - created : CLAIM_GRACE_MS;
  if (age < CLAIM_GRACE_MS) return { op: 'wait', ms: CLAIM_GRACE_MS - age };
  return { op: 'lookUp' };
}

/**
 * Whether an agent that had the machine wrote the status (any Ready condition but this
 * module's): for restores, which carry no finalizer to claim them by.
 */
export function reportedByMachineAgent(obj: MachinePart): boolean {
  const ready = findCondition(obj.status?.conditions, 'Ready');
  return ready !== undefined && ready.reason !== MACHINE_NOT_FOUND;
}

/** Whether the status already says the machine does not exist, for this generation. */
export function reportsMachineNotFound(obj: MachinePart): boolean {
  const ready = findCondition(obj.status?.conditions, 'Ready');
  return (
    ready?.reason === MACHINE_NOT_FOUND &&
    ready.observedGeneration === (obj.metadata.generation ?? 0)
  );
}

export function machineNotFound(namespace: string | undefined, vmName: string): Problem {
  return {
    reason: MACHINE_NOT_FOUND,
    message: `VirtualMachine ${vmName} does not exist in namespace ${namespace ?? ''}; waiting for it to be created`,
  };
}
