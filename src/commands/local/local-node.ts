// A real node on this host for `libvirt-operator local-cluster --node`: a private containerd,
// CNI (bridge + host-local + loopback), a kubelet that registers the host as a Node, and the
// kube-controller-manager and kube-scheduler that turn a DaemonSet into running pods.
//
// Everything lives under the cluster directory (containerd's root, state and socket, the
// kubelet's root, pod logs, the CNI configuration and address leases), plus one bridge named
// after the cluster and the kubepods cgroups; stop() removes all of it but the bridge. The API
// server listens on the bridge's gateway address, which is also the node's InternalIP: pods
// reach it there (status.hostIP), without kube-proxy. So the bridge is its creator's to delete
// (deleteNodeNetwork), after the API server has stopped: without its address the API server's
// shutdown hung (at "Cleaning up lease on exit") until its SIGKILL, 5 s later.
// Should this process be killed without stopping, watchdogs do the same: the pids file's
// (control-plane.ts) kills our processes, node-watchdog.ts the pods, mounts, cgroups and bridge.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  readdirSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  cacheRoot,
  ControlPlaneError,
  freePort,
  KUBERNETES_VERSION,
  startProcess,
  startReaper,
  tail,
  terminate,
  waitFor,
  KUBELET_CLIENT_CA,
  type ControlPlane,
  type Proc,
} from './control-plane.js';
import { armNodeWatchdog, type NodeWatchdog } from './node-watchdog.js';
import { buildImage } from './oci-image.js';
import { packageRoot } from './package-root.js';
import { run } from './run.js';

export const CONTAINERD_VERSION = 'v2.4.2';
/** The API server port of a cluster with a node: the overlay in manifests/overlays/local names it. */
export const NODE_API_SERVER_PORT = 6443;
export const DEFAULT_POD_SUBNET = '10.244.0.0/24';
/** Pinned in containerd as the pod sandbox; built from the Kubernetes module's pause.c. */
export const PAUSE_IMAGE = `localhost/libvirt-operator/pause:${KUBERNETES_VERSION}`;
const CNI_BIN_DIR = '/usr/lib/cni';

function nodeBinDir(): string {
  return join(cacheRoot(), 'node', `${KUBERNETES_VERSION}-containerd-${CONTAINERD_VERSION}`);
}

/** The node binaries' folder, building them with scripts/provision-node.sh when allowed. */
export async function ensureNodeBinaries(provision: boolean): Promise<string> {
  const dir = nodeBinDir();
  if (existsSync(join(dir, '.complete'))) return dir;
  if (!provision)
    throw new ControlPlaneError(
      `node binaries not found in ${dir}; run 'npm run setup' (builds kubelet, kube-controller-manager, kube-scheduler and containerd once)`,
    );
  const code = await new Promise<number>((resolve) => {
    const child = spawn('bash', [join(packageRoot(), 'scripts', 'provision-node.sh')], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('exit', (c) => resolve(c ?? 1));
    child.on('error', () => resolve(127));
  });
  if (code !== 0 || !existsSync(join(dir, '.complete')))
    throw new ControlPlaneError(`building the node binaries failed (exit ${code}); see above`);
  return dir;
}

async function must(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const res = await run(cmd, args, timeoutMs);
  if (res.code !== 0)
    throw new ControlPlaneError(`${cmd} ${args.join(' ')} failed: ${res.out.trim()}`);
  return res.out;
}

/** What the host needs before a node can start; each missing piece named with its fix. */
export function checkNodeHost(): void {
  if (process.getuid?.() !== 0)
    throw new ControlPlaneError('a local node needs root (kubelet, containerd, network setup)');
  for (const p of ['bridge', 'host-local', 'loopback'])
    if (!existsSync(join(CNI_BIN_DIR, p)))
      throw new ControlPlaneError(
        `no CNI plugin ${join(CNI_BIN_DIR, p)}; install Debian's containernetworking-plugins (npm run setup does)`,
      );
}

export interface NodeNetwork {
  bridge: string;
  subnet: string;
  gateway: string;
  prefix: number;
  /** Deletes the bridge should this process be killed before deleteNodeNetwork. */
  watchdog?: NodeWatchdog;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** The pod subnet's network address (as a number) and prefix length; /8 to /28 only. */
function parsePodSubnet(subnet: string): { base: number; prefix: number } {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(subnet);
  const prefix = Number(m?.[5]);
  if (!m || prefix < 8 || prefix > 28)
    throw new ControlPlaneError(`pod subnet must be an IPv4 CIDR from /8 to /28, got '${subnet}'`);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ipv4ToInt(`${m[1]}.${m[2]}.${m[3]}.${m[4]}`) & mask) >>> 0, prefix };
}

