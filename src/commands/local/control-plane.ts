// A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and for
// `libvirt-operator local-cluster`. The envtest shape: no controller-manager, no scheduler.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  writeFileSync,
  renameSync,
  rmSync,
  readdirSync,
  closeSync,
} from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { packageRoot } from './package-root.js';

export const KUBERNETES_VERSION = 'v1.36.3';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  input?: string;
  /** Impersonate this user (the admin token may impersonate anyone). */
  asUser?: string;
  asGroups?: string[];
  timeoutMs?: number;
}

export interface ControlPlane {
  dir: string;
  binDir: string;
  server: string;
  port: number;
  token: string;
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  etcdEndpoint: string;
  kubectl(args: string[], opts?: KubectlOptions): Promise<KubectlResult>;
  installCRDs(dir?: string): Promise<void>;
  /** Waits until the named CustomResourceDefinition has Established=True (60 s by default). */
  waitEstablished(name: string, timeoutMs?: number): Promise<void>;
  killApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  pauseApiServer(): void;
  resumeApiServer(): void;
  compactEtcd(): Promise<string>;
  apiServerMetrics(): Promise<string>;
  /** GET a raw API path with the admin token; returns status and body. */
  getRaw(path: string): Promise<{ status: number; body: string }>;
  /**
   * Stops the API server, then etcd. `discard` (a folder of its own only, which the stop
   * removes): the API server is killed instead of given its graceful shutdown, which takes
   * ~1.1 s (measured 2026-12-07) and leaves nothing a discarded etcd would keep.
   */
  stop(opts?: { discard?: boolean }): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Apply crds/*.yaml and wait until Established. Default true. */
  installCRDs?: boolean;
  /** Use this directory (created if missing) instead of a fresh temp dir; kept after stop. */
  dir?: string;
  /** kube-apiserver secure port; default a free random one. */
  port?: number;
  /** Bring the binaries into the cache when they are missing (may take ~10 min). Default false. */
  provision?: boolean;
  /**
   * The API server's watch cache (default on, as in production). Fault-injection tests turn it
   * off: the cache keeps its own event history, so after `compactEtcd()` a watch from an old
   * resourceVersion is still served from it instead of answering 410 Gone right away.
   */
  watchCache?: boolean;
  /**
   * Address the API server listens on and advertises (default 127.0.0.1). A local node's pods
   * reach the API server at its node's address, so `local-cluster --node` uses the pod
   * bridge's gateway.
   */
  address?: string;
  /** More token-file users, e.g. a kubelet's `system:node:<name>` in group system:nodes. */
  extraTokens?: Array<{ token: string; user: string; uid: string; groups: string[] }>;
  /**
   * Serve real nodes: the Node authorizer and NodeRestriction for kubelets, and the
   * ServiceAccount admission plugin that gives pods their projected token volume.
   */
  nodes?: boolean;
  /**
   * A stop asked for during the start (local-cluster's and up's SIGINT/SIGTERM): the start
   * ends at its next step or wait, stops what it had started and rejects with the reason.
   */
  signal?: AbortSignal;
}

/**
 * The CA a local node's kubelet trusts for its API (`certs/` of the control plane's
 * directory): only the API server holds a client certificate of it.
 */
export const KUBELET_CLIENT_CA = 'kubelet-client-ca.crt';

/**
 * A CA and, signed by it, the API server's client certificate for kubelets. Without one the
 * kubelet could authenticate no one, and kubectl exec (so `console` on a cluster), logs and
 * port-forward could not work. The CA's key is dropped: nothing else is ever signed.
 */
