// `libvirt-operator console` end to end: a tiny guest declared with kubectl, converged by an
// in-process agent on the system libvirtd, and the console command as its own process with
// stdin a pipe (not a terminal), the way a script or a test drives it. The VM's node is not
// this host's name, so the command finds the domain on the local libvirt by the VM's UUID.
// The VM also has the console-log annotation: the log file and the console work together.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import {
  ensureTinyGuest,
  serveTinyGuest,
  TINY_GUEST_CMDLINE,
  waitForConsoleLine,
  waitForGuestReady,
  withoutGuestStatus,
  type TinyGuest,
  type TinyGuestServer,
} from '../../../src/commands/local/tiny-guest.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, type TestAgent } from '../../harness/agent.js';
import { annotate, kubectlOk, patchSpec } from '../../harness/kubectl.js';
import { ROOT } from '../../harness/processes.js';
import { dirPool } from '../../harness/manifests.js';

const RUN = randomBytes(3).toString('hex');
const NODE = `e2e-con-${RUN}`;
const NS = `console-${RUN}`;
const POOL = `e2e-con-pool-${RUN}`;
const KERNEL = `kernel-${RUN}`;
const INITRD = `initrd-${RUN}`;
const VM = `con-${RUN}`;

function manifests(base: string, poolDir: string, guest: TinyGuest): string {
  const volume = (name: string, file: string, sha256: string) => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name, namespace: NS },
    spec: {
      nodeName: NODE,
      pool: POOL,
      format: 'raw',
      source: { http: { url: `${base}/${file}`, sha256 } },
    },
  });
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    dirPool(POOL, poolDir),
    volume(KERNEL, 'vmlinuz', guest.sha256.kernel),
    volume(INITRD, 'initrd.img', guest.sha256.initrd),
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: VM, namespace: NS, annotations: { 'virt.dev/console-log': 'true' } },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Always',
        vcpus: 1,
        memory: '128Mi',
        boot: {
          kernel: { volume: KERNEL },
          initrd: { volume: INITRD },
          cmdline: TINY_GUEST_CMDLINE,
        },
      },
    },
  ]
    .map((d) => JSON.stringify(d))
    .join('\n---\n');
}

interface Session {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the console command with stdin a pipe; `feed` writes to it (and may end it). */
function consoleCommand(
  args: string[],
  kubeconfig: string,
  feed: (stdin: NodeJS.WritableStream) => void,
  killAfterMs = 240_000,
  onOutput?: () => void,
): Promise<Session> {
  const started = Date.now();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'src', 'cli.ts'), 'console', ...args],
    {
      cwd: ROOT,
      env: { ...process.env, KUBECONFIG: kubeconfig, LIBVIRT_URI: SYSTEM_URI },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString('latin1');
    onOutput?.();
  });
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  feed(child.stdin);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

