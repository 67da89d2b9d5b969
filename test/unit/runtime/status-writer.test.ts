import { describe, expect, it } from 'vitest';
import { inputDigest } from '../../../src/runtime/status-writer.js';

const status = (time: string, reason = 'PoolNotReady') => ({
  phase: 'Pending',
  conditions: [{ type: 'Ready', status: 'False', reason, message: 'm', lastTransitionTime: time }],
  nodes: [{ nodeName: 'n', conditions: [{ type: 'Ready', lastTransitionTime: time }] }],
});

describe('inputDigest', () => {
  it('is the same for statuses that differ only in when their conditions turned', () => {
    expect(inputDigest(status('2026-12-08T00:00:00Z'))).toBe(
      inputDigest(status('2026-12-08T00:00:01Z')),
    );
  });

  it('differs when anything else does', () => {
    const t = '2026-12-08T00:00:00Z';
    expect(inputDigest(status(t))).not.toBe(inputDigest(status(t, 'PoolNotOnNode')));
    expect(inputDigest(status(t))).not.toBe(inputDigest({ ...status(t), phase: 'Failed' }));
  });
});
