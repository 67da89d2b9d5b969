import { describe, expect, test } from 'vitest';
import {
  compareQuantities,
  isQuantity,
  parseQuantity,
  QuantityError,
} from '../../../src/api/quantity.js';

describe('parseQuantity', () => {
  test.each([
    ['1Gi', 1073741824n],
    ['512Mi', 536870912n],
    ['1Ki', 1024n],
    ['1.5Gi', 1610612736n],
    ['0.5Ki', 512n],
    ['1G', 1000000000n],
    ['1k', 1000n],
    ['1e3', 1000n],
    ['1E3', 1000n],
    ['1E', 1000000000000000000n],
    ['5.', 5n],
    ['.5', 1n], // half a byte rounds up to a whole one
    ['1500m', 2n],
    ['100n', 1n],
    ['0', 0n],
    ['+7', 7n],
    [1073741824, 1073741824n],
    ['16Ti', 17592186044416n],
    ['8Ei', 2n ** 63n - 1n], // binary quantities are capped at int64, as the API server caps them
  ] as const)('%s is %s bytes', (q, bytes) => {
    expect(parseQuantity(q)).toBe(bytes);
  });

  test.each([
    ['lots'],
    ['2 GB'],
    ['1Kb'],
    ['1e'],
    ['1e1.5'],
    ['.'],
    [''],
    ['1Ki1'],
    ['--1'],
    [1.5],
  ])('%s is refused with a message naming it', (q) => {
    expect(() => parseQuantity(q)).toThrow(QuantityError);
    expect(() => parseQuantity(q)).toThrow(`'${String(q)}' is not a Kubernetes quantity`);
  });

  test('negative sizes and sizes beyond int64 are refused', () => {
    expect(() => parseQuantity('-1Gi')).toThrow("'-1Gi' is negative");
    expect(() => parseQuantity('10E')).toThrow('larger than 2^63 - 1 bytes');
  });

  test('an exponent too large to evaluate is still answered at once', () => {
    expect(compareQuantities('1e2000000000', '16Ti')).toBe(1);
    expect(compareQuantities('1e-2000000000', '1')).toBe(-1);
    expect(isQuantity('1e3000000000')).toBe(false); // beyond int32: the API server refuses it
  });
});

describe('compareQuantities', () => {
  test.each([
    ['1Gi', '1024Mi', 0],
    ['1Gi', '1G', 1],
    ['1G', '1Gi', -1],
    ['1073741824', '1Gi', 0],
    [1073741824, '1Gi', 0],
    ['1.5Gi', '1536Mi', 0],
    ['-1Gi', '1Mi', -1],
    ['64Pi', '16Ti', 1],
    ['1000m', '1', 0],
    // The API server rounds to nano units first, so these two are equal for it.
    ['1.0000000001', '1.0000000002', 0],
  ] as const)('%s vs %s is %s', (a, b, expected) => {
    expect(compareQuantities(a, b)).toBe(expected);
  });
});

describe('isQuantity (CEL isQuantity, measured against kube-apiserver 1.36)', () => {
  test.each([
    ['1.5', true],
    ['1500m', true],
    ['0.5Ki', true],
    ['16Ei', true],
    ['1E3', true],
    ['1E', true],
    ['+1', true],
    ['-1', true],
    ['.5', true],
    ['5.', true],
    ['1e1.5', false],
    ['', false],
    ['1Ki1', false],
    ['lots', false],
  ] as const)('%s: %s', (q, expected) => {
    expect(isQuantity(q)).toBe(expected);
  });
});
