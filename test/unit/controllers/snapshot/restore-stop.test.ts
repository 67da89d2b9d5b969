// restoreStoppedRun: whether a finished restore's power-off stopped the machine's current run,
// as a successor agent tells it from the objects alone (the process that powered the domain
// off keeps it in memory, which a kill loses).
import { describe, expect, it } from 'vitest';
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../../../src/api/generated/types.js';
import { restoreStoppedRun } from '../../../../src/controllers/shared/restores.js';

const VM_UID = 'vm-uid';
const vm = (startedAt?: string): VirtualMachine =>
  ({
    metadata: { name: 'web', namespace: 'ns', uid: VM_UID },
    spec: { nodeName: 'n' },
    ...(startedAt ? { status: { startedAt } } : {}),
  }) as VirtualMachine;
const restore = (
  status: Partial<NonNullable<VirtualMachineRestore['status']>>,
  snapshotName = 'disks',
): VirtualMachineRestore =>
  ({
    metadata: { name: 'r', namespace: 'ns' },
    spec: { vmName: 'web', snapshotName },
    status: { phase: 'Succeeded', vmUid: VM_UID, ...status },
  }) as VirtualMachineRestore;
const snapshots: Record<string, VirtualMachineSnapshot> = {
  disks: { status: { includesMemory: false } } as VirtualMachineSnapshot,
  checkpoint: { status: { includesMemory: true } } as VirtualMachineSnapshot,
};
const snapshotOf = (r: VirtualMachineRestore) => snapshots[r.spec.snapshotName];

const RUN = '2026-12-06T12:00:00Z';
const LATER = '2026-12-06T12:00:07Z';
const EARLIER = '2026-12-06T11:59:50Z';

describe('restoreStoppedRun', () => {
  it.each([
    [
      'a disks-only restore begun after the run was first seen',
      vm(RUN),
      [restore({ startTime: LATER })],
      true,
    ],
    [
      'an earlier restore, whose power-off this run followed',
      vm(LATER),
      [restore({ startTime: RUN })],
      false,
    ],
    [
      'a restore begun in the run’s first second (whole seconds)',
      vm(RUN),
      [restore({ startTime: RUN })],
      false,
    ],
    [
      'a checkpoint with memory: it resumes the run',
      vm(RUN),
      [restore({ startTime: LATER }, 'checkpoint')],
      false,
    ],
    ['a snapshot no longer there', vm(RUN), [restore({ startTime: LATER }, 'gone')], false],
    [
      'a disks-only restore whose snapshot went since: as its InProgress write recorded',
      vm(RUN),
      [restore({ startTime: LATER, includesMemory: false }, 'gone')],
      true,
    ],
    [
      'a disks-only restore whose snapshot was made again since as a checkpoint',
      vm(RUN),
      [restore({ startTime: LATER, includesMemory: false }, 'checkpoint')],
      true,
    ],
    [
      'a restore of a checkpoint whose name now holds a disks-only snapshot',
      vm(RUN),
      [restore({ startTime: LATER, includesMemory: true }, 'disks')],
      false,
    ],
    [
      'a restore still in progress',
      vm(RUN),
      [restore({ phase: 'InProgress', startTime: LATER })],
      false,
    ],
    ['a failed restore', vm(RUN), [restore({ phase: 'Failed', startTime: LATER })], false],
    [
      'a restore of an earlier machine of that name',
      vm(RUN),
      [restore({ startTime: LATER, vmUid: 'old' })],
      false,
    ],
    ['a machine never seen running', vm(), [restore({ startTime: LATER })], false],
    [
      'one of several restores',
      vm(RUN),
      [restore({ startTime: EARLIER }), restore({ startTime: LATER })],
      true,
    ],
  ])('%s: %s', (_what, machine, restores, expected) => {
    expect(restoreStoppedRun(machine, restores, snapshotOf)).toBe(expected);
  });
});
