import { statSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A usage error: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * node:util parseArgs in strict mode, with its messages turned into one line that names the
 * command and the bad flag ("unknown option '--frob'"), and `--help` answered from `help`.
 */
function parseFlags<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  help: string,
  allowPositionals: boolean,
): {
  values: ReturnType<typeof parseArgs<{ options: O; args: string[]; strict: true }>>['values'];
  positionals: string[];
  help: boolean;
} {
  const withHelp = { ...options, help: { type: 'boolean', short: 'h' } } as O;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: withHelp,
      strict: true,
      allowPositionals,
    });
    if ((values as Record<string, unknown>).help) {
      console.log(help);
      return { values, positionals, help: true };
    }
    return { values, positionals, help: false };
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
    throw new UsageError(
      `${command}: ${message.replace(/\. To specify .*$/, '')}; see '${command} --help'`,
    );
  }
}

/** Runs a command body, printing usage and control-plane errors as one line. */
type Values<O extends Options> = ReturnType<typeof parseFlags<O>>['values'];

/**
 * A subcommand's main: its flags parsed (exit 0 after printing `help` for --help), then
 * `body`, with errors as one line (withOneLineErrors). Arguments other than flags are refused
 * unless `positionals` says the command takes them; `body` gets them.
 */
export function command<O extends Options>(
  name: string,
  argv: string[],
  flags: O,
  help: string,
  body: (values: Values<O>, positionals: string[]) => Promise<number>,
  opts: { positionals?: boolean } = {},
): Promise<number> {
  return withOneLineErrors(name, async () => {
    const parsed = parseFlags(name, argv, flags, help, opts.positionals ?? false);
    return parsed.help ? 0 : body(parsed.values, parsed.positionals);
  });
}

