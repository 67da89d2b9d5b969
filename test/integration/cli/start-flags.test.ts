// `npm start -- --bogus` or `npm start -- --health-addr nope`: scripts/start.sh refuses an
// unknown flag or a bad value before its set-up (minutes on a fresh machine, builds and
// installs), with the line `up` itself prints for it (its help named as npm start's).
// start.sh runs from a copy whose setup.sh only says it ran: the real set-up (npm ci among it)
// is never started by this test, whatever start.sh does.
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FLAGS } from '../../../src/commands/up.js';
import { UP_FLAGS, upFlagsRefusal } from '../../../scripts/up-flags.mjs';
import { collect, ROOT, run, spawnCli } from '../../harness/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-start-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
mkdirSync(join(dir, 'scripts'));
for (const f of ['start.sh', 'up-flags.mjs'])
  copyFileSync(join(ROOT, 'scripts', f), join(dir, 'scripts', f));
writeFileSync(join(dir, 'scripts/setup.sh'), 'echo "setup: ran" >&2\nexit 97\n');
chmodSync(join(dir, 'scripts/setup.sh'), 0o755);
const start = (argv: string[], env: NodeJS.ProcessEnv = process.env) =>
  run('bash', [join(dir, 'scripts/start.sh'), ...argv], { env, timeoutMs: 60_000 });
const aFile = join(dir, 'a-file');
writeFileSync(aFile, '');

const BAD = [['--bogus'], ['--examples', '--zap', '--node-name', 'n1'], ['--node-name'], ['extra']];
// Values up refuses (upSettings, agentConfig, main's --dir check), each with what it reads
// from the environment.
const BAD_VALUES: Array<[string[], Record<string, string>]> = [
  [['--health-addr', 'nope'], {}],
  [['--health-addr', '127.0.0.1:70000'], {}],
  [['--quiet-ms', '5s'], {}],
  [['--request-timeout', '5x'], {}],
  [['--node-name', 'Bad_Name'], {}],
  [[], { NODE_NAME: 'under_score' }],
  [['--examples', '--examples-name', 'Demo'], {}],
  [['--examples-name', 'web'], {}],
  [['--dir', '/tmp/x', '--kubeconfig', '/tmp/k'], {}],
  [['--dir', aFile], {}],
  [['--node-name', 'n1'], { LOG_LEVEL: 'loud' }],
];

describe('npm start with a bad flag', () => {
  it('checks the same flags as up', () => {
    expect(UP_FLAGS).toEqual({ ...FLAGS, help: { type: 'boolean', short: 'h' } });
    expect(upFlagsRefusal(['--examples', '--node-name', 'n1', '--dir=/tmp/x', '-h'])).toBe(
      undefined,
    );
  });

  it.each(BAD.map((argv) => [argv.join(' '), argv] as const))(
    "refuses '%s' before the set-up, as up does, pointing at npm start's help",
    async (_, argv) => {
      const up = await collect(spawnCli(['up', ...argv]), 60_000);
      expect(up.code).toBe(2);
      expect(up.stderr).toMatch(/; see 'up --help'\n$/);
      const res = await start(argv);
      // `up --help` is no command in the shell that ran npm start.
      expect(res.stderr).toBe(up.stderr.replace("see 'up --help'", "see 'npm start -- --help'"));
      expect(res.stdout).toBe('');
      expect(res.code).toBe(2);
    },
  );

  it.each(BAD_VALUES.map(([argv, env]) => [`${JSON.stringify(env)} ${argv.join(' ')}`, argv, env]))(
    "refuses the value in '%s' before the set-up, as up does",
    async (_, argv, extra) => {
      const env = { ...process.env, ...extra };
      const up = await collect(spawnCli(['up', ...argv], env), 60_000);
      expect(up.code).toBe(2);
      expect(up.stderr).toMatch(/^libvirt-operator up: /);
      const res = await start(argv, env);
      expect(res.stderr).toBe(up.stderr);
      expect(res.stdout).toBe('');
      expect(res.code).toBe(2);
    },
  );

  it('goes on to the set-up with good flags', async () => {
    const res = await start(['--examples', '--node-name', 'n1', '--health-addr=127.0.0.1:0']);
    expect(res.stderr).toBe('setup: ran\n');
    expect(res.code).toBe(97);
    // --help answers whatever the values, as up does; --health-addr 0 turns the server off.
    expect(upFlagsRefusal(['--health-addr', 'nope', '-h'])).toBe(undefined);
    expect(upFlagsRefusal(['--health-addr', '0', '--dir', dir])).toBe(undefined);
  });
});
