// The line `up` prints for another shell: pasted into sh, it must give exactly these values,
// whatever characters the paths hold.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { exportLine, shellWord } from '../../../src/commands/up.js';

const inShell = (line: string, print: string) =>
  execFileSync('sh', ['-c', `${line}; printf '%s\\n' ${print}`], {
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
  });

describe("up's export line", () => {
  it('sets KUBECONFIG and puts the kubectl directory first on PATH', () => {
    const out = inShell(
      exportLine('/root/.cache/lvo/kubeconfig', '/root/.cache/k8s'),
      '"$KUBECONFIG" "$PATH"',
    );
    expect(out).toBe('/root/.cache/lvo/kubeconfig\n/root/.cache/k8s:/usr/bin:/bin\n');
  });

  it('quotes paths with spaces, quotes and dollars so the shell keeps them as they are', () => {
    for (const path of ["/tmp/my cache/it's", '/tmp/$HOME/`x`', '/tmp/a"b', '/plain/path-1.2_x']) {
      expect(inShell(`v=${shellWord(path)}`, '"$v"')).toBe(`${path}\n`);
    }
    expect(shellWord('/plain/path-1.2_x')).toBe('/plain/path-1.2_x');
  });
});
