// Guest metrics end to end: one tiny guest under QEMU (TCG) on the system libvirtd with a data
// disk and a NIC, converged by one in-process agent; its /metrics (over HTTP, as Prometheus
// scrapes it) shows the guest's CPU, balloon, disk and NIC figures, the disk and NIC counters
// grow while the guest reads its disk (the tiny guest does every 2 s) and receives packets,
// and a deleted VM's series are gone from the next scrape.
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../src/commands/local/control-plane.js';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import {
  ensureTinyGuest,
  serveTinyGuest,
  TINY_GUEST_CMDLINE,
  waitForGuestReady,
  type TinyGuest,
  type TinyGuestServer,
} from '../../../src/commands/local/tiny-guest.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';
import { freeSubnet, virsh } from '../../harness/host.js';
import { dirPool, natNetwork } from '../../harness/manifests.js';

const RUN = randomBytes(3).toString('hex');
const NODE = `e2e-m-${RUN}`;
const NET = `e2e-mnet-${RUN}`;
const BRIDGE = `lvm${RUN}`;
const POOL = `e2e-mpool-${RUN}`;
const VM = `metrics-${RUN}`;
const DOMAIN = `default_${VM}`;

function manifests(base: string, subnet: number, poolDir: string, guest: TinyGuest): string {
  const vol = (name: string, spec: Record<string, unknown>) => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name, namespace: 'default' },
    spec: { nodeName: NODE, pool: POOL, ...spec },
  });
  const docs = [
    natNetwork(NET, BRIDGE, subnet),
    dirPool(POOL, poolDir),
    vol(`k-${RUN}`, {
      format: 'raw',
      source: { http: { url: `${base}/vmlinuz`, sha256: guest.sha256.kernel } },
    }),
    vol(`i-${RUN}`, {
      format: 'raw',
      source: { http: { url: `${base}/initrd.img`, sha256: guest.sha256.initrd } },
    }),
    vol(`d-${RUN}`, { format: 'raw', capacity: '16Mi' }),
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: {
        name: VM,
        namespace: 'default',
        annotations: { 'virt.dev/console-log': 'true' },
      },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        terminationGracePeriodSeconds: 5,
        boot: {
          kernel: { volume: `k-${RUN}` },
          initrd: { volume: `i-${RUN}` },
          cmdline: TINY_GUEST_CMDLINE,
        },
        disks: [{ name: 'data', volume: `d-${RUN}` }],
        interfaces: [{ name: 'eth0', network: NET }],
      },
    },
  ];
  return docs.map((d) => JSON.stringify(d)).join('\n---\n');
}

