// `libvirt-operator up` (what `npm start` runs) without --kubeconfig: its own control plane,
// whatever KUBECONFIG says, on which it installs the finalizer policy as
// manifests/overlays/local does on Kubernetes 1.36, so a new VirtualMachine placed on this host
// comes back from its create with the agent's finalizer already on (one API write fewer per
// object), one placed elsewhere without it; the agent converges the machine (libvirt's test
// driver here) and SIGTERM ends it all cleanly, and soon.
// The export line it prints gives a shell without kubectl on its PATH one, of the API server's
// version, whose first `kubectl get virt` answers.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { findBinaries } from '../../../src/commands/local/control-plane.js';
import { HOST_FINALIZER } from '../../../src/controllers/context.js';
import { collect, output, run, spawnCli, stopAll, waitForLine } from '../../harness/processes.js';

const NODE = 'up-node';
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  await stopAll(children);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const vm = (name: string, nodeName: string) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachine',
  metadata: { name, namespace: 'default' },
  spec: { nodeName, vcpus: 1, memory: '128Mi' },
});

describe('up on its own control plane', () => {
  it('installs the finalizer policy for this host and converges a VirtualMachine', async () => {
    const home = mkdtempSync(join(tmpdir(), 'lvo-up-'));
    dirs.push(home);
    const dir = join(home, 'cluster');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      // The binaries the suite already has; everything else up keeps goes to this test's folder.
      KUBEBUILDER_ASSETS: findBinaries(),
      LIBVIRT_OPERATOR_CACHE: home,
    };
    // Left set by an earlier run's export line, or pointing at a real cluster: not read.
    const stale = join(home, 'earlier-run', 'kubeconfig');
    env.KUBECONFIG = stale;
    const up = spawnCli(
      [
        'up',
        '--dir',
        dir,
        '--node-name',
        NODE,
        '--libvirt-uri',
        'test:///default',
        '--health-addr',
        '127.0.0.1:0',
      ],
      env,
    );
    children.push(up);
    const printed = output(up);
    await waitForLine(up, /^up: agent ready/, 120_000).catch((err: Error) => {
      err.message += `\nup printed:\n${printed()}`;
      throw err;
    });
    expect(printed()).toMatch(/^up: finalizer policy in force/m);
    expect(printed()).toContain(
      `up: KUBECONFIG=${stale} is not used: up runs its own control plane (--kubeconfig PATH uses a cluster)`,
    );
    // The line up prints for another shell, pasted into one that has no kubectl on its PATH
    // and a kubectl cache of its own: the user's first `kubectl get virt` answers.
    const exported = /^up: control plane ready: (export .*)$/m.exec(printed())?.[1];
    expect(exported, printed()).toBeDefined();
    const shell = await run(
      '/bin/sh',
      ['-c', `${exported}; command -v kubectl; kubectl get virt -A`],
      {
        env: { PATH: '/nonexistent', HOME: home, KUBECACHEDIR: join(home, 'user-kube-cache') },
      },
    );
    expect(shell.stdout.trim()).toBe(join(findBinaries()!, 'kubectl'));
    expect(shell.stderr.trim()).toBe('No resources found');
    expect(shell.code).toBe(0);
    const kubeconfig = join(dir, 'kubeconfig');
    const kubectl = join(findBinaries()!, 'kubectl');
    const create = (manifest: object) =>
      run(kubectl, ['--kubeconfig', kubeconfig, 'create', '-o', 'json', '-f', '-'], {
        input: JSON.stringify(manifest),
      });

    // The create's own answer: the agent cannot have patched an object before it existed.
    const here = await create(vm('here', NODE));
    expect(here.code, here.stderr).toBe(0);
    const created = JSON.parse(here.stdout) as { metadata: { finalizers?: string[] } };
    expect(created.metadata.finalizers).toEqual([HOST_FINALIZER]);
    // Only Nodes that run the agent: an object placed elsewhere is never held up by one.
    const elsewhere = await create(vm('elsewhere', 'no-such-node'));
    expect(elsewhere.code, elsewhere.stderr).toBe(0);
    expect(
      (JSON.parse(elsewhere.stdout) as { metadata: { finalizers?: string[] } }).metadata.finalizers,
    ).toBeUndefined();

    const waited = await run(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'wait',
      '--for=condition=Ready',
      'vm/here',
      '--timeout=60s',
    ]);
    expect(waited.code, waited.stderr + printed().slice(-2000)).toBe(0);
    const deleted = await run(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'delete',
      '--wait=true',
      '--timeout=60s',
      'vm/here',
      'vm/elsewhere',
    ]);
    expect(deleted.code, deleted.stderr).toBe(0);

    const done = collect(up, 60_000);
    const stopping = Date.now();
    up.kill('SIGTERM');
    expect((await done).code, printed().slice(-2000)).toBe(0);
    // The agent, the API server and etcd stop in well under a second; the API server's grace
    // timer, left pending after it had gone, held up's exit for 5 s more.
    expect(Date.now() - stopping).toBeLessThan(4_000);
  }, 240_000);
});

describe('up on a libvirt that does not answer', () => {
  // A wrong --libvirt-uri, or a libvirtd that is down: up said "starting the agent" and then
  // nothing, and Ctrl-C (the only way out) killed it before it stopped the control plane.
  it('says what it waits for, and SIGTERM still stops the agent and the control plane', async () => {
    const home = mkdtempSync(join(tmpdir(), 'lvo-up-'));
    dirs.push(home);
    const socket = join(home, 'no-such-libvirt-sock');
    const up = spawnCli(
      [
        'up',
        '--dir',
        join(home, 'cluster'),
        '--node-name',
        NODE,
        '--libvirt-uri',
        `qemu+unix:///system?socket=${socket}`,
        '--health-addr',
        '127.0.0.1:0',
        // The line this test waits for, said after half a second of silence, not five.
        '--quiet-ms',
        '500',
      ],
      { ...process.env, KUBEBUILDER_ASSETS: findBinaries(), LIBVIRT_OPERATOR_CACHE: home },
    );
    children.push(up);
    const printed = output(up);
    await waitForLine(up, /^up: waiting for libvirt/, 60_000).catch((err: Error) => {
      err.message += `\nup printed:\n${printed()}`;
      throw err;
    });
    expect(printed()).toContain(
      `up: waiting for libvirt at qemu+unix:///system?socket=${socket}: Failed to connect socket to '${socket}'`,
    );
    const done = collect(up, 60_000);
    up.kill('SIGTERM');
    // Still starting (the agent never synced): stopped cleanly, with SIGTERM's exit code.
    expect((await done).code, printed()).toBe(143);
    expect(printed()).toMatch(/^up: stopping$/m);
    expect(printed()).toMatch(/^up: stopped during start-up \(SIGTERM\)$/m);
  }, 120_000);
});
