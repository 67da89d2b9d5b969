#!/usr/bin/env node
// libvirt-operator <command> [flags]. Each command lives in src/commands/<name>.ts and returns
// its exit code; errors reach the user as one line, never as a stack trace.

const COMMANDS: Record<string, string> = {
  run: 'run the agent for one node: reconcile VMs, Volumes, networks and pools on this host',
  up: 'set up this host: a local control plane (unless KUBECONFIG is set) and the agent',
  'local-cluster':
    'run a local etcd + kube-apiserver with the CRDs installed, until SIGINT/SIGTERM',
  validate: 'validate manifests offline against the CRD schemas and rules',
  vm: 'pause, unpause or restart a VirtualMachine (vm pause|unpause|restart NAME [-n NS])',
  console: "attach to a VirtualMachine's serial console (Ctrl-] detaches)",
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
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  if (!(name in COMMANDS)) {
    console.error(
      `libvirt-operator: unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`,
    );
    return 2;
  }
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
