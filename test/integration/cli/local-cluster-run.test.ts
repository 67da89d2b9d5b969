// The README's two commands for a local cluster, exactly as listed: `local-cluster`, then
// `run` against its kubeconfig with no other step, converge a VirtualMachine (on libvirt's
// test driver here). And an agent whose Lease cannot be taken says why: one error line and
// the same words in /readyz.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { findBinaries, freePort } from '../../../src/commands/local/control-plane.js';
import {
  collect,
  eventually,
  output,
  run,
  spawnCli,
  stopAll,
  waitForLine,
} from '../../harness/processes.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'lvo-lcr-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await stopAll(children);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function readyz(port: number): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz?verbose`);
    return { status: res.status, body: await res.text() };
  } catch (err) {
    return { status: 0, body: String(err) };
  }
}

describe('local-cluster, then run, as the README lists them', () => {
  let kubeconfig: string;

  it('converge a VirtualMachine with no other step', async () => {
    const dir = tempDir();
    const cluster = spawnCli(['local-cluster', '--dir', dir]);
    children.push(cluster);
    const ready = await waitForLine(cluster, /^ready: kubeconfig=(.+)$/);
    kubeconfig = ready[1]!;

    const port = await freePort();
    const agent = spawnCli([
      'run',
      '--kubeconfig',
      kubeconfig,
      '--node-name',
      'lc-node',
      '--libvirt-uri',
      'test:///default',
      '--state-dir',
      tempDir(),
      '--health-addr',
      `127.0.0.1:${port}`,
    ]);
    children.push(agent);
    const printed = output(agent);
    await eventually(
      async () => (await readyz(port)).status === 200,
      60_000,
      `the agent's /readyz answering ok (it printed: ${printed().slice(-2000)})`,
    );

    const kubectl = join(findBinaries()!, 'kubectl');
    const vm = JSON.stringify({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'first', namespace: 'default' },
      spec: { nodeName: 'lc-node', vcpus: 1, memory: '128Mi' },
    });
    const applied = await run(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-f', '-'], {
      input: vm,
    });
    expect(applied.code, applied.stderr).toBe(0);
    const waited = await run(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'wait',
      '--for=condition=Ready',
      'vm/first',
      '--timeout=60s',
    ]);
    expect(waited.code, waited.stderr + printed().slice(-2000)).toBe(0);
  });

  it("console on that machine says the test driver has no consoles, not that there's no domain", async () => {
    // The agent's test:///default state is its own process's: a console process opening the
    // same URI gets a fresh one, and said "has no domain in test:///default on this host".
    const res = await collect(
      spawnCli([
        'console',
        'first',
        '--kubeconfig',
        kubeconfig,
        '--node-name',
        'lc-node',
        '--libvirt-uri',
        'test:///default',
      ]),
      30_000,
    );
    expect(res.stderr.trim()).toBe(
      "libvirt-operator console: VirtualMachine default/first runs on test:///default, libvirt's in-process test driver: " +
        "its domains live inside the agent's process and have no serial console; a console needs the agent on a real libvirtd " +
        '(npm start as root starts one, or --libvirt-uri qemu:///system)',
    );
    expect(res.code).toBe(1);
  });

  it('an agent whose Lease namespace is missing says so in one error line and in /readyz', async () => {
    const port = await freePort();
    const agent = spawnCli([
      'run',
      '--kubeconfig',
      kubeconfig,
      '--node-name',
      'lc-node-2',
      '--libvirt-uri',
      'test:///default',
      '--state-dir',
      tempDir(),
      '--health-addr',
      `127.0.0.1:${port}`,
      '--lease-namespace',
      'no-such-ns',
      // Retried every second or so (a quarter of it, the least allowed), not 10 s: the check
      // below waits past one retry.
      '--lease-duration',
      '4',
    ]);
    children.push(agent);
    const printed = output(agent);
    const why = 'namespace no-such-ns not found: create it';
    await eventually(
      async () => (await readyz(port)).body.includes(why),
      60_000,
      `/readyz naming the missing namespace (agent printed: ${printed().slice(-2000)})`,
    );
    const r = await readyz(port);
    expect(r.status).toBe(503);
    expect(r.body).toContain('or pass --lease-namespace');
    // The lease is retried within 1.2 s (--lease-duration 4, jittered by up to a fifth);
    // after a retry there is still one line about it.
    await new Promise((res) => setTimeout(res, 2_000));
    const lines = printed()
      .split('\n')
      .filter((l) => l.includes(why));
    expect(lines, printed()).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: expect.anything() as unknown });
    expect(lines[0]).toMatch(/"level":(50|"error")/);
  });

  it('an agent whose metrics port is taken names that port and exits', async () => {
    // Its health listener was up by then and kept the process alive: the error was printed
    // and `run` never ended (and blamed the health port).
    const holder = createServer();
    await new Promise<void>((res) => holder.listen(0, '127.0.0.1', res));
    const taken = (holder.address() as { port: number }).port;
    try {
      const agent = spawnCli([
        'run',
        '--kubeconfig',
        kubeconfig,
        '--node-name',
        'lc-node-3',
        '--libvirt-uri',
        'test:///default',
        '--state-dir',
        tempDir(),
        '--health-addr',
        '127.0.0.1:0',
        '--metrics-addr',
        `127.0.0.1:${taken}`,
      ]);
      children.push(agent);
      const res = await collect(agent, 20_000);
      expect(res.stderr.trim()).toBe(
        `libvirt-operator run: metrics port ${taken} is already in use; choose another`,
      );
      expect(res.code).toBe(1);
    } finally {
      await new Promise((res) => holder.close(res));
    }
  });
});
