// terminate(), which stops every process a local control plane or node started: it returns
// once the process is gone, leaves no timer behind (a leftover grace timer held the CLI's
// exit for up to 10 s after `local-cluster --node` had stopped everything), and holds the event
// loop while it waits (the processes are unref'd, so without that the CLI could exit mid-stop).
// Run in a child process: what is measured is when that process exits.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, run } from '../../harness/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-terminate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GRACE_MS = 10_000;

describe('terminate', () => {
  it('returns when the process has gone, without holding its caller for the rest of the grace', async () => {
    const script = join(dir, 'stop.mts');
    writeFileSync(
      script,
      [
        `import { startProcess, terminate } from ${JSON.stringify(join(ROOT, 'src/commands/local/control-plane.ts'))};`,
        `const log = ${JSON.stringify(join(dir, 'proc.log'))};`,
        // One that ignores SIGTERM (SIGKILLed after its grace), one that obeys it at once.
        "const stubborn = startProcess('/bin/sh', ['-c', 'trap \"\" TERM; sleep 60 & wait'], log);",
        "const obedient = startProcess('/bin/sleep', ['60'], log);",
        'await new Promise((r) => setTimeout(r, 300));',
        'const t0 = Date.now();',
        "process.on('exit', () => console.log(Date.now() - t0 < 5000 ? 'exited soon' : 'exited late'));",
        'await terminate(stubborn, 500);',
        "console.log('stubborn', stubborn.child.signalCode);",
        `await terminate(obedient, ${GRACE_MS});`,
        "console.log('obedient', obedient.child.signalCode);",
      ].join('\n'),
    );
    const res = await run(process.execPath, ['--import', 'tsx', script], { timeoutMs: 60_000 });
    // The kill is said aloud, for the stubborn one only.
    expect(res.stderr).toMatch(
      /^sh \(pid \d+\) did not stop within 0\.5s of SIGTERM; killed it\n$/,
    );
    // The stubborn one's 0.5 s grace and the other's exit, not the 10 s grace: 'exited soon'.
    expect(res.stdout).toBe('stubborn SIGKILL\nobedient SIGTERM\nexited soon\n');
    expect(res.code).toBe(0);
  });
});
