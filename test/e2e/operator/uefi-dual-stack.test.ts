// UEFI with secure boot and a TPM, on a dual-stack network, end to end: one tiny guest under
// QEMU (TCG) on the system libvirtd, declared with kubectl, converged by one agent. The guest
// reports on its console whether UEFI booted it, whether the kernel found secure boot on,
// which TPM it sees and its DHCPv6 lease (scripts/build-tiny-guest.sh).
//
// Secure boot here is the secure-boot OVMF build with Microsoft's keys enrolled: the guest
// runs with SecureBoot on (kernel lockdown follows). The kernel itself arrives by direct
// kernel boot, which this OVMF (edk2 2022.11) loads without verifying it: measured, a
// kernel with a corrupted signature boots just the same (docs/api.md says so).
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import {
  ensureTinyGuest,
  GUEST_MARKER,
  readConsole,
  serveTinyGuest,
  TINY_GUEST_CMDLINE,
  waitForConsoleLine,
  waitForGuestReady,
  type TinyGuest,
  type TinyGuestServer,
} from '../../../src/commands/local/tiny-guest.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';
import { freeSubnet, runCommand as run, virsh } from '../../harness/host.js';
import { dirPool } from '../../harness/manifests.js';

const RUN = randomBytes(3).toString('hex');
const NODE = `e2e-uefi-${RUN}`;
const NET = `e2e-dual-${RUN}`;
const BRIDGE = `lvd${RUN}`;
const POOL = `e2e-uefi-pool-${RUN}`;
const KERNEL = `kernel-${RUN}`;
const INITRD = `initrd-${RUN}`;
const VM = `uefi-${RUN}`;
const NS = 'default';
const DOMAIN = `${NS}_${VM}`;
// A unique local /64 of this run, fd42:<1xxx>:<1xx>::/64: both groups have a leading 1, so
// the prefix reads the same as tools print addresses (no leading zero dropped, no zero
// group folded into '::').
const V6 = `fd42:${(0x1000 | parseInt(RUN.slice(0, 3), 16)).toString(16)}:${(0x100 | parseInt(RUN.slice(3, 5), 16)).toString(16)}:`;

interface Obj {
  metadata: { uid: string; name: string };
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    interfaces?: Array<{ name?: string; ipAddresses?: string[] }>;
  };
}

function manifests(base: string, subnet: number, poolDir: string, guest: TinyGuest) {
  const docs = [
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualNetwork',
      metadata: { name: NET },
      spec: {
        mode: 'nat',
        bridge: BRIDGE,
        // Both in the network form: the host takes the first address of each.
        ipv4: {
          cidr: `192.168.${subnet}.0/24`,
          dhcp: { rangeStart: `192.168.${subnet}.100`, rangeEnd: `192.168.${subnet}.199` },
        },
        ipv6: {
          cidr: `${V6}:/64`,
          dhcp: { rangeStart: `${V6}:100`, rangeEnd: `${V6}:1ff` },
        },
      },
    },
    dirPool(POOL, poolDir),
    ...[
      [KERNEL, 'vmlinuz', guest.sha256.kernel],
      [INITRD, 'initrd.img', guest.sha256.initrd],
    ].map(([name, file, sha256]) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name, namespace: NS },
      spec: {
        nodeName: NODE,
        pool: POOL,
        format: 'raw',
        source: { http: { url: `${base}/${file}`, sha256 } },
      },
    })),
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: VM, namespace: NS, annotations: { 'virt.dev/console-log': 'true' } },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Always',
        vcpus: 1,
        memory: '256Mi',
        firmware: 'uefi',
        secureBoot: true,
        tpm: { version: '2.0' },
        terminationGracePeriodSeconds: 30,
        boot: {
          kernel: { volume: KERNEL },
          initrd: { volume: INITRD },
          cmdline: TINY_GUEST_CMDLINE,
        },
        interfaces: [{ name: 'eth0', network: NET }],
      },
    },
  ];
  return docs.map((d) => JSON.stringify(d)).join('\n---\n');
}

