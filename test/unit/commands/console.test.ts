// The console command's pure parts: flags, the escape character, which agent pod it execs
// into and the kubectl command line it runs there. The session itself is end to end
// (test/e2e/operator/console.test.ts).
import { describe, expect, it } from 'vitest';
import {
  agentExecArgs,
  cutOffMessage,
  ESCAPE,
  execInAgent,
  pausedNote,
  parseConsoleArgs,
  pickAgentPod,
  splitAtEscape,
  type ConsoleOptions,
} from '../../../src/commands/console.js';
import { childExitCode, UsageError } from '../../../src/commands/flags.js';

const defaults = { hostname: () => 'Host-A', libvirtUri: () => 'qemu:///system' };
const parse = (argv: string[], env: Record<string, string> = {}) =>
  parseConsoleArgs(argv, env, defaults) as ConsoleOptions;
const usage = (argv: string[]) => {
  try {
    parseConsoleArgs(argv, {}, defaults);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error(`no usage error for ${argv.join(' ')}`);
};

describe('parseConsoleArgs', () => {
  it('takes the name, the namespace and defaults for everything else', () => {
    expect(parse(['web', '-n', 'prod'])).toEqual({
      name: 'web',
      namespace: 'prod',
      timeoutMs: undefined,
      force: false,
      mode: 'auto',
      kubeconfig: undefined,
      libvirtUri: 'qemu:///system',
      nodeName: 'host-a',
      operatorNamespace: 'libvirt-operator',
      kubectl: 'kubectl',
      requestTimeoutMs: 10_000,
    });
    expect(parse(['web']).namespace).toBeUndefined();
    expect(parse(['--namespace=prod', 'web']).namespace).toBe('prod');
  });

  it('reads --request-timeout as kubectl does, and refuses what is not a duration', () => {
    expect(parse(['web', '--request-timeout', '750ms']).requestTimeoutMs).toBe(750);
    expect(() => parse(['web', '--request-timeout', 'soon'])).toThrow(
      "console: --request-timeout must be a duration more than 0 and under 24 days, such as 500ms, 5s or 2m, got 'soon'",
    );
  });

  it('reads --timeout in seconds, fractions included', () => {
    expect(parse(['web', '--timeout', '30']).timeoutMs).toBe(30_000);
    expect(parse(['web', '--timeout=0.5']).timeoutMs).toBe(500);
    for (const bad of ['0', '-1', 'soon', '', 'Infinity']) {
      expect(usage(['web', `--timeout=${bad}`])).toBe(
        `console: --timeout must be a positive number of seconds, got '${bad}'`,
      );
    }
    // Beyond Node's longest timer, which would fire at once.
    expect(parse(['web', '--timeout', '2147483']).timeoutMs).toBe(2_147_483_000);
    expect(usage(['web', '--timeout', '2592000'])).toBe(
      "console: --timeout must be at most 2147483 seconds (about 24 days; leave it out for no limit), got '2592000'",
    );
  });

  it('takes flags before environment variables before defaults', () => {
    const env = {
      KUBECONFIG: '/env/kc',
      LIBVIRT_URI: 'qemu+ssh://h/system',
      NODE_NAME: 'env-node',
      KUBECTL: '/env/kubectl',
    };
    expect(parse(['web'], env)).toMatchObject({
      kubeconfig: '/env/kc',
      libvirtUri: 'qemu+ssh://h/system',
      nodeName: 'env-node',
      kubectl: '/env/kubectl',
    });
    expect(
      parse(
        [
          'web',
          '--kubeconfig=/f/kc',
          '--libvirt-uri=test:///default',
          '--node-name=flag-node',
          '--kubectl=/f/kubectl',
          '--operator-namespace=ops',
        ],
        env,
      ),
    ).toMatchObject({
      kubeconfig: '/f/kc',
      libvirtUri: 'test:///default',
      nodeName: 'flag-node',
      kubectl: '/f/kubectl',
      operatorNamespace: 'ops',
    });
  });

  it('chooses where to attach: auto, --local or --via-agent, never both', () => {
    expect(parse(['web', '--local']).mode).toBe('local');
    expect(parse(['web', '--via-agent']).mode).toBe('agent');
    expect(parse(['web', '--force']).force).toBe(true);
    expect(usage(['web', '--local', '--via-agent'])).toBe(
      'console: --local and --via-agent exclude each other',
    );
  });

  it('refuses a missing or extra name and unknown flags, naming them', () => {
    expect(usage([])).toBe("console: the VirtualMachine's NAME is required; see 'console --help'");
    expect(usage(['a', 'b'])).toBe('console: one NAME only, got 2 (a b)');
    expect(usage(['web', '--frob'])).toMatch(/^console: Unknown option '--frob'; see/);
    expect(usage(['web', '--timeout'])).toMatch(
      /^console: Option '--timeout <value>' argument missing/,
    );
    // An empty NAME asked the API server for the list, and the list was read as a machine.
    expect(() => parseConsoleArgs([''], {}, defaults)).toThrow(
      "console: NAME must not be empty; see 'console --help'",
    );
    expect(() => parseConsoleArgs(['web', '-n', ''], {}, defaults)).toThrow(
      "console: namespace must not be empty; see 'console --help'",
    );
    expect(parseConsoleArgs(['--help'], {}, defaults)).toBe('help');
  });
});

describe('splitAtEscape', () => {
  const bytes = (s: string) => Buffer.from(s, 'latin1');

  it('forwards input without the escape character untouched', () => {
    const chunk = bytes('ls -l\r\x03');
    expect(splitAtEscape(chunk)).toEqual({ forward: chunk, detach: false });
  });

  it('detaches at Ctrl-], forwarding what came before it and nothing after', () => {
    expect(ESCAPE).toBe(0x1d);
    const r = splitAtEscape(bytes('abc\x1ddef'));
    expect(Buffer.from(r.forward).toString('latin1')).toBe('abc');
    expect(r.detach).toBe(true);
    expect(splitAtEscape(bytes('\x1d'))).toEqual({ forward: bytes(''), detach: true });
  });

  it('treats other control characters, Ctrl-C and Ctrl-D included, as input for the guest', () => {
    for (const c of ['\x03', '\x04', '\x1a', '\x1b', '\x1c', '\x1e']) {
      expect(splitAtEscape(bytes(c)).detach).toBe(false);
    }
  });
});

describe('pickAgentPod', () => {
  const pod = (name: string, node: string, phase: string, ready = true, deleting = false) => ({
    metadata: { name, ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
    spec: { nodeName: node },
    status: { phase, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  });

  it('picks the running agent on the node, a ready one first', () => {
    expect(
      pickAgentPod(
        [
          pod('other-node', 'n2', 'Running'),
          pod('starting', 'n1', 'Running', false),
          pod('ready', 'n1', 'Running'),
        ],
        'n1',
        'libvirt-operator',
      ),
    ).toBe('ready');
    expect(pickAgentPod([pod('unready', 'n1', 'Running', false)], 'n1', 'ops')).toBe('unready');
  });

  it('names the node and namespace when no agent runs there', () => {
    expect(() =>
      pickAgentPod(
        [pod('pending', 'n1', 'Pending'), pod('going', 'n1', 'Running', true, true)],
        'n1',
        'ops',
      ),
    ).toThrow(
      'no running agent pod on node n1 in namespace ops (label app.kubernetes.io/name=libvirt-operator,app.kubernetes.io/component=agent): ' +
        'is the agent DaemonSet running there (kubectl get pods -n ops -o wide; --operator-namespace if it is elsewhere)? ' +
        "On the VM's own host, --local attaches through that host's libvirt",
    );
  });
});

describe('agentExecArgs', () => {
  it('runs the same console inside the agent container, locally there', () => {
    const o = parse(['web', '-n', 'prod', '--timeout', '5', '--force']);
    expect(agentExecArgs(o, 'prod', 'agent-x', false)).toEqual([
      'exec',
      '-i',
      '-n',
      'libvirt-operator',
      'agent-x',
      '-c',
      'agent',
      '--',
      'libvirt-operator',
      'console',
      'web',
      '-n',
      'prod',
      '--local',
      '--timeout',
      '5',
      '--force',
    ]);
  });

  it('reads ~/.kube/config without --kubeconfig or KUBECONFIG, as kubectl and vm do', () => {
    const home = { ...defaults, userKubeconfig: () => '/home/u/.kube/config' };
    const at = (argv: string[], env: Record<string, string> = {}) =>
      (parseConsoleArgs(argv, env, home) as ConsoleOptions).kubeconfig;
    expect(at(['web'])).toBe('/home/u/.kube/config');
    expect(at(['web'], { KUBECONFIG: '' })).toBe('/home/u/.kube/config');
    expect(at(['web'], { KUBECONFIG: '/env/kc' })).toBe('/env/kc');
    expect(at(['web', '--kubeconfig', '/f/kc'])).toBe('/f/kc');
    const none = { ...defaults, userKubeconfig: () => undefined };
    expect((parseConsoleArgs(['web'], {}, none) as ConsoleOptions).kubeconfig).toBeUndefined();
  });

  it('asks for a terminal only when it has one, and passes the kubeconfig on', () => {
    const o = parse(['web', '--kubeconfig', '/kc']);
    const args = agentExecArgs(o, 'default', 'p', true);
    expect(args.slice(0, 5)).toEqual(['--kubeconfig', '/kc', 'exec', '-i', '-t']);
    expect(args).not.toContain('--timeout');
    expect(args).not.toContain('--force');
  });
});

describe('the end of a session libvirt cut off', () => {
  const ioFailure = new Error('stream had I/O failure');

  it('names a takeover by another session while the connection lives on', () => {
    expect(cutOffMessage('prod/web', ioFailure, true)).toBe(
      'libvirt-operator console: another session took the console of prod/web over (--force): stream had I/O failure',
    );
  });

  it('names a lost connection to libvirt as such', () => {
    expect(cutOffMessage('prod/web', ioFailure, false)).toBe(
      'libvirt-operator console: the connection to libvirt was lost: stream had I/O failure',
    );
  });
});

describe('a session on a paused guest', () => {
  it('starts with a note that it is paused, and only then', () => {
    expect(pausedNote('prod/web', 'paused')).toBe(
      'VirtualMachine prod/web is paused: the guest answers once it resumes (vm unpause)',
    );
    for (const state of ['running', 'blocked', 'shutdown', 'pmsuspended'])
      expect(pausedNote('prod/web', state)).toBeUndefined();
  });
});

describe('the exit code passed on from kubectl', () => {
  it('is 128 + the number of the signal that killed it, as a shell reports it', () => {
    expect(childExitCode(null, 'SIGINT')).toBe(130);
    expect(childExitCode(null, 'SIGKILL')).toBe(137);
    expect(childExitCode(null, 'SIGTERM')).toBe(143);
    expect(childExitCode(null, 'SIGHUP')).toBe(129);
  });

  it('is its own exit code when it exited', () => {
    expect(childExitCode(0, null)).toBe(0);
    expect(childExitCode(1, null)).toBe(1);
    expect(childExitCode(42, null)).toBe(42);
  });

  it('is a failure when neither is known', () => {
    expect(childExitCode(null, null)).toBe(1);
  });

  // The real spawn path: a "kubectl" (sh) that a signal ends.
  it('is what the console command returns for a kubectl killed by a signal', async () => {
    await expect(execInAgent('/bin/sh', ['-c', 'kill -KILL $$'])).resolves.toBe(137);
    await expect(execInAgent('/bin/sh', ['-c', 'kill -TERM $$'])).resolves.toBe(143);
    await expect(execInAgent('/bin/sh', ['-c', 'exit 3'])).resolves.toBe(3);
  });
});
