// A deleted machine whose domain is gone but whose removal waits (a restore another node's
// agent claimed) must say so in its status, not only in an Event: `kubectl get`, `kubectl
// wait` and kstatus read conditions. And it must not go on showing the run it no longer has.
import { describe, expect, it } from 'vitest';
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineStatus,
} from '../../../../src/api/generated/types.js';
import { restoresRefusedMessage } from '../../../../src/controllers/shared/restores.js';
import {
  DELETION_BLOCKED,
  machineStatus,
  removedStatus,
  RESTORE_CLAIMED_ELSEWHERE,
  saysDeletion,
} from '../../../../src/controllers/virtual-machine/status.js';
import { desired, NOW, ours, vm } from './machines.js';

const LATER = new Date(NOW.getTime() + 600_000);
const restore = {
  metadata: { name: 'back', namespace: 'prod', uid: 'r1' },
  spec: { vmName: 'web', snapshotName: 's' },
  status: { nodeName: 'node-gone' },
} as unknown as VirtualMachineRestore;
const wait = { reason: RESTORE_CLAIMED_ELSEWHERE, message: restoresRefusedMessage([restore]) };
const condition = (status: VirtualMachineStatus | undefined, type: string) =>
  status?.conditions?.find((c) => c.type === type);

/** The machine as the last pass before its removal left it: running, Ready. */
function runningMachine(): VirtualMachine {
  const machine = vm();
  const status = machineStatus({
    vm: machine,
    nodeName: 'node-a',
    now: NOW,
    observed: ours({ config: desired(machine), memoryActualKiB: 262144 }),
    problem: undefined,
    shutdown: undefined,
    started: undefined,
    pending: [],
  });
  expect(status.phase).toBe('Running');
  expect(condition(status, 'Ready')?.status).toBe('True');
  const deleting = vm({}, { status });
  deleting.metadata.deletionTimestamp = '2026-03-01T12:00:00Z';
  return deleting;
}

const withStatus = (machine: VirtualMachine, status: VirtualMachineStatus): VirtualMachine => ({
  ...machine,
  status,
});

describe('removedStatus', () => {
  it('says why the deletion waits, naming the restore, its node and both ways out', () => {
    const status = removedStatus({ vm: runningMachine(), nodeName: 'node-a', now: NOW, wait });
    const blocked = condition(status, DELETION_BLOCKED);
    expect(blocked).toMatchObject({
      status: 'True',
      reason: 'RestoreClaimedElsewhere',
      observedGeneration: 3,
    });
    expect(blocked?.message).toContain('VirtualMachineRestore prod/back');
    expect(blocked?.message).toContain('claimed by node node-gone');
    expect(blocked?.message).toContain("'libvirt-operator forget-node node-gone'");
    expect(blocked?.message).toContain('kubectl delete vmrestore back -n prod');
  });

  it('no longer shows the run the removal ended: Stopped, not Ready, Stalled', () => {
    const status = removedStatus({ vm: runningMachine(), nodeName: 'node-a', now: NOW, wait });
    expect(status.phase).toBe('Stopped');
    expect(status.state).toBeUndefined();
    expect(condition(status, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'RestoreClaimedElsewhere',
    });
    // Only an admin ends the wait: kstatus readers must not wait for it as for progress.
    expect(condition(status, 'Stalled')?.status).toBe('True');
    expect(condition(status, 'Reconciling')?.status).toBe('False');
  });

  it('is the same on every retry, so a lasting wait costs one write', () => {
    const machine = runningMachine();
    const first = removedStatus({ vm: machine, nodeName: 'node-a', now: NOW, wait });
    const waiting = withStatus(machine, first);
    expect(saysDeletion(waiting, wait)).toBe(true);
    expect(removedStatus({ vm: waiting, nodeName: 'node-a', now: LATER, wait })).toEqual(first);
  });

  it('says the same of the same restores in any order, so an agent restart writes nothing', () => {
    // The cache lists a machine's restores in the order their last change arrived; a restarted
    // agent lists them by name. A message in that order was a new status write and a second
    // DeletePending Event for the same wait.
    const other = {
      ...restore,
      metadata: { ...restore.metadata, name: 'aback', uid: 'r0' },
    } as VirtualMachineRestore;
    const machine = runningMachine();
    const before = {
      reason: RESTORE_CLAIMED_ELSEWHERE,
      message: restoresRefusedMessage([restore, other]),
    };
    const waiting = withStatus(
      machine,
      removedStatus({ vm: machine, nodeName: 'node-a', now: NOW, wait: before }),
    );
    const after = {
      reason: RESTORE_CLAIMED_ELSEWHERE,
      message: restoresRefusedMessage([other, restore]),
    };
    expect(saysDeletion(waiting, after)).toBe(true);
  });

  it('clears DeletionBlocked once the wait is over', () => {
    const machine = runningMachine();
    const waiting = withStatus(
      machine,
      removedStatus({ vm: machine, nodeName: 'node-a', now: NOW, wait }),
    );
    expect(saysDeletion(waiting, undefined)).toBe(false);
    const over = removedStatus({ vm: waiting, nodeName: 'node-a', now: LATER, wait: undefined });
    expect(condition(over, DELETION_BLOCKED)).toBeUndefined();
    expect(condition(over, 'Ready')).toMatchObject({ status: 'False', reason: 'Removed' });
    expect(condition(over, 'Stalled')?.status).toBe('False');
    expect(saysDeletion(withStatus(machine, over), undefined)).toBe(true);
  });

  it('writes nothing for a machine that never waited', () => {
    expect(saysDeletion(runningMachine(), undefined)).toBe(true);
  });

  it('leaves a machine not being deleted whose domain is missing Pending', () => {
    const machine = vm();
    const status = machineStatus({
      vm: machine,
      nodeName: 'node-a',
      now: NOW,
      observed: { state: 'absent' },
      problem: undefined,
      shutdown: undefined,
      started: undefined,
      pending: [],
    });
    expect(status.phase).toBe('Pending');
  });
});

