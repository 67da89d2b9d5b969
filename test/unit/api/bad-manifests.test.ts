import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { validateManifest } from '../../../src/api/validate.js';
import { checkManifests } from '../../../src/commands/validate.js';
import { loadCorpus } from '../../fixtures/bad-manifests/corpus.js';

// The offline half of the corpus contract: validateManifest and the validate command give each
// case the verdict its header names. test/integration/api/crds.test.ts checks the API server.
const corpus = loadCorpus();
const rejected = corpus.filter((c) => c.verdict === 'rejected');
const accepted = corpus.filter((c) => c.verdict === 'accepted');

describe('bad-manifest corpus', () => {
  test('is large enough to mean something', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(60);
    expect(rejected.length).toBeGreaterThanOrEqual(40);
    expect(accepted.length).toBeGreaterThanOrEqual(10);
    expect(new Set(corpus.map((c) => c.id)).size).toBe(corpus.length);
  });

  test.each(rejected.map((c) => [c.id, c] as const))(
    '%s: validateManifest names the field',
    (_id, c) => {
      const [first, second] = c.documents;
      const problems =
        c.operation === 'update' ? validateManifest(second, first) : validateManifest(first);
      expect(problems.map((p) => p.field)).toContain(c.field);
      if (c.operation === 'update') expect(validateManifest(first)).toEqual([]);
    },
  );

  test.each(accepted.map((c) => [c.id, c] as const))('%s: every document passes', (_id, c) => {
    for (const doc of c.documents) expect(validateManifest(doc)).toEqual([]);
  });

  test.each(rejected.filter((c) => c.operation === 'create').map((c) => [c.id, c] as const))(
    '%s: the validate command reports the field',
    (_id, c) => {
      const { lines, objects } = checkManifests('case.yaml', readFileSync(c.file, 'utf8'));
      expect(objects).toBe(1);
      expect(lines.some((l) => l.includes(`: ${c.field}: `))).toBe(true);
    },
  );
});
