// The DaemonSet on a real node: `local-cluster --node` (kubelet, containerd, CNI, controller-
// manager, scheduler on this host), the agent image built offline (`npm run image`'s code),
// `kubectl apply -k manifests/overlays/local`, and the agent pod converging a VM on the real
// libvirtd. One cluster for the whole file; the last test stops it and checks that nothing it
// started is left behind.
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { buildAgentImage, writeImage } from '../../../src/commands/local/agent-image.js';
import { findBinaries } from '../../../src/commands/local/control-plane.js';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import {
  completeLines,
  ensureTinyGuest,
  serveTinyGuest,
  TINY_GUEST_CMDLINE,
  waitForGuestReady,
  withoutGuestStatus,
} from '../../../src/commands/local/tiny-guest.js';
import { consoleLogFile } from '../../../src/controllers/virtual-machine/desired.js';
import { until } from '../../harness/agent.js';
import { dirPool } from '../../harness/manifests.js';
import {
  collect,
  processesNaming,
  ROOT,
  run,
  spawnCli,
  waitForLine,
} from '../../harness/processes.js';

const RUN = randomBytes(3).toString('hex');
const NS = `node-e2e-${RUN}`;
const VM = `vm-${RUN}`;
const DOMAIN = `${NS}_${VM}`;
/** The console test's VM (the tiny guest) and the pool its kernel and initrd go to. */
const CON_VM = `con-${RUN}`;
const CON_POOL = `node-con-pool-${RUN}`;
const AGENT_NS = 'libvirt-operator';
const DS = 'libvirt-operator-agent';
const IMAGE_FILE = join(ROOT, 'build', 'image', 'libvirt-operator-dev.tar');
/** The agent's --state-dir (manifests/base/daemonset.yaml), mounted at the same path. */
const STATE_DIR = '/var/lib/libvirt-operator';

interface Pod {
  metadata: { name: string; uid: string; creationTimestamp: string; deletionTimestamp?: string };
  spec: {
    nodeName?: string;
    containers: Array<{ image: string }>;
    priorityClassName?: string;
    priority?: number;
  };
  status?: {
    hostIP?: string;
    conditions?: Array<{ type: string; status: string }>;
    containerStatuses?: Array<{
      ready: boolean;
      restartCount: number;
      state?: {
        running?: { startedAt: string };
        terminated?: { startedAt?: string; finishedAt?: string };
      };
    }>;
  };
}

interface VirtualMachine {
  metadata: { generation?: number };
  status?: {
    phase?: string;
    observedGeneration?: number;
    conditions?: Array<{ type: string; status: string }>;
    memory?: { target?: string };
  };
}

const virsh = (...args: string[]) => run('virsh', ['-c', SYSTEM_URI, ...args]);