/**
 * Why the pod subnet cannot be used, from `ip -4 -o addr show`: an interface whose network
 * overlaps it. A bridge named like ours was left by a local node whose process and reaper were
 * both killed; only the user can tell whether another local node still uses it.
 */
export function subnetConflict(subnet: string, addrShow: string): string | undefined {
  const { base, prefix } = parsePodSubnet(subnet);
  for (const line of addrShow.split('\n')) {
    const a = /inet (\d+\.\d+\.\d+\.\d+)\/(\d+)/.exec(line);
    if (!a) continue;
    const common = Math.min(Number(a[2]), prefix);
    const cm = common === 0 ? 0 : (0xffffffff << (32 - common)) >>> 0;
    if ((ipv4ToInt(a[1]!) & cm) >>> 0 !== (base & cm) >>> 0) continue;
    const device = line.trim().split(/\s+/)[1] ?? '';
    const leftOver = /^lvo-[0-9a-f]{8}$/.test(device)
      ? `; if no other local node runs, it is one left behind: ip link delete ${device}`
      : '';
    return `pod subnet ${subnet} overlaps ${a[1]}/${a[2]} on this host (${device}); choose another with --pod-subnet${leftOver}`;
  }
  return undefined;
}

/**
 * Creates the pod bridge with its gateway address, before the API server starts: the API server
 * listens there. Refuses a subnet that a host interface already uses.
 */
export async function createNodeNetwork(
  subnet = DEFAULT_POD_SUBNET,
  bridge = `lvo-${randomBytes(4).toString('hex')}`,
): Promise<NodeNetwork> {
  const { base, prefix } = parsePodSubnet(subnet);
  const gwInt = base + 1;
  const gateway = [24, 16, 8, 0].map((s) => (gwInt >>> s) & 255).join('.');
  const conflict = subnetConflict(subnet, await must('ip', ['-4', '-o', 'addr', 'show']));
  if (conflict) throw new ControlPlaneError(conflict);
  await must('ip', ['link', 'add', bridge, 'type', 'bridge']);
  try {
    await must('ip', ['addr', 'add', `${gateway}/${prefix}`, 'dev', bridge]);
    await must('ip', ['link', 'set', bridge, 'up']);
  } catch (err) {
    await run('ip', ['link', 'del', bridge]);
    throw err;
  }
  const subnetText = `${[24, 16, 8, 0].map((s) => (base >>> s) & 255).join('.')}/${prefix}`;
  const watchdog = armNodeWatchdog({ bridge });
  return { bridge, subnet: subnetText, gateway, prefix, watchdog };
}

export async function deleteNodeNetwork(net: NodeNetwork): Promise<void> {
  await run('ip', ['link', 'del', net.bridge]);
  net.watchdog?.disarm();
}

