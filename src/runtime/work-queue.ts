// The keyed work queue between watch events and reconciles. Its invariants, which the
// controller relies on:
//  - a key is queued at most once (adds coalesce);
//  - a key is never handed to two workers at once: an add while it is being processed marks
//    it dirty, and it is queued once more when the worker is done;
//  - delayed adds keep one timer per key, the earliest wins; a key that starts processing
//    drops its pending delayed add, because that reconcile sees the newest state and returns
//    its own requeue decision;
//  - failures back off per key (exponentially) and all retries share a token bucket, so a
//    storm of failing keys cannot hammer the API server.
import { backoffDelay, tokenBucket, type BackoffPolicy } from './backoff.js';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import type { RuntimeMetrics } from './metrics.js';

export interface WorkQueueOptions {
  name: string;
  clock?: Clock;
  /** Per-key retry delays. Default 5 ms doubling to 5 min (controller-runtime: 5 ms..1000 s). */
  backoff?: BackoffPolicy;
  /** Shared by all retries. Default 10 per second, burst 100 (controller-runtime's default). */
  retryRateLimit?: { perSecond: number; burst: number };
  metrics?: RuntimeMetrics;
}

export interface WorkQueue {
  add(key: string): void;
  /** Adds after `ms`; an earlier pending delayed add of the same key wins. */
  addAfter(key: string, ms: number): void;
  /** Adds after this key's next backoff step; returns the delay chosen. */
  addRateLimited(key: string): number;
  /** Resets a key's backoff, after it succeeded. */
  forget(key: string): void;
  failures(key: string): number;
  /** The next key to work on, waiting if none; undefined once the queue is shut down. */
  next(): Promise<string | undefined>;
  /** Must be called exactly once for every key `next` returned. */
  done(key: string): void;
  /** Keys waiting now (not delayed, not processing). */
  length(): number;
  processing(): string[];
  /** When a key's delayed add is due (ms since epoch), if it has one. */
  dueAt(key: string): number | undefined;
  /** Stops intake: adds are ignored, waiting and future `next` calls get undefined. */
  shutDown(): void;
  isShutDown(): boolean;
  /** Resolves true once no key is being processed, false if `timeoutMs` passes first. */
  drained(timeoutMs: number): Promise<boolean>;
}

export const DEFAULT_KEY_BACKOFF: BackoffPolicy = { initialMs: 5, maxMs: 5 * 60_000 };

export function createWorkQueue(opts: WorkQueueOptions): WorkQueue {
  const clock = opts.clock ?? systemClock;
  const backoff = opts.backoff ?? DEFAULT_KEY_BACKOFF;
  const limit = opts.retryRateLimit ?? { perSecond: 10, burst: 100 };
  const bucket = tokenBucket(limit.perSecond, limit.burst);
  const labels = { name: opts.name };
  const m = opts.metrics;

  // A Set keeps insertion order: the first element is the oldest queued key.
  const queued = new Set<string>();
  const queuedAt = new Map<string, number>();
  const active = new Map<string, number>();
  const dirty = new Set<string>();
  const delayed = new Map<string, { due: number; timer: TimerHandle }>();
  const failureCounts = new Map<string, number>();
  let waiters: ((key: string | undefined) => void)[] = [];
  let drainWaiters: (() => void)[] = [];
  let shutDown = false;

  const depthChanged = () => m?.queueDepth.set(labels, queued.size);

  const take = (): string => {
    const key = queued.values().next().value as string;
    queued.delete(key);
    const since = queuedAt.get(key);
    queuedAt.delete(key);
    if (since !== undefined) m?.queueLatency.observe(labels, (clock.now() - since) / 1000);
    const pending = delayed.get(key);
    if (pending) {
      clock.clearTimer(pending.timer);
      delayed.delete(key);
    }
    active.set(key, clock.now());
    depthChanged();
    return key;
  };

  const enqueue = (key: string) => {
    queued.add(key);
    queuedAt.set(key, clock.now());
    depthChanged();
    const waiter = waiters.shift();
    if (waiter) waiter(take());
  };

  const queue: WorkQueue = {
    add(key) {
      if (shutDown) return;
      m?.queueAdds.inc(labels);
      if (active.has(key)) dirty.add(key);
      else if (!queued.has(key)) enqueue(key);
    },
    addAfter(key, ms) {
      if (shutDown) return;
      if (ms <= 0) return queue.add(key);
      const due = clock.now() + ms;
      const pending = delayed.get(key);
      if (pending && pending.due <= due) return;
      if (pending) clock.clearTimer(pending.timer);
      const timer = clock.setTimer(() => {
        delayed.delete(key);
        queue.add(key);
      }, ms);
      delayed.set(key, { due, timer });
    },
    addRateLimited(key) {
      const n = failureCounts.get(key) ?? 0;
      failureCounts.set(key, n + 1);
      m?.queueRetries.inc(labels);
      const delay = Math.max(backoffDelay(backoff, n), bucket.reserve(clock.now()));
      queue.addAfter(key, delay);
      return delay;
    },
    forget: (key) => void failureCounts.delete(key),
    failures: (key) => failureCounts.get(key) ?? 0,
    next() {
      if (queued.size > 0) return Promise.resolve(take());
      if (shutDown) return Promise.resolve(undefined);
      return new Promise((resolve) => waiters.push(resolve));
    },
    done(key) {
      const started = active.get(key);
      if (started === undefined) return;
      active.delete(key);
      m?.queueWorkDuration.observe(labels, (clock.now() - started) / 1000);
      if (dirty.delete(key) && !shutDown) enqueue(key);
      if (active.size === 0) {
        const ws = drainWaiters;
        drainWaiters = [];
        for (const w of ws) w();
      }
    },
    length: () => queued.size,
    processing: () => [...active.keys()],
    dueAt: (key) => delayed.get(key)?.due,
    shutDown() {
      if (shutDown) return;
      shutDown = true;
      for (const { timer } of delayed.values()) clock.clearTimer(timer);
      delayed.clear();
      queued.clear();
      queuedAt.clear();
      dirty.clear();
      depthChanged();
      const ws = waiters;
      waiters = [];
      for (const w of ws) w(undefined);
    },
    isShutDown: () => shutDown,
    drained(timeoutMs) {
      if (active.size === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = clock.setTimer(() => {
          drainWaiters = drainWaiters.filter((w) => w !== onDrained);
          resolve(false);
        }, timeoutMs);
        const onDrained = () => {
          clock.clearTimer(timer);
          resolve(true);
        };
        drainWaiters.push(onDrained);
      });
    },
  };
  return queue;
}