export async function withOneLineErrors(
  command: string,
  body: () => Promise<number>,
): Promise<number> {
  try {
    return await body();
  } catch (err) {
    const message = (
      (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? ''
    ).trim();
    console.error(
      err instanceof UsageError
        ? `libvirt-operator ${message}`
        : `libvirt-operator ${command}: ${message}`,
    );
    if (process.env.LIBVIRT_OPERATOR_DEBUG) console.error(err);
    return err instanceof UsageError ? 2 : 1;
  }
}

/**
 * Resolves on the first SIGINT or SIGTERM, or when `orEnded` settles (e.g. a runtime that
 * stopped by itself). Signal listeners alone do not keep Node's event loop alive; the timer does.
 */
export async function untilSignal(orEnded?: Promise<unknown>): Promise<void> {
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let onSignal!: () => void;
  const signalled = new Promise<void>((resolve) => (onSignal = resolve));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await Promise.race([signalled, ...(orEnded ? [orEnded.then(() => undefined)] : [])]);
  } finally {
    clearInterval(keepAlive);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The exit code of a process stopped by `signal` during its start-up: 128 + its number. */
export function signalExitCode(signal: 'SIGINT' | 'SIGTERM'): number {
  return signal === 'SIGINT' ? 130 : 143;
}

/**
 * The exit code to pass on for a child (kubectl) that ended with `code` or was killed by
 * `signal`: 128 + the signal's number, as a shell reports it, so a caller can tell a SIGKILL
 * (137, often the OOM killer) from a Ctrl-C (130). Pure.
 */
export function childExitCode(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal === null ? undefined : constants.signals[signal];
  // A signal this platform does not number: still not a success, and still in the signal range.
  return number === undefined ? (signal === null ? 1 : 128) : 128 + number;
}

/** Thrown by a start-up step that a SIGINT or SIGTERM asked to stop. */
export class StopRequested extends Error {
  override name = 'StopRequested';
  constructor(readonly signal: 'SIGINT' | 'SIGTERM') {
    super(`stopped by ${signal}`);
  }
}

export interface StopListener {
  /** Aborted (its reason a StopRequested) on the first SIGINT or SIGTERM. */
  signal: AbortSignal;
  /** The first signal, once one came. */
  readonly received: 'SIGINT' | 'SIGTERM' | undefined;
  /** Throws StopRequested when a signal came: a start-up step's check before the next one. */
  check(): void;
  /** Start-up is over (the ready line is next): a signal from now on is an ordinary stop. */
  running(): void;
  /** Whether the first signal came before running(). */
  readonly duringStartUp: boolean;
  /**
   * Resolves on the first signal (at once when one already came), or when `orEnded` settles.
   * Signal listeners alone do not keep Node's event loop alive; the timer does.
   */
  until(orEnded?: Promise<unknown>): Promise<void>;
}

/**
 * SIGINT and SIGTERM listeners for a long-running command, installed when it starts (before
 * anything is started) and kept for good. Without a listener Node's own handler ends the
 * process at once: a Ctrl-C while local-cluster started etcd, or while up applied the example
 * manifests, left etcd, kube-apiserver and the agent running. The first signal aborts `signal`,
 * which the start-up steps heed, so the command stops what it started and exits with 130/143
 * (runStoppable); a later one (a second Ctrl-C, a wrapper forwarding it) only says to wait,
 * and cannot cut the clean-up short.
 */
export function listenForStop(command: string): StopListener {
  const controller = new AbortController();
  let received: 'SIGINT' | 'SIGTERM' | undefined;
  let running = false;
  let duringStartUp = false;
  const on = (sig: 'SIGINT' | 'SIGTERM') => {
    if (received !== undefined) {
      console.log(`${command}: stopping, please wait`);
      return;
    }
    received = sig;
    duringStartUp = !running;
    controller.abort(new StopRequested(sig));
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  const signal = controller.signal;
  return {
    signal,
    get received() {
      return received;
    },
    get duringStartUp() {
      return duringStartUp;
    },
    check: () => signal.throwIfAborted(),
    running: () => {
      running = true;
    },
    async until(orEnded) {
      if (signal.aborted) return;
      const keepAlive = setInterval(() => undefined, 1 << 30);
      let onAbort!: () => void;
      const aborted = new Promise<void>((resolve) => (onAbort = resolve));
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        await Promise.race([aborted, ...(orEnded ? [orEnded.then(() => undefined)] : [])]);
      } finally {
        clearInterval(keepAlive);
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}

/**
 * Runs a command's start-up and run under `stop`. A signal during start-up makes the exit code
 * the signal's (130/143), with one line saying so: as the body's error (the step the signal
 * aborted, after that step stopped what it had started), or after the body stopped on its own.
 */
export async function runStoppable(
  command: string,
  stop: StopListener,
  body: () => Promise<number>,
): Promise<number> {
  let code: number;
  try {
    code = await body();
  } catch (err) {
    if (stop.received === undefined) throw err;
    if (!(err instanceof StopRequested))
      console.error(
        `libvirt-operator ${command}: while stopping on ${stop.received}: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`,
      );
    console.log(`${command}: stopped during start-up (${stop.received})`);
    return signalExitCode(stop.received);
  }
  if (stop.received === undefined || !stop.duringStartUp) return code;
  console.log(`${command}: stopped during start-up (${stop.received})`);
  return signalExitCode(stop.received);
}

/**
 * The kubeconfig kubectl would read: --kubeconfig, else KUBECONFIG (an empty one is unset),
 * else ~/.kube/config when it exists; undefined means the pod's service account. Pure.
 */
export function kubeconfigPath(
  flag: string | undefined,
  env: Record<string, string | undefined>,
  home: string,
  exists: (path: string) => boolean,
): string | undefined {
  if (flag !== undefined) return flag;
  if (env.KUBECONFIG) return env.KUBECONFIG;
  const file = join(home, '.kube', 'config');
  return exists(file) ? file : undefined;
}

/**
 * Why `value`, a NAME or namespace from the command line, cannot be one segment of an API
 * path, or undefined: an empty NAME turned a GET of the machine into a LIST of all of them
 * (console read the list as a machine: "Cannot read properties of undefined"), and a '/'
 * reaches another URL. What else makes a valid name the API server says. Pure.
 */
export function pathSegmentProblem(what: string, value: string): string | undefined {
  if (value === '') return `${what} must not be empty`;
  if (value === '.' || value === '..') return `${what} may not be '.' or '..'`;
  if (/[/%]/.test(value)) return `${what} may not contain '/' or '%', got '${value}'`;
  return undefined;
}

// Errors of the connection itself (refused, no such host, no route, a certificate that does
// not fit the server): the request never reached an API server.
const TRANSPORT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPROTO',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * How long the one-shot commands (vm, console, forget-node), and up for its own requests, wait
 * for each answer of the API server. The client's default (30 s) suits an agent that retries; a
 * person waiting at a prompt on a server that accepted the connection and never answers (a
 * stopped process, a wrong port behind a proxy) was told nothing for 30 s. Their requests are
 * single small reads and writes, which a slow but working cluster answers well within this.
 */
export const COMMAND_REQUEST_TIMEOUT_MS = 10_000;

/** The help line of --request-timeout, the same in every command that takes it. */
export const REQUEST_TIMEOUT_HELP =
  'how long to wait for each answer of the API server (e.g. 500ms, 30s, 2m; default 10s)';

const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * --request-timeout, read as kubectl reads it: a whole number with a unit (500ms, 10s, 2m, 1h),
 * a bare number being seconds; absent, COMMAND_REQUEST_TIMEOUT_MS. kubectl's 0 (wait for ever)
 * is refused: the bound is what these commands have it for. Pure.
 */
export function requestTimeoutMs(command: string, value: string | undefined): number {
  if (value === undefined) return COMMAND_REQUEST_TIMEOUT_MS;
  const m = /^(\d+)(ms|s|m|h)?$/.exec(value);
  const ms = m ? Number(m[1]) * DURATION_UNIT_MS[m[2] ?? 's']! : Number.NaN;
  // Node runs a timer beyond 2^31-1 ms after 1 ms instead.
  if (!(ms > 0 && ms <= 2_147_483_647))
    throw new UsageError(
      `${command}: --request-timeout must be a duration more than 0 and under 24 days, such as 500ms, 5s or 2m, got '${value}'`,
    );
  return ms;
}

/** Whether `err` says a request got no answer at all: not connected, or no response in time. */
export function unanswered(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    (code !== undefined && TRANSPORT_CODES.has(code)) ||
    /: no response within \d+ ms$/.test(err.message)
  );
}

/**
 * The error to show when `err` says the API server at `server` could not be reached, else
 * undefined. Node's own words ("connect ECONNREFUSED 127.0.0.1:6443", or the client's "no
 * response within 30000 ms") name neither the cluster nor where its address came from: a
 * stale KUBECONFIG, e.g. of a local control plane that has stopped, looked like a bug. Pure.
 */
export function unreachableServer(
  err: unknown,
  server: string,
  kubeconfig: string | undefined,
): Error | undefined {
  if (!unanswered(err)) return undefined;
  const source = kubeconfig ? `the kubeconfig ${kubeconfig}` : "this pod's service account";
  return new Error(
    `cannot reach the API server ${server} (from ${source}): ${err.message.split('\n')[0]}; is the cluster running, and is that the kubeconfig you meant (--kubeconfig, KUBECONFIG)?`,
    { cause: err },
  );
}

/**
 * Why `path`, given with `flag` as a folder to create or use, cannot be one: it exists and is
 * not a directory. Said before anything starts: mkdir's own "EEXIST: file already exists" or
 * "ENOTDIR" came after a control plane began and named no flag.
 */
export function notADirectory(
  flag: string,
  path: string,
  stat: (p: string) => { isDirectory(): boolean } | undefined,
): string | undefined {
  const found = stat(path);
  return found && !found.isDirectory()
    ? `${flag} ${path} exists and is not a directory: give a directory (it is created when missing)`
    : undefined;
}

/** statSync that answers undefined for a path that does not exist. */
export function statIfExists(path: string): { isDirectory(): boolean } | undefined {
  return statSync(path, { throwIfNoEntry: false });
}
