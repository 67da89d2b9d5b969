import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { packageRoot } from '../../src/commands/local/package-root.js';

export const ROOT = packageRoot();

/**
 * Whether dist/ holds a build of every TypeScript file under src/ at least as new as the file:
 * then the build is the code in src/, and not an older one.
 */
export function buildIsCurrent(root = ROOT): boolean {
  const walk = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).every((e) => {
      const file = join(dir, e.name);
      if (e.isDirectory()) return walk(file);
      if (!e.name.endsWith('.ts') || e.name.endsWith('.d.ts')) return true;
      const built = join(root, 'dist', relative(join(root, 'src'), file).replace(/\.ts$/, '.js'));
      try {
        return statSync(built).mtimeMs >= statSync(file).mtimeMs;
      } catch {
        return false;
      }
    });
  return walk(join(root, 'src'));
}

let cliArgs: string[] | undefined;
/**
 * How to start the CLI: its build, dist/cli.js (what `npm start` and the package run), when
 * that is current, else its TypeScript sources through tsx, so a file run after an edit
 * without a build still tests the edit. The build starts on ~0.35 s of CPU, the sources on
 * ~1.1 s (measured 2026-12-07), and the tiers start the CLI some hundred times beside
 * guests that want the same two cores; `npm test` builds first (scripts/setup.sh).
 */
export function cliArgv(): string[] {
  cliArgs ??= buildIsCurrent()
    ? [join(ROOT, 'dist', 'cli.js')]
    : ['--import', 'tsx', join(ROOT, 'src', 'cli.ts')];
  return cliArgs;
}

/** Spawns the CLI as a user would run it (see cliArgv: no build needed). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return spawn(process.execPath, [...cliArgv(), ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** `libvirt-operator run` as its own process, with its Lease in `default`. */
export function spawnAgent(
  opts: {
    nodeName: string;
    libvirtUri: string;
    kubeconfigPath: string;
    stateDir: string;
    /** HOST:PORT, or '0' for no health server. */
    healthAddr: string;
  },
  env: NodeJS.ProcessEnv = process.env,
): ChildProcess {
  return spawnCli(
    [
      'run',
      '--node-name',
      opts.nodeName,
      '--libvirt-uri',
      opts.libvirtUri,
      '--kubeconfig',
      opts.kubeconfigPath,
      '--state-dir',
      opts.stateDir,
      '--lease-namespace',
      'default',
      '--health-addr',
      opts.healthAddr,
    ],
    env,
  );
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; `input`, when given, is its whole stdin. */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<Finished> {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: opts.env ?? process.env,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  const done = collect(child, opts.timeoutMs);
  child.stdin?.end(opts.input);
  return done;
}

/** Everything a child prints (stdout and stderr), as it arrives, for a failure's message. */
export function output(child: ChildProcess): () => string {
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (text += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (text += c));
  return () => text;
}

export function collect(child: ChildProcess, timeoutMs = 120_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // A command that cannot be started (ENOENT) emits 'error', which unheard fails the whole
    // test file as an unhandled error: fail this call instead, naming the command.
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * A test file's cleanup of the CLI processes it started: SIGTERMs each one still running and
 * waits for it (SIGKILL after `timeoutMs`), so its own children (a control plane) go with it.
 */
export async function stopAll(children: ChildProcess[], timeoutMs = 30_000): Promise<void> {
  for (const c of children.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const done = collect(c, timeoutMs);
    c.kill('SIGTERM');
    await done;
  }
}

/** Resolves with the first stdout line matching `pattern`, or rejects when the child exits first. */
export function waitForLine(
  child: ChildProcess,
  pattern: RegExp,
  timeoutMs = 120_000,
): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let errors = '';
    const timer = setTimeout(
      () =>
        reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; stderr: ${errors}`)),
      timeoutMs,
    );
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (errors += c));
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      buffered += c;
      // Complete lines only: a chunk may end mid-line, and `(.+)$` would take half a path.
      for (const line of buffered.split('\n').slice(0, -1)) {
        const m = line.replace(/\r$/, '').match(pattern);
        if (m) {
          clearTimeout(timer);
          resolve(m);
        }
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before printing ${pattern}; stderr: ${errors}`));
    });
  });
}

/**
 * The PIDs a local control plane (or node) lists in DIR/pids for its watchdog, in the order
 * written (the API server's, then etcd's); the file's first line names the run that owns it.
 */
export function recordedPids(dir: string): number[] {
  return readFileSync(join(dir, 'pids'), 'utf8')
    .split('\n')
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms`);
}

/**
 * PIDs (other than this process) whose command line names `dir`, once none is left or after
 * `waitMs`: a local control plane's watchdog (control-plane.ts reaper) names its directory and
 * notices within REAPED_WITHIN_MS that the CLI it watched has exited, so a check made the moment
 * the CLI exits can still see it.
 */
export async function processesNaming(dir: string, waitMs = 3_000): Promise<string[]> {
  const naming = () =>
    readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir);
        } catch {
          return false;
        }
      });
  const until = Date.now() + waitMs;
  let left = naming();
  while (left.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    left = naming();
  }
  return left;
}
