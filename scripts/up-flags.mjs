// npm start's flags and their values, checked before its set-up (scripts/start.sh):
// `npm start -- --bogus`, or a bad value such as `--health-addr nope`, ran the whole set-up
// (minutes on a fresh machine) before `up` refused it. Plain JavaScript with no dependency, as
// it runs before npm ci and the TypeScript build, so up's rules are restated here: the flags
// are `up`'s (FLAGS in src/commands/up.ts) and each refusal is the line `up` itself prints
// (upSettings there, agentConfig in src/agent/config.ts), except that an unknown flag or a
// missing value points at `npm start -- --help`: `up --help` is no command in the user's shell.
// test/integration/cli/start-flags.test.ts runs both on the same arguments and keeps them equal.
import { realpathSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const UP_FLAGS = {
  examples: { type: 'boolean' },
  'examples-name': { type: 'string' },
  'node-name': { type: 'string' },
  'libvirt-uri': { type: 'string' },
  dir: { type: 'string' },
  kubeconfig: { type: 'string' },
  'health-addr': { type: 'string' },
  'quiet-ms': { type: 'string' },
  'request-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const DEMO_NAME = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * The line `up` prints for these arguments' usage error (unknown flag, missing value, bad
 * value), if any, with `npm start -- --help` where up says `up --help`. `env` and `host` are
 * what up reads besides its flags (NODE_NAME, LOG_LEVEL, the host name); `--help` prints the
 * usage whatever else is given, as up does.
 */
export function upFlagsRefusal(argv, env = process.env, host = hostname) {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: UP_FLAGS,
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    const message = String(err instanceof Error ? err.message : err).split('\n')[0] ?? '';
    return (
      `libvirt-operator up: ${message.replace(/\. To specify .*$/, '')}; ` +
      `see 'npm start -- --help'`
    );
  }
  if (values.help) return undefined;
  const problem = upValueProblem(values, env, host);
  return problem && `libvirt-operator up: ${problem}`;
}

/** In upSettings' order, then main's check of --dir. */
function upValueProblem(values, env, host) {
  const demoName = values['examples-name'] ?? 'demo';
  if (!DEMO_NAME.test(demoName))
    return (
      `--examples-name must be a lowercase DNS label of at most 40 characters, ` +
      `got '${demoName}'`
    );
  if (values['examples-name'] !== undefined && !values.examples)
    return "--examples-name names the demo's objects: give --examples too";
  if (values.kubeconfig !== undefined && values.dir !== undefined)
    return (
      "--dir is the local control plane's folder, and --kubeconfig uses a cluster instead of " +
      'one: give one of them'
    );
  const nodeName = values['node-name'] ?? env.NODE_NAME ?? host().toLowerCase();
  if (nodeName.length > 253 || !NODE_NAME.test(nodeName))
    return (
      `node name '${nodeName}' is not a valid Kubernetes node name (lower-case DNS subdomain); ` +
      `set --node-name or NODE_NAME`
    );
  const logLevel = env.LOG_LEVEL ?? 'info';
  if (!LOG_LEVELS.includes(logLevel))
    return `LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`;
  const health = values['health-addr'];
  if (health !== undefined && health !== '0') {
    const m = /^(.*):(\d+)$/.exec(health);
    const port = m ? Number(m[2]) : NaN;
    if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
      return `--health-addr must be HOST:PORT (e.g. 127.0.0.1:8080 or :8080), got '${health}'`;
  }
  const quiet = values['quiet-ms'];
  if (quiet !== undefined && !/^\d{1,9}$/.test(quiet))
    return `--quiet-ms must be a whole number of milliseconds (e.g. 5000), got '${quiet}'`;
  const timeout = values['request-timeout'];
  if (timeout !== undefined) {
    // requestTimeoutMs in src/commands/flags.ts: kubectl's form, a bare number being seconds.
    const m = /^(\d+)(ms|s|m|h)?$/.exec(timeout);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m?.[2] ?? 's'];
    const ms = m ? Number(m[1]) * unit : NaN;
    if (!(ms > 0 && ms <= 2_147_483_647))
      return `--request-timeout must be a duration more than 0 and under 24 days, such as 500ms, 5s or 2m, got '${timeout}'`;
  }
  if (values.dir !== undefined && !isDirectoryOrMissing(values.dir))
    return (
      `--dir ${values.dir} exists and is not a directory: give a directory (it is created ` +
      `when missing)`
    );
  return undefined;
}

/** A path up cannot stat (EACCES, ELOOP) is left for up to report, as it does today. */
function isDirectoryOrMissing(path) {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isDirectory() !== false;
  } catch {
    return true;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const refusal = upFlagsRefusal(process.argv.slice(2));
  if (refusal) {
    console.error(refusal);
    process.exit(2);
  }
}
