// A real libvirtd with QEMU for end-to-end tests. ensureLibvirtd() prepares the host the way
// docs/environment.md describes (idempotently) and starts virtlogd + libvirtd only when no
// daemon answers on qemu:///system; it stops only what it started. startPrivateLibvirtd()
// runs a second, isolated daemon in its own mount namespace (its own /run/libvirt,
// /var/lib/libvirt, /etc/libvirt, …) for tests that freeze, kill or restart the daemon, so
// they never disturb other tests sharing the system daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readlink, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Connect } from '../../libvirt/index.js';
import { run } from './run.js';

export const SYSTEM_URI = 'qemu:///system';
const SYSTEM_SOCKET = '/var/run/libvirt/libvirt-sock';
const SYSTEM_ADMIN_SOCKET = '/var/run/libvirt/libvirt-admin-sock';
const PID_DIR = '/var/run';
const LIBVIRTD_PID_FILE = `${PID_DIR}/libvirt-operator-libvirtd.pid`;
const VIRTLOGD_PID_FILE = `${PID_DIR}/libvirt-operator-virtlogd.pid`;
const LIBVIRTD_LOG = '/var/log/libvirt/libvirt-operator-libvirtd.log';
const READY_TIMEOUT_MS = 30_000;

export interface LibvirtDaemon {
  /** URI that reaches this daemon. */
  uri: string;
  /** Whether this process started it (and so may stop it). */
  startedByUs: boolean;
  /** PID of the running libvirtd; throws when none runs. */
  pid(): number;
  /** SIGSTOP: the daemon stops answering while its socket still accepts connections. */
  pause(): void;
  /** SIGCONT */
  resume(): void;
  /** Stops and starts the daemon, waiting until it answers again. */
  restart(): Promise<void>;
  /**
   * Stops the daemons this process started, unless other clients are still connected (another
   * test process found it running and uses it); does nothing for a daemon it found running.
   */
  stop(): Promise<void>;
}

async function must(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** True when a libvirtd answers an RPC at `uri` within `timeoutMs`. */
export async function daemonAnswers(uri: string, timeoutMs = 3_000): Promise<boolean> {
  let conn: Connect | undefined;
  try {
    conn = await Connect.open(uri, { timeoutMs, callTimeoutMs: timeoutMs });
    await conn.getLibVersion();
    return true;
  } catch {
    return false;
  } finally {
    await conn?.close().catch(() => undefined);
  }
}

async function waitAnswering(uri: string, what: string, logHint = ''): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await daemonAnswers(uri)) return;
    await sleep(200);
  }
  throw new Error(`${what} did not answer at ${uri} within ${READY_TIMEOUT_MS} ms${logHint}`);
}

function requireRoot(action: string): void {
  const uid = process.getuid?.();
  if (uid !== 0) {
    throw new Error(`${action} needs root (running as uid ${uid}); run the e2e tests as root`);
  }
}

async function requireBinaries(): Promise<void> {
  const missing: string[] = [];
  for (const bin of ['libvirtd', 'virtlogd', 'qemu-system-x86_64', 'unshare', 'tini']) {
    if ((await run('sh', ['-c', `command -v ${bin}`])).code !== 0) missing.push(bin);
  }
  if (missing.length > 0) {
    throw new Error(`missing ${missing.join(', ')}: run scripts/install-host-deps.sh as root`);
  }
}

/** qemu.conf settings this sandbox needs: QEMU as root, no AppArmor/SELinux driver. */
export function withQemuSettings(conf: string): string {
  const wanted: Record<string, string> = {
    user: '"root"',
    group: '"root"',
    security_driver: '"none"',
  };
  let next = conf;
  for (const [key, value] of Object.entries(wanted)) {
    const line = new RegExp(`^\\s*${key}\\s*=.*$`, 'm');
    const sep = next === '' || next.endsWith('\n') ? '' : '\n';
    next = line.test(next)
      ? next.replace(line, `${key} = ${value}`)
      : `${next}${sep}${key} = ${value}\n`;
  }
  return next;
}