function writeKubeletClientCerts(certs: string): void {
  const f = (name: string) => join(certs, name);
  const openssl = (args: string[]) => {
    try {
      execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
      throw new ControlPlaneError(
        e.code === 'ENOENT'
          ? 'openssl is missing (it makes the kubelet client certificate): run scripts/install-host-deps.sh (or apt-get install openssl)'
          : `openssl ${args[0]}: ${String(e.stderr ?? e.message).trim()}`,
      );
    }
  };
  const caKey = f('kubelet-client-ca.key');
  const csr = f('kubelet-client.csr');
  const [ca, cert, key] = [f(KUBELET_CLIENT_CA), f('kubelet-client.crt'), f('kubelet-client.key')];
  const newKey = ['-newkey', 'rsa:2048', '-nodes'];
  const days = ['-days', '3650'];
  openssl([
    'req',
    '-x509',
    ...newKey,
    '-keyout',
    caKey,
    '-out',
    ca,
    ...days,
    '-subj',
    '/CN=libvirt-operator-kubelet-client-ca',
  ]);
  openssl([
    'req',
    ...newKey,
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    '/CN=kube-apiserver-kubelet-client',
  ]);
  openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca,
    '-CAkey',
    caKey,
    '-CAcreateserial',
    '-out',
    cert,
    ...days,
  ]);
  rmSync(caKey, { force: true });
  rmSync(csr, { force: true });
}

/**
 * Whether clients take the serving certificate `pem` at `address` at the time `now`: it names
 * the address (an IP host is checked against IP names only) and has not expired
 * (kube-apiserver makes its own for a year). An unreadable one is as good as missing. Pure.
 */
export function servingCertUsable(pem: string | Buffer, address: string, now: Date): boolean {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    return false;
  }
  return (
    cert.checkIP(address) !== undefined &&
    now >= new Date(cert.validFrom) &&
    now < new Date(cert.validTo)
  );
}

/**
 * kube-apiserver makes its self-signed serving certificate in --cert-dir for the address it
 * listens on, and reuses the one it finds there, whatever its address or age. A --dir used
 * before at another address (a plain local-cluster on 127.0.0.1, then `--node` on the bridge's
 * address) kept a certificate that does not name the new one, and one used a year before kept
 * an expired one: every client refused it, and the start waited 60 s for a /readyz that could
 * never answer. Removed, it is made anew for this address.
 */
function forgetUnusableServingCert(certDir: string, address: string): void {
  const cert = join(certDir, 'apiserver.crt');
  if (!existsSync(cert) || servingCertUsable(readFileSync(cert), address, new Date())) return;
  rmSync(cert, { force: true });
  rmSync(join(certDir, 'apiserver.key'), { force: true });
}

/** An error whose message is one actionable line, meant to be printed without a stack. */
export class ControlPlaneError extends Error {
  override name = 'ControlPlaneError';
}

const REQUIRED_BINARIES = ['kube-apiserver', 'etcd', 'kubectl'] as const;

export function cacheRoot(): string {
  return (
    process.env.LIBVIRT_OPERATOR_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'libvirt-operator')
  );
}

/** Where the binaries are, without building anything; undefined when they are not there yet. */
export function findBinaries(): string | undefined {
  const assets = process.env.KUBEBUILDER_ASSETS;
  if (assets) {
    const missing = REQUIRED_BINARIES.filter((b) => !existsSync(join(assets, b)));
    if (missing.length > 0) {
      throw new ControlPlaneError(
        `KUBEBUILDER_ASSETS=${assets} lacks ${missing.join(', ')}; point it at a folder with kube-apiserver, etcd and kubectl, or unset it to build them`,
      );
    }
    return assets;
  }
  const dir = join(cacheRoot(), 'k8s', KUBERNETES_VERSION);
  return existsSync(join(dir, '.complete')) ? dir : undefined;
}