export interface LocalNodeOptions {
  /** The Node's name; default this host's name. */
  nodeName?: string;
  /** The kubelet's bearer token; it must be in the API server's token file (extraTokens). */
  kubeletToken: string;
  /** Image tarballs (OCI layout or docker save) to load into the runtime. */
  images?: string[];
  /** Labels the kubelet puts on its Node. */
  labels?: Record<string, string>;
  /** How long to wait for the Node to become Ready; default 120 s. */
  readyTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface LocalNode {
  name: string;
  dir: string;
  network: NodeNetwork;
  containerdAddress: string;
  /** ctr against this node's containerd, in the Kubernetes namespace. */
  ctr(args: string[]): Promise<{ code: number; out: string }>;
  /** Loads an image tarball into the runtime. */
  loadImage(file: string): Promise<void>;
  /** Stops and removes everything the node started, but not the network it was given. */
  stop(): Promise<void>;
}

/**
 * The manifest digests `ctr images import` printed on stdout, one line each
 * ("application/vnd.oci.image.manifest.v1+json sha256:…"). Pure.
 */
export function importedDigests(importStdout: string): string[] {
  return [...importStdout.matchAll(/^application\/\S+ (sha256:[0-9a-f]{64})\s*$/gm)].map(
    (m) => m[1]!,
  );
}

/**
 * The one line a successful image import prints: what the image is called and which manifest
 * it is, from `lsQuiet` (`ctr images ls -q` by those digests). ctr's own output was shown
 * before: a progress display meant for a terminal, which named the agent image
 * "docker.io/library/libvirt operator:dev", and containerd's cgroup v1 deprecation warning,
 * which every ctr call prints on this kernel: noise to a user once the import worked (a failed
 * one still shows it all). The CRI's extra name for the same image, its config digest, is left
 * out. Pure.
 */
export function loadedImageLine(file: string, digests: readonly string[], lsQuiet: string): string {
  const names = lsQuiet
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('sha256:'));
  const what = [
    names.length > 0 ? names.join(', ') : undefined,
    digests.length > 0 ? `(${digests.map((d) => `${d.slice(0, 19)}…`).join(', ')})` : undefined,
  ].filter(Boolean);
  return what.length > 0
    ? `local node: loaded ${what.join(' ')} from ${file}`
    : `local node: loaded ${file}`;
}

export function kubeletTokenUser(nodeName: string): {
  user: string;
  uid: string;
  groups: string[];
} {
  return { user: `system:node:${nodeName}`, uid: `node-${nodeName}`, groups: ['system:nodes'] };
}

function kubeconfig(cp: ControlPlane, user: string, token: string): string {
  const ca = readFileSync(join(cp.dir, 'certs', 'apiserver.crt')).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'local', cluster: { server: cp.server, 'certificate-authority-data': ca } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: 'local', context: { cluster: 'local', user } }],
    'current-context': 'local',
  });
}

/** Mount points at or under `folder`, deepest first (so children go before their parents). */
export function mountsUnder(folder: string): string[] {
  // mountinfo names mount points by their real path: a folder given through a symlink
  // (--dir /var/run/..., /var/run -> /run on Debian) would match none of them.
  let dir = folder;
  try {
    dir = realpathSync(folder);
  } catch {
    /* gone: nothing can be mounted under it */
  }
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line
      .split(' ')[4]
      ?.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point && (point === dir || point.startsWith(`${dir}/`))) out.push(point);
  }
  return out.sort((a, b) => b.length - a.length);
}

/**
 * PIDs with `arg` as a whole argument, alone or as a flag's value (the shims carry
 * containerd's socket path: `-address PATH`). A whole argument, not a substring: the socket
 * of a node under /lvo is part of that of one under /home/me/lvo, and of any command line
 * that merely names a longer path.
 */
export function processesWithArg(arg: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (args.some((a) => a === arg || a.endsWith(`=${arg}`))) pids.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return pids;
}

/** Removes a cgroup directory tree bottom-up; cgroupfs only lets empty groups go. */
function removeCgroupTree(path: string): void {
  let entries: string[];
  try {
    entries = readdirSync(path);
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(path, e);
    try {
      if (statSync(p).isDirectory()) removeCgroupTree(p);
    } catch {
      /* gone */
    }
  }
  try {
    rmdirSync(path);
  } catch {
    /* busy (a process still in it) or already gone */
  }
}

/** A pod sandbox image: just the pause binary, which holds the pod's namespaces. */
function pauseImage(binDir: string): Buffer {
  return buildImage({
    reference: PAUSE_IMAGE,
    layers: [
      [{ type: 'file', path: '/pause', mode: 0o755, data: readFileSync(join(binDir, 'pause')) }],
    ],
    config: { Entrypoint: ['/pause'], User: '65535:65535' },
    history: ['pause.c from the Kubernetes module, compiled statically'],
  }).archive;
}

