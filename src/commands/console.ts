// libvirt-operator console NAME: the VM's serial console, read-write.
//
// Where it attaches: on the VM's own node it opens the console through the local libvirt
// (virDomainOpenConsole on the domain with the VM's UUID); anywhere else it runs itself, with
// --local, inside that node's agent pod through `kubectl exec`, which is the only way into a
// node's libvirt from a cluster (the agent pod mounts the libvirt socket). Either way the
// session is the same:
// - stdin a terminal: raw mode, every key goes to the guest (Ctrl-C included), Ctrl-] detaches;
// - stdin not a terminal: stdin is copied to the guest and the guest's output to stdout,
//   byte for byte, until --timeout; without --timeout, until stdin ended and the guest, once
//   it answered the last input, has been quiet for 1.5 s (at most 15 s), so
//   `echo cmd | libvirt-operator console vm` shows the answer and returns.
// The session also ends when the console does (the VM stopped, or another session took it
// over with --force); a paused guest is named at the start, as it answers nothing.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { customResources } from '../api/generated/crds.js';
import type { VirtualMachine } from '../api/generated/types.js';
import { libvirtUuid } from '../api/names.js';
import { defaultLibvirtUri } from '../agent/config.js';
import { createKubeClient, type KubeClient } from '../runtime/index.js';
import { isNotFound as isKubeNotFound } from '../runtime/kube-client.js';
import { kubeconfigNamespace } from '../runtime/kube-config.js';
import { notFoundError } from './crd-missing.js';
import {
  childExitCode,
  REQUEST_TIMEOUT_HELP,
  requestTimeoutMs,
  kubeconfigPath,
  pathSegmentProblem,
  unreachableServer,
  UsageError,
  withOneLineErrors,
} from './flags.js';
import { loadKubeConfig } from './run.js';
import { whatStartsIt } from './vm.js';

const HELP = `usage: libvirt-operator console NAME [-n NAMESPACE] [--timeout SECONDS] [flags]

Attaches to the serial console of VirtualMachine NAME, read-write. With a terminal, Ctrl-]
detaches. With stdin not a terminal, stdin goes to the guest and the guest's output to stdout
until --timeout, or (without it) until stdin ended and the guest, after answering, has been
quiet for 1.5 s (15 s at most).

On the VM's node (e.g. under npm start) it attaches through the local libvirt; otherwise it
runs itself in that node's agent pod with kubectl exec (needs pods/exec there, see
docs/deploy.md).

  -n, --namespace NS          the VM's namespace (default: the kubeconfig context's, else default)
  --timeout SECONDS           end the session after this long
  --force                     take the console over from another session
  --local                     attach through the local libvirt, never through the agent pod
  --via-agent                 always go through the agent pod (kubectl exec)
  --kubeconfig PATH           (env KUBECONFIG; default ~/.kube/config, else in-cluster)
  --libvirt-uri URI           local libvirt (env LIBVIRT_URI; default qemu:///system when its socket exists)
  --node-name NAME            this host's node (env NODE_NAME; default: the host name)
  --operator-namespace NS     where the agent pods run (default libvirt-operator)
  --kubectl PATH              the kubectl to exec with (env KUBECTL; default kubectl)
  --request-timeout DURATION  ${REQUEST_TIMEOUT_HELP}`;

/** The longest delay a Node timer keeps (2^31-1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

/** Ctrl-]: telnet's, virsh's and virtctl's escape character. */
export const ESCAPE = 0x1d;
/**
 * After stdin ended (no --timeout): how long the guest must stay quiet once it reacted to the
 * last input, and the longest wait. Quiet is counted from the guest's first output after
 * that input, so a guest slow to react (TCG on a busy host) is not cut off before it answers.
 */
const QUIET_MS = 1_500;
const MAX_LINGER_MS = 15_000;

export interface ConsoleOptions {
  name: string;
  namespace: string | undefined;
  timeoutMs: number | undefined;
  force: boolean;
  mode: 'auto' | 'local' | 'agent';
  kubeconfig: string | undefined;
  libvirtUri: string;
  nodeName: string;
  operatorNamespace: string;
  kubectl: string;
  /** Each API request's bound (--request-timeout). */
  requestTimeoutMs: number;
}