/** The binaries' folder, building them with scripts/provision-control-plane.sh when allowed. */
async function ensureBinaries(provision: boolean, signal?: AbortSignal): Promise<string> {
  const found = findBinaries();
  if (found) return found;
  if (!provision) {
    throw new ControlPlaneError(
      `control-plane binaries not found in ${join(cacheRoot(), 'k8s', KUBERNETES_VERSION)}; run 'npm run setup' (builds them, ~10 min once) or set KUBEBUILDER_ASSETS`,
    );
  }
  const script = join(packageRoot(), 'scripts', 'provision-control-plane.sh');
  signal?.throwIfAborted();
  const code = await new Promise<number>((resolve) => {
    const child = spawn('bash', [script], { stdio: ['ignore', 'inherit', 'inherit'] });
    // A Ctrl-C in a terminal reaches the build too (one process group); a SIGTERM sent to this
    // process alone must end it as well, not wait minutes for it.
    const onAbort = () => child.kill('SIGTERM');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('exit', (c) => {
      signal?.removeEventListener('abort', onAbort);
      resolve(c ?? 1);
    });
    child.on('error', () => resolve(127));
  });
  signal?.throwIfAborted();
  const dir = findBinaries();
  if (code !== 0 || !dir) {
    throw new ControlPlaneError(
      `building the control-plane binaries failed (exit ${code}); see the lines above`,
    );
  }
  return dir;
}

/**
 * The folder where kubectl caches what `server` serves (API groups and resources): under
 * KUBECACHEDIR or ~/.kube/cache, named as kubectl names it (the host and port with any
 * character but word characters, '.', '/', '(' and ')' made '_').
 */
export function kubectlDiscoveryCache(
  server: string,
  env: NodeJS.ProcessEnv = process.env,
  home = homedir(),
): string {
  const host = server.replace(/^https?:\/\//, '').replace(/[^(\w/.)]/g, '_');
  return join(env.KUBECACHEDIR || join(home, '.kube', 'cache'), 'discovery', host);
}

/** Where free ports are looked for: at or above this, and below the ephemeral range. */
const PORT_FLOOR = 10_000;

/**
 * A TCP port nothing listens on at `host`, chosen below the kernel's ephemeral range. A port
 * the kernel hands out for listen(0) comes from that range, and any outgoing connection on
 * the host may take it before the process it was picked for binds it, or while a restarted
 * API server is down (a CI run lost kube-apiserver's port that way: "bind: address already
 * in use").
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const below = ephemeralPortLow();
  if (below - PORT_FLOOR >= 1_000) {
    for (let i = 0; i < 100; i++) {
      const port = PORT_FLOOR + Math.floor(Math.random() * (below - PORT_FLOOR));
      if (await canListen(port, host)) return port;
    }
  }
  return kernelPort(host);
}

/** The first port of the kernel's ephemeral range (Linux's default when unreadable). */
export function ephemeralPortLow(
  range = () => readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8'),
): number {
  try {
    const low = Number(range().trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Whether a TCP listener could bind `port` on `host` right now. */
export function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

function kernelPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port')),
      );
    });
  });
}

async function assertPortFree(port: number, host = '127.0.0.1'): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new ControlPlaneError(
          err.code === 'EADDRINUSE'
            ? `port ${port} on ${host} is already in use; choose another with --port or stop what listens there`
            : `cannot listen on ${host}:${port}: ${err.message}`,
        ),
      ),
    );
    srv.listen(port, host, () => srv.close(() => resolve()));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function tail(file: string, lines = 5): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' | ');
  } catch {
    return '(no log)';
  }
}

/** How soon a start in a folder waits for a SIGKILLed run's processes to be gone. */
const REAPED_WITHIN_MS = 3_000;

/**
 * A detached watchdog that outlives a SIGKILLed parent: it kills every PID listed in the
 * pids file and removes the directory (or only the file). This is what keeps an interrupted
 * test run from leaving etcd or kube-apiserver behind. Inline JS, because the harness also runs
 * from TypeScript sources under vitest.
 *
 * The parent's end is seen as the end of the watchdog's stdin, a pipe whose only writer is the
 * parent: the kernel closes it when the parent exits, however it exits. Polling whether the
 * parent's PID was alive (kill(pid, 0)) took a parent that had exited but was not yet reaped (a
 * zombie, whose PID answers) for a live one: a local-cluster SIGKILLed under a parent that did
 * not wait for it (a supervisor, a shell that exec'd another program, a slow PID 1) left etcd
 * and kube-apiserver running for as long as its zombie lasted.
 *
 * The file's first line names the run (`run <id>`): a watchdog acts only on its own run's file.
 * A folder given with --dir is used again by the next run, and the watchdog of a run that had
 * just stopped, finding the next run's file, removed it, so that run was left without one.
 */
