// The local control plane's processes when the CLI that started them is interrupted or killed:
// - SIGINT/SIGTERM during start-up found no listener (they were installed only before the
//   ready line), so Node's default action ended local-cluster or up at once, without its
//   clean-up: exit by signal, and whatever had been started (etcd, kube-apiserver, a node's
//   bridge and mounts) left to a watchdog at best.
// - The watchdog took a parent that had died but was not yet reaped (a zombie) for a live one:
//   under a parent that does not wait for it, a SIGKILLed local-cluster left etcd and
//   kube-apiserver running.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findBinaries } from '../../../src/commands/local/control-plane.js';
import {
  collect,
  eventually,
  isAlive,
  output,
  processesNaming,
  recordedPids,
  ROOT,
  spawnCli,
  stopAll,
  waitForLine,
} from '../../harness/processes.js';

const home = mkdtempSync(join(tmpdir(), 'lvo-interrupt-'));
const children: ChildProcess[] = [];
const wrappers: number[] = [];
afterAll(async () => {
  await stopAll(children);
  for (const pid of wrappers.splice(0)) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(home, { recursive: true, force: true });
});
// The binaries the suite already has; anything else up keeps goes to this file's folder.
const env = { ...process.env, KUBEBUILDER_ASSETS: findBinaries(), LIBVIRT_OPERATOR_CACHE: home };

/** Once etcd runs: the control plane has written its PID for the watchdog. */
const etcdStarted = (dir: string) =>
  eventually(() => existsSync(join(dir, 'pids')) && recordedPids(dir).length > 0, 60_000, 'etcd');

describe('a signal during start-up', () => {
  it('stops what local-cluster had started, and exits 130 on SIGINT', async () => {
    const dir = join(home, 'cluster');
    const cluster = spawnCli(['local-cluster', '--dir', dir], env);
    children.push(cluster);
    const printed = output(cluster);
    const exit = collect(cluster, 60_000);
    await waitForLine(cluster, /^local-cluster: starting etcd and kube-apiserver$/, 60_000);
    await etcdStarted(dir);
    cluster.kill('SIGINT');
    const res = await exit;
    expect(res.code ?? `killed by ${cluster.signalCode}`, printed()).toBe(130);
    expect(printed()).toMatch(/^local-cluster: stopped during start-up \(SIGINT\)$/m);
    expect(printed(), 'a process that had to be killed').not.toMatch(/did not stop within/);
    expect(await processesNaming(dir, 0), 'processes naming the cluster directory').toEqual([]);
    expect(existsSync(join(dir, 'pids')), 'the pids file').toBe(false);
  }, 90_000);

  it('stops the control plane up had started, and exits 143 on SIGTERM', async () => {
    const dir = join(home, 'up');
    const up = spawnCli(
      ['up', '--dir', dir, '--libvirt-uri', 'test:///default', '--health-addr', '127.0.0.1:0'],
      env,
    );
    children.push(up);
    const printed = output(up);
    const exit = collect(up, 60_000);
    await waitForLine(up, /^up: starting a local control plane/, 60_000);
    await etcdStarted(dir);
    up.kill('SIGTERM');
    const res = await exit;
    expect(res.code ?? `killed by ${up.signalCode}`, printed()).toBe(143);
    expect(printed()).toMatch(/^up: stopped during start-up \(SIGTERM\)$/m);
    expect(await processesNaming(dir, 0), 'processes naming the cluster directory').toEqual([]);
    expect(existsSync(join(dir, 'pids')), 'the pids file').toBe(false);
  }, 90_000);
});

describe("the control plane's watchdog", () => {
  it('reaps etcd and kube-apiserver of a SIGKILLed local-cluster whose parent has not reaped it', async () => {
    const dir = join(home, 'zombie');
    // A parent that never waits for the CLI (as a supervisor busy elsewhere, or a shell that
    // exec'd another program): the killed CLI stays a zombie, whose PID still answers.
    const wrapper = spawn(
      'bash',
      [
        '-c',
        '"$@" & echo "cli $!"; exec sleep 600',
        'wrapper',
        process.execPath,
        '--import',
        'tsx',
        join(ROOT, 'src', 'cli.ts'),
        'local-cluster',
        '--dir',
        dir,
        '--no-crds',
      ],
      { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    wrappers.push(wrapper.pid!);
    const printed = output(wrapper);
    const cli = Number((await waitForLine(wrapper, /^cli (\d+)$/, 10_000))[1]);
    await waitForLine(wrapper, /^ready: kubeconfig=/, 60_000);
    const pids = recordedPids(dir);
    expect(pids.length, printed()).toBe(2);

    process.kill(cli, 'SIGKILL');
    await eventually(
      () => readFileSync(`/proc/${cli}/stat`, 'utf8').split(' ')[2] === 'Z',
      5_000,
      'the CLI to be a zombie',
    );
    await eventually(() => pids.every((p) => !isAlive(p)), 5_000, 'etcd and kube-apiserver to go');
    expect(await processesNaming(dir), 'processes naming the cluster directory').toEqual([]);
    expect(existsSync(join(dir, 'pids')), 'the pids file').toBe(false);
  }, 90_000);
});
