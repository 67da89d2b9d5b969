// npm start's flags, checked before its set-up (scripts/start.sh): `npm start -- --bogus` ran
// the whole set-up (minutes on a fresh machine) before `up` refused the flag. Plain JavaScript
// with no dependency, as it runs before npm ci and the TypeScript build; the flags are `up`'s
// (FLAGS in src/commands/up.ts, kept equal by test/unit/commands/up.test.ts) and the refusal is
// the line `up` itself prints. Values are checked by `up`, after the set-up, as before.
import { realpathSync } from 'node:fs';
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
  help: { type: 'boolean', short: 'h' },
};

/** The line `up` prints for these arguments' usage error (unknown flag, missing value), if any. */
export function upFlagsRefusal(argv) {
  try {
    parseArgs({ args: argv, options: UP_FLAGS, strict: true, allowPositionals: false });
    return undefined;
  } catch (err) {
    const message = String(err instanceof Error ? err.message : err).split('\n')[0] ?? '';
    return `libvirt-operator up: ${message.replace(/\. To specify .*$/, '')}; see 'up --help'`;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const refusal = upFlagsRefusal(process.argv.slice(2));
  if (refusal) {
    console.error(refusal);
    process.exit(2);
  }
}