/** Flags and environment into options; a UsageError names what is wrong. Pure. */
export function parseConsoleArgs(
  argv: string[],
  env: Record<string, string | undefined>,
  defaults: {
    hostname: () => string;
    libvirtUri: () => string;
    /** ~/.kube/config when it exists, kubectl's default (as `vm` reads it). */
    userKubeconfig?: () => string | undefined;
  } = {
    hostname,
    libvirtUri: () => defaultLibvirtUri(),
    userKubeconfig: () => kubeconfigPath(undefined, {}, homedir(), existsSync),
  },
): ConsoleOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        timeout: { type: 'string' },
        force: { type: 'boolean' },
        local: { type: 'boolean' },
        'via-agent': { type: 'boolean' },
        kubeconfig: { type: 'string' },
        'libvirt-uri': { type: 'string' },
        'node-name': { type: 'string' },
        'operator-namespace': { type: 'string' },
        kubectl: { type: 'string' },
        'request-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    const message = ((err as Error).message.split('\n')[0] ?? '').replace(/\. To specify .*$/, '');
    throw new UsageError(`console: ${message}; see 'console --help'`);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return 'help';
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? "console: the VirtualMachine's NAME is required; see 'console --help'"
        : `console: one NAME only, got ${positionals.length} (${positionals.join(' ')})`,
    );
  }
  const bad =
    pathSegmentProblem('NAME', positionals[0]!) ??
    (v.namespace === undefined ? undefined : pathSegmentProblem('namespace', v.namespace));
  if (bad) throw new UsageError(`console: ${bad}; see 'console --help'`);
  if (v.local && v['via-agent']) {
    throw new UsageError('console: --local and --via-agent exclude each other');
  }
  let timeoutMs: number | undefined;
  if (v.timeout !== undefined) {
    const seconds = Number(v.timeout);
    if (v.timeout.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) {
      throw new UsageError(
        `console: --timeout must be a positive number of seconds, got '${v.timeout}'`,
      );
    }
    timeoutMs = Math.round(seconds * 1000);
    // Node runs a timer beyond 2^31-1 ms after 1 ms instead: a month-long --timeout ended the
    // session as soon as it began, with exit 0.
    if (timeoutMs > MAX_TIMER_MS) {
      throw new UsageError(
        `console: --timeout must be at most ${Math.floor(MAX_TIMER_MS / 1000)} seconds (about 24 days; leave it out for no limit), got '${v.timeout}'`,
      );
    }
  }
  return {
    name: positionals[0]!,
    namespace: v.namespace,
    timeoutMs,
    force: v.force ?? false,
    mode: v.local ? 'local' : v['via-agent'] ? 'agent' : 'auto',
    kubeconfig: v.kubeconfig ?? (env.KUBECONFIG || undefined) ?? defaults.userKubeconfig?.(),
    libvirtUri: v['libvirt-uri'] ?? env.LIBVIRT_URI ?? defaults.libvirtUri(),
    nodeName: v['node-name'] ?? env.NODE_NAME ?? defaults.hostname().toLowerCase(),
    operatorNamespace: v['operator-namespace'] ?? 'libvirt-operator',
    kubectl: v.kubectl ?? env.KUBECTL ?? 'kubectl',
    requestTimeoutMs: requestTimeoutMs('console', v['request-timeout']),
  };
}

/**
 * Splits terminal input at the escape character: the bytes before it go to the guest, the
 * escape itself and whatever follows in the same read are dropped. Pure.
 */
export function splitAtEscape(chunk: Uint8Array): { forward: Uint8Array; detach: boolean } {
  const at = chunk.indexOf(ESCAPE);
  return at < 0
    ? { forward: chunk, detach: false }
    : { forward: chunk.subarray(0, at), detach: true };
}

/** The agent pod's labels (manifests/base/daemonset.yaml). */
const AGENT_SELECTOR = 'app.kubernetes.io/name=libvirt-operator,app.kubernetes.io/component=agent';
const AGENT_CONTAINER = 'agent';