/** The one-time host preparation from docs/environment.md; safe to repeat. */
export async function prepareHost(): Promise<void> {
  requireRoot('preparing the host for libvirtd');
  await requireBinaries();
  if ((await run('getent', ['group', 'libvirt-qemu'])).code !== 0) {
    await must('groupadd', ['--system', 'libvirt-qemu']).catch(async (err) => {
      // Another process may have created it meanwhile.
      if ((await run('getent', ['group', 'libvirt-qemu'])).code !== 0) throw err;
    });
  }
  if ((await run('getent', ['passwd', 'libvirt-qemu'])).code !== 0) {
    await must('useradd', [
      '--system',
      '-g',
      'libvirt-qemu',
      '-M',
      '-s',
      '/usr/sbin/nologin',
      'libvirt-qemu',
    ]).catch(async (err) => {
      if ((await run('getent', ['passwd', 'libvirt-qemu'])).code !== 0) throw err;
    });
  }
  // libvirt runs swtpm as qemu.conf's swtpm_user, 'tss' by default; swtpm-tools creates that
  // user when installed, a host or image that skipped its maintainer scripts may lack it.
  await ensureSystemUser('tss');
  const confPath = '/etc/libvirt/qemu.conf';
  const conf = existsSync(confPath) ? await readFile(confPath, 'utf8') : '';
  const next = withQemuSettings(conf);
  if (next !== conf) await writeFile(confPath, next);
  for (const dir of [
    '/var/log/libvirt',
    '/var/run/libvirt',
    '/var/lib/libvirt',
    '/var/cache/libvirt',
    '/etc/libvirt',
  ]) {
    await mkdir(dir, { recursive: true });
  }
}

/** A system group and user of the same name, created if missing; safe to repeat and race. */
async function ensureSystemUser(name: string): Promise<void> {
  if ((await run('getent', ['group', name])).code !== 0) {
    await must('groupadd', ['--system', name]).catch(async (err) => {
      if ((await run('getent', ['group', name])).code !== 0) throw err;
    });
  }
  if ((await run('getent', ['passwd', name])).code !== 0) {
    await must('useradd', ['--system', '-g', name, '-M', '-s', '/usr/sbin/nologin', name]).catch(
      async (err) => {
        if ((await run('getent', ['passwd', name])).code !== 0) throw err;
      },
    );
  }
}

/**
 * Starts libvirtd in the foreground under `tini -s`, detached from this process, and returns
 * tini's PID. tini is a child subreaper: libvirt daemonizes QEMU, so a QEMU process's parent is
 * the nearest subreaper, else PID 1, and virDomainDestroy returns only once that parent has
 * reaped it (libvirt polls `kill(pid, 0)` every 200 ms, and a zombie still answers). A host's
 * init (systemd) reaps at once; this sandbox's PID 1 takes 1.2-2 s, which made every destroy
 * that long (bench/README.md, deletion). tini reaps at once, as a host's init does, forwards
 * SIGTERM to libvirtd and exits with it.
 */
async function spawnReapedLibvirtd(): Promise<number> {
  const log = openSync(LIBVIRTD_LOG, 'a');
  let child: ChildProcess;
  try {
    child = spawn('tini', ['-s', '--', 'libvirtd', `--pid-file=${LIBVIRTD_PID_FILE}`], {
      stdio: ['ignore', log, log],
      detached: true,
    });
  } finally {
    closeSync(log);
  }
  child.unref();
  const pid = child.pid;
  if (pid === undefined)
    throw new Error(`could not start tini -s -- libvirtd (log: ${LIBVIRTD_LOG})`);
  return pid;
}

/** The parent PID of a process, from /proc/<pid>/stat (undefined once it is gone). */
export async function parentOf(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name (field 2) is in parentheses and may hold spaces: parse after it.
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
}

/** The PID a pid file names, if that process is alive. */
function livePid(content: string): number | undefined {
  const pid = Number(content.trim());
  return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
}

async function readPid(file: string): Promise<number | undefined> {
  return livePid(await readFile(file, 'utf8').catch(() => ''));
}

