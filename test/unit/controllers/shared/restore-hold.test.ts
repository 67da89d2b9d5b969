// How a restore holds its machine: a running revert makes the machine's controller stand aside;
// a begun revert that waits for a user (VolumeHasOverlays) only keeps its definition, so that
// stop, crash restarts and status go on (and the machine says what holds it).
import { describe, expect, it } from 'vitest';
import type { VirtualMachine, VirtualMachineRestore } from '../../../../src/api/generated/types.js';
import { restoreHoldOf } from '../../../../src/controllers/shared/restores.js';
import {
  restoreHoldProblem,
  withRestoreHold,
} from '../../../../src/controllers/virtual-machine/status.js';

const vm = {
  metadata: { name: 'vm', namespace: 'ns', uid: 'vm-uid' },
  spec: { nodeName: 'a' },
} as unknown as VirtualMachine;
const restore = (name: string, phase?: string, reason?: string, vmUid?: string) =>
  ({
    metadata: { name, namespace: 'ns', uid: `${name}-uid` },
    spec: { vmName: 'vm', snapshotName: 's' },
    status: {
      ...(phase ? { phase } : {}),
      ...(vmUid ? { vmUid } : {}),
      ...(reason ? { conditions: [{ type: 'Ready', status: 'False', reason, message: 'm' }] } : {}),
    },
  }) as unknown as VirtualMachineRestore;

describe('restoreHoldOf', () => {
  it('holds the machine wholly for a running or recorded revert', () => {
    expect(restoreHoldOf(vm, [restore('r')], 'r-uid')).toEqual({ name: 'r' });
    expect(restoreHoldOf(vm, [], 'gone-uid')).toEqual({ name: 'with uid gone-uid' });
    expect(restoreHoldOf(vm, [restore('r', 'InProgress', 'Reverting')], undefined)).toEqual({
      name: 'r',
    });
    expect(restoreHoldOf(vm, [restore('r', 'InProgress')], undefined)).toEqual({ name: 'r' });
  });

  it('only keeps the definition for a begun revert that waits for a user', () => {
    expect(restoreHoldOf(vm, [restore('r', 'InProgress', 'VolumeHasOverlays')], undefined)).toEqual(
      { name: 'r', waiting: { reason: 'VolumeHasOverlays' } },
    );
  });

  it('is not held by waiting, ended or another machine’s restores', () => {
    const none = [
      restore('p', 'Pending', 'VolumeHasOverlays'),
      restore('s', 'Succeeded'),
      restore('f', 'Failed', 'RevertFailed'),
      restore('old', 'InProgress', 'Reverting', 'earlier-vm-uid'),
    ];
    expect(restoreHoldOf(vm, none, undefined)).toBeUndefined();
  });
});

describe('restoreHoldProblem', () => {
  it('names the restore and how to get the machine back', () => {
    expect(restoreHoldProblem(vm, { name: 'r' })).toMatchObject({
      reason: 'RestoreInProgress',
      message: expect.stringContaining('VirtualMachineRestore r is reverting the domain'),
    });
    expect(
      restoreHoldProblem(vm, { name: 'r', waiting: { reason: 'VolumeHasOverlays' } }).message,
    ).toContain('delete the restore (kubectl delete vmrestore r -n ns) to have them applied now');
  });

  it('keeps a problem of the machine’s own first, saying the hold after it', () => {
    const held = { reason: 'RestoreInProgress', message: 'held' };
    expect(withRestoreHold(undefined, held)).toEqual(held);
    expect(withRestoreHold({ reason: 'VolumeHasOverlays', message: 'own' }, held)).toEqual({
      reason: 'VolumeHasOverlays',
      message: 'own; held',
    });
    expect(withRestoreHold({ reason: 'X', message: 'own' }, undefined)).toEqual({
      reason: 'X',
      message: 'own',
    });
  });
});
