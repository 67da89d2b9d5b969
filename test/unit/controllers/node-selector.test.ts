import { describe, expect, it } from 'vitest';
import type { LabelSelector } from '../../../src/api/generated/types.js';
import { selectsNode } from '../../../src/controllers/node-selector.js';

const node = { 'kubernetes.io/hostname': 'n1', zone: 'a', gpu: '' };

describe('selectsNode', () => {
  const cases: Array<[string, LabelSelector | undefined, boolean]> = [
    ['absent selector selects every node', undefined, true],
    ['empty selector selects every node', {}, true],
    ['empty lists select every node', { matchLabels: {}, matchExpressions: [] }, true],
    ['matchLabels equal', { matchLabels: { zone: 'a' } }, true],
    ['matchLabels different value', { matchLabels: { zone: 'b' } }, false],
    ['matchLabels missing key', { matchLabels: { rack: '1' } }, false],
    ['matchLabels empty value matches an empty label', { matchLabels: { gpu: '' } }, true],
    [
      'matchLabels are ANDed',
      { matchLabels: { zone: 'a', 'kubernetes.io/hostname': 'n2' } },
      false,
    ],
    [
      'In with the value',
      { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b', 'a'] }] },
      true,
    ],
    [
      'In without the value',
      { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] },
      false,
    ],
    [
      'In on a missing key',
      { matchExpressions: [{ key: 'rack', operator: 'In', values: ['1'] }] },
      false,
    ],
    [
      'NotIn with the value',
      { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] },
      false,
    ],
    [
      'NotIn without the value',
      { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['b'] }] },
      true,
    ],
    [
      'NotIn on a missing key',
      { matchExpressions: [{ key: 'rack', operator: 'NotIn', values: ['1'] }] },
      true,
    ],
    ['Exists', { matchExpressions: [{ key: 'gpu', operator: 'Exists' }] }, true],
    ['Exists on a missing key', { matchExpressions: [{ key: 'rack', operator: 'Exists' }] }, false],
    ['DoesNotExist', { matchExpressions: [{ key: 'rack', operator: 'DoesNotExist' }] }, true],
    [
      'DoesNotExist on a present key',
      { matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] },
      false,
    ],
    [
      'labels and expressions are ANDed',
      { matchLabels: { zone: 'a' }, matchExpressions: [{ key: 'gpu', operator: 'DoesNotExist' }] },
      false,
    ],
    [
      'an unknown operator selects nothing',
      { matchExpressions: [{ key: 'zone', operator: 'Gt' as never, values: ['1'] }] },
      false,
    ],
    [
      'a key named like an Object property is not inherited',
      { matchExpressions: [{ key: 'toString', operator: 'Exists' }] },
      false,
    ],
  ];
  it.each(cases)('%s', (_name, selector, expected) => {
    expect(selectsNode(selector, node)).toBe(expected);
  });

  it('a node without labels is selected only by selectors that need no label', () => {
    expect(
      selectsNode({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, {}),
    ).toBe(true);
    expect(selectsNode({ matchLabels: { zone: 'a' } }, {})).toBe(false);
  });
});
