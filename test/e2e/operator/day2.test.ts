// Day-2 operations on one real tiny guest under QEMU (TCG) on the system libvirtd, in sequence:
// CPU model and topology as the guest sees them, an ISO Volume as a CD-ROM, live attach and
// detach of a virtio disk and of a NIC (same boot), pause and unpause (the guest's clock stops),
// restarts requested by annotation (exactly one per value, also when the agent is killed in the
// middle), a detach the guest cannot answer (DetachPending, then done), and a restart-time
// change that leaves every device on its PCI slot. The agent runs as its own process so it can
// be killed with SIGKILL.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connect } from '../../../src/libvirt/index.js';
import { parsePciLayout } from '../../../src/libvirt/xml/domain.js';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import {
  completeLines,
  ensureTinyGuest,
  GUEST_MARKER,
  matchLine,
  readConsole,
  TINY_GUEST_CMDLINE,
  waitForConsoleLine,
  waitForGuestReady,
  type TinyGuest,
} from '../../../src/commands/local/tiny-guest.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode, getJSON, until } from '../../harness/agent.js';
import { collect, ROOT, spawnAgent, spawnCli, waitForLine } from '../../harness/processes.js';
import { freeSubnet, runCommand as sh, virsh } from '../../harness/host.js';
import { dirPool, natNetwork } from '../../harness/manifests.js';

const RUN = randomBytes(3).toString('hex');
const NODE = `day2-${RUN}`;
const NET = `day2-net-${RUN}`;
const BRIDGE = `lvd${RUN}`;
const POOL = `day2-pool-${RUN}`;
const NS = 'default';
const VM = `day2-${RUN}`;
const DOMAIN = `${NS}_${VM}`;
const ISO_TOKEN = `iso-${RUN}`;
/** A transient domain (not the operator's) that holds a Volume's file open. */
const LOCKER = `lvo-lock-${RUN}`;
const GRACE = 10;
/** The grace while a paused guest holds a disk: the detach is pending once it has passed. */
const DETACH_GRACE = 2;
/**
 * How long a boot may take: ~3 s on an idle host, but TCG slows down badly when other tests
 * load the two cores (measured: 60-90 s at a load average of 30).
 */
const BOOT_MS = 180_000;

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface Obj {
  metadata: { uid: string; generation?: number; annotations?: Record<string, string> };
  status?: {
    phase?: string;
    observedGeneration?: number;
    restartCount?: number;
    lastRestartRequest?: string;
    conditions?: Condition[];
    interfaces?: Array<{ name?: string; ipAddresses?: string[] }>;
  };
}

const condition = (o: Obj, type: string) => o.status?.conditions?.find((c) => c.type === type);