export const REAPER_SOURCE = `
const fs = require('fs');
const [dir, removeDir, run] = process.argv.slice(1);
const pidsFile = dir + '/pids';
function ours() {
  try { return fs.readFileSync(pidsFile, 'utf8').split('\\n'); } catch { return undefined; }
}
function mine(lines) { return lines !== undefined && lines[0] === 'run ' + run; }
// Over when the file is gone (a clean stop) or names another run; an empty read is not taken
// for either (record() replaces the file whole, but a partial read must never disarm it).
function over(lines) { return lines === undefined || (lines[0] !== '' && !mine(lines)); }
setInterval(() => { if (over(ours())) process.exit(0); }, 300);
function reap() {
  const lines = ours();
  if (!mine(lines)) process.exit(0);
  for (const line of lines.slice(1)) {
    const pid = Number(line.trim());
    if (pid > 0) { try { process.kill(-pid, 'SIGKILL'); } catch {} try { process.kill(pid, 'SIGKILL'); } catch {} }
  }
  if (removeDir === '1') fs.rmSync(dir, { recursive: true, force: true }); else fs.rmSync(pidsFile, { force: true });
  process.exit(0);
}
process.stdin.on('data', () => undefined);
process.stdin.on('end', reap);
process.stdin.on('error', reap);
`;

export interface Reaper {
  /** Lists these PIDs (process group leaders) as the ones to kill should this process die. */
  record(pids: Array<number | undefined>): void;
  /** After a clean stop: removes the pids file, if still this run's, and ends the watchdog. */
  disarm(): void;
}

/**
 * Arms a watchdog (REAPER_SOURCE) over `dir`'s pids file, before anything is started, so no
 * process of this run is ever without one. `removeDir`: the watchdog removes all of `dir`.
 */
export function startReaper(dir: string, removeDir: boolean): Reaper {
  const pidsFile = join(dir, 'pids');
  const run = randomBytes(8).toString('hex');
  const owner = `run ${run}`;
  // Replaced whole (write, then rename): writeFileSync empties the file before writing, and a
  // watchdog reading it in between found no run line and quit, leaving the run unwatched.
  const record = (pids: Array<number | undefined>) => {
    const next = `${pidsFile}.${run}`;
    writeFileSync(next, [owner, ...pids.filter((p) => p !== undefined)].join('\n') + '\n');
    renameSync(next, pidsFile);
  };
  record([]);
  const child = spawn(process.execPath, ['-e', REAPER_SOURCE, dir, removeDir ? '1' : '0', run], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  child.unref();
  // This end of the pipe must not hold the event loop; nothing is ever written to it.
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdin?.on('error', () => undefined);
  return {
    record,
    disarm() {
      try {
        if (readFileSync(pidsFile, 'utf8').split('\n')[0] === owner) rmSync(pidsFile);
      } catch {
        // already gone (a folder removed with it)
      }
      child.stdin?.destroy();
    },
  };
}

export interface Proc {
  child: ChildProcess;
  exited: Promise<void>;
}

export function startProcess(
  bin: string,
  args: string[],
  logFile: string,
  env?: NodeJS.ProcessEnv,
): Proc {
  const fd = openSync(logFile, 'a');
  // detached: its own process group, so a Ctrl-C aimed at the test runner does not race the
  // orderly shutdown below; the reaper covers the case where we never get to run it.
  const child = spawn(bin, args, { stdio: ['ignore', fd, fd], detached: true, env });
  closeSync(fd);
  child.unref();
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return { child, exited };
}

export async function terminate(proc: Proc | undefined, graceMs = 5000): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  const pid = proc.child.pid;
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGCONT'); // a paused process cannot act on SIGTERM
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  // The child is unref'd (startProcess): while it stops, it must hold the event loop, or this
  // process can end mid-stop (the exit handler then SIGKILLs etcd and the pids file stays).
  // The grace timer is cleared once the process has gone: left running, it held the event
  // loop, and so `local-cluster --node`'s exit, for up to the whole grace (kubelet's and
  // containerd's 10 s) after everything had stopped; it was also all that kept the loop alive.
  proc.child.ref();
  let timer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs)));
  const done = await Promise.race([proc.exited.then(() => true), graceOver]);
  clearTimeout(timer);
  if (!done) {
    // Said aloud: a process that needs killing did not shut down cleanly (its state, a lease
    // it holds), and the stop took the whole grace period because of it.
    process.stderr.write(
      `${basename(proc.child.spawnfile)} (pid ${pid}) did not stop within ` +
        `${graceMs / 1000}s of SIGTERM; killed it\n`,
    );
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await proc.exited;
  }
}

