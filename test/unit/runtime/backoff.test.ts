import { describe, expect, it } from 'vitest';
import { backoffDelay, tokenBucket } from '../../../src/runtime/backoff.js';
import { DEFAULT_WATCH_BACKOFF } from '../../../src/runtime/reflector.js';

describe('backoff', () => {
  it('doubles from the initial delay and stops at the cap', () => {
    const p = { initialMs: 800, maxMs: 30_000 };
    expect([0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(p, n))).toEqual([
      800, 1600, 3200, 6400, 12800, 25600, 30000,
    ]);
    expect(backoffDelay(p, 10_000)).toBe(30_000);
  });

  it('jitters watch restarts within [d/2, d], so reconnects spread out', () => {
    expect(backoffDelay(DEFAULT_WATCH_BACKOFF, 0, () => 0)).toBe(800);
    expect(backoffDelay(DEFAULT_WATCH_BACKOFF, 0, () => 1)).toBe(400);
    expect(backoffDelay(DEFAULT_WATCH_BACKOFF, 20, () => 0.999)).toBeGreaterThanOrEqual(15_000);
  });

  it('token bucket: a burst is free, then tokens arrive at the rate', () => {
    const b = tokenBucket(2, 3);
    const t = 1000;
    expect([b.reserve(t), b.reserve(t), b.reserve(t)]).toEqual([0, 0, 0]);
    expect(b.reserve(t)).toBe(500);
    expect(b.reserve(t)).toBe(1000);
    expect(b.tryTake(t + 1000)).toBe(false);
    expect(b.tryTake(t + 1500)).toBe(true);
  });

  it('rejects a bucket that could never give a token', () => {
    expect(() => tokenBucket(0, 1)).toThrow(/ratePerSecond > 0/);
  });
});