describe('libvirt-operator console', () => {
  const cp = useControlPlane();
  let agent: TestAgent | undefined;
  let server: TinyGuestServer | undefined;
  let guest: TinyGuest;
  let workDir: string;
  let yaml: string;
  let consoleLog: string;

  beforeAll(async () => {
    await ensureLibvirtd();
    guest = await ensureTinyGuest();
    workDir = await mkdtemp(path.join(tmpdir(), 'lvo-e2e-console-'));
    server = await serveTinyGuest(guest);
    yaml = manifests(server.base, path.join(workDir, 'pool'), guest);
    agent = await startTestAgent(cp(), { nodeName: NODE, libvirtUri: SYSTEM_URI });
  });

  afterAll(async () => {
    if (yaml) {
      await cp()
        .kubectl(['delete', '--ignore-not-found', '--wait=true', '--timeout=90s', '-f', '-'], {
          input: yaml
            .split('\n---\n')
            .filter((d) => !d.includes('"kind":"Namespace"'))
            .join('\n---\n'),
        })
        .catch(() => undefined);
    }
    await agent?.stop();
    await server?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }, 180_000);

  it('boots the guest with its pty serial logged to the console-log file', async () => {
    await kubectlOk(cp(), ['apply', '-f', '-'], { input: yaml });
    await kubectlOk(
      cp(),
      ['wait', '--for=condition=Ready', `vm/${VM}`, '-n', NS, '--timeout=240s'],
      { timeoutMs: 250_000 },
    );
    const obj = await getJSON<{
      metadata: { uid: string };
      status?: { conditions?: Array<{ type: string; status: string; message?: string }> };
    }>(cp(), ['vm', VM, '-n', NS]);
    const uid = obj.metadata.uid;
    // The running domain's serial (a pty with its allocated path and the virtlogd log) reads
    // back as what the operator wrote: no spurious difference.
    const restart = obj.status?.conditions?.find((c) => c.type === 'RestartRequired');
    expect(restart?.status, restart?.message).not.toBe('True');
    consoleLog = path.join(agent!.stateDir, 'console', `${uid}.log`);
    // Generous: TCG on a shared 2-core host can take minutes to boot when the machine is busy.
    await waitForGuestReady(consoleLog, 200_000);
  }, 480_000);

  it('sends a command typed on stdin to the guest shell and prints its answer', async () => {
    const marker = randomBytes(4).toString('hex');
    const session = await consoleCommand([VM, '-n', NS], cp().kubeconfigPath, (stdin) => {
      // The shell computes the answer: the echoed command line never contains it.
      stdin.end(`echo LVO-CLI-${marker}-$((6*7))\n`);
    });
    expect(session.stderr).toBe('');
    expect(session.code).toBe(0);
    // The guest's serial output: its tty echoing the command, then the shell's answer. The
    // guest's own status lines (LVO-GUEST-UPTIME, every 2 s) may land inside the echo on the
    // shared serial line: left out of the comparison.
    const echoed = withoutGuestStatus(session.stdout);
    expect(echoed).toContain(`echo LVO-CLI-${marker}-$((6*7))`);
    expect(echoed).toContain(`LVO-CLI-${marker}-42`);
    // The console-log file saw the same session (virtlogd writes it a moment later).
    await waitForConsoleLine(consoleLog, new RegExp(`LVO-CLI-${marker}-42$`), 30_000);
  });

  it('ends at --timeout while stdin stays open, showing output that arrives meanwhile', async () => {
    const marker = randomBytes(4).toString('hex');
    const session = await consoleCommand(
      [VM, '-n', NS, '--timeout', '8'],
      cp().kubeconfigPath,
      (stdin) => {
        // A command whose answer comes 1 s later; stdin is never closed.
        stdin.write(`sleep 1; echo LVO-LATE-${marker}-$((1+2))\n`);
      },
    );
    expect(session.stderr).toBe('');
    expect(session.code).toBe(0);
    expect(session.stdout).toContain(`LVO-LATE-${marker}-3`);
    // It ended by itself (code 0, not the test's kill) and not before the timeout; how long
    // the process took to start is the host's business (tsx on a busy machine: tens of s).
    expect(session.ms).toBeGreaterThanOrEqual(8_000);
  });

  it('in a terminal: raw mode, keys reach the guest, Ctrl-] detaches', async () => {
    // util-linux script(1) gives the command a pseudo-terminal fed from this pipe.
    const cli = `${process.execPath} --import tsx ${path.join(ROOT, 'src', 'cli.ts')}`;
    const child = spawn('script', ['-qfec', `${cli} console ${VM} -n ${NS}`, '/dev/null'], {
      cwd: ROOT,
      env: { ...process.env, KUBECONFIG: cp().kubeconfigPath, LIBVIRT_URI: SYSTEM_URI },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString('latin1')));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const waitFor = async (text: string) => {
      const deadline = Date.now() + 240_000;
      while (!out.includes(text)) {
        if (Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error(`no '${text}' in the terminal session; got:\n${out.slice(-600)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await waitFor('(escape character is ^])');
      const marker = randomBytes(4).toString('hex');
      // A terminal sends Enter as CR; the guest's tty turns it into a newline.
      child.stdin.write(`echo LVO-TTY-${marker}-$((3*5))\r`);
      await waitFor(`LVO-TTY-${marker}-15`);
      child.stdin.write('\x1d');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('says that another session took the console over, in the session cut off', async () => {
    const first = consoleCommand(
      [VM, '-n', NS, '--timeout', '120'],
      cp().kubeconfigPath,
      (stdin) => {
        // The pipe holds it until the session is up; its answer shows the session is.
        stdin.write(`echo LVO-FIRST-$((2*2))\n`);
      },
    );
    await waitForConsoleLine(consoleLog, /LVO-FIRST-4$/, 60_000);
    const second = await consoleCommand([VM, '-n', NS, '--force'], cp().kubeconfigPath, (stdin) =>
      stdin.end('echo LVO-SECOND-$((3*3))\n'),
    );
    expect(second.stdout).toContain('LVO-SECOND-9');
    expect(second.code).toBe(0);
    const cutOff = await first;
    expect(cutOff.stdout).toContain('LVO-FIRST-4');
    expect(cutOff.stderr.trim()).toBe(
      `libvirt-operator console: another session took the console of ${NS}/${VM} over (--force): stream had I/O failure`,
    );
    expect(cutOff.code).toBe(1);
  });

  it('names a paused guest at the start, since it answers nothing until it resumes', async () => {
    const setPaused = async (on: boolean, phase: string) => {
      await annotate(cp(), [`vm/${VM}`, '-n', NS], { 'virt.dev/paused': on ? 'true' : undefined });
      await kubectlOk(
        cp(),
        ['wait', `--for=jsonpath={.status.phase}=${phase}`, `vm/${VM}`, '-n', NS, '--timeout=60s'],
        { timeoutMs: 70_000 },
      );
    };
    await setPaused(true, 'Paused');
    try {
      const session = await consoleCommand(
        [VM, '-n', NS, '--timeout', '2'],
        cp().kubeconfigPath,
        () => undefined,
      );
      expect(session.stderr).toBe(
        `VirtualMachine ${NS}/${VM} is paused: the guest answers once it resumes (vm unpause)\n`,
      );
      expect(session.code).toBe(0);
    } finally {
      await setPaused(false, 'Running');
    }
  });

  it('names what is missing: an unknown VM, or no agent pod to exec into', async () => {
    const missing = await consoleCommand(['nope', '-n', NS], cp().kubeconfigPath, (s) => s.end());
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(
      `libvirt-operator console: VirtualMachine ${NS}/nope not found`,
    );
    // The cluster path: this control plane has no agent pods (no kubelet).
    const viaAgent = await consoleCommand([VM, '-n', NS, '--via-agent'], cp().kubeconfigPath, (s) =>
      s.end(),
    );
    expect(viaAgent.code).toBe(1);
    expect(viaAgent.stderr).toContain(
      `no running agent pod on node ${NODE} in namespace libvirt-operator`,
    );
  });

  it('ends a session when the VM stops, and says how to start a stopped one', async () => {
    // Last in the file: the machine stays halted.
    // Attached once the guest's output arrives (its shell answers the newline).
    let attached!: () => void;
    const output = new Promise<void>((r) => (attached = r));
    const session = consoleCommand(
      [VM, '-n', NS, '--timeout', '120'],
      cp().kubeconfigPath,
      (stdin) => stdin.write('\n'),
      240_000,
      () => attached(),
    );
    await output;
    await patchSpec(cp(), [`vm/${VM}`, '-n', NS], { runStrategy: 'Halted' });
    const ended = await session;
    expect(ended.stderr).toBe(`console of ${NS}/${VM} closed (the VM stopped)\n`);
    expect(ended.code).toBe(0);
    expect(ended.ms).toBeLessThan(100_000);

    await kubectlOk(
      cp(),
      ['wait', '--for=jsonpath={.status.phase}=Stopped', `vm/${VM}`, '-n', NS, '--timeout=60s'],
      { timeoutMs: 70_000 },
    );
    const stopped = await consoleCommand([VM, '-n', NS], cp().kubeconfigPath, (s) => s.end());
    expect(stopped.stderr.trim()).toBe(
      `libvirt-operator console: VirtualMachine ${NS}/${VM} is not running: runStrategy Halted keeps it stopped; ` +
        `to start it: kubectl patch vm ${VM} -n ${NS} --type=merge -p '{"spec":{"runStrategy":"Always"}}'`,
    );
    expect(stopped.code).toBe(1);
  });
});
