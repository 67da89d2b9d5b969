// The watchdog of a local node (node-watchdog.ts) and what the clean stop looks for
// (local-node.ts mountsUnder, processesWithArg), on real mounts and processes: a node folder
// given through a symlink (`--dir /var/run/...`, /var/run -> /run on Debian) is named in
// /proc/self/mountinfo by its real path, so both must look for that one; and the node's
// containerd socket is part of another node's under a longer folder, whose processes are not
// this node's to kill. Root only (tmpfs mounts), as the node itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../../src/commands/local/run.js';
import { mountsUnder, processesWithArg } from '../../../src/commands/local/local-node.js';
import { NODE_WATCHDOG_SOURCE } from '../../../src/commands/local/node-watchdog.js';

const mounted = (point: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === point);

/** Runs the watchdog until its parent's end (EOF on its stdin), after `input`. */
async function watchdogRun(
  leftovers: { nodeDir?: string; containerdAddress?: string },
  input: string,
): Promise<void> {
  const args = ['-e', NODE_WATCHDOG_SOURCE, JSON.stringify(leftovers)];
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'ignore', 'ignore'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.stdin.end(input);
  await exited;
}

let base: string | undefined;
let point: string | undefined;
const children: ChildProcess[] = [];

/** A process that runs until killed, with `args` on its command line. */
function idle(args: string[]): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 60_000)', '--', ...args], {
    stdio: 'ignore',
  });
  children.push(child);
  return child;
}

const alive = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

afterEach(async () => {
  for (const c of children.splice(0)) if (alive(c)) c.kill('SIGKILL');
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
    await watchdogRun({ nodeDir }, 'disarm\n');
    expect(mounted(point), 'after a disarmed watchdog').toBe(true);

    // Its parent gone without disarming it: what is mounted under the node folder goes.
    await watchdogRun({ nodeDir }, '');
    expect(mounted(point), 'after the parent ended').toBe(false);
  });
});

describe("a local node's containerd socket", () => {
  it('kills the processes naming it, not those of a node under a longer folder', async () => {
    const dir = `/tmp/lvo-wd-${randomBytes(3).toString('hex')}/node`;
    const address = `${dir}/containerd/containerd.sock`;
    const shim = idle(['-namespace', 'k8s.io', '-address', address]);
    const other = idle(['-namespace', 'k8s.io', '-address', `/home/me${address}`]);
    const exited = new Promise((resolve) => shim.on('exit', resolve));
    await new Promise((r) => setTimeout(r, 300));

    expect(processesWithArg(address)).toEqual([shim.pid]);
    await watchdogRun({ containerdAddress: address }, '');
    await exited;
    // Time for the exit of the other to be seen, had it been killed too.
    await new Promise((r) => setTimeout(r, 500));
    expect(alive(shim), "the shim naming this node's socket").toBe(false);
    expect(alive(other), 'the process of the node under /home/me').toBe(true);
  });
});
