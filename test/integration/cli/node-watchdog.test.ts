// The watchdog of a local node (node-watchdog.ts) and the clean stop's mount list
// (local-node.ts mountsUnder), on real mounts: a node folder given through a symlink
// (`--dir /var/run/...`, /var/run -> /run on Debian) is named in /proc/self/mountinfo by its
// real path, so both must look for that one. Root only (tmpfs mounts), as the node itself.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../../src/commands/local/run.js';
import { mountsUnder } from '../../../src/commands/local/local-node.js';
import { NODE_WATCHDOG_SOURCE } from '../../../src/commands/local/node-watchdog.js';

const mounted = (point: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === point);

/** Runs the watchdog until its parent's end (EOF on its stdin), after `input`. */
async function watchdogRun(nodeDir: string, input: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', NODE_WATCHDOG_SOURCE, JSON.stringify({ nodeDir })], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.stdin.end(input);
  await exited;
}

let base: string | undefined;
let point: string | undefined;

afterEach(async () => {
  if (point && mounted(point)) await run('umount', ['-l', point]);
  if (base) rmSync(base, { recursive: true, force: true });
  base = point = undefined;
});

describe('a local node folder reached through a symlink', () => {
  it('has its mounts found by the clean stop and removed by the watchdog, not when disarmed', async () => {
    base = mkdtempSync(join(tmpdir(), `lvo-wd-${randomBytes(3).toString('hex')}-`));
    const real = join(base, 'real');
    point = join(real, 'node', 'pod-shm');
    mkdirSync(point, { recursive: true });
    symlinkSync(real, join(base, 'link'));
    const nodeDir = join(base, 'link', 'node');
    expect((await run('mount', ['-t', 'tmpfs', 'lvo-wd', point])).code).toBe(0);

    expect(mountsUnder(nodeDir)).toEqual([point]);

    // Disarmed (a clean stop): nothing is touched.
    await watchdogRun(nodeDir, 'disarm\n');
    expect(mounted(point), 'after a disarmed watchdog').toBe(true);

    // Its parent gone without disarming it: what is mounted under the node folder goes.
    await watchdogRun(nodeDir, '');
    expect(mounted(point), 'after the parent ended').toBe(false);
  });
});