interface PodSummary {
  metadata: { name: string; deletionTimestamp?: string };
  spec?: { nodeName?: string };
  status?: { phase?: string; conditions?: Array<{ type: string; status: string }> };
}

/** The agent pod to exec into on `node`: running, not being deleted, ready ones first. Pure. */
export function pickAgentPod(pods: PodSummary[], node: string, operatorNamespace: string): string {
  const running = pods.filter(
    (p) =>
      p.spec?.nodeName === node && p.status?.phase === 'Running' && !p.metadata.deletionTimestamp,
  );
  const ready = (p: PodSummary) =>
    p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
  const pod = running.find(ready) ?? running[0];
  if (!pod) {
    throw new Error(
      `no running agent pod on node ${node} in namespace ${operatorNamespace} (label ${AGENT_SELECTOR}): ` +
        `is the agent DaemonSet running there (kubectl get pods -n ${operatorNamespace} -o wide; --operator-namespace if it is elsewhere)? ` +
        `On the VM's own host, --local attaches through that host's libvirt`,
    );
  }
  return pod.metadata.name;
}

/** The kubectl command line that runs this console inside the agent pod. Pure. */
export function agentExecArgs(
  o: ConsoleOptions,
  namespace: string,
  pod: string,
  tty: boolean,
): string[] {
  return [
    ...(o.kubeconfig ? ['--kubeconfig', o.kubeconfig] : []),
    'exec',
    '-i',
    ...(tty ? ['-t'] : []),
    '-n',
    o.operatorNamespace,
    pod,
    '-c',
    AGENT_CONTAINER,
    '--',
    'libvirt-operator',
    'console',
    o.name,
    '-n',
    namespace,
    '--local',
    ...(o.timeoutMs !== undefined ? ['--timeout', String(o.timeoutMs / 1000)] : []),
    ...(o.force ? ['--force'] : []),
  ];
}

export async function main(argv: string[]): Promise<number> {
  return withOneLineErrors('console', async () => {
    const o = parseConsoleArgs(argv, process.env);
    if (o === 'help') {
      console.log(HELP);
      return 0;
    }
    const kc = await loadKubeConfig(o.kubeconfig);
    const namespace =
      o.namespace ?? (o.kubeconfig ? kubeconfigNamespace(o.kubeconfig) : undefined) ?? 'default';
    const client = createKubeClient(kc, { defaultTimeoutMs: o.requestTimeoutMs });
    const vm = await getVirtualMachine(client, namespace, o.name).catch((err: unknown) => {
      throw unreachableServer(err, client.server, o.kubeconfig) ?? err;
    });
    const node = vm.spec.nodeName;
    const uuid = libvirtUuid(vm);

    let local = o.mode === 'local' || (o.mode === 'auto' && node === o.nodeName);
    if (o.mode === 'auto' && !local) local = await domainIsHere(o.libvirtUri, uuid);
    if (local && o.libvirtUri.startsWith('test:'))
      throw new Error(testDriverRefusal(`${namespace}/${o.name}`, o.libvirtUri));
    if (local) return attachLocal(o, vm, uuid, node);

    const pods = await client.request<{ items: PodSummary[] }>({
      method: 'GET',
      path: `/api/v1/namespaces/${encodeURIComponent(o.operatorNamespace)}/pods`,
      query: { labelSelector: AGENT_SELECTOR, fieldSelector: `spec.nodeName=${node}` },
    });
    const pod = pickAgentPod(pods.items, node, o.operatorNamespace);
    return execInAgent(o.kubectl, agentExecArgs(o, namespace, pod, process.stdin.isTTY === true));
  });
}

