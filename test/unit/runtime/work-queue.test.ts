import { describe, expect, it } from 'vitest';
import { createWorkQueue } from '../../../src/runtime/work-queue.js';
import { manualClock } from './manual-clock.js';

const noLimit = { perSecond: 1e9, burst: 1e9 };

describe('work queue', () => {
  it('coalesces repeated adds of a waiting key into one', async () => {
    const q = createWorkQueue({ name: 't', clock: manualClock() });
    for (let i = 0; i < 1000; i++) q.add('a');
    q.add('b');
    expect(q.length()).toBe(2);
    expect(await q.next()).toBe('a');
    expect(await q.next()).toBe('b');
    expect(q.length()).toBe(0);
  });

  it('never hands out a key being processed; an add meanwhile requeues it once afterwards', async () => {
    const q = createWorkQueue({ name: 't', clock: manualClock() });
    q.add('a');
    const key = await q.next();
    expect(key).toBe('a');
    for (let i = 0; i < 50; i++) q.add('a');
    expect(q.length()).toBe(0);
    expect(q.processing()).toEqual(['a']);
    q.done('a');
    expect(q.length()).toBe(1);
    expect(await q.next()).toBe('a');
    q.done('a');
    expect(q.length()).toBe(0);
    expect(q.processing()).toEqual([]);
  });

  it('wakes a waiting worker when a key arrives', async () => {
    const q = createWorkQueue({ name: 't', clock: manualClock() });
    const waiting = q.next();
    q.add('x');
    expect(await waiting).toBe('x');
  });

  it('keeps the earliest of several delayed adds of a key', async () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock });
    q.addAfter('a', 5000);
    q.addAfter('a', 1000);
    q.addAfter('a', 3000);
    expect(q.dueAt('a')).toBe(clock.now() + 1000);
    clock.advance(999);
    expect(q.length()).toBe(0);
    clock.advance(1);
    expect(q.length()).toBe(1);
    expect(clock.pending()).toBe(0);
  });

  it('drops a pending delayed add when the key starts processing (the newest reconcile decides)', async () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock });
    q.addAfter('a', 1000);
    q.add('a');
    expect(await q.next()).toBe('a');
    expect(q.dueAt('a')).toBeUndefined();
    q.done('a');
    clock.advance(5000);
    expect(q.length()).toBe(0);
  });

  it('backs a failing key off exponentially, from 5 ms to the 5 min cap, and forget resets it', () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock, retryRateLimit: noLimit });
    const delays = Array.from({ length: 20 }, () => q.addRateLimited('bad'));
    expect(delays.slice(0, 5)).toEqual([5, 10, 20, 40, 80]);
    for (let i = 1; i < delays.length; i++)
      expect(delays[i]).toBeGreaterThanOrEqual(delays[i - 1]!);
    expect(delays.at(-1)).toBe(300_000);
    q.forget('bad');
    expect(q.addRateLimited('bad')).toBe(5);
  });

  it('lets other keys proceed while one key is backing off', async () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock, retryRateLimit: noLimit });
    for (let i = 0; i < 10; i++) q.addRateLimited('bad');
    q.add('good1');
    q.add('good2');
    expect(await q.next()).toBe('good1');
    q.done('good1');
    expect(await q.next()).toBe('good2');
    q.done('good2');
    expect(q.length()).toBe(0);
    clock.advance(q.dueAt('bad')! - clock.now());
    expect(await q.next()).toBe('bad');
  });

  it('spaces retries of many keys by the shared token bucket', () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock, retryRateLimit: { perSecond: 10, burst: 5 } });
    const delays = Array.from({ length: 10 }, (_, i) => q.addRateLimited(`k${i}`));
    // five from the burst at the per-key 5 ms, then one every 100 ms
    expect(delays.slice(0, 5)).toEqual([5, 5, 5, 5, 5]);
    expect(delays.slice(5).map(Math.round)).toEqual([100, 200, 300, 400, 500]);
  });

  it('on shutdown ignores adds, releases waiters, and reports drain within a bound', async () => {
    const clock = manualClock();
    const q = createWorkQueue({ name: 't', clock });
    q.add('a');
    q.add('b');
    expect(await q.next()).toBe('a');
    const second = createWorkQueue({ name: 'u', clock });
    const waiting = second.next();
    second.shutDown();
    expect(await waiting).toBeUndefined();

    q.shutDown();
    q.add('c');
    expect(q.length()).toBe(0);
    expect(await q.next()).toBeUndefined();
    const drained = q.drained(1000);
    clock.advance(500);
    q.done('a');
    expect(await drained).toBe(true);

    q.add('x');
    const stuck = createWorkQueue({ name: 'v', clock });
    stuck.add('k');
    await stuck.next();
    stuck.shutDown();
    const bounded = stuck.drained(1000);
    clock.advance(1000);
    expect(await bounded).toBe(false);
  });
});
