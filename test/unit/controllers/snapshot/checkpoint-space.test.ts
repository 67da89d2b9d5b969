// A checkpoint waits for room for the memory the guest uses in its disk's file system (plan.ts).
import { describe, expect, it } from 'vitest';
import {
  checkpointNeeds,
  checkpointSpaceProblem,
} from '../../../../src/controllers/virtual-machine-snapshot/plan.js';

const MiB = 2n ** 20n;
// A 256 MiB guest whose QEMU process holds more than that (the guest touched all of it); null:
// no rss reported.
const room = (free: bigint, rss: bigint | null = 300n * MiB) => ({
  disk: 'vda',
  path: '/p/disk',
  memory: 256n * MiB,
  ...(rss === null ? {} : { rss }),
  free,
});

describe('checkpointNeeds', () => {
  it("is the QEMU process's resident memory when below the guest's memory", () => {
    expect(checkpointNeeds(room(0n, 40n * MiB))).toBe(40n * MiB);
  });

  it("is at most the guest's memory: no checkpoint writes more", () => {
    expect(checkpointNeeds(room(0n, 300n * MiB))).toBe(256n * MiB);
  });

  it('is unknown without an rss', () => {
    expect(checkpointNeeds(room(0n, null))).toBeUndefined();
  });
});

describe('checkpointSpaceProblem', () => {
  it('lets a checkpoint through when the memory fits, to the byte', () => {
    expect(checkpointSpaceProblem(room(256n * MiB))).toBeUndefined();
  });

  // A 256 MiB guest that touched 40 MiB of it on a file system with 100 MiB free: its
  // checkpoint writes a few MiB; the guest's whole memory held it back for ever.
  it("lets a checkpoint through with room for the rss, not for the guest's memory", () => {
    expect(checkpointSpaceProblem(room(100n * MiB, 40n * MiB))).toBeUndefined();
    expect(checkpointSpaceProblem(room(40n * MiB - 1n, 40n * MiB))).toMatchObject({
      reason: 'InsufficientSpace',
    });
  });

  it('does not hold a checkpoint back without an rss (the re-check after a failure tells)', () => {
    expect(checkpointSpaceProblem(room(0n, null))).toBeUndefined();
  });

  it('waits with the figures in MiB, naming the disk, its file and its Volume', () => {
    expect(checkpointSpaceProblem(room(256n * MiB - 1n), 'root')).toEqual({
      reason: 'InsufficientSpace',
      message:
        'the checkpoint writes the memory the guest uses (as much as its QEMU process holds, ' +
        "up to 256 MiB) into disk vda's file /p/disk (Volume root), whose file system has " +
        '255 MiB free; free space there, and the snapshot is taken then (retried)',
    });
  });

  it('writes the same message for a few bytes more or less free (no status write per pass)', () => {
    expect(checkpointSpaceProblem(room(10n * MiB + 5n))).toEqual(
      checkpointSpaceProblem(room(10n * MiB + 4000n)),
    );
  });

  it('writes the same message as the rss moves between passes', () => {
    expect(checkpointSpaceProblem(room(10n * MiB, 60n * MiB))).toEqual(
      checkpointSpaceProblem(room(10n * MiB, 75n * MiB + 123n)),
    );
  });
});