async function getVirtualMachine(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<VirtualMachine> {
  const info = customResources.VirtualMachine;
  try {
    return await client.request<VirtualMachine>({
      method: 'GET',
      path: `/apis/${info.apiVersion}/namespaces/${encodeURIComponent(namespace)}/${info.plural}/${encodeURIComponent(name)}`,
    });
  } catch (err) {
    if (isKubeNotFound(err))
      throw await notFoundError(
        client,
        'VirtualMachine',
        `VirtualMachine ${namespace}/${name}`,
        err,
        namespace,
      );
    throw err;
  }
}

/**
 * A console through libvirt's test driver: each process opening it gets a fresh state, so the
 * agent's domains (npm start falls back to it without root) are never found ("has no domain
 * ... on this host"), and it has no consoles anyway. Pure.
 */
export function testDriverRefusal(vmName: string, uri: string): string {
  return `VirtualMachine ${vmName} runs on ${uri}, libvirt's in-process test driver: its domains live inside the agent's process and have no serial console; a console needs the agent on a real libvirtd (npm start as root starts one, or --libvirt-uri qemu:///system)`;
}

/** Whether the local libvirt has the domain (a VM on a node named differently, e.g. tests). */
async function domainIsHere(uri: string, uuid: string): Promise<boolean> {
  if (uri.startsWith('test:')) return false; // the test driver has no consoles
  const { Connect } = await import('../libvirt/index.js');
  let conn;
  try {
    conn = await Connect.open(uri, { timeoutMs: 5_000, callTimeoutMs: 5_000 });
    await conn.lookupDomainByUUID(uuid);
    return true;
  } catch {
    return false;
  } finally {
    await conn?.close().catch(() => undefined);
  }
}

/** Runs kubectl on the terminal and resolves to the exit code to pass on (see childExitCode). */
export function execInAgent(kubectl: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(kubectl, args, { stdio: 'inherit' });
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'ENOENT'
          ? new Error(`${kubectl} not found: install kubectl or point --kubectl (KUBECTL) at it`)
          : err,
      ),
    );
    child.on('exit', (code, signal) => resolve(childExitCode(code, signal)));
  });
}

const CLOSE_AFTER_SESSION_MS = 5_000;

async function attachLocal(
  o: ConsoleOptions,
  vm: VirtualMachine,
  uuid: string,
  node: string,
): Promise<number> {
  const vmName = `${String(vm.metadata.namespace)}/${String(vm.metadata.name)}`;
  // Loaded here: the rest of the command (and its unit tests) needs no native addon.
  const lv = await import('../libvirt/index.js');
  const conn = await lv.Connect.open(o.libvirtUri, { callTimeoutMs: 30_000 });
  try {
    let domain;
    try {
      domain = await conn.lookupDomainByUUID(uuid);
    } catch (err) {
      if (!lv.isNotFound(err, 'domain')) throw err;
      throw new Error(
        `VirtualMachine ${vmName} has no domain in ${o.libvirtUri} on this host (its node is ${node})`,
        { cause: err },
      );
    }
    if (!(await domain.isActive()))
      throw new Error(`VirtualMachine ${vmName} is not running: ${whatStartsIt(vm)}`);
    const { stateName } = await domain.getState();
    const stream = conn.newStream();
    try {
      await domain.openConsole(null, stream, o.force ? lv.DomainConsoleFlags.FORCE : 0);
    } catch (err) {
      stream.free();
      if (lv.isLibvirtError(err) && err.code === lv.ErrorCode.VIR_ERR_OPERATION_FAILED) {
        throw new Error(`${err.message}; --force takes the console over`, { cause: err });
      }
      throw err;
    }
    return await runSession(stream, vmName, o.timeoutMs, {
      note: pausedNote(vmName, stateName),
      cutOff: async (err) =>
        cutOffMessage(vmName, err, await conn.isAlive({ timeoutMs: 5_000 }).catch(() => false)),
    });
  } finally {
    // The session's outcome is decided and the process exits next, which closes the socket:
    // libvirtd drops such a connection by itself. So the close is bounded and cannot replace
    // the session's own message: in one CI run libvirtd 9.0 left the close of a connection
    // whose console another session had just taken over (--force) unanswered for 30 s.
    await conn.close({ timeoutMs: CLOSE_AFTER_SESSION_MS }).catch(() => undefined);
  }
}

/**
 * Said when the session starts on a paused guest: it reads and answers nothing until it
 * resumes, and a silent console would look broken. Pure.
 */
