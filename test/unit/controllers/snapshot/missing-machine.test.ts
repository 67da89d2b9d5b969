import { describe, expect, it } from 'vitest';
import { progressConditions, setCondition } from '../../../../src/api/conditions.js';
import {
  CLAIM_GRACE_MS,
  MACHINE_NOT_FOUND,
  machineNotFound,
  planMachineCheck,
  reportedByMachineAgent,
  type MachinePart,
} from '../../../../src/controllers/shared/missing-machine.js';
import { snapshotStatus } from '../../../../src/controllers/virtual-machine-snapshot/status.js';
import { restoreStatus } from '../../../../src/controllers/virtual-machine-restore/status.js';
import type {
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../../../src/api/generated/types.js';

const created = '2026-12-03T12:00:00Z';
const later = (ms: number) => new Date(Date.parse(created) + ms);
const part = (over: Partial<MachinePart['metadata']> = {}, status?: MachinePart['status']) => ({
  metadata: { generation: 1, creationTimestamp: created, ...over },
  ...(status ? { status } : {}),
});
const ready = (reason: string, observedGeneration = 1) =>
  setCondition(
    undefined,
    { type: 'Ready', status: 'False', reason, message: 'm', observedGeneration },
    later(0),
  );

describe('planMachineCheck: when an agent without the machine asks whether it exists', () => {
  it('leaves a new object to its machine’s agent for the grace period, then looks', () => {
    expect(planMachineCheck(part(), false, later(1_000))).toEqual({
      op: 'wait',
      ms: CLAIM_GRACE_MS - 1_000,
    });
    expect(planMachineCheck(part(), false, later(CLAIM_GRACE_MS))).toEqual({ op: 'lookUp' });
    // No creation time (never from the API server): no reason to wait.
    expect(planMachineCheck(part({ creationTimestamp: undefined }), false, later(0))).toEqual({
      op: 'lookUp',
    });
  });

  it('never for a claimed, deleting, finished or already reported object', () => {
    const old = later(60_000);
    expect(planMachineCheck(part(), true, old)).toEqual({ op: 'none' });
    expect(planMachineCheck(part({ deletionTimestamp: created }), false, old)).toEqual({
      op: 'none',
    });
    for (const phase of ['InProgress', 'Ready', 'Failed', 'Succeeded'])
      expect(planMachineCheck(part({}, { phase }), false, old), phase).toEqual({ op: 'none' });
    const reported = { phase: 'Pending', conditions: ready(MACHINE_NOT_FOUND) };
    expect(planMachineCheck(part({}, reported), false, old)).toEqual({ op: 'none' });
  });

  it('looks again when the report is of an older generation', () => {
    const reported = { phase: 'Pending', conditions: ready(MACHINE_NOT_FOUND, 1) };
    expect(planMachineCheck(part({ generation: 2 }, reported), false, later(60_000))).toEqual({
      op: 'lookUp',
    });
  });
});

describe('reportedByMachineAgent: a restore’s claim', () => {
  it('is any Ready condition but the not-found one', () => {
    expect(reportedByMachineAgent(part())).toBe(false);
    expect(reportedByMachineAgent(part({}, { conditions: ready(MACHINE_NOT_FOUND) }))).toBe(false);
    expect(reportedByMachineAgent(part({}, { conditions: ready('SnapshotNotFound') }))).toBe(true);
  });
});

describe('the not-found status', () => {
  const problem = machineNotFound('ns', 'wbe');

  it('names the machine and namespace, and is waiting, not stalled (kstatus InProgress)', () => {
    expect(problem).toEqual({
      reason: 'VirtualMachineNotFound',
      message: 'VirtualMachine wbe does not exist in namespace ns; waiting for it to be created',
    });
    const [reconciling, stalled] = progressConditions({ status: 'False', ...problem });
    expect(reconciling.status).toBe('True');
    expect(stalled.status).toBe('False');
  });

  it('is a Pending snapshot or restore with Ready=False', () => {
    const snap: VirtualMachineSnapshot = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachineSnapshot',
      metadata: { name: 's', namespace: 'ns', generation: 1 },
      spec: { vmName: 'wbe', includeMemory: true },
    };
    const restore: VirtualMachineRestore = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachineRestore',
      metadata: { name: 'r', namespace: 'ns', generation: 1 },
      spec: { vmName: 'wbe', snapshotName: 's' },
    };
    for (const status of [
      snapshotStatus(snap, { phase: 'Pending', ...problem }, later(0)),
      restoreStatus(restore, { phase: 'Pending', ...problem }, later(0)),
    ]) {
      expect(status.phase).toBe('Pending');
      expect(status.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
        status: 'False',
        reason: MACHINE_NOT_FOUND,
        observedGeneration: 1,
      });
      // What planMachineCheck reads as already reported: the next pass neither reads nor writes.
      expect(planMachineCheck({ ...snap, status }, false, later(60_000))).toEqual({ op: 'none' });
    }
  });
});
