import { describe, expect, it } from 'vitest';
import { JUDGED_TTL_MS, judgedStill } from '../../../../src/controllers/shared/unselected.js';

describe('judgedStill', () => {
  const t = 5_000_000;

  it('holds for the same version of the object, until the judgement expires', () => {
    const judged = { resourceVersion: '42', at: t };
    expect(judgedStill(judged, '42', t + JUDGED_TTL_MS - 1)).toBe(true);
    // A Node without an agent deleted, labelled or unlabelled leaves the object unchanged:
    // only the judgement's age brings that change to the summary.
    expect(judgedStill(judged, '42', t + JUDGED_TTL_MS)).toBe(false);
    expect(judgedStill(judged, '43', t + 1)).toBe(false);
    expect(judgedStill(undefined, '42', t)).toBe(false);
  });
});