describe('UEFI + secure boot + TPM on a dual-stack network, driven with kubectl', () => {
  const cp = useControlPlane();
  let agent: TestAgent | undefined;
  let server: TinyGuestServer | undefined;
  let workDir: string;
  let yaml = '';
  let subnet: number;
  let consoleLog: string;
  let uid: string;
  const vm = () => getJSON<Obj>(cp(), ['vm', VM, '-n', NS]);
  /** The console's tail, for a failure message. */
  const tail = async () => (await readConsole(consoleLog).catch(() => '')).split('\n').slice(-25);

  beforeAll(async () => {
    await ensureLibvirtd();
    const guest = await ensureTinyGuest();
    subnet = await freeSubnet();
    if ((await run('ip', ['-6', 'addr'])).stdout.includes(V6)) {
      throw new Error(`${V6}:/64 is in use on this host; rerun for another random prefix`);
    }
    workDir = await mkdtemp(path.join(tmpdir(), 'lvo-e2e-uefi-'));
    server = await serveTinyGuest(guest);
    yaml = manifests(server.base, subnet, path.join(workDir, 'pool'), guest);
    agent = await startTestAgent(cp(), { nodeName: NODE, libvirtUri: SYSTEM_URI });
  });

  afterAll(async () => {
    if (yaml) {
      await cp()
        .kubectl(['delete', '--ignore-not-found', '--wait=true', '--timeout=90s', '-f', '-'], {
          input: yaml,
        })
        .catch(() => undefined);
    }
    await agent?.stop();
    if ((await virsh('dominfo', DOMAIN)).code === 0) {
      await virsh('destroy', DOMAIN);
      await virsh('undefine', '--nvram', '--tpm', DOMAIN);
    }
    if ((await virsh('net-info', NET)).code === 0) {
      await virsh('net-destroy', NET);
      await virsh('net-undefine', NET);
    }
    if ((await virsh('pool-info', POOL)).code === 0) {
      await virsh('pool-destroy', POOL);
      await virsh('pool-undefine', POOL);
    }
    await server?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }, 180_000);

  it('boots the guest under OVMF with secure boot on and a TPM 2.0 it can see', async () => {
    const applied = await cp().kubectl(['apply', '-f', '-'], { input: yaml });
    expect(applied.code, applied.stderr).toBe(0);
    // The process gets longer than kubectl's own timeout, so kubectl reports, not the harness.
    const wait = await cp().kubectl(
      ['wait', '--for=condition=Ready', `vm/${VM}`, '-n', NS, '--timeout=180s'],
      { timeoutMs: 200_000 },
    );
    expect(wait.code, wait.stderr + wait.stdout).toBe(0);
    uid = (await vm()).metadata.uid;
    consoleLog = path.join(agent!.stateDir, 'console', `${uid}.log`);
    // OVMF under TCG takes a while before the kernel even starts.
    await waitForGuestReady(consoleLog, 240_000);
    const text = await readConsole(consoleLog);
    expect(GUEST_MARKER.efi.exec(text)?.[1], (await tail()).join('\n')).toBe('yes');
    expect(GUEST_MARKER.secureBoot.exec(text)?.[1]).toBe('1');
    expect(GUEST_MARKER.tpm.exec(text)?.[1]).toBe('tpm0 tpm_crb 2');

    // libvirt chose the secure-boot build with Microsoft's keys, the NVRAM lives in the
    // agent's state dir, swtpm keeps its state in libvirt's directory for this UUID.
    const live = (await virsh('dumpxml', DOMAIN)).stdout;
    expect(live).toMatch(
      /<loader readonly='yes' secure='yes' type='pflash'>[^<]*OVMF_CODE[^<]*<\/loader>/,
    );
    expect(live).toContain("<smm state='on'/>");
    const nvram = path.join(agent!.stateDir, 'nvram', `${uid}_VARS.fd`);
    expect(live).toContain(`>${nvram}</nvram>`);
    expect(existsSync(nvram)).toBe(true);
    expect(existsSync(`/var/lib/libvirt/swtpm/${uid}`)).toBe(true);

    // What libvirt filled in (loader path, NVRAM template, no firmware='efi' on the running
    // definition) is not drift: nothing waits for a restart.
    const o = await vm();
    const restart = o.status?.conditions?.find((c) => c.type === 'RestartRequired');
    expect(restart?.status ?? 'False', restart?.message).toBe('False');
  }, 480_000);

  it('gives the guest an IPv6 lease on the dual-stack network, and VM status reports it', async () => {
    const [, ip6, iface] = await waitForConsoleLine(consoleLog, GUEST_MARKER.ip6, 120_000).catch(
      async (err: Error) => {
        err.message += `\n${(await tail()).join('\n')}`;
        throw err;
      },
    );
    expect(iface).toBe('eth0');
    expect(ip6!.startsWith(`${V6}:`), `${ip6} in ${V6}:/64`).toBe(true);
    const [, ip4] = await waitForConsoleLine(consoleLog, GUEST_MARKER.ip, 60_000);
    const reported = await until(
      `status.interfaces[0].ipAddresses with ${ip4} and ${ip6}`,
      async () => {
        const ips = (await vm()).status?.interfaces?.[0]?.ipAddresses ?? [];
        const bare = ips.map((a) => a.split('/')[0]);
        return bare.includes(ip4!) && bare.includes(ip6!) ? ips : undefined;
      },
      120_000,
    );
    expect(reported.length).toBe(2);
    // The network form of both cidrs gave the host the first address of each network.
    const v4 = (await run('ip', ['-4', 'addr', 'show', 'dev', BRIDGE])).stdout;
    expect(v4).toContain(`inet 192.168.${subnet}.1/24`);
    const v6 = (await run('ip', ['-6', 'addr', 'show', 'dev', BRIDGE])).stdout;
    expect(v6).toContain(`inet6 ${V6}:1/64`);
  }, 300_000);

  it('deleting the machine leaves no NVRAM or TPM state behind', async () => {
    const nvram = path.join(agent!.stateDir, 'nvram', `${uid}_VARS.fd`);
    // A TPM dropped from the spec first (restart-time): the persistent definition then lacks
    // it, so undefine's TPM flag alone would leave its state in libvirt's directory.
    const patched = await cp().kubectl([
      'patch',
      'vm',
      VM,
      '-n',
      NS,
      '--type',
      'json',
      '-p',
      '[{"op":"remove","path":"/spec/tpm"}]',
    ]);
    expect(patched.code, patched.stderr).toBe(0);
    await until(
      'RestartRequired naming spec.tpm',
      async () => {
        const c = (await vm()).status?.conditions?.find((c) => c.type === 'RestartRequired');
        return c?.status === 'True' && (c.message ?? '').includes('spec.tpm');
      },
      60_000,
    );
    const gone = await cp().kubectl(
      ['delete', 'vm', VM, '-n', NS, '--wait=true', '--timeout=120s'],
      { timeoutMs: 140_000 },
    );
    expect(gone.code, gone.stderr).toBe(0);
    expect((await virsh('dominfo', DOMAIN)).code).not.toBe(0);
    expect(existsSync(nvram)).toBe(false);
    expect(existsSync(`/var/lib/libvirt/swtpm/${uid}`)).toBe(false);
  }, 180_000);
});
