// Every builder case against its golden file, and parse(build(doc)) back to doc.
// UPDATE_GOLDEN=1 rewrites the golden files (review the diff before committing).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allCases } from '../../fixtures/xml/cases.js';

const DIR = join(import.meta.dirname, '../../fixtures/xml');

describe.each(allCases)('$name', (c) => {
  const file = join(DIR, `${c.name}.xml`);

  it('builds its golden file', () => {
    const xml = c.build(c.doc);
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, xml);
    expect(existsSync(file), `${file} is missing: run with UPDATE_GOLDEN=1 to create it`).toBe(
      true,
    );
    expect(xml).toBe(readFileSync(file, 'utf8'));
  });

  it('parses back to the same document', () => {
    expect(c.parse(c.build(c.doc))).toStrictEqual(c.doc);
  });
});
