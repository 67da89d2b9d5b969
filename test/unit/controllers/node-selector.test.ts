import { describe, expect, it } from 'vitest';
import { selectorQuery, selectsNode } from '../../../src/controllers/node-selector.js';
import { NODE_LABELS, SELECTOR_CASES } from '../../fixtures/node-selectors.js';

const node = NODE_LABELS;

describe('selectsNode', () => {
  const cases = SELECTOR_CASES;
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

describe('selectorQuery', () => {
  it('writes the label-selector query the API server parses', () => {
    expect(selectorQuery(undefined)).toBe('');
    expect(selectorQuery({})).toBe('');
    expect(
      selectorQuery({
        matchLabels: { zone: 'a', gpu: '' },
        matchExpressions: [
          { key: 'rack', operator: 'In', values: ['1', '2'] },
          { key: 'os', operator: 'NotIn', values: ['win'] },
          { key: 'ssd', operator: 'Exists' },
          { key: 'old', operator: 'DoesNotExist' },
        ],
      }),
    ).toBe('zone=a,gpu=,rack in (1,2),os notin (win),ssd,!old');
  });

  it('says "no node" where the query language has no word for the selector', () => {
    expect(
      selectorQuery({ matchExpressions: [{ key: 'zone', operator: 'Gt' as never }] }),
    ).toBeUndefined();
    expect(
      selectorQuery({ matchExpressions: [{ key: 'zone', operator: 'In', values: [] }] }),
    ).toBeUndefined();
    // An empty NotIn excludes nothing.
    expect(
      selectorQuery({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: [] }] }),
    ).toBe('');
  });
});
