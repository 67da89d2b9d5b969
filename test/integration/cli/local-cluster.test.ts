import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import {
  findBinaries,
  freePort,
  kubectlDiscoveryCache,
} from '../../../src/commands/local/control-plane.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import {
  collect,
  eventually,
  isAlive,
  recordedPids,
  run,
  spawnCli,
  stopAll,
  waitForLine,
} from '../../harness/processes.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'lvo-cli-'));
  dirs.push(d);
  return d;
}
// A test that fails before its own SIGTERM must not leave its control plane running.
const children: ChildProcess[] = [];
afterEach(async () => {
  await stopAll(children);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const started = (child: ChildProcess) => (children.push(child), child);
/** The kubeconfig path from local-cluster's `ready:` line. */
const readyKubeconfig = async (child: ChildProcess) =>
  (await waitForLine(child, /^ready: kubeconfig=(.+)$/))[1]!;

describe('libvirt-operator local-cluster', () => {
  it('prints ready with a working kubeconfig, and leaves no process after SIGTERM', async () => {
    const dir = tempDir();
    const child = started(spawnCli(['local-cluster', '--dir', dir]));
    const kubeconfig = await readyKubeconfig(child);
    expect(kubeconfig).toBe(join(dir, 'kubeconfig'));

    const kubectl = join(findBinaries()!, 'kubectl');
    const readyz = await run(kubectl, ['--kubeconfig', kubeconfig, 'get', '--raw', '/readyz']);
    expect(readyz.stdout).toBe('ok');
    const pids = recordedPids(dir);
    expect(pids.every(isAlive)).toBe(true);

    const done = collect(child);
    child.kill('SIGTERM');
    expect((await done).code).toBe(0);
    for (const pid of pids)
      expect(isAlive(pid), `pid ${pid} still alive after SIGTERM`).toBe(false);
  });

  // kubectl trusts its discovery cache for hours. What it held for this address (here: an
  // earlier server without virt.dev), and what the control plane's own kubectl learned while
  // installing the CRDs, made a user's first `kubectl get virt` fail ("the server doesn't
  // have a resource type").
  it("answers a user's first kubectl get virt, whatever kubectl cached for the address", async () => {
    const dir = tempDir();
    const env = { ...process.env, KUBECACHEDIR: join(dir, 'user-kube-cache') };
    const port = await freePort();
    const stale = kubectlDiscoveryCache(`https://127.0.0.1:${port}`, env);
    mkdirSync(stale, { recursive: true });
    const coreOnly = {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [
        {
          name: '',
          versions: [{ groupVersion: 'v1', version: 'v1' }],
          preferredVersion: { groupVersion: 'v1', version: 'v1' },
        },
      ],
    };
    writeFileSync(join(stale, 'servergroups.json'), JSON.stringify(coreOnly));

    const child = started(
      spawnCli(['local-cluster', '--dir', join(dir, 'cp'), '--port', String(port)], env),
    );
    const kubeconfig = await readyKubeconfig(child);
    const kubectl = join(findBinaries()!, 'kubectl');
    const first = await run(kubectl, ['--kubeconfig', kubeconfig, 'get', 'virt', '-A'], { env });
    expect(first.stderr.trim()).toBe('No resources found');
    expect(first.code).toBe(0);
    // The folder removed at start is the one kubectl itself uses for this server: it has
    // just written it again, now with virt.dev in it.
    const groups = JSON.parse(readFileSync(join(stale, 'servergroups.json'), 'utf8')) as {
      groups: Array<{ name: string }>;
    };
    expect(groups.groups.map((g) => g.name)).toContain('virt.dev');

    const done = collect(child);
    child.kill('SIGTERM');
    expect((await done).code).toBe(0);
  });

  // The CRDs and the agents' namespace it created are in manifests/ too: a user's
  // `kubectl apply -k` over them (docs/deploy.md, local-cluster --node) warned about each one,
  // "missing the kubectl.kubernetes.io/last-applied-configuration annotation".
  it('leaves the CRDs and namespace so that kubectl apply -k manifests/ is quiet', async () => {
    const child = started(spawnCli(['local-cluster', '--dir', tempDir()]));
    const kubeconfig = await readyKubeconfig(child);
    const kubectl = join(findBinaries()!, 'kubectl');
    const manifests = join(packageRoot(), 'manifests');
    const applied = await run(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-k', manifests]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toMatch(/^namespace\/libvirt-operator (unchanged|configured)$/m);
  });

  it('cleans up after itself when killed with SIGKILL (the reaper)', async () => {
    const child = started(spawnCli(['local-cluster']));
    const kubeconfig = await readyKubeconfig(child);
    const dir = join(kubeconfig, '..');
    const pids = recordedPids(dir);
    child.kill('SIGKILL');
    await eventually(
      () => pids.every((p) => !isAlive(p)) && !existsSync(dir),
      10_000,
      'cleanup after SIGKILL',
    );
  });

  it('rejects bad input with a one-line error and no stack trace', async () => {
    const notKubeconfig = tempDir();
    const aFile = join(tempDir(), 'a-file');
    writeFileSync(aFile, '');
    const cases: Array<[string[], RegExp, number]> = [
      // A file as --dir: said before a control plane starts, naming the flag.
      [
        ['local-cluster', '--dir', aFile],
        new RegExp(
          `^libvirt-operator local-cluster: --dir ${aFile} exists and is not a directory: give a directory \\(it is created when missing\\)$`,
        ),
        2,
      ],
      [
        ['up', '--libvirt-uri', 'test:///default', '--dir', aFile],
        new RegExp(`^libvirt-operator up: --dir ${aFile} exists and is not a directory`),
        2,
      ],
      [['local-cluster', '--frob'], /^libvirt-operator local-cluster: Unknown option '--frob'/, 2],
      [
        ['local-cluster', '--port', 'x'],
        /^libvirt-operator local-cluster: --port must be a port number/,
        2,
      ],
      [['no-such-command'], /^libvirt-operator: unknown command 'no-such-command'/, 2],
      [
        ['up', '--kubeconfig', '/nonexistent/kubeconfig', '--dir', '/nonexistent/dir'],
        /^libvirt-operator up: --dir is the local control plane's folder, and --kubeconfig uses a cluster instead of one: give one of them$/,
        2,
      ],
      // Flags up hands to the agent: refused as run refuses them, before anything starts.
      [
        ['up', '--libvirt-uri', 'test:///default', '--health-addr', 'garbage'],
        /^libvirt-operator up: --health-addr must be HOST:PORT \(e\.g\. 127\.0\.0\.1:8080 or :8080\), got 'garbage'$/,
        2,
      ],
      [
        ['up', '--libvirt-uri', 'test:///default', '--node-name', 'Bad_Node'],
        /^libvirt-operator up: node name 'Bad_Node' is not a valid Kubernetes node name/,
        2,
      ],
      [
        ['vm', 'pause', 'web', '--frob'],
        /^libvirt-operator vm: Unknown option '--frob'; see 'vm --help'$/,
        2,
      ],
      [
        ['vm', 'pause', 'web', '--kubeconfig', notKubeconfig],
        new RegExp(`^libvirt-operator vm: cannot read kubeconfig ${notKubeconfig}: EISDIR`),
        1,
      ],
    ];
    // Each case is a process of its own that starts nothing: run side by side, the waits for
    // their starts overlap (one after another, they took 29 s of a CI run).
    const [results, bare, help] = await Promise.all([
      Promise.all(cases.map(([args]) => collect(spawnCli(args)))),
      collect(spawnCli([])),
      collect(spawnCli(['--help'])),
    ]);
    cases.forEach(([args, message, code], i) => {
      const res = results[i]!;
      expect(res.code, args.join(' ')).toBe(code);
      expect(res.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(res.stderr.trim()).toMatch(message);
    });
    // No command at all: the usage, as an error; asked for with --help, as the answer.
    expect([bare.code, bare.stdout]).toEqual([2, '']);
    expect(bare.stderr).toMatch(/^usage: libvirt-operator <command>/);
    expect([help.code, help.stderr]).toEqual([0, '']);
    expect(help.stdout).toBe(bare.stderr);
  });

  it('names a busy port, and a folder another control plane runs in', async () => {
    const dir = tempDir();
    const first = started(spawnCli(['local-cluster', '--dir', dir, '--no-crds']));
    await waitForLine(first, /^ready:/);
    const port = new URL(readFileSync(join(dir, 'kubeconfig'), 'utf8').match(/server: (\S+)/)![1]!)
      .port;
    // The same folder twice (npm start in two shells): refused before anything in it is
    // touched; the first control plane keeps its files and answers as before. Both refusals
    // at once: neither starts anything, so neither can be in the other's way.
    const files = ['pids', 'kubeconfig', 'tokens.csv', 'sa.key'];
    const before = files.map((f) => readFileSync(join(dir, f), 'utf8'));
    const etcdPid = recordedPids(dir)[1];
    const [second, again] = await Promise.all([
      collect(spawnCli(['local-cluster', '--port', port, '--no-crds'])),
      collect(spawnCli(['local-cluster', '--dir', dir, '--no-crds']), 30_000),
    ]);
    expect(second.code).toBe(1);
    expect(second.stderr.trim()).toBe(
      `libvirt-operator local-cluster: port ${port} on 127.0.0.1 is already in use; choose another with --port or stop what listens there`,
    );
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(
      `libvirt-operator local-cluster: ${dir} is in use by a running control plane (etcd pid ${etcdPid}): stop the local-cluster or up that started it (or kill ${etcdPid} if it was left behind), or choose another --dir`,
    );
    expect(files.map((f) => readFileSync(join(dir, f), 'utf8'))).toEqual(before);
    const kubectl = join(findBinaries()!, 'kubectl');
    const readyz = await run(kubectl, [
      '--kubeconfig',
      join(dir, 'kubeconfig'),
      'get',
      '--raw',
      '/readyz',
    ]);
    expect(readyz.stdout).toBe('ok');
  });
});

describe('set-up scripts', () => {
  it('say in one line that a Go toolchain is missing', async () => {
    const res = await run('bash', ['scripts/provision-control-plane.sh'], {
      env: {
        ...process.env,
        KUBEBUILDER_ASSETS: '',
        LIBVIRT_OPERATOR_CACHE: tempDir(),
        GO: '/nonexistent/go',
      },
    });
    expect(res.code).toBe(1);
    expect(res.stderr.trim()).toMatch(
      /^provision-control-plane: no Go toolchain at GO=\/nonexistent\/go; install Go >= 1\.26/,
    );
  });

  it('say in one line that KUBEBUILDER_ASSETS lacks a binary', async () => {
    const res = await run('bash', ['scripts/provision-control-plane.sh'], {
      env: { ...process.env, KUBEBUILDER_ASSETS: tempDir() },
    });
    expect(res.code).toBe(1);
    expect(res.stderr.trim()).toMatch(
      /^provision-control-plane: KUBEBUILDER_ASSETS=\S+ has no executable kube-apiserver/,
    );
  });

  it('say in one line that installing Debian packages needs root', async () => {
    // 'nobody' cannot install; the extra package name is one that is certainly not installed.
    const res = await run(
      'setpriv',
      [
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        'bash',
        'scripts/install-host-deps.sh',
      ],
      {
        env: { ...process.env, LIBVIRT_OPERATOR_EXTRA_PACKAGES: 'lvo-not-a-real-package' },
      },
    );
    expect(res.code).toBe(1);
    expect(res.stderr.trim()).toBe(
      'install-host-deps: missing Debian packages: lvo-not-a-real-package; run as root or: sudo apt-get install -y lvo-not-a-real-package',
    );
  });
});
