// The birth time of a pool's file, read only when its ctime cannot tell whether a Volume made
// it (plan.ts birthTimeDecides): never waited for beyond the header read's bound, and unknown
// (undefined) where the file system keeps none.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileBornAt } from '../../../../src/controllers/volume/observe.js';

describe('fileBornAt', () => {
  it("is a real file's birth time (this machine's ext4 keeps it)", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'born-at-'));
    try {
      const before = Date.now();
      await writeFile(path.join(dir, 'f'), 'x');
      const born = await fileBornAt(path.join(dir, 'f'));
      expect(born?.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(born?.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      expect(await fileBornAt(path.join(dir, 'missing'))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true });
    }
  });
  it('is unknown where the file system keeps none (0), or when the look does not answer', async () => {
    expect(await fileBornAt('/x', 1000, async () => ({ birthtimeMs: 0 }))).toBeUndefined();
    const started = Date.now();
    const hung = () => new Promise<{ birthtimeMs: number }>(() => undefined);
    expect(await fileBornAt('/x', 50, hung)).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