describe('the DaemonSet on a real local node', () => {
  let cluster: ChildProcess | undefined;
  let clusterExit: Promise<{ code: number | null; stdout: string; stderr: string }> | undefined;
  let dir: string;
  let kubeconfig: string;
  let kubectlBin: string;
  let nodeName: string;
  let bridge: string;
  let imageSize = '';

  const kubectl = async (args: string[], input?: string, timeoutMs = 120_000) => {
    const child = (await import('node:child_process')).spawn(
      kubectlBin,
      [`--kubeconfig=${kubeconfig}`, ...args],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child.stdin.end(input ?? '');
    return collect(child, timeoutMs);
  };
  const getJSON = async <T>(args: string[]): Promise<T> => {
    const res = await kubectl(['get', ...args, '-o', 'json']);
    if (res.code !== 0) throw new Error(`kubectl get ${args.join(' ')}: ${res.stderr}`);
    return JSON.parse(res.stdout) as T;
  };
  const agentPods = async () =>
    (
      await getJSON<{ items: Pod[] }>([
        'pods',
        '-n',
        AGENT_NS,
        '-l',
        'app.kubernetes.io/component=agent',
      ])
    ).items;
  const isReady = (p: Pod) =>
    p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  /** The one Ready, not terminating agent pod, once there is exactly one and it is not `other`. */
  const readyPod = (other?: string) =>
    until(
      `one Ready agent pod${other ? ` other than ${other}` : ''}`,
      async () => {
        const pods = await agentPods();
        const live = pods.filter((p) => !p.metadata.deletionTimestamp);
        return live.length === 1 && isReady(live[0]!) && live[0]!.metadata.name !== other
          ? live[0]
          : undefined;
      },
      150_000,
    );
  const leaseHolder = async () =>
    (
      await getJSON<{ spec: { holderIdentity?: string } }>([
        'lease',
        '-n',
        AGENT_NS,
        `libvirt-operator-${nodeName}`,
      ])
    ).spec.holderIdentity;
  const vm = () => getJSON<VirtualMachine>(['vm', VM, '-n', NS]);
  const vmYaml = (memory: string) =>
    JSON.stringify({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: VM, namespace: NS },
      spec: {
        nodeName,
        domainType: 'qemu',
        runStrategy: 'Always',
        vcpus: 1,
        memory,
        maxMemory: '128Mi',
        // No OS answers the ACPI request: deleting waits out the grace period, not 60 s.
        terminationGracePeriodSeconds: 2,
      },
    });
  /** QEMU's pid for the domain, from libvirtd's own record of it. */
  const qemuPid = () => readFileSync(`/var/run/libvirt/qemu/${DOMAIN}.pid`, 'utf8').trim();
  const domId = async () => (await virsh('domid', DOMAIN)).stdout.trim();

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the real-node tests need root');
    await ensureLibvirtd();
    const bin = findBinaries();
    if (!bin) throw new Error("control-plane binaries missing: run 'npm run setup'");
    kubectlBin = join(bin, 'kubectl');
    // `npm run image`'s code path, writing the file the scenario in the issue names.
    const image = buildAgentImage({ root: ROOT });
    writeImage(image, IMAGE_FILE);
    imageSize = `${(image.size.uncompressed / 1048576).toFixed(0)} MiB`;

    dir = mkdtempSync(join(tmpdir(), 'lvo-node-e2e-'));
    cluster = spawnCli(['local-cluster', '--node', '--image', IMAGE_FILE, '--dir', dir]);
    clusterExit = collect(cluster, 3_600_000);
    const nodeLine = waitForLine(
      cluster,
      /^node: (\S+) Ready at \S+ \(pods \S+ on (\S+)\)/,
      600_000,
    );
    const ready = await waitForLine(cluster, /^ready: kubeconfig=(.*)$/, 600_000);
    const node = await nodeLine;
    nodeName = node[1]!;
    bridge = node[2]!;
    kubeconfig = ready[1]!;
    const ns = await kubectl(['create', 'namespace', NS]);
    expect(ns.code, ns.stderr).toBe(0);
  }, 900_000);

  afterAll(async () => {
    if (kubeconfig) await kubectl(['delete', 'namespace', NS, '--wait=true', '--timeout=60s']);
    if (cluster && cluster.exitCode === null) {
      cluster.kill('SIGTERM');
      await clusterExit;
    }
    for (const domain of [DOMAIN, `${NS}_${CON_VM}`])
      if ((await virsh('dominfo', domain)).code === 0) {
        await virsh('destroy', domain);
        await virsh('undefine', domain);
      }
    if ((await virsh('pool-info', CON_POOL)).code === 0) {
      await virsh('pool-destroy', CON_POOL);
      await virsh('pool-undefine', CON_POOL);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 240_000);

  it('kubectl apply -k manifests/overlays/local: the agent pod becomes Ready on the node', async () => {
    const applied = await kubectl(['apply', '-k', join(ROOT, 'manifests', 'overlays', 'local')]);
    expect(applied.code, applied.stderr).toBe(0);
    const pod = await readyPod();
    expect(pod.spec.nodeName).toBe(nodeName);
    expect(pod.spec.containers[0]!.image).toBe('libvirt-operator:dev');
    expect(pod.status?.containerStatuses?.[0]?.restartCount).toBe(0);
    // Admitted at the class the manifest names, with its value resolved by the API server's
    // Priority admission (the class is built in: 2,000,001,000).
    expect(pod.spec.priorityClassName).toBe('system-node-critical');
    expect(pod.spec.priority).toBe(2_000_001_000);
    // The agent holds its node's Lease, written with its own ServiceAccount token.
    await until(
      'the Lease held by the pod',
      async () => (await leaseHolder()) === pod.metadata.name,
    );
    console.log(`agent image: ${imageSize} unpacked`);
  });

  it('converges a VM on the real libvirtd through the pod', async () => {
    const applied = await kubectl(['apply', '-f', '-'], vmYaml('128Mi'));
    expect(applied.code, applied.stderr).toBe(0);
    const ready = await until(
      'the VM Ready and Running',
      async () => {
        const o = await vm();
        return o.status?.phase === 'Running' &&
          o.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
          ? o
          : undefined;
      },
      90_000,
    );
    expect(ready.status?.phase).toBe('Running');
    expect((await virsh('domstate', DOMAIN)).stdout.trim()).toBe('running');
    const xml = (await virsh('dumpxml', DOMAIN)).stdout;
    expect(xml).toMatch(/<domain type='qemu'/);
  });

  it('deleting the pod: a new pod takes over and the domain keeps running (same id, same QEMU)', async () => {
    const [before] = await agentPods();
    const id = await domId();
    const pid = qemuPid();
    expect(id).toMatch(/^\d+$/);
    const del = await kubectl([
      'delete',
      'pod',
      '-n',
      AGENT_NS,
      before!.metadata.name,
      '--wait=true',
    ]);
    expect(del.code, del.stderr).toBe(0);
    const after = await readyPod(before!.metadata.name);
    await until('the Lease taken over', async () => (await leaseHolder()) === after.metadata.name);
    // The new agent converges a change: the balloon target, applied live.
    const applied = await kubectl(['apply', '-f', '-'], vmYaml('96Mi'));
    expect(applied.code, applied.stderr).toBe(0);
    const changed = Date.now();
    await until(
      'status.memory.target 96Mi from the new agent',
      async () => (await vm()).status?.memory?.target === '96Mi',
      60_000,
    );
    // The figure the DaemonSet's minReadySeconds allows for (daemonset.yaml).
    console.log(
      `the new agent's first status write: seen ${Date.now() - changed} ms after the change`,
    );
    expect(await domId()).toBe(id);
    expect(qemuPid()).toBe(pid);
  });

  it('a rolling update onto CRDs older than the new agent: never counted available while a refused write turns it NotReady; with the CRDs applied it completes, the new agent holding the Lease only after the old container finished', async () => {
    const [old] = await agentPods();
    const id = await domId();
    // Two watches, each in the API server's order: the agent pods, and the DaemonSet's status
    // (every one the DaemonSet controller writes, so nothing it counted is missed between
    // samples).
    const { spawn } = await import('node:child_process');
    const watchOf = (...what: string[]) => {
      const child = spawn(
        kubectlBin,
        [
          `--kubeconfig=${kubeconfig}`,
          ...['get', ...what, '-n', AGENT_NS, '--watch', '--output-watch-events', '-o', 'json'],
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stream = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stream += c));
      // kubectl prints one JSON object per event; split at the top-level boundaries. The last
      // one may still be arriving, and is left for the next look.
      const events = <T>() =>
        stream
          .split(/\n(?=\{)/)
          .filter((s) => s.trim())
          .flatMap((s) => {
            try {
              return [JSON.parse(s) as { type: string; object: T }];
            } catch {
              return [];
            }
          });
      const stop = async () => {
        child.kill('SIGTERM');
        if (child.exitCode === null && child.signalCode === null)
          await new Promise((r) => child.once('close', r));
      };
      return { events, stop, listed: () => stream };
    };
    interface DaemonSet {
      metadata: { generation: number };
      status: {
        observedGeneration?: number;
        updatedNumberScheduled?: number;
        numberReady?: number;
        numberAvailable?: number;
      };
    }
    const podWatch = watchOf('pods', '-l', 'app.kubernetes.io/component=agent');
    const dsWatch = watchOf(`daemonset/${DS}`);
    try {
      await until(
        'the watches listing',
        async () => podWatch.listed().includes(old!.metadata.name) && dsWatch.listed().includes(DS),
      );
      const pods = () => podWatch.events<Pod>();
      const newPod = (e: { object: Pod }) => e.object.metadata.name !== old!.metadata.name;
      // The DaemonSet's statuses for the new template (generation `rolled`) once the new pod
      // is the node's only one: the controller counts the node's oldest pod, so before that
      // the old one's.
      let rolled = Infinity;
      const onNewPod = () =>
        dsWatch
          .events<DaemonSet>()
          .map((e) => e.object)
          .filter(
            (d) =>
              d.metadata.generation >= rolled &&
              d.status.observedGeneration === d.metadata.generation &&
              d.status.updatedNumberScheduled === 1,
          );

      const patched = await kubectl([
        'patch',
        'daemonset',
        DS,
        '-n',
        AGENT_NS,
        '--type=merge',
        '-p',
        JSON.stringify({
          spec: { template: { metadata: { annotations: { 'e2e.virt.dev/rollout': RUN } } } },
        }),
        '-o',
        'json',
      ]);
      expect(patched.code, patched.stderr).toBe(0);
      rolled = (JSON.parse(patched.stdout) as DaemonSet).metadata.generation;
      // The new pod's first Ready, seen in the watch: its minReadySeconds window starts.
      const fresh = await until(
        'the new pod Ready in the watch',
        async () => pods().find((e) => newPod(e) && isReady(e.object))?.object,
        150_000,
      );
      const readyAt = Date.now();
      // Its first pass wrote nothing it could be refused (the VM's status was already right),
      // so it passed its probes. Now, inside the window, the CRDs go back to an older version,
      // one whose VirtualMachine status lacks `memory`, and a change makes the agent write
      // that field: its first write carrying a new field, arriving after its first Ready, as
      // on a host whose first pass outlasts a probe period.
      // A JSON patch, not a replace: kubectl apply's record of the CRD (its last-applied
      // annotation) stays as the kustomization wrote it, so applying that again restores it.
      const outdated = await kubectl([
        'patch',
        'crd',
        'virtualmachines.virt.dev',
        '--type=json',
        '-p',
        JSON.stringify([
          {
            op: 'remove',
            path: '/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/memory',
          },
        ]),
      ]);
      expect(outdated.code, outdated.stderr).toBe(0);
      const changed = Date.now();
      const applied = await kubectl(['apply', '-f', '-'], vmYaml('112Mi'));
      expect(applied.code, applied.stderr).toBe(0);
      await until(
        'the new pod NotReady in the watch (its crds check failing)',
        async () => {
          const mine = pods().filter((e) => e.object.metadata.name === fresh.metadata.name);
          return mine.length > 0 && !isReady(mine.at(-1)!.object);
        },
        60_000,
      );
      const notReadyAt = Date.now();
      // The DaemonSet controller has seen it Ready and then NotReady: from here on it cannot
      // count it available.
      await until('the DaemonSet counting the new pod ready, then not', async () => {
        const statuses = onNewPod();
        const ready = statuses.findIndex((d) => (d.status.numberReady ?? 0) > 0);
        return ready >= 0 && statuses.slice(ready).some((d) => (d.status.numberReady ?? 0) === 0);
      });
      console.log(
        `outdated CRDs: the new pod NotReady ${notReadyAt - readyAt} ms after its first Ready (the CRD patched and the change applied ${changed - readyAt} ms after it, NotReady ${notReadyAt - changed} ms after the change)`,
      );
      // It was Ready, and still the DaemonSet never counted it available: the update stops here.
      expect(
        onNewPod().filter((d) => (d.status.numberAvailable ?? 0) > 0),
        'the DaemonSet counted the new pod available',
      ).toEqual([]);

      // The fix the agent's message names: this version's CRDs. The refused write's retry goes
      // through, the pod is Ready again and, minReadySeconds later, available.
      const restored = await kubectl(['apply', '-k', join(ROOT, 'manifests', 'overlays', 'local')]);
      expect(restored.code, restored.stderr).toBe(0);
      const restoredAt = Date.now();
      await until(
        'status.memory.target 112Mi once the CRDs are current',
        async () => (await vm()).status?.memory?.target === '112Mi',
        120_000,
      );
      console.log(`the refused write went through ${Date.now() - restoredAt} ms after the CRDs`);
      const status = await kubectl(
        ['rollout', 'status', `daemonset/${DS}`, '-n', AGENT_NS, '--timeout=120s'],
        undefined,
        140_000,
      );
      expect(status.code, status.stderr + status.stdout).toBe(0);
      expect((await readyPod(old!.metadata.name)).metadata.name).toBe(fresh.metadata.name);

      // The rollout is done once the new pod is available; the old pod's object goes when the
      // kubelet has finished with it, which may be later.
      await until(
        'the old pod DELETED in the watch',
        async () =>
          pods().some((e) => e.type === 'DELETED' && e.object.metadata.name === old!.metadata.name),
        60_000,
      );
      const events = pods();
      const deletedAt = events.findIndex(
        (e) => e.type === 'DELETED' && e.object.metadata.name === old!.metadata.name,
      );
      const addedAt = events.findIndex(
        (e) => e.type === 'ADDED' && e.object.metadata.name === fresh.metadata.name,
      );
      expect(deletedAt, 'the old pod was deleted').toBeGreaterThanOrEqual(0);
      expect(addedAt, 'the new pod appeared in the watch').toBeGreaterThanOrEqual(0);
      // maxSurge 0 replaces the pod in place, but the DaemonSet controller creates the new pod
      // as soon as the old one is terminating (measured: ADDED before the old one's DELETED),
      // so the two pods can overlap. What keeps two agents from acting at once is the node's
      // Lease: the new agent acquires it only after the old container has finished (and
      // released it).
      const oldFinished = events
        .filter((e) => e.object.metadata.name === old!.metadata.name)
        .map((e) => e.object.status?.containerStatuses?.[0]?.state?.terminated?.finishedAt)
        .filter(Boolean)
        .at(-1);
      expect(oldFinished, 'the old container terminated').toBeDefined();
      expect(await leaseHolder()).toBe(fresh.metadata.name);
      const lease = await getJSON<{ spec: { acquireTime?: string } }>([
        'lease',
        '-n',
        AGENT_NS,
        `libvirt-operator-${nodeName}`,
      ]);
      // finishedAt has whole seconds (rounded down), acquireTime microseconds.
      expect(Date.parse(lease.spec.acquireTime!)).toBeGreaterThanOrEqual(Date.parse(oldFinished!));
      console.log(
        `rolling update: new pod ADDED at watch event ${addedAt}, old pod DELETED at ${deletedAt}; old container finished ${oldFinished}, new one started ${fresh.status?.containerStatuses?.[0]?.state?.running?.startedAt}, Lease acquired ${lease.spec.acquireTime}`,
      );
      expect(await domId()).toBe(id);
    } finally {
      await Promise.all([podWatch.stop(), dsWatch.stop()]);
    }
  }, 300_000);

  it("the agent's ServiceAccount token works, and a forbidden action is refused", async () => {
    const [pod] = await agentPods();
    // The kubelet's projected token for this pod, read from its volume on this host.
    const volumes = join(
      dir,
      'node',
      'kubelet',
      'pods',
      pod!.metadata.uid,
      'volumes',
      'kubernetes.io~projected',
    );
    const vol = readdirSync(volumes).find((v) => existsSync(join(volumes, v, 'token')));
    expect(vol, `a projected token under ${volumes}`).toBeDefined();
    const token = readFileSync(join(volumes, vol!, 'token'), 'utf8').trim();
    const as = (args: string[]) => kubectl([`--token=${token}`, ...args]);
    const who = await as(['auth', 'whoami', '-o', 'json']);
    expect(who.code, who.stderr).toBe(0);
    const me = JSON.parse(who.stdout) as {
      status: { userInfo: { username: string; extra?: Record<string, string[]> } };
    };
    expect(me.status.userInfo.username).toBe(
      `system:serviceaccount:${AGENT_NS}:libvirt-operator-agent`,
    );
    expect(me.status.userInfo.extra?.['authentication.kubernetes.io/node-name']).toEqual([
      nodeName,
    ]);
    // Allowed: what the agent does.
    const vmRead = await as(['get', 'vm', VM, '-n', NS, '-o', 'name']);
    expect(vmRead.code, vmRead.stderr).toBe(0);
    // Refused by RBAC: Secrets, deleting a VM.
    const secrets = await as(['get', 'secrets', '-n', NS]);
    expect(secrets.code).not.toBe(0);
    expect(secrets.stderr).toMatch(/forbidden/i);
    const deleteVm = await as(['delete', 'vm', VM, '-n', NS, '--wait=false']);
    expect(deleteVm.code).not.toBe(0);
    expect(deleteVm.stderr).toMatch(/forbidden/i);
    // Refused by the admission policy: another node's Lease.
    const lease = JSON.stringify({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'libvirt-operator-some-other-node', namespace: AGENT_NS },
      spec: { holderIdentity: 'x' },
    });
    const foreign = await kubectl([`--token=${token}`, 'create', '-f', '-'], lease);
    expect(foreign.code).not.toBe(0);
    expect(foreign.stderr).toMatch(/denied|forbidden/i);
    // And the VM is still there, untouched.
    expect((await vm()).status?.phase).toBe('Running');
  });

  it('console --via-agent as a user with only the console roles: a typed command, the answer, EOF ends it', async () => {
    // The tiny guest, its kernel and initrd fetched by the agent in the pod from this host
    // (the node's address: the pod's loopback is its own).
    const guest = await ensureTinyGuest();
    const [pod] = await agentPods();
    const server = await serveTinyGuest(guest, pod!.status!.hostIP!);
    const CVM = CON_VM;
    const POOL = CON_POOL;
    const volume = (name: string, file: string, sha256: string) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name, namespace: NS },
      spec: {
        nodeName,
        pool: POOL,
        format: 'raw',
        source: { http: { url: `${server.base}/${file}`, sha256 } },
      },
    });
    const objects = [
      dirPool(POOL, join(dir, POOL)),
      volume(`kernel-${RUN}`, 'vmlinuz', guest.sha256.kernel),
      volume(`initrd-${RUN}`, 'initrd.img', guest.sha256.initrd),
      {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachine',
        // Its serial console logged too (under the agent's state directory, a host path):
        // the guest's ready line is read from there.
        metadata: { name: CVM, namespace: NS, annotations: { 'virt.dev/console-log': 'true' } },
        spec: {
          nodeName,
          domainType: 'qemu',
          runStrategy: 'Always',
          vcpus: 1,
          memory: '128Mi',
          terminationGracePeriodSeconds: 2,
          boot: {
            kernel: { volume: `kernel-${RUN}` },
            initrd: { volume: `initrd-${RUN}` },
            cmdline: TINY_GUEST_CMDLINE,
          },
        },
      },
    ]
      .map((o) => JSON.stringify(o))
      .join('\n---\n');
    const ok = (res: { code: number | null; stderr: string }, what: string) =>
      expect(res.code, `${what}: ${res.stderr}`).toBe(0);
    /** A kubeconfig for ServiceAccount `sa` of NS: the admin's server and CA, the SA's token. */
    const userKubeconfig = async (sa: string) => {
      ok(await kubectl(['create', 'serviceaccount', sa, '-n', NS]), 'serviceaccount');
      const token = await kubectl(['create', 'token', sa, '-n', NS, '--duration=1h']);
      ok(token, 'token');
      const config = parse(readFileSync(kubeconfig, 'utf8')) as {
        users: Array<{ user: Record<string, unknown> }>;
      };
      for (const u of config.users) u.user = { token: token.stdout.trim() };
      const file = join(dir, `${sa}.kubeconfig`);
      writeFileSync(file, stringify(config), { mode: 0o600 });
      return file;
    };
    /**
     * `console CVM --via-agent` as its own process with `file`'s credentials and this
     * cluster's kubectl, stdin a pipe fed `input` and then closed (EOF).
     */
    const consoleAs = async (file: string, input: string) => {
      const { spawn } = await import('node:child_process');
      const env = { ...process.env };
      delete env.KUBECONFIG;
      const child = spawn(
        process.execPath,
        [
          ...['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'console', CVM, '-n', NS],
          ...['--via-agent', '--kubeconfig', file, '--kubectl', kubectlBin],
        ],
        { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      child.stdin.end(input);
      const started = Date.now();
      const done = await collect(child, 120_000);
      return { ...done, ms: Date.now() - started };
    };
    try {
      ok(await kubectl(['apply', '-f', '-'], objects), 'apply');
      const wait = await kubectl(
        ['wait', '--for=condition=Ready', `vm/${CVM}`, '-n', NS, '--timeout=240s'],
        undefined,
        250_000,
      );
      ok(wait, 'VM Ready');
      // The guest's ready line: its shell is up. A session typed into a guest still booting
      // gets no answer and lingers for the console's longest wait (15 s) before the next try.
      const { metadata } = await getJSON<{ metadata: { uid: string } }>(['vm', CVM, '-n', NS]);
      const booting = Date.now();
      await waitForGuestReady(consoleLogFile(STATE_DIR, metadata.uid), 240_000);
      console.log(`the guest's ready line ${Date.now() - booting} ms after the VM was Ready`);

      // The console user: manifests/console/'s Role and ClusterRole, bound as docs/deploy.md says.
      ok(await kubectl(['apply', '-f', join(ROOT, 'manifests', 'console')]), 'console roles');
      const user = `console-${RUN}`;
      const userConfig = await userKubeconfig(user);
      ok(
        await kubectl([
          'create',
          'rolebinding',
          user,
          '-n',
          AGENT_NS,
          '--role=libvirt-operator-console',
          `--serviceaccount=${NS}:${user}`,
        ]),
        'console binding',
      );
      // Someone who may find the pod and read the VM, but not exec.
      const noExec = `no-exec-${RUN}`;
      const noExecConfig = await userKubeconfig(noExec);
      ok(
        await kubectl([
          'create',
          'role',
          noExec,
          '-n',
          AGENT_NS,
          '--verb=get,list',
          '--resource=pods',
        ]),
        'no-exec role',
      );
      ok(
        await kubectl([
          'create',
          'rolebinding',
          noExec,
          '-n',
          AGENT_NS,
          `--role=${noExec}`,
          `--serviceaccount=${NS}:${noExec}`,
        ]),
        'no-exec binding',
      );
      ok(
        await kubectl([
          'create',
          'rolebinding',
          `console-vms-${RUN}`,
          '-n',
          NS,
          '--clusterrole=libvirt-operator-console-vm-reader',
          `--serviceaccount=${NS}:${user}`,
          `--serviceaccount=${NS}:${noExec}`,
        ]),
        'vm-reader binding',
      );
      // The guest may still be booting: input that came before its shell did is answered by
      // nothing, so a new session, with a new marker, until one is answered. A session that
      // fails is the answer too: booting makes none fail.
      let sessions = 0;
      const answered = await until(
        "the guest's answer through the agent pod, or a failed session",
        async () => {
          sessions++;
          const marker = randomBytes(4).toString('hex');
          // The shell computes the answer: the echoed command line never contains it.
          const session = await consoleAs(userConfig, `echo LVO-POD-${marker}-$((6*7))\n`);
          const answer = completeLines(session.stdout).includes(`LVO-POD-${marker}-42`);
          return answer || session.code !== 0 || session.stderr !== ''
            ? { ...session, marker, answer }
            : undefined;
        },
        300_000,
      );
      console.log(`console: answered in session ${sessions}, ${answered.ms} ms`);
      const got = `exit ${answered.code}, stderr: ${answered.stderr}\nstdout: ${answered.stdout.slice(-600)}`;
      // It ended by itself after stdin's end (the test's kill comes at 120 s), exit 0.
      expect(answered.code, got).toBe(0);
      expect(answered.stderr, got).toBe('');
      expect(answered.answer, got).toBe(true);
      expect(withoutGuestStatus(answered.stdout)).toContain(
        `echo LVO-POD-${answered.marker}-$((6*7))`,
      );
      expect(answered.ms).toBeLessThan(60_000);

      const refused = await consoleAs(noExecConfig, 'echo nothing\n');
      expect(refused.code, refused.stderr).toBe(1);
      expect(refused.stderr).toContain(
        `cannot create resource "pods/exec" in API group "" in the namespace "${AGENT_NS}"`,
      );
      expect(refused.stdout).toBe('');
    } finally {
      await kubectl(
        ['delete', '--ignore-not-found', '--wait=true', '--timeout=90s', '-f', '-'],
        objects,
        120_000,
      );
      await server.close();
    }
  }, 900_000);

  it('stops on SIGTERM leaving no process, mount, network device or cgroup behind', async () => {
    // The VM goes first, through the agent, as a user would before stopping the cluster.
    const del = await kubectl(['delete', 'vm', VM, '-n', NS, '--wait=true', '--timeout=90s']);
    expect(del.code, del.stderr).toBe(0);
    expect((await virsh('dominfo', DOMAIN)).code).not.toBe(0);
    cluster!.kill('SIGTERM');
    const exit = await clusterExit!;
    expect(exit.code, exit.stderr).toBe(0);
    expect(await processesNaming(dir), 'processes still naming the cluster directory').toEqual([]);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(dir));
    expect(mounts, 'mounts under the cluster directory').toEqual([]);
    expect((await run('ip', ['link', 'show', bridge])).code, `bridge ${bridge}`).not.toBe(0);
    const veths = (await run('ip', ['-o', 'link', 'show', 'master', bridge])).stdout.trim();
    expect(veths).toBe('');
    for (const ctl of ['memory', 'pids', 'cpu'])
      expect(existsSync(`/sys/fs/cgroup/${ctl}/kubepods`), `${ctl}/kubepods`).toBe(false);
  });
});
