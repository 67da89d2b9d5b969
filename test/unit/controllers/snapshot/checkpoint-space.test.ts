// A checkpoint waits for room for the guest's memory in its disk's file system (plan.ts).
import { describe, expect, it } from 'vitest';
import { checkpointSpaceProblem } from '../../../../src/controllers/virtual-machine-snapshot/plan.js';

const MiB = 2n ** 20n;
const room = (free: bigint) => ({ disk: 'vda', path: '/p/disk', memory: 256n * MiB, free });

describe('checkpointSpaceProblem', () => {
  it('lets a checkpoint through when the memory fits, to the byte', () => {
    expect(checkpointSpaceProblem(room(256n * MiB))).toBeUndefined();
  });

  it('waits with both figures in MiB, naming the disk, its file and its Volume', () => {
    expect(checkpointSpaceProblem(room(256n * MiB - 1n), 'root')).toEqual({
      reason: 'InsufficientSpace',
      message:
        "the checkpoint writes the machine's memory (up to 256 MiB) into disk vda's file " +
        '/p/disk (Volume root), whose file system has 255 MiB free; free space there, and the ' +
        'snapshot is taken then (retried)',
    });
  });

  it('writes the same message for a few bytes more or less free (no status write per pass)', () => {
    expect(checkpointSpaceProblem(room(10n * MiB + 5n))).toEqual(
      checkpointSpaceProblem(room(10n * MiB + 4000n)),
    );
  });
});
