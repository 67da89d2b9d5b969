import { describe, expect, it } from 'vitest';
import { changedFields, normalMac, orNull } from '../../../src/ownership/owned.js';

describe('changedFields', () => {
  it('lists the dotted paths of differing leaves', () => {
    expect(
      changedFields({ a: 1, b: { c: 'x', d: true } }, { a: 2, b: { c: 'x', d: false } }),
    ).toEqual(['a', 'b.d']);
  });

  it('never reports what the desired side leaves undefined', () => {
    expect(changedFields({ a: undefined, b: { c: undefined } }, { a: 1, b: { c: 2 } })).toEqual([]);
  });

  it('treats null as "must be absent"', () => {
    expect(changedFields({ a: null }, { a: null })).toEqual([]);
    expect(changedFields({ a: null }, { a: 3 })).toEqual(['a']);
    expect(changedFields({ a: 3 }, { a: null })).toEqual(['a']);
    expect(changedFields<{ a: { b: number } | null }>({ a: { b: 1 } }, { a: null })).toEqual(['a']);
  });

  it('reports a list of another length as a whole, else item by item', () => {
    expect(changedFields({ l: [1, 2] }, { l: [1] })).toEqual(['l']);
    expect(changedFields({ l: [{ x: 1 }, { x: 2 }] }, { l: [{ x: 1 }, { x: 3 }] })).toEqual([
      'l[1].x',
    ]);
    expect(changedFields({ l: [] as number[] }, { l: [] as number[] })).toEqual([]);
  });

  it('compares bigints by value', () => {
    expect(changedFields({ n: 2n ** 64n }, { n: 2n ** 64n })).toEqual([]);
    expect(changedFields({ n: 2n ** 64n }, { n: 2n ** 64n + 1n })).toEqual(['n']);
  });

  it('ignores fields only the observed side has', () => {
    expect(changedFields({ a: 1 } as Record<string, number>, { a: 1, extra: 2 })).toEqual([]);
  });
});

describe('helpers', () => {
  it('orNull and normalMac', () => {
    expect(orNull(undefined)).toBeNull();
    expect(orNull(0)).toBe(0);
    expect(normalMac('52:54:00:AB:cd:EF')).toBe('52:54:00:ab:cd:ef');
    expect(normalMac(undefined)).toBeUndefined();
  });
});