describe('day-2 operations on a running guest', () => {
  const cp = useControlPlane();
  let guest: TinyGuest;
  let workDir: string;
  let stateDir: string;
  let server: Server | undefined;
  let base: string;
  let subnet: number;
  let consoleLog: string;
  let agent: ChildProcess | undefined;
  let agentOutput = '';
  let conn: Connect | undefined;
  let eventId: number | undefined;
  /** Lifecycle 'started' events of our domain, as libvirt delivers them. */
  let starts = 0;
  /**
   * Lifecycle 'defined' events of our domain. A hot-plug must not redefine it: a definition
   * written without PCI addresses lets libvirt assign every device's anew (other slots at the
   * next boot for devices that stayed).
   */
  let defines = 0;
  /** Called on the next lifecycle event of that name, as soon as libvirt delivers it. */
  let hook: { event: string; call: () => void } | undefined;
  const sha = { iso: '' };
  const spec: {
    disks: object[];
    interfaces: object[];
    annotations: Record<string, string>;
    grace: number;
  } = {
    disks: [{ name: 'install', volume: `iso-${RUN}`, device: 'cdrom', bus: 'scsi' }],
    interfaces: [{ name: 'eth0', network: NET }],
    annotations: { 'virt.dev/console-log': 'true' },
    grace: GRACE,
  };

  const documents = (guestFiles: boolean) => {
    const volume = (name: string, source: object, extra: object = {}) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name, namespace: NS },
      spec: { nodeName: NODE, pool: POOL, format: 'raw', ...source, ...extra },
    });
    const docs: object[] = [
      natNetwork(NET, BRIDGE, subnet),
      dirPool(POOL, path.join(workDir, 'pool')),
      volume(`kernel-${RUN}`, {
        source: { http: { url: `${base}/vmlinuz`, sha256: guest.sha256.kernel } },
      }),
      volume(`initrd-${RUN}`, {
        source: { http: { url: `${base}/initrd.img`, sha256: guest.sha256.initrd } },
      }),
      volume(`iso-${RUN}`, { source: { http: { url: `${base}/install.iso`, sha256: sha.iso } } }),
      volume(`data-${RUN}`, { capacity: '16Mi' }),
      volume(`lock-${RUN}`, { capacity: '16Mi', format: 'qcow2' }),
      volume(`logs-${RUN}`, { capacity: '16Mi' }),
    ];
    if (guestFiles) {
      docs.push({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachine',
        metadata: { name: VM, namespace: NS, annotations: spec.annotations },
        spec: {
          nodeName: NODE,
          domainType: 'qemu',
          vcpus: 2,
          memory: '128Mi',
          // Not libvirt's default arrangement (one socket per vCPU), so the guest's view proves it.
          cpu: { mode: 'custom', model: 'qemu64', topology: { sockets: 1, cores: 2, threads: 1 } },
          terminationGracePeriodSeconds: spec.grace,
          boot: {
            kernel: { volume: `kernel-${RUN}` },
            initrd: { volume: `initrd-${RUN}` },
            cmdline: TINY_GUEST_CMDLINE,
          },
          disks: spec.disks,
          interfaces: spec.interfaces,
        },
      });
    }
    return docs.map((d) => JSON.stringify(d)).join('\n---\n');
  };
  // Replace, not apply: an annotation or list entry the test drops must go.
  const apply = async () => {
    const res = await cp().kubectl(['apply', '-f', '-'], { input: documents(true) });
    expect(res.code, res.stderr).toBe(0);
  };
  const vm = () => getJSON<Obj>(cp(), ['vm', VM, '-n', NS]);
  const domid = async () => (await virsh('domid', DOMAIN)).stdout.trim();
  const cli = async (...args: string[]) => {
    const done = await collect(
      spawnCli([...args, '-n', NS], { ...process.env, KUBECONFIG: cp().kubeconfigPath }),
      60_000,
    );
    expect(done.code, done.stderr + done.stdout).toBe(0);
    return done.stdout;
  };
  const guestBootId = async () => matchLine(await readConsole(consoleLog), GUEST_MARKER.ready)?.[1];
  /** Fails with the agent's last output attached: most failures here are the agent's. */
  const explained = async <T>(wait: Promise<T>): Promise<T> => {
    try {
      return await wait;
    } catch (err) {
      (err as Error).message += `\nagent output (tail):\n${agentOutput.slice(-3000)}`;
      throw err;
    }
  };

  async function startAgent(): Promise<void> {
    const child = spawnAgent(
      {
        nodeName: NODE,
        libvirtUri: SYSTEM_URI,
        kubeconfigPath: cp().kubeconfigPath,
        stateDir,
        healthAddr: '0',
      },
      // A stable Lease holder: the successor of a killed agent takes the Lease at once.
      { ...process.env, POD_NAME: `day2-agent-${RUN}` },
    );
    const keep = (c: Buffer | string) => (agentOutput = (agentOutput + String(c)).slice(-20_000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    agent = child;
    await waitForLine(child, /agent started/, 60_000);
  }

  async function killAgent(): Promise<void> {
    const child = agent;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  beforeAll(async () => {
    await ensureLibvirtd();
    guest = await ensureTinyGuest();
    subnet = await freeSubnet();
    workDir = await mkdtemp(path.join(tmpdir(), 'lvo-day2-'));
    stateDir = path.join(workDir, 'state');
    // The install medium: an ISO whose marker file the guest prints once it mounts the CD-ROM.
    const isoDir = path.join(workDir, 'iso');
    await mkdir(isoDir, { recursive: true });
    await writeFile(path.join(isoDir, 'lvo-cdrom.txt'), `${ISO_TOKEN}\n`);
    const iso = path.join(workDir, 'install.iso');
    const made = await sh('genisoimage', ['-quiet', '-o', iso, '-V', 'LVO', '-J', '-R', isoDir]);
    expect(made.code, `genisoimage (Debian package genisoimage) failed: ${made.stdout}`).toBe(0);
    sha.iso = createHash('sha256')
      .update(await readFile(iso))
      .digest('hex');
    const files: Record<string, string> = {
      '/vmlinuz': guest.kernel,
      '/initrd.img': guest.initrd,
      '/install.iso': iso,
    };
    server = createServer((req, res) => {
      const file = files[req.url ?? ''];
      if (!file) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await ensureNode(cp(), NODE);
    conn = await Connect.open(SYSTEM_URI);
    eventId = await conn.domainEventLifecycleRegister((e) => {
      if (e.domain.getName() !== DOMAIN) return;
      if (e.eventName === 'started') starts++;
      if (e.eventName === 'defined') defines++;
      if (hook?.event !== e.eventName) return;
      const call = hook.call;
      hook = undefined;
      call();
    });
    await startAgent();
  }, 180_000);

  afterAll(async () => {
    if (base && agent?.exitCode === null) {
      await cp()
        .kubectl(['delete', '--ignore-not-found', '--wait=true', '--timeout=90s', '-f', '-'], {
          input: documents(true),
        })
        .catch(() => undefined);
    }
    await killAgent();
    if (conn && eventId !== undefined) await conn.domainEventDeregister(eventId).catch(() => {});
    await conn?.close().catch(() => undefined);
    if ((await virsh('dominfo', DOMAIN)).code === 0) {
      await virsh('destroy', DOMAIN);
      await virsh('undefine', DOMAIN);
    }
    if ((await virsh('dominfo', LOCKER)).code === 0) await virsh('destroy', LOCKER);
    if ((await virsh('net-info', NET)).code === 0) {
      await virsh('net-destroy', NET);
      await virsh('net-undefine', NET);
    }
    if ((await virsh('pool-info', POOL)).code === 0) {
      await virsh('pool-destroy', POOL);
      await virsh('pool-undefine', POOL);
    }
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }, 180_000);

  it('boots with the declared CPU model and topology and reads the ISO as a CD-ROM', async () => {
    await apply();
    const o = await explained(
      until(
        'VM Ready',
        async () => {
          const cur = await vm();
          return condition(cur, 'Ready')?.status === 'True' && cur;
        },
        120_000,
      ),
    );
    consoleLog = path.join(stateDir, 'console', `${o.metadata.uid}.log`);
    await explained(waitForGuestReady(consoleLog, BOOT_MS));
    const topology = await waitForConsoleLine(consoleLog, GUEST_MARKER.topology, 10_000);
    expect(topology.slice(1)).toEqual(['1', '2', '1']);
    const live = (await virsh('dumpxml', DOMAIN)).stdout;
    expect(live).toMatch(/<cpu mode='custom'[^>]*>/);
    expect(live).toMatch(/<model[^>]*>qemu64<\/model>/);
    // The ISO: read-only CD-ROM on virtio-scsi, readable in the guest.
    const cdrom = await waitForConsoleLine(consoleLog, GUEST_MARKER.cdrom, 30_000);
    expect(cdrom[1]).toBe(ISO_TOKEN);
    expect(live).toMatch(/<disk type='file' device='cdrom'>[\s\S]*?<readonly\/>/);
    // libvirt's read-back of the CPU and devices is no drift: nothing pending, no redefinition.
    const id = await domid();
    await new Promise((r) => setTimeout(r, 3_000));
    const settled = await vm();
    expect(condition(settled, 'RestartRequired')?.status).toBe('False');
    expect(condition(settled, 'Synced')?.status).toBe('True');
    expect(await domid()).toBe(id);
  });

  it('attaches a virtio disk to the running guest and detaches it again, same boot', async () => {
    const bootId = await guestBootId();
    const id = await domid();
    const definesBefore = defines;
    let offset = (await readConsole(consoleLog)).length;
    spec.disks = [...spec.disks, { name: 'data', volume: `data-${RUN}` }];
    await apply();
    await explained(
      waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS vda$/, 60_000, { after: offset }),
    );
    await until('Synced and nothing pending', async () => {
      const o = await vm();
      return (
        condition(o, 'Synced')?.status === 'True' &&
        condition(o, 'RestartRequired')?.status === 'False'
      );
    });
    expect(await domid()).toBe(id);
    expect(await guestBootId()).toBe(bootId);

    offset = (await readConsole(consoleLog)).length;
    spec.disks = spec.disks.slice(0, 1);
    await apply();
    await explained(
      waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS $/, 60_000, { after: offset }),
    );
    await until(
      'the detached disk is gone from the live XML',
      async () => !(await virsh('dumpxml', DOMAIN)).stdout.includes(`data-${RUN}`),
    );
    await until('Synced', async () => condition(await vm(), 'Synced')?.status === 'True');
    expect(await domid()).toBe(id);
    expect(await guestBootId()).toBe(bootId);
    expect(defines).toBe(definesBefore);
  });

  it('attaches a NIC live and the guest gets a DHCP lease on it', async () => {
    const bootId = await guestBootId();
    const definesBefore = defines;
    const offset = (await readConsole(consoleLog)).length;
    spec.interfaces = [...spec.interfaces, { name: 'eth1', network: NET }];
    await apply();
    const lease = await explained(
      waitForConsoleLine(consoleLog, /^LVO-GUEST-IP (\S+) eth1 (\S+)$/, 60_000, { after: offset }),
    );
    expect(lease[1]).toMatch(new RegExp(`^192\\.168\\.${subnet}\\.`));
    await until(
      'status.interfaces[eth1] has the address',
      async () =>
        (await vm()).status?.interfaces
          ?.find((i) => i.name === 'eth1')
          ?.ipAddresses?.some((ip) => ip.split('/')[0] === lease[1]),
      60_000,
    );
    spec.interfaces = spec.interfaces.slice(0, 1);
    await apply();
    await until(
      'the NIC is detached',
      async () => ((await virsh('domiflist', DOMAIN)).stdout.match(/virtio/g) ?? []).length === 1,
      60_000,
    );
    expect(await guestBootId()).toBe(bootId);
    expect(defines).toBe(definesBefore);
  });

  it('pauses and unpauses with the CLI; the guest clock stops meanwhile', async () => {
    const ticks = async () =>
      completeLines(await readConsole(consoleLog))
        .map((l) => l.match(GUEST_MARKER.uptime))
        .filter((m): m is RegExpMatchArray => m !== null)
        .map((m) => Number(m[1]));
    expect(await cli('vm', 'pause', VM)).toContain('pause requested');
    const paused = await until(
      'phase Paused',
      async () => {
        const o = await vm();
        return o.status?.phase === 'Paused' && o;
      },
      30_000,
    );
    expect(condition(paused, 'Paused')).toMatchObject({
      status: 'True',
      reason: 'PausedByRequest',
    });
    expect(paused.metadata.annotations?.['virt.dev/paused']).toBe('true');
    expect((await virsh('domstate', DOMAIN)).stdout.trim()).toBe('paused');
    // The CLI wrote the annotation under its own field manager (unpause removes it, and the entry).
    const managers = (
      await getJSON<{ metadata: { managedFields?: Array<{ manager: string }> } }>(cp(), [
        'vm',
        VM,
        '-n',
        NS,
        '--show-managed-fields',
      ])
    ).metadata.managedFields?.map((m) => m.manager);
    expect(managers).toContain('libvirt-operator-vm');
    const before = await ticks();
    const pausedAt = Date.now();
    await new Promise((r) => setTimeout(r, 6_000));
    expect((await ticks()).length).toBe(before.length);

    expect(await cli('vm', 'unpause', VM)).toContain('unpause requested');
    await until('phase Running', async () => (await vm()).status?.phase === 'Running', 30_000);
    await until('ticks again', async () => (await ticks()).length > before.length, 90_000);
    const after = await ticks();
    const wall = (Date.now() - pausedAt) / 1000;
    const guestGap = after[after.length - 1]! - before[before.length - 1]!;
    // The guest's uptime advanced by its running time only. The gap also holds what the guest
    // ran between its last tick and the pause (up to one 2-s tick period, before pausedAt, so
    // not in wall): a guest that kept running would show at least wall, a paused one at most
    // wall - 6 + 2 (a CI run measured 2.15 s of gap in 7.04 s of wall).
    expect(guestGap).toBeLessThan(wall - 3);
    expect(condition(await vm(), 'Paused')?.status).toBe('False');
  });

  /** Waits until the guest runs a new boot and status records `value`; returns the boot id. */
  async function restartedOnce(bootId: string, value: string, startsBefore: number) {
    const next = await explained(waitForGuestReady(consoleLog, BOOT_MS, { otherThan: bootId }));
    await until(
      'lastRestartRequest recorded and Ready',
      async () => {
        const o = await vm();
        return o.status?.lastRestartRequest === value && condition(o, 'Ready')?.status === 'True';
      },
      BOOT_MS,
    );
    // Long enough for a repeated restart to show (the guest stops within 1-2 s of ACPI).
    await new Promise((r) => setTimeout(r, 8_000));
    expect(starts - startsBefore).toBe(1);
    expect(await guestBootId()).toBe(next);
    return next;
  }

  it('restarts exactly once per restart-requested-at value', async () => {
    const bootId = (await guestBootId())!;
    const startsBefore = starts;
    expect(await cli('vm', 'restart', VM)).toContain('restart requested');
    const value = (await vm()).metadata.annotations?.['virt.dev/restart-requested-at'];
    expect(value).toBeTruthy();
    await restartedOnce(bootId, value!, startsBefore);
  });

  /**
   * Sets a new restart-requested-at value and SIGKILLs the agent from libvirt's event callback
   * at `event`: 'shutdown' (the guest answered the ACPI request: recorded, not yet started
   * again) or 'started' (started again, before the agent can have written its status). Then a
   * new agent takes over, and the domain must have started exactly once.
   */
  async function restartKilledAt(event: 'shutdown' | 'started') {
    const bootId = (await guestBootId())!;
    const startsBefore = starts;
    const value = `kill-at-${event}-${RUN}`;
    spec.annotations = { ...spec.annotations, 'virt.dev/restart-requested-at': value };
    const killed = new Promise<void>((resolve) => {
      hook = {
        event,
        call: () => {
          agent?.kill('SIGKILL');
          resolve();
        },
      };
    });
    await apply();
    await explained(
      Promise.race([
        killed,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`no '${event}' event within 60 s`)), 60_000),
        ),
      ]),
    );
    await killAgent();
    await startAgent();
    await restartedOnce(bootId, value, startsBefore);
  }

  it('restarts exactly once when the agent is killed between the stop and the start', async () => {
    await restartKilledAt('shutdown');
  });

  it('restarts exactly once when the agent is killed right after the new start', async () => {
    await restartKilledAt('started');
  });

  /** Types `line` into the guest's shell through `libvirt-operator console`. */
  async function guestShell(line: string): Promise<void> {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'src', 'cli.ts'), 'console', VM, '-n', NS],
      {
        cwd: ROOT,
        env: { ...process.env, KUBECONFIG: cp().kubeconfigPath, LIBVIRT_URI: SYSTEM_URI },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    child.stdin.end(`${line}\n`);
    const done = await collect(child, 60_000);
    expect(done.code, done.stderr).toBe(0);
  }

  it('a Halted stop undone before the guest acted on it: its later stop is no unasked restart', async () => {
    const bootId = (await guestBootId())!;
    const restartsBefore = (await vm()).status?.restartCount ?? 0;
    const restartedBefore = (await restartedEvents()).length;
    // A guest slow to shut down: without acpid it ignores the power button until told.
    await guestShell('killall acpid');
    const patch = async (spec: object) => {
      const res = await cp().kubectl([
        'patch',
        'vm',
        VM,
        '-n',
        NS,
        '--type=merge',
        '-p',
        JSON.stringify({ spec }),
      ]);
      expect(res.code, res.stderr).toBe(0);
    };
    await patch({ runStrategy: 'Halted', terminationGracePeriodSeconds: 120 });
    await explained(
      until('ACPI requested', async () => condition(await vm(), 'ShutdownRequested')?.status),
    );
    await patch({ runStrategy: 'Always' });
    const always = await explained(
      until('the pass under Always', async () => {
        const o = await vm();
        return o.status?.observedGeneration === o.metadata.generation && o;
      }),
    );
    // Running as asked, nothing destroyed; the request the guest has stays on record.
    expect(always.status?.phase).toBe('Running');
    expect(condition(always, 'ShutdownRequested')).toMatchObject({
      status: 'True',
      reason: 'RunStrategyHalted',
    });
    // The guest now acts on it, as a slow guest would: the agent starts it again as asked.
    await guestShell('poweroff -f');
    await explained(waitForGuestReady(consoleLog, BOOT_MS, { otherThan: bootId }));
    await patch({ terminationGracePeriodSeconds: GRACE });
    const after = await until('Ready', async () => {
      const o = await vm();
      return condition(o, 'Ready')?.status === 'True' && o;
    });
    expect(after.status?.restartCount ?? 0).toBe(restartsBefore);
    expect(condition(after, 'ShutdownRequested')).toBeUndefined();
    expect((await restartedEvents()).length).toBe(restartedBefore);
  });

  /** The machine's Restarted Warnings (a stop nobody asked for). */
  async function restartedEvents(): Promise<string[]> {
    const list = await getJSON<{ items: Array<{ reason?: string; message?: string }> }>(cp(), [
      'events',
      '-n',
      NS,
      '--field-selector',
      `involvedObject.name=${VM},reason=Restarted`,
    ]);
    return list.items.map((e) => e.message ?? '');
  }

  it('a disk QEMU refuses to attach does not hold up an unpause asked in the same apply', async () => {
    spec.annotations = { ...spec.annotations, 'virt.dev/paused': 'true' };
    await apply();
    await until('phase Paused', async () => (await vm()).status?.phase === 'Paused', 30_000);
    // Another (transient, not the operator's) domain holds the Volume's file: QEMU's write
    // lock makes the attach fail, and keep failing, for as long as it runs.
    const file = (
      await getJSON<{ status?: { path?: string } }>(cp(), ['vol', `lock-${RUN}`, '-n', NS])
    ).status?.path;
    expect(file).toBeTruthy();
    const xml = path.join(workDir, 'locker.xml');
    await writeFile(
      xml,
      `<domain type='qemu'><name>${LOCKER}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>` +
        `<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>` +
        `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>` +
        `<source file='${file}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`,
    );
    const locker = await virsh('create', xml);
    expect(locker.code, locker.stdout).toBe(0);
    const disks = spec.disks;
    spec.disks = [...disks, { name: 'locked', volume: `lock-${RUN}` }];
    const rest = { ...spec.annotations };
    delete rest['virt.dev/paused'];
    spec.annotations = rest;
    await apply();
    const o = await explained(
      until(
        'resumed, the attach reported',
        async () => {
          const cur = await vm();
          return (
            cur.status?.phase === 'Running' &&
            condition(cur, 'Synced')?.reason === 'AttachFailed' &&
            cur
          );
        },
        60_000,
      ),
    );
    expect(condition(o, 'Synced')?.message).toContain('spec.disks[locked]');
    expect((await virsh('domstate', DOMAIN)).stdout.trim()).toBe('running');
    await virsh('destroy', LOCKER);
    spec.disks = disks;
    await apply();
    await until('Synced', async () => condition(await vm(), 'Synced')?.status === 'True', 60_000);
  });

  it('reports DetachPending while the guest cannot release a disk, and finishes once it can', async () => {
    let offset = (await readConsole(consoleLog)).length;
    spec.disks = [...spec.disks, { name: 'data', volume: `data-${RUN}` }];
    await apply();
    await waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS vda$/, 60_000, { after: offset });
    // A paused guest cannot answer the unplug request.
    spec.annotations = { ...spec.annotations, 'virt.dev/paused': 'true' };
    await apply();
    await until('phase Paused', async () => (await vm()).status?.phase === 'Paused', 30_000);
    const id = await domid();
    spec.disks = spec.disks.slice(0, 1);
    // The detach is pending once the grace period has passed: a short one, not GRACE's 10 s.
    spec.grace = DETACH_GRACE;
    try {
      await apply();
      const pending = await explained(
        until(
          'Synced=False DetachPending',
          async () => {
            const c = condition(await vm(), 'Synced');
            return c?.reason === 'DetachPending' && c;
          },
          (DETACH_GRACE + 40) * 1000,
        ),
      );
      expect(pending.status).toBe('False');
      expect(pending.message).toContain('spec.disks');
      expect(await domid()).toBe(id);
    } finally {
      // Back to the file's grace with the resume below (or the next test's first apply).
      spec.grace = GRACE;
    }
    offset = (await readConsole(consoleLog)).length;
    const rest = { ...spec.annotations };
    delete rest['virt.dev/paused'];
    spec.annotations = rest;
    await apply();
    await waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS $/, 60_000, { after: offset });
    // libvirt's device-removed event wakes the agent when the guest lets go. Before the agent
    // listened for it, a guest slower than the pass after the resume left Synced False for the
    // retry backoff, which by then is as long as Synced has been False (over 60 s in a CI run).
    await until(
      'Synced again',
      async () => condition(await vm(), 'Synced')?.status === 'True',
      30_000,
    );
    expect(await domid()).toBe(id);
  });

  it('keeps every device on its PCI slot when a restart-time change redefines the domain', async () => {
    const pciSlots = async () => {
      const layout = parsePciLayout((await virsh('dumpxml', '--inactive', DOMAIN)).stdout);
      const at = (a?: { bus: string; slot: string; function: string }) =>
        a ? `${a.bus}:${a.slot}.${a.function}` : 'none';
      return new Map([
        ...[...layout.disks].map(([file, a]) => [`disk ${file}`, at(a)] as const),
        ...[...layout.interfaces].map(([mac, a]) => [`nic ${mac}`, at(a)] as const),
        ...layout.controllers.map(
          (c) => [`${c.type} ${c.model} ${c.index}`, at(c.address)] as const,
        ),
        ['balloon', at(layout.memballoon)] as const,
      ]);
    };
    // A hot-plugged disk takes a spare root port. Redefined without addresses, libvirt would
    // give it the slot after the virtio-serial controller and move the balloon behind it.
    const offset = (await readConsole(consoleLog)).length;
    spec.disks = [...spec.disks, { name: 'data', volume: `data-${RUN}` }];
    await apply();
    await waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS vda$/, 60_000, { after: offset });
    await until('Synced', async () => condition(await vm(), 'Synced')?.status === 'True');
    const before = await pciSlots();
    expect([...before.keys()].some((k) => k.startsWith('disk '))).toBe(true);
    const id = await domid();
    const definesBefore = defines;
    // A boot order on the CD-ROM: restart-time, so the persistent definition is rewritten.
    spec.disks = [{ ...spec.disks[0]!, bootOrder: 2 }, ...spec.disks.slice(1)];
    await apply();
    await explained(
      until('RestartRequired', async () => {
        const c = condition(await vm(), 'RestartRequired');
        return c?.status === 'True' && c.message?.includes('spec.disks[install]');
      }),
    );
    expect(defines).toBeGreaterThan(definesBefore);
    // Every device where it was; the redefinition may add spare root ports.
    const after = await pciSlots();
    expect(new Map([...before.keys()].map((k) => [k, after.get(k)]))).toEqual(before);
    expect(await domid()).toBe(id);
  });

  it('detaches a disk whose targets the running and saved definitions disagree on', async () => {
    // Continues from the test before: the CD-ROM's boot order is pending, data runs as vda.
    const targets = async (...flags: string[]) => {
      const out = (await virsh('domblklist', DOMAIN, ...flags)).stdout;
      return new Map(
        out
          .split('\n')
          .map((line) => line.trim().split(/\s+/))
          .filter((w) => w.length === 2 && w[1]!.startsWith('/'))
          .map(([dev, file]) => [path.basename(file!), dev!] as const),
      );
    };
    // A Volume's file is <namespace>_<name> in its pool.
    const file = (volume: string) => `${NS}_${volume}-${RUN}`;
    const [install, data] = spec.disks as [{ bootOrder?: number }, object];
    const logs = { name: 'logs', volume: `logs-${RUN}` };
    let offset = (await readConsole(consoleLog)).length;
    // logs comes first in the spec (vda) but is plugged in on the free target, vdb.
    spec.disks = [install, logs, data];
    await apply();
    await explained(
      waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS vda vdb$/, 60_000, { after: offset }),
    );
    // A restart-time change redefines the running domain with the spec's targets.
    const defined = defines;
    spec.disks = [{ ...install, bootOrder: 3 }, logs, data];
    await apply();
    await explained(until('redefined', async () => defines > defined));
    const live = await targets();
    const saved = await targets('--inactive');
    expect(live.get(file('logs'))).not.toBe(saved.get(file('logs')));
    expect(live.get(file('data'))).not.toBe(saved.get(file('data')));

    const id = await domid();
    const definesBefore = defines;
    offset = (await readConsole(consoleLog)).length;
    spec.disks = [spec.disks[0]!, logs];
    await apply();
    await explained(
      waitForConsoleLine(consoleLog, /^LVO-GUEST-DISKS vd[a-z]$/, 60_000, { after: offset }),
    );
    await until('data is gone from the live XML', async () => !(await targets()).has(file('data')));
    await until('Synced', async () => condition(await vm(), 'Synced')?.status === 'True');
    // The saved definition drops data and keeps logs at once, with no redefinition: a single
    // LIVE|CONFIG detach by the running target (data's vda) removed logs from it instead, and
    // the next pass had to redefine the domain to put logs back.
    expect([...(await targets('--inactive')).keys()].sort()).toEqual(
      [file('iso'), file('logs')].sort(),
    );
    expect(defines).toBe(definesBefore);
    expect(await domid()).toBe(id);
  });

  it('deletes everything', async () => {
    const gone = await cp().kubectl(['delete', '--wait=true', '--timeout=120s', '-f', '-'], {
      input: documents(true),
    });
    expect(gone.code, gone.stderr).toBe(0);
    expect((await virsh('dominfo', DOMAIN)).code).not.toBe(0);
  });
});