/** The samples of `metric` for this test's VM: label set (minus the VM's own) -> value. */
function samples(text: string, metric: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${metric}{`)) continue;
    const labels = line.slice(metric.length + 1, line.lastIndexOf('}'));
    if (!labels.includes(`name="${VM}"`)) continue;
    expect(labels).toContain('namespace="default"');
    expect(labels).toContain(`node="${NODE}"`);
    const extra = labels
      .split(',')
      .filter((l) => !/^(namespace|name|node)=/.test(l))
      .join(',');
    out.set(extra, Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}
const one = (m: Map<string, number>) => [...m.values()][0];

describe('guest metrics on the agent’s /metrics, from a real guest', () => {
  const cp = useControlPlane();
  let agent: TestAgent | undefined;
  let server: TinyGuestServer | undefined;
  let workDir: string;
  let yaml = '';
  let metricsUrl: string;

  beforeAll(async () => {
    await ensureLibvirtd();
    const guest = await ensureTinyGuest();
    const subnet = await freeSubnet();
    workDir = await mkdtemp(path.join(tmpdir(), 'lvo-e2e-metrics-'));
    server = await serveTinyGuest(guest);
    yaml = manifests(server.base, subnet, path.join(workDir, 'pool'), guest);
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    agent = await startTestAgent(cp(), {
      nodeName: NODE,
      libvirtUri: SYSTEM_URI,
      health: { host: '127.0.0.1', port },
    });
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
      await virsh('undefine', DOMAIN);
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

  const scrape = async () => {
    const res = await fetch(metricsUrl);
    expect(res.status).toBe(200);
    return res.text();
  };

  it(
    'shows CPU, vCPUs, balloon, memory, disk and NIC figures that grow with guest I/O',
    {
      timeout: 1_200_000,
    },
    async () => {
      const applied = await cp().kubectl(['apply', '-f', '-'], { input: yaml });
      expect(applied.code, applied.stderr).toBe(0);
      const wait = await cp().kubectl(
        ['wait', '--for=condition=Ready', `vm/${VM}`, '-n', 'default', '--timeout=180s'],
        { timeoutMs: 190_000 },
      );
      expect(wait.code, wait.stderr + wait.stdout).toBe(0);
      const vm = await getJSON<{ metadata: { uid: string } }>(cp(), ['vm', VM, '-n', 'default']);
      // Generous: under TCG on two shared cores a boot has taken over 90 s while other jobs
      // loaded the machine (load average ~30).
      await waitForGuestReady(
        path.join(agent!.stateDir, 'console', `${vm.metadata.uid}.log`),
        480_000,
      );
      const withIp = await until(
        'a DHCP address in status',
        async () => {
          const o = await getJSON<{ status?: { interfaces?: Array<{ ipAddresses?: string[] }> } }>(
            cp(),
            ['vm', VM, '-n', 'default'],
          );
          return o.status?.interfaces?.[0]?.ipAddresses?.[0];
        },
        240_000,
      );
      const ip = withIp.split('/')[0]!;

      const first = await scrape();
      expect(one(samples(first, 'virt_vm_cpu_usage_seconds_total'))).toBeGreaterThan(0);
      expect(one(samples(first, 'virt_vm_vcpus'))).toBe(1);
      expect(one(samples(first, 'virt_vm_memory_balloon_bytes'))).toBe(128 * 1024 * 1024);
      expect(one(samples(first, 'virt_vm_memory_resident_bytes'))).toBeGreaterThan(0);
      const read0 = samples(first, 'virt_vm_storage_read_bytes_total');
      expect([...read0.keys()]).toContain('drive="vda"');
      expect(samples(first, 'virt_vm_storage_write_bytes_total').has('drive="vda"')).toBe(true);
      const rx0 = samples(first, 'virt_vm_network_receive_bytes_total');
      const tx0 = samples(first, 'virt_vm_network_transmit_bytes_total');
      expect(rx0.size).toBe(1);
      expect([...rx0.keys()][0]).toMatch(/^interface="vnet\d+"$/);
      expect(one(tx0)).toBeGreaterThan(0); // the DHCP exchange

      // Packets to the guest: its receive counter must grow.
      const sock = createSocket('udp4');
      for (let i = 0; i < 20; i++) {
        await new Promise<void>((r) => sock.send(Buffer.alloc(1000), 9, ip, () => r()));
      }
      sock.close();
      const cpu0 = one(samples(first, 'virt_vm_cpu_usage_seconds_total'))!;
      await until(
        'disk reads, received bytes and CPU time grow',
        async () => {
          const now = await scrape();
          return (
            one(samples(now, 'virt_vm_storage_read_bytes_total'))! > one(read0)! &&
            one(samples(now, 'virt_vm_network_receive_bytes_total'))! >= one(rx0)! + 20_000 &&
            one(samples(now, 'virt_vm_cpu_usage_seconds_total'))! > cpu0
          );
        },
        60_000,
      );
    },
  );

  it('drops a deleted VM’s series from the next scrape', async () => {
    const gone = await cp().kubectl(
      ['delete', 'vm', VM, '-n', 'default', '--wait=true', '--timeout=90s'],
      { timeoutMs: 100_000 },
    );
    expect(gone.code, gone.stderr).toBe(0);
    const text = await scrape();
    expect(text).not.toContain(`name="${VM}"`);
    expect(text).toContain('# TYPE virt_vm_cpu_usage_seconds_total counter');
  });
});
