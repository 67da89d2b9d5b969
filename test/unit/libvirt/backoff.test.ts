import { describe, expect, it } from 'vitest';
import { backoffDelay, type Backoff } from '../../../src/libvirt/backoff.js';

const backoff: Backoff = { initialMs: 250, maxMs: 10_000, factor: 2, jitter: 0.2 };

describe('backoffDelay', () => {
  it('doubles from the initial delay up to the maximum', () => {
    const mid = (attempt: number) => backoffDelay(backoff, attempt, 0.5);
    expect([0, 1, 2, 3, 4, 5, 6, 10].map(mid)).toEqual([
      250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000,
    ]);
  });

  it('spreads each delay by the jitter fraction', () => {
    expect(backoffDelay(backoff, 2, 0)).toBe(800);
    expect(backoffDelay(backoff, 2, 0.999999)).toBe(1200);
    expect(backoffDelay({ ...backoff, jitter: 0 }, 2, 0.9)).toBe(1000);
  });
});
