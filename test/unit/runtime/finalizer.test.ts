import { describe, expect, it } from 'vitest';
import {
  addFinalizerPatch,
  finalizerStep,
  removeFinalizerPatch,
} from '../../../src/runtime/finalizer.js';
import type { KubeObject } from '../../../src/runtime/resource.js';

const F = 'example.com/cleanup';
const obj = (finalizers?: string[], deleting = false): KubeObject => ({
  metadata: {
    name: 'x',
    finalizers,
    ...(deleting ? { deletionTimestamp: '2030-01-01T00:00:00Z' } : {}),
  },
});

describe('finalizer table', () => {
  it.each([
    [undefined, false, 'add'],
    [['other.io/x'], false, 'add'],
    [[F], false, 'apply'],
    [[F], true, 'cleanup'],
    [['other.io/x', F], true, 'cleanup'],
    [undefined, true, 'nothing'],
    [['other.io/x'], true, 'nothing'],
  ] as const)('finalizers %j, deleting %s -> %s', (finalizers, deleting, step) => {
    expect(finalizerStep(obj(finalizers ? [...finalizers] : undefined, deleting), F)).toBe(step);
  });

  it('adds with a test that the list is still what we read (null when absent)', () => {
    expect(addFinalizerPatch(obj(), F)).toEqual([
      { op: 'test', path: '/metadata/finalizers', value: null },
      { op: 'add', path: '/metadata/finalizers', value: [F] },
    ]);
    expect(addFinalizerPatch(obj(['a.io/b']), F)).toEqual([
      { op: 'test', path: '/metadata/finalizers', value: ['a.io/b'] },
      { op: 'add', path: '/metadata/finalizers/-', value: F },
    ]);
  });

  it('removes by index with a test that the index still holds our name', () => {
    expect(removeFinalizerPatch(obj(['a.io/b', F]), F)).toEqual([
      { op: 'test', path: '/metadata/finalizers/1', value: F },
      { op: 'remove', path: '/metadata/finalizers/1' },
    ]);
    expect(removeFinalizerPatch(obj(['a.io/b']), F)).toEqual([]);
  });
});
