// Ctrl-C on `local-cluster --node` (what the DaemonSet's local cluster runs on): it stopped
// everything and still took ~12 s. The node deleted its bridge before the API server, which
// listens on the bridge's address, had stopped: the API server's shutdown then hung until its
// SIGKILL 5 s later; and the grace timers of processes long gone held the exit for the rest of
// their 10 s. Now the stop is done in about 2 s, kills nothing, and leaves nothing behind.
// SIGKILL: the control plane's watchdog killed the processes it had started, but the pods'
// containers and shims kept running, their mounts and the pod bridge stayed, and the next start
// on the same subnet refused ("overlaps ... ip link delete lvo-…"): a manual step. The node's
// own watchdog (node-watchdog.ts) now removes them.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findBinaries } from '../../../src/commands/local/control-plane.js';
import { PAUSE_IMAGE } from '../../../src/commands/local/local-node.js';
import {
  collect,
  eventually,
  isAlive,
  output,
  processesNaming,
  run,
  spawnCli,
  waitForLine,
} from '../../harness/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-node-stop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Below kubelet's and containerd's 10 s grace (terminate()), which a grace timer left pending
 * after they had gone held the exit for; the stop takes about 2 s here. Whether the API server
 * had to be killed is read from terminate()'s own line, not from the time.
 */
const STOP_BOUND_MS = 9_000;

describe('local-cluster --node on SIGTERM', () => {
  it('stops within a few seconds, leaving no process, mount or bridge behind', async () => {
    if (process.getuid?.() !== 0) throw new Error('the real-node tests need root');
    const nodeName = `lvo-stop-${randomBytes(3).toString('hex')}`;
    const cluster = spawnCli(['local-cluster', '--node', '--dir', dir, '--node-name', nodeName]);
    const exit = collect(cluster, 600_000);
    let bridge: string | undefined;
    try {
      const node = waitForLine(cluster, /^node: \S+ Ready at \S+ \(pods \S+ on (\S+)\)/, 300_000);
      await waitForLine(cluster, /^ready: kubeconfig=/, 300_000);
      bridge = (await node)[1]!;

      const started = Date.now();
      cluster.kill('SIGTERM');
      const res = await exit;
      const took = Date.now() - started;
      // Killed by a signal, the code is null: name the signal (a second SIGTERM, or one that
      // found no listener, once killed it mid-stop and left the bridge and mounts behind).
      expect(res.code ?? `killed by ${cluster.signalCode}`, res.stderr).toBe(0);
      expect(res.stderr, 'a process that had to be killed').not.toMatch(/did not stop within/);
      expect(took, res.stderr).toBeLessThan(STOP_BOUND_MS);

      expect(await processesNaming(dir), 'processes still naming the cluster directory').toEqual(
        [],
      );
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.includes(dir));
      expect(mounts, 'mounts under the cluster directory').toEqual([]);
      expect((await run('ip', ['link', 'show', bridge])).code, `bridge ${bridge}`).not.toBe(0);
      expect(existsSync(join(dir, 'pids')), 'the pids file').toBe(false);
    } finally {
      if (cluster.exitCode === null && cluster.signalCode === null) {
        cluster.kill('SIGTERM');
        await exit;
      }
      // What a failed stop left behind would fail the next local node's start (its pod subnet
      // overlaps the bridge) and the directory's removal (a mount in it).
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4] ?? '')
        .filter((m) => m.startsWith(dir))
        .sort()
        .reverse();
      for (const m of mounts) await run('umount', ['-l', m]);
      if (bridge) await run('ip', ['link', 'delete', bridge]);
    }
  }, 600_000);
});

/**
 * Removes what a failed stop left of the node in `dir`: its containers (`inits`, their pid
 * namespaces' first processes) and shims, the mounts under it, its bridge.
 */
async function cleanUpAfter(
  dir: string,
  bridge: string | undefined,
  inits: number[] = [],
): Promise<void> {
  for (const pid of [...inits, ...(await processesNaming(dir, 0)).map(Number)])
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir))
    .sort()
    .reverse();
  for (const m of mounts) await run('umount', ['-l', m]);
  if (bridge) await run('ip', ['link', 'delete', bridge]);
}

