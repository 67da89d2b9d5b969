import { describe, expect, it } from 'vitest';
import { bindingStats, ErrorCode, LibvirtError, type Connect } from '../../../src/libvirt/index.js';
import { CallLanes } from '../../../src/libvirt/lanes.js';
import { TEST_URI } from './fixtures.js';

describe('CallLanes on test:///default', () => {
  it('opens its lanes at start, with worker threads for their calls, and spreads calls over them', async () => {
    const threads = bindingStats().workerThreads;
    const lanes = new CallLanes(TEST_URI, { lanes: 3, backoff: { initialMs: 10 } });
    try {
      lanes.start();
      // Each lane's calls can wait in the daemon at once without taking the others' threads.
      expect(bindingStats().workerThreads).toBeGreaterThanOrEqual(threads + 3 * 4);
      // Calls that are all in flight at once land on three different connections.
      const seen: Connect[] = [];
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const calls = [1, 2, 3].map((n) =>
        lanes.run(async (conn) => {
          seen.push(conn);
          await held;
          return n * 10;
        }),
      );
      while (seen.length < 3) await new Promise((r) => setTimeout(r, 5));
      expect(new Set(seen).size).toBe(3);
      expect(lanes.open).toBe(3);
      // A fourth goes to a lane with the fewest in flight; the calls' results come back.
      const fourth = lanes.run(async (conn) => {
        expect(seen).toContain(conn);
        return (await conn.getType()) as string;
      });
      release();
      expect(await Promise.all(calls)).toEqual([10, 20, 30]);
      expect(await fourth).toBe('TEST');
    } finally {
      await lanes.close();
    }
    await expect(lanes.run(async () => 1)).rejects.toThrow(/closed/);
  });

  it('passes a call error on, and replaces a lane whose connection failed', async () => {
    const lanes = new CallLanes(TEST_URI, { lanes: 1, backoff: { initialMs: 10 } });
    try {
      const first = await lanes.run(async (conn) => conn);
      const broken = new LibvirtError('gone', {
        code: ErrorCode.VIR_ERR_INVALID_CONN,
        domain: 0,
        level: 2,
      });
      await expect(
        lanes.run(async () => {
          throw broken;
        }),
      ).rejects.toBe(broken);
      const deadline = Date.now() + 5_000;
      let next = await lanes.run(async (conn) => conn);
      while (next === first && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
        next = await lanes.run(async (conn) => conn);
      }
      expect(next).not.toBe(first);
      expect(first.isClosed).toBe(true);
      expect(await next.getType()).toBe('TEST');
    } finally {
      await lanes.close();
    }
  });
});
