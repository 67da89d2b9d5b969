import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildIsCurrent } from '../../harness/processes.js';

describe('buildIsCurrent: the tests start the CLI from dist/ only when it is the code in src/', () => {
  let root: string;
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const file = (rel: string, mtimeSeconds: number) => {
    const path = join(root, rel);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, '');
    utimesSync(path, mtimeSeconds, mtimeSeconds);
  };
  const tree = () => {
    root = mkdtempSync(join(tmpdir(), 'lvo-build-current-'));
    file('src/cli.ts', 1_000);
    file('src/commands/up.ts', 1_000);
    file('src/api/types.d.ts', 5_000);
    file('src/libvirt/native/addon.cc', 5_000);
    file('dist/cli.js', 2_000);
    file('dist/commands/up.js', 2_000);
  };

  it('is current when every .ts has a .js at least as new (declarations and C++ aside)', () => {
    tree();
    expect(buildIsCurrent(root)).toBe(true);
  });

  it('is not once a source is edited after the build', () => {
    tree();
    file('src/commands/up.ts', 3_000);
    expect(buildIsCurrent(root)).toBe(false);
  });

  it('is not when a source has no build at all', () => {
    tree();
    file('src/commands/vm.ts', 1_000);
    expect(buildIsCurrent(root)).toBe(false);
  });
});