/** SIGKILL, then wait for the exit: for a process whose state is thrown away anyway. */
async function kill(proc: Proc | undefined): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  const pid = proc.child.pid;
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return; // already gone
  }
  proc.child.ref(); // as in terminate: hold the event loop until it has gone
  await proc.exited;
}

function httpsGet(
  url: string,
  ca: Buffer,
  token: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { ca, headers: { authorization: `Bearer ${token}` }, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The pid of a running etcd whose data directory is `dataDir`, if there is one. */
export function etcdUsing(dataDir: string, procRoot = '/proc'): number | undefined {
  const flag = `--data-dir=${dataDir}`;
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return undefined; // no /proc: etcd's own lock on its data still stops a second one
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let args: string[];
    try {
      args = readFileSync(join(procRoot, entry, 'cmdline'), 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (args.includes(flag) && /(^|\/)etcd$/.test(args[0] ?? '')) return Number(entry);
  }
  return undefined;
}

/**
 * The etcd still running on a data directory after waiting up to `waitMs` for it to go: a run
 * killed with SIGKILL leaves its etcd to the reaper, which looks every 300 ms, so a start right
 * after the kill (a supervisor, a user's up-arrow) must not take that etcd for another run's.
 */
export async function etcdOutlasting(
  dataDir: string,
  waitMs: number,
  procRoot = '/proc',
): Promise<number | undefined> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const pid = etcdUsing(dataDir, procRoot);
    if (pid === undefined || Date.now() >= deadline) return pid;
    await sleep(100);
  }
}

/** Whether a CustomResourceDefinition (JSON) has the condition Established=True. */
export function established(crdJson: string): boolean {
  const crd = JSON.parse(crdJson) as {
    status?: { conditions?: Array<{ type?: string; status?: string }> | null };
  };
  return (crd.status?.conditions ?? []).some(
    (c) => c.type === 'Established' && c.status === 'True',
  );
}

export async function waitFor(
  what: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
  hint: () => string,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    if (await probe().catch(() => false)) return;
    await sleep(100);
  }
  throw new ControlPlaneError(
    `${what} did not become ready within ${timeoutMs / 1000} s: ${hint()}`,
  );
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const signal = opts.signal;
  const binDir = await ensureBinaries(opts.provision ?? false, signal);
  signal?.throwIfAborted();
  if (opts.port !== undefined) await assertPortFree(opts.port, opts.address);

  const ownDir = opts.dir === undefined;
  // Absolute: etcd's --data-dir is compared with this folder's by other starts.
  const dir = opts.dir !== undefined ? resolve(opts.dir) : mkdtempSync(join(tmpdir(), 'lvo-cp-'));
  if (!ownDir) {
    // Before anything in it is touched: a second start in the same folder rewrote the first's
    // keys and pid list, then waited silently on etcd's lock of its data.
    const etcdPid = await etcdOutlasting(join(dir, 'etcd'), REAPED_WITHIN_MS);
    if (etcdPid !== undefined)
      throw new ControlPlaneError(
        `${dir} is in use by a running control plane (etcd pid ${etcdPid}): stop the local-cluster or up that started it (or kill ${etcdPid} if it was left behind), or choose another --dir`,
      );
  }
  signal?.throwIfAborted();
  mkdirSync(join(dir, 'certs'), { recursive: true });
  const reaper = startReaper(dir, ownDir);

  const token = randomBytes(24).toString('hex');
  const tokenLines = [
    `${token},admin,admin-uid,"system:masters"`,
    ...(opts.extraTokens ?? []).map((t) => `${t.token},${t.user},${t.uid},"${t.groups.join(',')}"`),
  ];
  writeFileSync(join(dir, 'tokens.csv'), tokenLines.join('\n') + '\n', { mode: 0o600 });
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), {
    mode: 0o600,
  });
  writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  if (opts.nodes) writeKubeletClientCerts(join(dir, 'certs'));

  const [etcdClientPort, etcdPeerPort] = [await freePort(), await freePort()];
  const port = opts.port ?? (await freePort());
  const etcdEndpoint = `http://127.0.0.1:${etcdClientPort}`;
  const address = opts.address ?? '127.0.0.1';
  const server = `https://${address}:${port}`;
  forgetUnusableServingCert(join(dir, 'certs'), address);
  // What kubectl remembers of an earlier server at this address (its discovery cache is
  // trusted for hours) is wrong about this one: without the virt.dev group in it, a user's
  // first `kubectl get virt` here failed with "the server doesn't have a resource type".
  // Our own kubectl keeps its cache in this folder, not in the user's: it installs the CRDs,
  // so it reads the API's groups before virt.dev is among them. Both are forgotten again once
  // the CRDs serve.
  const kubectlCache = join(dir, 'kubectl-cache');
  const forgetDiscovery = () => {
    rmSync(join(kubectlCache, 'discovery'), { recursive: true, force: true });
    try {
      rmSync(kubectlDiscoveryCache(server), { recursive: true, force: true });
    } catch {
      // Not ours to fix (say, another user's folder): kubectl then refreshes it on the first
      // miss by full resource name, as before.
    }
  };
  forgetDiscovery();
  const procs: { etcd?: Proc; apiserver?: Proc } = {};
  const recordPids = () => reaper.record([procs.apiserver?.child.pid, procs.etcd?.child.pid]);

  const stopAll = async (discard = false) => {
    if (discard && ownDir) await kill(procs.apiserver);
    await terminate(procs.apiserver);
    await terminate(procs.etcd);
    reaper.disarm();
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  // A synchronous last resort when the test process exits without calling stop().
  const onExit = () => {
    for (const p of [procs.apiserver, procs.etcd]) {
      try {
        if (p?.child.pid) process.kill(p.child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  try {
    signal?.throwIfAborted();
    procs.etcd = startProcess(
      join(binDir, 'etcd'),
      [
        '--name=default',
        `--data-dir=${join(dir, 'etcd')}`,
        `--listen-client-urls=${etcdEndpoint}`,
        `--advertise-client-urls=${etcdEndpoint}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      join(dir, 'etcd.log'),
    );
    recordPids();
    await waitFor(
      'etcd',
      30_000,
      async () => (await fetch(`${etcdEndpoint}/health`)).ok,
      () => tail(join(dir, 'etcd.log')),
      signal,
    );

    const apiserverArgs = [
      `--etcd-servers=${etcdEndpoint}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${port}`,
      `--cert-dir=${join(dir, 'certs')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      `--authorization-mode=${opts.nodes ? 'Node,RBAC' : 'RBAC'}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      opts.nodes
        ? '--enable-admission-plugins=NodeRestriction'
        : '--disable-admission-plugins=ServiceAccount',
      // exec, attach, logs and port-forward go through the kubelet, which admits only clients
      // with a certificate of KUBELET_CLIENT_CA (local-node.ts); it listens on the node's
      // address, and a node's name (its Hostname address) need not resolve to it.
      ...(opts.nodes
        ? [
            `--kubelet-client-certificate=${join(dir, 'certs', 'kubelet-client.crt')}`,
            `--kubelet-client-key=${join(dir, 'certs', 'kubelet-client.key')}`,
            '--kubelet-preferred-address-types=InternalIP',
          ]
        : []),
      '--endpoint-reconciler-type=none',
      '--allow-privileged=true',
      `--watch-cache=${opts.watchCache ?? true}`,
      '--v=0',
    ];
    const startApiServer = async () => {
      signal?.throwIfAborted();
      procs.apiserver = startProcess(
        join(binDir, 'kube-apiserver'),
        apiserverArgs,
        join(dir, 'kube-apiserver.log'),
      );
      recordPids();
      const failed = procs.apiserver.exited.then(() => {
        throw new ControlPlaneError(
          `kube-apiserver exited during start-up: ${tail(join(dir, 'kube-apiserver.log'))}`,
        );
      });
      failed.catch(() => undefined);
      await Promise.race([
        waitFor(
          'kube-apiserver',
          60_000,
          async () => {
            const ca = readFileSync(join(dir, 'certs', 'apiserver.crt'));
            const res = await httpsGet(`${server}/readyz`, ca, token, 2000);
            return res.status === 200 && res.body === 'ok';
          },
          () => tail(join(dir, 'kube-apiserver.log')),
          signal,
        ),
        failed,
      ]);
    };
    await startApiServer();

    const ca = readFileSync(join(dir, 'certs', 'apiserver.crt'));
    const kubeconfigPath = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfigPath,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'local',
            cluster: { server, 'certificate-authority-data': ca.toString('base64') },
          },
        ],
        users: [{ name: 'admin', user: { token } }],
        contexts: [
          { name: 'local', context: { cluster: 'local', user: 'admin', namespace: 'default' } },
        ],
        'current-context': 'local',
      }),
      { mode: 0o600 },
    );
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);

    const kubectl = (args: string[], kopts: KubectlOptions = {}): Promise<KubectlResult> =>
      new Promise((resolve) => {
        const extra: string[] = [];
        if (kopts.asUser) extra.push(`--as=${kopts.asUser}`);
        for (const g of kopts.asGroups ?? []) extra.push(`--as-group=${g}`);
        const child = spawn(
          join(binDir, 'kubectl'),
          [`--kubeconfig=${kubeconfigPath}`, `--cache-dir=${kubectlCache}`, ...extra, ...args],
          {
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        );
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        const timer = setTimeout(() => child.kill('SIGKILL'), kopts.timeoutMs ?? 60_000);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code: code ?? -1, stdout, stderr });
        });
        child.stdin.end(kopts.input ?? '');
      });

    // Polled rather than left to `kubectl wait --for=condition=Established`, which fails
    // outright ("accessor error") when it reads a new CRD whose status.conditions is still null.
    // The start's signal, while the start runs: a later call (a test's) is not aborted by it.
    let startSignal = signal;
    const waitEstablished = async (name: string, timeoutMs = 60_000) => {
      const path = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`;
      let last = '';
      await waitFor(
        `CRD ${name} Established`,
        timeoutMs,
        async () => {
          const res = await httpsGet(`${server}${path}`, ca, token, 2000);
          last = `${res.status} ${res.body.slice(0, 300)}`;
          return res.status === 200 && established(res.body);
        },
        () => last,
        startSignal,
      );
    };

    const installCRDs = async (crdDir = join(packageRoot(), 'crds')) => {
      startSignal?.throwIfAborted();
      const files = existsSync(crdDir) ? readdirSync(crdDir).filter((f) => /\.ya?ml$/.test(f)) : [];
      if (files.length === 0) return;
      // Client-side apply, as `kubectl apply -k manifests/` does afterwards: it records the
      // last-applied annotation, without which that apply warns about every CRD.
      const applied = await kubectl(['apply', '-f', crdDir]);
      if (applied.code !== 0)
        throw new ControlPlaneError(
          `installing CRDs from ${crdDir} failed: ${applied.stderr.trim()}`,
        );
      for (const file of files) {
        for (const doc of parseAllDocuments(readFileSync(join(crdDir, file), 'utf8'))) {
          const crd = doc.toJS() as {
            kind?: string;
            metadata?: { name: string };
            spec?: {
              group: string;
              names: { plural: string };
              versions: Array<{ name: string; served?: boolean }>;
            };
          } | null;
          if (crd?.kind !== 'CustomResourceDefinition' || !crd.spec || !crd.metadata) continue;
          await waitEstablished(crd.metadata.name);
          // Established is not yet servable: for a few seconds after it, lists of the new
          // kinds answer 429 "storage is (re)initializing". Wait until each kind lists.
          const version = crd.spec.versions.find((v) => v.served !== false)?.name;
          const path = `/apis/${crd.spec.group}/${version}/${crd.spec.names.plural}?limit=1`;
          await waitFor(
            `listing ${crd.spec.names.plural}.${crd.spec.group}`,
            30_000,
            async () => (await httpsGet(`${server}${path}`, ca, token, 2000)).status === 200,
            () => path,
            startSignal,
          );
        }
      }
      forgetDiscovery();
    };

    let stopped = false;
    const cp: ControlPlane = {
      dir,
      binDir,
      server,
      port,
      token,
      kubeconfigPath,
      kubeConfig,
      etcdEndpoint,
      kubectl,
      installCRDs,
      waitEstablished,
      async killApiServer() {
        const p = procs.apiserver;
        if (!p?.child.pid) return;
        process.kill(p.child.pid, 'SIGKILL');
        await p.exited;
      },
      startApiServer,
      pauseApiServer() {
        if (procs.apiserver?.child.pid) process.kill(procs.apiserver.child.pid, 'SIGSTOP');
      },
      resumeApiServer() {
        if (procs.apiserver?.child.pid) process.kill(procs.apiserver.child.pid, 'SIGCONT');
      },
      async compactEtcd() {
        // etcd's gRPC gateway: the range reply's header carries the current revision.
        const range = await fetch(`${etcdEndpoint}/v3/kv/range`, {
          method: 'POST',
          body: JSON.stringify({ key: Buffer.from('/').toString('base64') }),
        });
        const revision = String(
          ((await range.json()) as { header: { revision: string } }).header.revision,
        );
        const res = await fetch(`${etcdEndpoint}/v3/kv/compaction`, {
          method: 'POST',
          body: JSON.stringify({ revision, physical: true }),
        });
        if (!res.ok)
          throw new Error(
            `etcd compaction at ${revision} failed: ${res.status} ${await res.text()}`,
          );
        return revision;
      },
      async apiServerMetrics() {
        const res = await httpsGet(`${server}/metrics`, ca, token, 10_000);
        return res.body;
      },
      getRaw: (path) => httpsGet(`${server}${path}`, ca, token, 10_000),
      async stop(stopOpts = {}) {
        if (stopped) return;
        stopped = true;
        process.removeListener('exit', onExit);
        await stopAll(stopOpts.discard);
      },
    };
    if (opts.installCRDs ?? true) await installCRDs();
    signal?.throwIfAborted();
    startSignal = undefined;
    return cp;
  } catch (err) {
    process.removeListener('exit', onExit);
    await stopAll();
    throw err;
  }
}
