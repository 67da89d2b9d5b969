#!/usr/bin/env -S node --optimize-for-size --v8-pool-size=1 --interrupt-budget=1048576
// libvirt-operator <command> [flags]. Each command lives in src/commands/<name>.ts and returns
// its exit code; errors reach the user as one line, never as a stack trace.

import { setFlagsFromString } from 'node:v8';

const COMMANDS: Record<string, string> = {
  run: 'run the agent for one node: reconcile VMs, Volumes, networks and pools on this host',
  up: 'set up this host: a local control plane (or --kubeconfig PATH) and the agent',
  'local-cluster':
    'run a local etcd + kube-apiserver with the CRDs installed, until SIGINT/SIGTERM',
  validate: 'validate manifests offline against the CRD schemas and rules',
  vm: 'pause, unpause or restart a VirtualMachine (vm pause|unpause|restart NAME [-n NS])',
  console: "attach to a VirtualMachine's serial console (Ctrl-] detaches)",
  'forget-node':
    'for a retired host: remove its finalizers and status entries so deletions stop waiting for it',
};

interface CommandModule {
  main(argv: string[]): Promise<number>;
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    'usage: libvirt-operator <command> [flags]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, what]) => `  ${name.padEnd(width)}  ${what}`),
    '',
    "run 'libvirt-operator <command> --help' for a command's flags",
  ].join('\n');
}

export function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0] ?? message;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  // Asked for, the usage is the answer (stdout, 0); without a command it is an error (stderr, 2).
  if (name === undefined) {
    console.error(usage());
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return 0;
  }
  if (!(name in COMMANDS)) {
    console.error(
      `libvirt-operator: unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`,
    );
    return 2;
  }
  // The agent runs on every node, next to the guests: V8's memory-saving heuristics (smaller
  // young generation, earlier and more eager collection) cut its RSS at 1,000 VMs from
  // ~150 MB to ~126 MB in bench:converge (see bench/README.md). The shebang line passes the
  // flag when the CLI starts, so the heap is sized by it from the start; for a start as
  // `node dist/cli.js run` it still applies to the collector's heuristics from here on. The
  // shebang also gives V8 one helper thread instead of four (--v8-pool-size=1, a start-up
  // option only): fewer threads' malloc arenas and GC scratch, 3 MB less RSS at 1,000 VMs
  // with no measurable cost to convergence on a host whose cores belong to the guests.
  // And it lets a function run 16 times longer than V8's default (--interrupt-budget, bytes
  // of bytecode executed) before TurboFan compiles it: the agent's work comes in bursts, and
  // in a fresh agent's first burst of 1,000 new machines V8 made ~340 optimising compiles,
  // many of lukewarm functions, with 47 deopts; ~1.7 s of compile time, 70 % of its helper
  // thread's CPU (perf). At 8 times the default, 56 compiles; at 16, agent CPU 3.6-4.0 s
  // instead of 4.1-4.5 s (bench/README.md, converge's eleventh pass). The shebang sets it,
  // and so does this line for `node dist/cli.js run`: V8 reads the budget when it creates a
  // function's feedback, so the commands' modules, imported below, get it.
  if (name === 'run') setFlagsFromString('--optimize-for-size --interrupt-budget=1048576');
  const mod = (await import(`./commands/${name}.js`)) as CommandModule;
  return mod.main(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`libvirt-operator: ${oneLine(err)}`);
    if (process.env.LIBVIRT_OPERATOR_DEBUG) console.error(err);
    process.exitCode = 1;
  },
);