describe('local-cluster --node after SIGKILL', () => {
  it('leaves no pod, mount or bridge behind, and a second start on the same subnet works', async () => {
    if (process.getuid?.() !== 0) throw new Error('the real-node tests need root');
    const id = randomBytes(3).toString('hex');
    const killedDir = join(dir, `killed-${id}`);
    // A subnet of its own, so another local node on the default one cannot be in the way.
    const subnet = `10.${240 + (parseInt(id.slice(0, 2), 16) % 10)}.${parseInt(id.slice(2, 4), 16)}.0/24`;
    const args = [
      'local-cluster',
      '--node',
      '--node-name',
      `lvo-kill-${id}`,
      '--pod-subnet',
      subnet,
    ];
    const first = spawnCli([...args, '--dir', killedDir]);
    const firstExit = collect(first, 600_000);
    let bridge: string | undefined;
    let second: ReturnType<typeof spawnCli> | undefined;
    let secondBridge: string | undefined;
    let inits: number[] = [];
    try {
      const node = waitForLine(first, /^node: \S+ Ready at \S+ \(pods \S+ on (\S+)\)/, 300_000);
      await waitForLine(first, /^ready: kubeconfig=/, 300_000);
      bridge = (await node)[1]!;
      // Built by the CLI if missing, so there once it is ready.
      const kubectl = join(findBinaries()!, 'kubectl');
      // A pod, so that there are containers, shims, a netns, rootfs and shm mounts to leave.
      const env = { ...process.env, KUBECONFIG: join(killedDir, 'kubeconfig') };
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'p', namespace: 'default' },
        spec: {
          automountServiceAccountToken: false,
          containers: [{ name: 'c', image: PAUSE_IMAGE, imagePullPolicy: 'Never' }],
        },
      };
      const applied = await run(kubectl, ['apply', '-f', '-'], { env, input: JSON.stringify(pod) });
      expect(applied.code, applied.stderr).toBe(0);
      const ready = await run(
        kubectl,
        ['wait', '--for=condition=Ready', 'pod/p', '--timeout=90s'],
        {
          env,
          timeoutMs: 120_000,
        },
      );
      expect(ready.code, ready.stderr).toBe(0);
      const runcRoot = join(killedDir, 'node', 'containerd', 'runc', 'k8s.io');
      inits = readdirSync(runcRoot).map(
        (c) =>
          (
            JSON.parse(readFileSync(join(runcRoot, c, 'state.json'), 'utf8')) as {
              init_process_pid: number;
            }
          ).init_process_pid,
      );
      expect(inits.length, 'the pod sandbox and its container').toBe(2);
      const uid = (await run(kubectl, ['get', 'pod/p', '-o', 'jsonpath={.metadata.uid}'], { env }))
        .stdout;
      const podCgroups = () =>
        readdirSync('/sys/fs/cgroup').flatMap((ctl) =>
          ['besteffort', 'burstable', '']
            .map((qos) => join('/sys/fs/cgroup', ctl, 'kubepods', qos, `pod${uid}`))
            .filter((p) => existsSync(p)),
        );
      expect(podCgroups().length, "the pod's cgroups").toBeGreaterThan(0);

      first.kill('SIGKILL');
      await firstExit;
      await eventually(() => inits.every((p) => !isAlive(p)), 10_000, "the pod's processes to go");
      expect(await processesNaming(killedDir, 10_000), 'processes naming the cluster dir').toEqual(
        [],
      );
      await eventually(
        () => !readFileSync('/proc/self/mountinfo', 'utf8').includes(killedDir),
        10_000,
        'the mounts under the cluster directory to go',
      );
      await eventually(() => podCgroups().length === 0, 10_000, "the pod's cgroups to go");
      await eventually(
        async () => (await run('ip', ['link', 'show', bridge!])).code !== 0,
        10_000,
        `bridge ${bridge} to go`,
      );

      // No manual step: the same subnet again.
      second = spawnCli([...args, '--dir', join(dir, `second-${id}`)]);
      const secondOut = output(second);
      const node2 = waitForLine(second, /^node: \S+ Ready at \S+ \(pods \S+ on (\S+)\)/, 300_000);
      await waitForLine(second, /^ready: kubeconfig=/, 300_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${secondOut()}`);
      });
      secondBridge = (await node2)[1]!;
      const secondExit = collect(second, 120_000);
      second.kill('SIGTERM');
      expect((await secondExit).code, secondOut()).toBe(0);
    } finally {
      if (first.exitCode === null && first.signalCode === null) first.kill('SIGKILL');
      if (second && second.exitCode === null && second.signalCode === null) {
        second.kill('SIGTERM');
        await collect(second, 120_000).catch(() => undefined);
      }
      await cleanUpAfter(killedDir, bridge, inits);
      await cleanUpAfter(join(dir, `second-${id}`), secondBridge);
    }
  }, 900_000);
});
