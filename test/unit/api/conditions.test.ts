import { describe, expect, test } from 'vitest';
import {
  conditionTime,
  findCondition,
  isConditionTrue,
  removeCondition,
  sameConditions,
  setCondition,
} from '../../../src/api/conditions.js';
import { validateManifest } from '../../../src/api/validate.js';

const t0 = new Date('2026-03-01T10:00:00.123Z');
const t1 = new Date('2026-03-01T10:05:00.999Z');

describe('conditions', () => {
  test('a new condition gets a whole-second lastTransitionTime', () => {
    const list = setCondition(
      undefined,
      {
        type: 'Ready',
        status: 'False',
        reason: 'Pending',
        message: 'waiting',
        observedGeneration: 3,
      },
      t0,
    );
    expect(list).toEqual([
      {
        type: 'Ready',
        status: 'False',
        reason: 'Pending',
        message: 'waiting',
        observedGeneration: 3,
        lastTransitionTime: '2026-03-01T10:00:00Z',
      },
    ]);
    expect(conditionTime(t1)).toBe('2026-03-01T10:05:00Z');
  });

  test('the transition time moves only when the status changes', () => {
    const first = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'Pending', message: 'a' },
      t0,
    );
    const sameStatus = setCondition(
      first,
      { type: 'Ready', status: 'False', reason: 'StillPending', message: 'b' },
      t1,
    );
    expect(sameStatus[0]).toMatchObject({
      reason: 'StillPending',
      message: 'b',
      lastTransitionTime: '2026-03-01T10:00:00Z',
    });
    const flipped = setCondition(
      sameStatus,
      { type: 'Ready', status: 'True', reason: 'Running', message: '' },
      t1,
    );
    expect(flipped[0]?.lastTransitionTime).toBe('2026-03-01T10:05:00Z');
    expect(first[0]?.reason).toBe('Pending'); // inputs are not changed
  });

  test('other types are kept in place; a new type is appended', () => {
    let list = setCondition(
      [],
      { type: 'Ready', status: 'True', reason: 'Running', message: '' },
      t0,
    );
    list = setCondition(
      list,
      { type: 'Synced', status: 'True', reason: 'Applied', message: '' },
      t0,
    );
    list = setCondition(
      list,
      { type: 'Ready', status: 'False', reason: 'Crashed', message: 'guest panic' },
      t1,
    );
    expect(list.map((c) => `${c.type}=${c.status}`)).toEqual(['Ready=False', 'Synced=True']);
    expect(findCondition(list, 'Synced')?.reason).toBe('Applied');
    expect(isConditionTrue(list, 'Synced')).toBe(true);
    expect(isConditionTrue(list, 'Ready')).toBe(false);
    expect(isConditionTrue(list, 'RestartRequired')).toBe(false);
    expect(removeCondition(list, 'Ready').map((c) => c.type)).toEqual(['Synced']);
  });

  test('reasons and types the API server would refuse are refused here, long messages are cut', () => {
    expect(() =>
      setCondition([], { type: 'Ready', status: 'True', reason: 'not a reason', message: '' }, t0),
    ).toThrow("condition reason 'not a reason'");
    expect(() =>
      setCondition([], { type: 'bad type!', status: 'True', reason: 'Ok', message: '' }, t0),
    ).toThrow("condition type 'bad type!'");
    const [c] = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'Failed', message: 'x'.repeat(40000) },
      t0,
    );
    expect(c?.message.length).toBe(32768);
  });

  test('conditions made here pass the CRD schema of every kind', () => {
    const conditions = setCondition(
      [],
      {
        type: 'RestartRequired',
        status: 'True',
        reason: 'PendingChanges',
        message: 'spec.firmware, spec.disks',
        observedGeneration: 2,
      },
      t0,
    );
    const vm = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'a' },
      spec: { nodeName: 'n', vcpus: 1, memory: '1Gi' },
      status: { conditions },
    };
    expect(validateManifest(vm)).toEqual([]);
  });

  test('sameConditions compares content, not order', () => {
    const a = setCondition(
      setCondition([], { type: 'Ready', status: 'True', reason: 'R', message: '' }, t0),
      { type: 'Synced', status: 'True', reason: 'S', message: '' },
      t0,
    );
    const b = [...a].reverse();
    expect(sameConditions(a, b)).toBe(true);
    expect(
      sameConditions(
        a,
        setCondition(a, { type: 'Ready', status: 'True', reason: 'R', message: 'changed' }, t1),
      ),
    ).toBe(false);
    expect(sameConditions(undefined, [])).toBe(true);
    expect(sameConditions(a, a.slice(1))).toBe(false);
  });
});