export function pausedNote(vmName: string, stateName: string): string | undefined {
  return stateName === 'paused'
    ? `VirtualMachine ${vmName} is paused: the guest answers once it resumes (vm unpause)`
    : undefined;
}

/**
 * Why libvirt cut the session off. It reports a takeover by another session (--force) as a
 * bare stream I/O failure; with the connection still alive, that is what it was. Pure.
 */
export function cutOffMessage(vmName: string, err: Error, connectionAlive: boolean): string {
  return connectionAlive
    ? `libvirt-operator console: another session took the console of ${vmName} over (--force): ${err.message}`
    : `libvirt-operator console: the connection to libvirt was lost: ${err.message}`;
}

interface ConsoleStream {
  receive(onData: (chunk: Buffer) => void): Promise<void>;
  pause(): void;
  resume(): void;
  send(data: Uint8Array): Promise<void>;
  abort(): Promise<void>;
  free(): void;
}

/** Pumps bytes between this process's stdio and the console until one of the ends. */
function runSession(
  stream: ConsoleStream,
  vmName: string,
  timeoutMs: number | undefined,
  say: { note: string | undefined; cutOff: (err: Error) => Promise<string> },
): Promise<number> {
  const { stdin, stdout, stderr } = process;
  const tty = stdin.isTTY === true;
  return new Promise<number>((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    let ended = false;
    let quiet: NodeJS.Timeout | undefined;
    let lingering = false;
    let answered = true; // output arrived since the last input was sent

    const end = (code: number, message?: string) => {
      if (ended) return;
      ended = true;
      for (const t of timers) clearTimeout(t);
      if (quiet) clearTimeout(quiet);
      stdin.off('data', onInput);
      stdin.off('end', onInputEnd);
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigterm);
      if (tty) stdin.setRawMode(false);
      stdin.pause();
      if (message) stderr.write(tty ? `\r\n${message}\r\n` : `${message}\n`);
      void stream
        .abort()
        .catch(() => undefined)
        .finally(() => {
          stream.free();
          resolve(code);
        });
    };

    const onOutput = (chunk: Buffer) => {
      if (ended) return;
      answered = true;
      if (lingering) armQuiet();
      if (!stdout.write(chunk)) {
        stream.pause();
        stdout.once('drain', () => stream.resume());
      }
    };
    stream.receive(onOutput).then(
      () => end(0, `console of ${vmName} closed (the VM stopped)`),
      (err: Error) => void say.cutOff(err).then((message) => end(1, message)),
    );
    stdout.on('error', () => end(0)); // e.g. `| head` closed the pipe

    const onInput = (chunk: Buffer) => {
      const { forward, detach } = tty ? splitAtEscape(chunk) : { forward: chunk, detach: false };
      // One chunk in flight: stdin waits while libvirt takes it (backpressure to the writer).
      stdin.pause();
      if (forward.length > 0) answered = false;
      const sent = forward.length > 0 ? stream.send(forward) : Promise.resolve();
      sent.then(
        () => (detach ? end(0) : !ended && stdin.resume()),
        (err: Error) => end(1, `libvirt-operator console: ${err.message}`),
      );
    };
    const armQuiet = () => {
      if (quiet) clearTimeout(quiet);
      quiet = setTimeout(() => end(0), QUIET_MS);
    };
    const onInputEnd = () => {
      if (tty) return end(0);
      if (timeoutMs !== undefined) return; // the timeout ends it
      lingering = true;
      if (answered) armQuiet();
      timers.push(setTimeout(() => end(0), MAX_LINGER_MS));
    };
    const onSigint = () => end(130);
    const onSigterm = () => end(143);

    if (timeoutMs !== undefined) timers.push(setTimeout(() => end(0), timeoutMs));
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigterm);
    if (tty) {
      stdin.setRawMode(true);
      stderr.write(`Connected to ${vmName} (escape character is ^])\r\n`);
    }
    if (say.note) stderr.write(tty ? `${say.note}\r\n` : `${say.note}\n`);
    stdin.on('data', onInput);
    stdin.on('end', onInputEnd);
    stdin.resume();
  });
}