/** readPid for callers that must answer synchronously (LibvirtDaemon.pid()). */
function readPidSync(file: string): number | undefined {
  try {
    return livePid(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Whether a process with this PID exists (signal 0 probes without touching it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PIDs of processes named `name` in this process's mount namespace (not private daemons). */
async function pidsNamed(name: string): Promise<number[]> {
  const ownNs = await readlink('/proc/self/ns/mnt').catch(() => '');
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const comm = await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '');
    if (comm.trim() !== name) continue;
    const ns = await readlink(`/proc/${entry}/ns/mnt`).catch(() => '');
    if (ns === ownNs) pids.push(Number(entry));
  }
  return pids;
}

async function waitExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid) && Date.now() < deadline) await sleep(50);
  if (processAlive(pid)) {
    process.kill(pid, 'SIGKILL');
    while (processAlive(pid)) await sleep(20);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Clients connected to the libvirtd server behind `adminSocket`, or 0 if that cannot be read. */
export async function connectedClients(adminSocket: string): Promise<number> {
  const r = await run('virt-admin', [
    '-c',
    `libvirtd:///system?socket=${adminSocket}`,
    'srv-clients-list',
    'libvirtd',
  ]);
  if (r.code !== 0) return 0;
  return r.stdout.split('\n').filter((line) => /^\s*\d+\s/.test(line)).length;
}

/**
 * The system libvirtd at qemu:///system, started (with virtlogd) if none answers. Several
 * test files and engineers may share it: only create objects with unique names, and note that
 * pause()/restart() affect everyone using it (prefer startPrivateLibvirtd for those).
 */
export async function ensureLibvirtd(): Promise<LibvirtDaemon> {
  let startedLibvirtd = false;
  let startedVirtlogd = false;
  if (!(await daemonAnswers(SYSTEM_URI))) {
    await prepareHost();
    if ((await pidsNamed('virtlogd')).length === 0) {
      await must('virtlogd', ['--daemon', `--pid-file=${VIRTLOGD_PID_FILE}`]);
      startedVirtlogd = true;
    }
    let reaper: number | undefined;
    if ((await pidsNamed('libvirtd')).length === 0) reaper = await spawnReapedLibvirtd();
    await waitAnswering(SYSTEM_URI, 'libvirtd', ` (socket ${SYSTEM_SOCKET}, log ${LIBVIRTD_LOG})`);
    // A concurrent starter may win the race (our libvirtd then exits on the pid file's lock);
    // ours is the one whose parent is the reaper we spawned.
    const running = await readPid(LIBVIRTD_PID_FILE);
    startedLibvirtd =
      reaper !== undefined && running !== undefined && (await parentOf(running)) === reaper;
  }

  async function currentPid(): Promise<number> {
    const own = await readPid(LIBVIRTD_PID_FILE);
    if (own !== undefined) return own;
    const pids = await pidsNamed('libvirtd');
    if (pids.length === 0) throw new Error('no libvirtd is running');
    return pids[0]!;
  }
  let knownPid = await currentPid();

  return {
    uri: SYSTEM_URI,
    startedByUs: startedLibvirtd,
    pid: () => {
      if (!processAlive(knownPid)) throw new Error(`libvirtd (pid ${knownPid}) is not running`);
      return knownPid;
    },
    pause: () => signal(knownPid, 'SIGSTOP'),
    resume: () => signal(knownPid, 'SIGCONT'),
    async restart() {
      signal(knownPid, 'SIGCONT');
      signal(knownPid, 'SIGTERM');
      await waitExit(knownPid, 15_000);
      await spawnReapedLibvirtd();
      startedLibvirtd = true;
      await waitAnswering(SYSTEM_URI, 'libvirtd');
      knownPid = await currentPid();
    },
    async stop() {
      if (startedLibvirtd && (await connectedClients(SYSTEM_ADMIN_SOCKET)) > 0) {
        // Someone else relies on it now; it is the host's daemon as much as ours.
        startedLibvirtd = false;
        startedVirtlogd = false;
      }
      if (startedLibvirtd) {
        signal(knownPid, 'SIGCONT');
        signal(knownPid, 'SIGTERM');
        await waitExit(knownPid, 15_000);
        startedLibvirtd = false;
      }
      if (startedVirtlogd) {
        const vpid = await readPid(VIRTLOGD_PID_FILE);
        if (vpid !== undefined) {
          signal(vpid, 'SIGTERM');
          await waitExit(vpid, 5_000);
        }
        startedVirtlogd = false;
      }
    },
  };
}

// Bind-mounted over the system paths inside the private daemon's mount namespace.
const PRIVATE_MOUNTS: [string, string][] = [
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['cache', '/var/cache/libvirt'],
  ['log', '/var/log/libvirt'],
  ['etc', '/etc/libvirt'],
];

function privateScript(dir: string, hide: readonly string[]): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const mounts = PRIVATE_MOUNTS.map(
    ([sub, target]) => `mount --bind ${q(path.join(dir, sub))} ${target}`,
  );
  // A host file or directory the daemon must not see (a test of a host lacking a package):
  // an empty directory, or /dev/null (not an executable), mounted over it in the namespace.
  const hidden = hide.map(
    (p) =>
      `if [ -d ${q(p)} ]; then mount --bind ${q(path.join(dir, 'empty'))} ${q(p)}; ` +
      `else mount --bind /dev/null ${q(p)}; fi`,
  );
  return [
    'set -e',
    ...mounts,
    ...hidden,
    // virtlogd may survive a libvirtd restart; start it only when its socket is not served.
    'if ! [ -S /run/libvirt/virtlogd-sock ] || ! kill -0 "$(cat /run/libvirt/virtlogd.pid 2>/dev/null)" 2>/dev/null; then',
    '  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock',
    '  virtlogd --daemon --pid-file=/run/libvirt/virtlogd.pid',
    'fi',
    // Under tini as the system daemon runs (spawnReapedLibvirtd says why).
    'exec tini -s -- libvirtd --pid-file=/run/libvirt/libvirtd.pid',
  ].join('\n');
}

