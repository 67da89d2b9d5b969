import { describe, expect, it } from 'vitest';
import {
  lockedPools,
  withPoolLock,
  type PoolLocks,
} from '../../../../src/controllers/shared/pool-lock.js';

const locks: PoolLocks = new Map();

const tick = () => new Promise((r) => setImmediate(r));

describe('withPoolLock', () => {
  it('runs operations on one pool one at a time, in arrival order', async () => {
    const log: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const op = (id: number) =>
      withPoolLock(locks, 'p', async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        log.push(`start ${id}`);
        await tick();
        await tick();
        log.push(`end ${id}`);
        running--;
        return id;
      });
    const results = await Promise.all([1, 2, 3, 4, 5].map(op));
    expect(results).toEqual([1, 2, 3, 4, 5]);
    expect(maxRunning).toBe(1);
    expect(log).toEqual([1, 2, 3, 4, 5].flatMap((i) => [`start ${i}`, `end ${i}`]));
    expect(lockedPools(locks)).toEqual([]);
  });

  it('lets different pools run in parallel', async () => {
    let running = 0;
    let maxRunning = 0;
    const op = (pool: string) =>
      withPoolLock(locks, pool, async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await tick();
        running--;
      });
    await Promise.all([op('a'), op('b'), op('c')]);
    expect(maxRunning).toBe(3);
  });

  it('releases the lock when an operation fails, and passes the error on', async () => {
    const failing = withPoolLock(locks, 'q', async () => {
      await tick();
      throw new Error('libvirt said no');
    });
    const next = withPoolLock(locks, 'q', async () => 'ran');
    await expect(failing).rejects.toThrow('libvirt said no');
    await expect(next).resolves.toBe('ran');
    expect(lockedPools(locks)).toEqual([]);
  });

  it('holds the pool while an operation waits', async () => {
    let release!: () => void;
    const held = withPoolLock(locks, 'r', () => new Promise<void>((r) => (release = r)));
    await tick();
    expect(lockedPools(locks)).toContain('r');
    let second = false;
    const next = withPoolLock(locks, 'r', async () => {
      second = true;
    });
    await tick();
    expect(second).toBe(false);
    release();
    await Promise.all([held, next]);
    expect(second).toBe(true);
  });
});