export async function startLocalNode(
  cp: ControlPlane,
  net: NodeNetwork,
  opts: LocalNodeOptions,
): Promise<LocalNode> {
  const log = opts.log ?? (() => undefined);
  const binDir = await ensureNodeBinaries(true);
  checkNodeHost();
  const name = opts.nodeName ?? hostname().toLowerCase();
  const dir = join(cp.dir, 'node');
  mkdirSync(dir, { recursive: true });
  const d = (...p: string[]) => join(dir, ...p);
  for (const sub of ['containerd', 'cni/net.d', 'cni/ipam', 'kubelet', 'pod-logs'])
    mkdirSync(d(sub), { recursive: true });
  const containerdAddress = d('containerd', 'containerd.sock');
  const env = {
    ...process.env,
    PATH: `${binDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
  };

  // The reaper of the control plane covers etcd and the API server; this one the node's
  // processes, should this process be killed without running stop().
  const reaper = startReaper(dir, false);
  // What that one cannot reach: the pods' containers and shims, their mounts, the cgroups.
  const watchdog = armNodeWatchdog({
    nodeDir: dir,
    runcRoot: d('containerd', 'runc'),
    containerdAddress,
    kubepods: true,
  });
  const procs: Record<string, Proc> = {};
  const recordPids = () => reaper.record(Object.values(procs).map((p) => p.child.pid));
  const start = (bin: string, args: string[]) => {
    procs[bin] = startProcess(join(binDir, bin), args, d(`${bin}.log`), env);
    recordPids();
    return procs[bin];
  };
  const ctr = (args: string[]) =>
    run(
      join(binDir, 'ctr'),
      ['--address', containerdAddress, '--namespace', 'k8s.io', ...args],
      300_000,
    );

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // No new pods, then every pod deleted through the API while the kubelet still runs: the
    // kubelet stops their containers, tears their network down (CNI DEL) and unmounts their
    // volumes, as on a real node being drained.
    await terminate(procs['kube-controller-manager']);
    await terminate(procs['kube-scheduler']);
    if (procs.kubelet && procs.kubelet.child.exitCode === null) {
      const del = await cp.kubectl(
        ['delete', 'pods', '--all', '--all-namespaces', '--wait=true', '--timeout=60s'],
        { timeoutMs: 90_000 },
      );
      if (del.code !== 0) log(`local node: deleting pods: ${del.stderr.trim()}`);
    }
    await terminate(procs.kubelet, 10_000);
    // Whatever is left in the runtime (a pod the kubelet could not finish): kill and remove.
    if (procs.containerd && procs.containerd.child.exitCode === null) {
      const tasks = (await ctr(['tasks', 'ls', '-q'])).out.split('\n').filter(Boolean);
      for (const t of tasks) {
        await ctr(['tasks', 'kill', '-s', 'SIGKILL', t]);
        await ctr(['tasks', 'rm', '-f', t]);
      }
      const containers = (await ctr(['containers', 'ls', '-q'])).out.split('\n').filter(Boolean);
      if (containers.length > 0) await ctr(['containers', 'rm', ...containers]);
    }
    await terminate(procs.containerd, 10_000);
    for (const pid of processesWithArg(containerdAddress)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const m of mountsUnder(dir)) await run('umount', ['-l', m]);
    for (const ctl of readdirSync('/sys/fs/cgroup'))
      removeCgroupTree(join('/sys/fs/cgroup', ctl, 'kubepods'));
    reaper.disarm();
    watchdog.disarm();
  };

  try {
    // --- containerd -------------------------------------------------------------------------
    writeFileSync(
      d('containerd', 'config.toml'),
      [
        'version = 3',
        `root = "${d('containerd', 'root')}"`,
        `state = "${d('containerd', 'state')}"`,
        '[grpc]',
        `  address = "${containerdAddress}"`,
        '[ttrpc]',
        `  address = "${containerdAddress}.ttrpc"`,
        '[plugins]',
        "  [plugins.'io.containerd.internal.v1.opt']",
        `    path = "${d('containerd', 'opt')}"`,
        // NRI listens on a fixed host path (/var/run/nri); this node needs no NRI plugins.
        "  [plugins.'io.containerd.nri.v1.nri']",
        '    disable = true',
        "  [plugins.'io.containerd.cri.v1.images']",
        '    snapshotter = "overlayfs"',
        "    [plugins.'io.containerd.cri.v1.images'.pinned_images]",
        `      sandbox = "${PAUSE_IMAGE}"`,
        "  [plugins.'io.containerd.cri.v1.runtime']",
        // The pods' network namespaces under the state directory, not /var/run/netns.
        '    netns_mounts_under_state_dir = true',
        // Lowering a pod's oom_score_adj (the kubelet asks -998 for sandboxes) needs
        // CAP_SYS_RESOURCE, which a host inside a container or sandbox may not have: keep pods
        // at or above containerd's own score instead of failing them.
        '    restrict_oom_score_adj = true',
        "    [plugins.'io.containerd.cri.v1.runtime'.containerd]",
        '      default_runtime_name = "runc"',
        "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]",
        '        runtime_type = "io.containerd.runc.v2"',
        "        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
        // runc built by provision-node.sh: Debian's runc 1.1.5 runs plain containers but fails
        // to start containerd 2's pod sandboxes ("can't get final child's PID from pipe"), and
        // Debian's crun 1.8 refuses their runtime-spec version.
        `          BinaryName = "${join(binDir, 'runc')}"`,
        `          Root = "${d('containerd', 'runc')}"`,
        // The kubelet's cgroup driver, which containerd reports to it: this host has no systemd.
        '          SystemdCgroup = false',
        "    [plugins.'io.containerd.cri.v1.runtime'.cni]",
        `      bin_dirs = ["${CNI_BIN_DIR}"]`,
        `      conf_dir = "${d('cni', 'net.d')}"`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      d('cni', 'net.d', '10-libvirt-operator.conflist'),
      JSON.stringify(
        {
          cniVersion: '1.0.0',
          name: 'libvirt-operator-local',
          plugins: [
            {
              type: 'bridge',
              bridge: net.bridge,
              isGateway: true,
              ipMasq: false,
              hairpinMode: true,
              ipam: {
                type: 'host-local',
                dataDir: d('cni', 'ipam'),
                ranges: [[{ subnet: net.subnet, gateway: net.gateway }]],
                routes: [{ dst: '0.0.0.0/0' }],
              },
            },
          ],
        },
        null,
        2,
      ),
    );
    const containerd = start('containerd', ['--config', d('containerd', 'config.toml')]);
    await waitFor(
      'containerd',
      30_000,
      async () => {
        if (containerd.child.exitCode !== null) throw new Error('exited');
        return (await ctr(['version'])).code === 0;
      },
      () => tail(d('containerd.log')),
    );
    const pauseTar = d('pause-image.tar');
    writeFileSync(pauseTar, pauseImage(binDir));
    const loadImage = async (file: string) => {
      const res = await ctr(['images', 'import', file]);
      if (res.code !== 0)
        throw new ControlPlaneError(`loading the image ${file} failed: ${res.out.trim()}`);
      const digests = importedDigests(res.stdout);
      // The names are containerd's, read back: ctr's import display mangles them.
      const refs =
        digests.length === 0
          ? ''
          : (await ctr(['images', 'ls', '-q', ...digests.map((d) => `target.digest==${d}`)]))
              .stdout;
      log(loadedImageLine(file, digests, refs));
    };
    await loadImage(pauseTar);
    for (const image of opts.images ?? []) await loadImage(image);

    // --- controller-manager and scheduler -------------------------------------------------
    writeFileSync(d('admin.kubeconfig'), kubeconfig(cp, 'admin', cp.token), { mode: 0o600 });
    // Both control loops act as the admin, alone, and serve nothing.
    const controlLoop = [
      `--kubeconfig=${d('admin.kubeconfig')}`,
      `--authentication-kubeconfig=${d('admin.kubeconfig')}`,
      `--authorization-kubeconfig=${d('admin.kubeconfig')}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=0',
    ];
    start('kube-controller-manager', [
      ...controlLoop,
      // Tokens for ServiceAccount token Secrets, and kube-root-ca.crt in every namespace:
      // each pod's projected token volume carries that CA.
      `--service-account-private-key-file=${join(cp.dir, 'sa.key')}`,
      `--root-ca-file=${join(cp.dir, 'certs', 'apiserver.crt')}`,
      '--use-service-account-credentials=false',
      '--v=1',
    ]);
    start('kube-scheduler', [...controlLoop, '--v=1']);

    // --- kubelet ----------------------------------------------------------------------------
    writeFileSync(
      d('kubelet.kubeconfig'),
      kubeconfig(cp, `system:node:${name}`, opts.kubeletToken),
      {
        mode: 0o600,
      },
    );
    const kubeletPort = await freePort(net.gateway);
    writeFileSync(
      d('kubelet-config.yaml'),
      stringify({
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        // This kernel mounts cgroup v1, which 1.35+ kubelets refuse unless told otherwise.
        failCgroupV1: false,
        failSwapOn: false,
        cgroupDriver: 'cgroupfs',
        containerRuntimeEndpoint: `unix://${containerdAddress}`,
        // The kubelet's own API only on the bridge address, for the API server alone (exec,
        // logs): it admits only the client certificate the control plane made for it.
        address: net.gateway,
        port: kubeletPort,
        readOnlyPort: 0,
        healthzPort: 0,
        authentication: {
          anonymous: { enabled: false },
          webhook: { enabled: false },
          x509: { clientCAFile: join(cp.dir, 'certs', KUBELET_CLIENT_CA) },
        },
        authorization: { mode: 'AlwaysAllow' },
        podLogsDir: d('pod-logs'),
        clusterDomain: 'cluster.local',
        resolvConf: '/etc/resolv.conf',
        registerNode: true,
        // A development host's disk is not the node's to reclaim: no image garbage collection,
        // and eviction only near a truly full disk or memory.
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        evictionHard: {
          'memory.available': '100Mi',
          'nodefs.available': '1%',
          'imagefs.available': '1%',
        },
        rotateCertificates: false,
        serverTLSBootstrap: false,
        // Pods' status reaches the API server quickly, which makes tests and `kubectl get` snappy.
        nodeStatusUpdateFrequency: '10s',
        syncFrequency: '10s',
      }),
    );
    const labels = { 'virt.dev/libvirt-host': 'true', ...opts.labels };
    const kubelet = start('kubelet', [
      `--config=${d('kubelet-config.yaml')}`,
      `--kubeconfig=${d('kubelet.kubeconfig')}`,
      `--root-dir=${d('kubelet')}`,
      `--hostname-override=${name}`,
      `--node-ip=${net.gateway}`,
      `--node-labels=${Object.entries(labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',')}`,
      '--v=1',
    ]);
    await waitFor(
      `Node ${name}`,
      opts.readyTimeoutMs ?? 120_000,
      async () => {
        for (const [bin, p] of Object.entries(procs))
          if (p.child.exitCode !== null || p.child.signalCode !== null)
            throw new ControlPlaneError(`${bin} exited: ${tail(d(`${bin}.log`))}`);
        const res = await cp.getRaw(`/api/v1/nodes/${name}`);
        if (res.status !== 200) return false;
        const node = JSON.parse(res.body) as {
          status?: { conditions?: Array<{ type: string; status: string }> };
        };
        return (
          node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false
        );
      },
      () => `kubelet: ${tail(d('kubelet.log'), 3)}`,
    ).catch((err: Error) => {
      // waitFor swallows probe errors; report an exited process as such.
      for (const [bin, p] of Object.entries(procs))
        if (p.child.exitCode !== null || p.child.signalCode !== null)
          throw new ControlPlaneError(`${bin} exited: ${tail(d(`${bin}.log`))}`);
      throw err;
    });
    void kubelet;
    return {
      name,
      dir,
      network: net,
      containerdAddress,
      ctr,
      loadImage,
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