/**
 * Destroys and undefines every domain, network and pool of the daemon at `uri`. A private
 * daemon's state directory goes with it, but its QEMU processes, bridges, dnsmasq and
 * firewall rules live in the host and would outlive it.
 */
async function takeDownObjects(uri: string): Promise<void> {
  const kinds: Array<[list: string, destroy: string, undefine: string]> = [
    ['list', 'destroy', 'undefine'],
    ['net-list', 'net-destroy', 'net-undefine'],
    ['pool-list', 'pool-destroy', 'pool-undefine'],
  ];
  for (const [list, destroy, undefine] of kinds) {
    const names = (await run('virsh', ['-c', uri, list, '--all', '--name'])).stdout
      .split('\n')
      .map((n) => n.trim())
      .filter(Boolean);
    for (const name of names) {
      await run('virsh', ['-c', uri, destroy, name]);
      await run('virsh', ['-c', uri, undefine, name]);
    }
  }
}

/**
 * A libvirtd of its own, isolated from the system daemon by a private mount namespace: its
 * state, config and sockets live under a temp directory, so pausing, killing or restarting it
 * disturbs nobody else. Objects it creates in the host (bridges, iptables rules, QEMU
 * processes) are real, so tests still use unique names. stop() takes down every domain,
 * network and pool it holds, then removes everything.
 */
export async function startPrivateLibvirtd(
  opts: { libvirtdConf?: string; hide?: readonly string[] } = {},
): Promise<LibvirtDaemon> {
  await prepareHost();
  const dir = await mkdtemp('/tmp/lvo-libvirtd-');
  for (const [sub] of PRIVATE_MOUNTS) await mkdir(path.join(dir, sub), { recursive: true });
  await mkdir(path.join(dir, 'empty'));
  await writeFile(path.join(dir, 'etc', 'qemu.conf'), withQemuSettings(''));
  // Daemon settings a test needs (keepalive, request limits); libvirt's defaults otherwise.
  if (opts.libvirtdConf !== undefined) {
    await writeFile(path.join(dir, 'etc', 'libvirtd.conf'), opts.libvirtdConf);
  }
  const socket = path.join(dir, 'run', 'libvirt-sock');
  const uri = `qemu+unix:///system?socket=${socket}`;
  const logPath = path.join(dir, 'libvirtd.log');

  let child: ChildProcess | undefined;
  const startDaemon = async (): Promise<void> => {
    const log = openSync(logPath, 'a');
    try {
      child = spawn(
        'unshare',
        [
          '--mount',
          '--propagation',
          'private',
          '--',
          'sh',
          '-c',
          privateScript(dir, opts.hide ?? []),
        ],
        { stdio: ['ignore', log, log], detached: false },
      );
    } finally {
      closeSync(log);
    }
    child.unref();
    await waitAnswering(uri, 'private libvirtd', ` (log: ${logPath})`);
  };
  await startDaemon();

  // The spawned process is tini (unshare and sh exec into it); libvirtd is its child and
  // writes its PID to the private /run/libvirt, which is <dir>/run here.
  const libvirtdPidFile = path.join(dir, 'run', 'libvirtd.pid');
  const runningPid = (): number | undefined => {
    if (child?.pid === undefined || child.exitCode !== null || !processAlive(child.pid)) {
      return undefined;
    }
    return readPidSync(libvirtdPidFile);
  };
  const pidOf = (): number => {
    const pid = runningPid();
    if (pid === undefined) throw new Error(`private libvirtd is not running (log: ${logPath})`);
    return pid;
  };
  const kill = async (): Promise<void> => {
    const pid = runningPid();
    if (pid !== undefined) {
      signal(pid, 'SIGCONT');
      signal(pid, 'SIGTERM');
      await waitExit(pid, 15_000);
    }
    // tini exits with libvirtd; a tini whose libvirtd never came up goes the same way.
    if (child?.pid !== undefined && child.exitCode === null && processAlive(child.pid)) {
      signal(child.pid, 'SIGTERM');
      await waitExit(child.pid, 5_000);
    }
  };
  let stopped = false;

  return {
    uri,
    startedByUs: true,
    pid: pidOf,
    pause: () => signal(pidOf(), 'SIGSTOP'),
    resume: () => signal(pidOf(), 'SIGCONT'),
    async restart() {
      await kill();
      await startDaemon();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const pid = runningPid();
      if (pid !== undefined) {
        signal(pid, 'SIGCONT'); // a paused daemon would leave every virsh call hanging
        await takeDownObjects(uri);
      }
      await kill();
      const vpid = await readPid(path.join(dir, 'run', 'virtlogd.pid'));
      if (vpid !== undefined) {
        signal(vpid, 'SIGTERM');
        await waitExit(vpid, 5_000);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