// While the domain is still on the node (the guest shutting down for the deletion), Ready
// said True `Running` beside phase Stopping, and kstatus read the machine Current.
describe('machineStatus of a machine being deleted whose domain is still there', () => {
  const removal = (observed: ReturnType<typeof ours>, machine = runningMachine()) =>
    machineStatus({
      vm: machine,
      nodeName: 'node-a',
      now: NOW,
      observed,
      problem: undefined,
      shutdown: 'Deleting',
      started: undefined,
      pending: [],
      shutdownSentAt: NOW,
    });

  it('says the guest is shutting down for the deletion, with the grace period: not Ready', () => {
    const machine = runningMachine();
    machine.spec.terminationGracePeriodSeconds = 45;
    const status = removal(ours({ config: desired(machine) }), machine);
    expect(status.phase).toBe('Stopping');
    expect(condition(status, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'Deleting',
      message: expect.stringContaining(
        'the machine is being deleted: waiting for the guest to shut down ' +
          '(terminationGracePeriodSeconds 45s',
      ),
    });
    // On its way by itself: in progress, not waiting for a user.
    expect(condition(status, 'Reconciling')?.status).toBe('True');
    expect(condition(status, 'Stalled')?.status).toBe('False');
    expect(condition(status, 'ShutdownRequested')?.reason).toBe('Deleting');
  });

  it('says the domain is destroyed at once with a grace period of 0', () => {
    const machine = runningMachine();
    machine.spec.terminationGracePeriodSeconds = 0;
    const status = removal(ours({ config: desired(machine) }), machine);
    expect(condition(status, 'Ready')?.message).toBe(
      'the machine is being deleted: destroying the domain at once, as ' +
        'terminationGracePeriodSeconds is 0',
    );
  });

  it('shows a shut-off domain awaiting its undefine as Stopped, not Starting', () => {
    const machine = runningMachine();
    const status = removal(ours({ active: false, config: desired(machine) }), machine);
    expect(status.phase).toBe('Stopped');
    expect(condition(status, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'Deleting',
      message: 'the machine is being deleted: the domain is shut off; undefining it',
    });
  });

  it('is the same on the next pass, so the wait costs no further write', () => {
    const machine = runningMachine();
    const observed = ours({ config: desired(machine) });
    const first = removal(observed, machine);
    expect(removal(observed, withStatus(machine, first))).toEqual(first);
  });
});
