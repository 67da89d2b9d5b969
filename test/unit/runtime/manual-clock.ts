import type { Clock, TimerHandle } from '../../../src/runtime/clock.js';

/** A clock that moves only when the test says so; due timers fire in time order. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
  pending(): number;
}

export function manualClock(start = 1_000_000): ManualClock {
  let now = start;
  let nextId = 1;
  const timers = new Map<number, { due: number; fn: () => void }>();
  return {
    now: () => now,
    setTimer(fn, ms) {
      const id = nextId++;
      timers.set(id, { due: now + Math.max(0, ms), fn });
      return { id };
    },
    clearTimer(h: TimerHandle) {
      timers.delete((h as { id: number }).id);
    },
    advance(ms) {
      const target = now + ms;
      while (true) {
        let first: [number, { due: number; fn: () => void }] | undefined;
        for (const entry of timers)
          if (entry[1].due <= target && (!first || entry[1].due < first[1].due)) first = entry;
        if (!first) break;
        timers.delete(first[0]);
        now = first[1].due;
        first[1].fn();
      }
      now = target;
    },
    pending: () => timers.size,
  };
}
