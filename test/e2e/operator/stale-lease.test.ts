// Addresses from a guest's previous run on the system libvirtd. dnsmasq keeps a lease until it
// expires (an hour for IPv4), and libvirt lists it for the MAC after the domain stopped, so a
// new run of the machine finds its previous run's lease listed until the guest asks for a new
// one. A machine started paused never asks: its status showed that address (and the IP
// printer column) as if the guest had it. The lease is written into the network's lease
// status file as dnsmasq's helper writes it; the guest never runs, so nothing boots here.
// The same holds for a run the agent did not start (`virsh start`, a snapshot revert), which
// it sees by the domain's new ID, and after the agent restarts while the guest is still paused.
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';
import { freeSubnet, virsh } from '../../harness/host.js';
import { annotate, kubectlOk, patchSpec } from '../../harness/kubectl.js';
import { natNetwork } from '../../harness/manifests.js';

const RUN = randomBytes(3).toString('hex');
const NODE = `e2e-lease-${RUN}`;
const NET = `lease-net-${RUN}`;
const BRIDGE = `lvl${RUN}`;
const NS = 'default';
const VM = `lease-${RUN}`;
const DOMAIN = `${NS}_${VM}`;
const MAC = `52:54:00:${RUN.slice(0, 2)}:${RUN.slice(2, 4)}:${RUN.slice(4, 6)}`;
const STATUS_FILE = `/var/lib/libvirt/dnsmasq/${BRIDGE}.status`;

interface Obj {
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string }>;
    interfaces?: Array<{ name: string; macAddress: string; ipAddresses?: string[] }>;
  };
}

describe('addresses of an earlier run', () => {
  const cp = useControlPlane();
  let agent: TestAgent | undefined;
  let subnet: number;
  const docs = () => [
    natNetwork(NET, BRIDGE, subnet),
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: VM, namespace: NS, annotations: { 'virt.dev/paused': 'true' } },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '64Mi',
        terminationGracePeriodSeconds: 0,
        interfaces: [{ name: 'eth0', network: NET, macAddress: MAC }],
      },
    },
  ];
  const yaml = (which: object[]) => which.map((d) => JSON.stringify(d)).join('\n---\n');
  /** Reconcile passes the agent's VirtualMachine controller has finished, by its own metric. */
  const vmPasses = async () =>
    (await agent!.runtime.metrics.reconcileTotal.get()).values
      .filter((v) => v.labels.controller === 'VirtualMachine')
      .reduce((sum, v) => sum + v.value, 0);
  let pokes = 0;
  /**
   * `count` more passes over the machine, each woken at once by a new annotation instead of
   * waited for: a pass reads the leases whatever woke it, as the 5-s address look's do.
   */
  const morePasses = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const before = await vmPasses();
      await annotate(cp(), ['vm', VM, '-n', NS], { 'e2e.virt.dev/pass': `${RUN}-${++pokes}` });
      await until('a pass over the machine', async () => (await vmPasses()) > before, 30_000);
    }
  };

  beforeAll(async () => {
    await ensureLibvirtd();
    subnet = await freeSubnet();
    agent = await startTestAgent(cp(), { nodeName: NODE, libvirtUri: SYSTEM_URI });
  });

  afterAll(async () => {
    if (subnet !== undefined) {
      // A test that failed while the machine was deleting left it a long grace period (and one
      // that failed before creating it left nothing to patch: not an error here).
      await patchSpec(cp(), ['vm', VM, '-n', NS], { terminationGracePeriodSeconds: 0 }).catch(
        () => undefined,
      );
      // The machine first: its network is in use while it exists.
      for (const d of docs().reverse()) {
        await cp().kubectl(
          ['delete', '--ignore-not-found', '--wait=true', '--timeout=90s', '-f', '-'],
          { input: yaml([d]) },
        );
      }
    }
    await agent?.stop();
    await rm(STATUS_FILE, { force: true });
  });

  it('does not show the lease of the previous run for a machine started paused', async () => {
    const [network, machine] = docs();
    await kubectlOk(cp(), ['apply', '-f', '-'], { input: yaml([network!]) });
    await until(
      'the network is ready',
      async () => {
        const n = await getJSON<Obj>(cp(), ['vnet', NET]).catch(() => undefined);
        return n?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      },
      60_000,
    );
    // The lease the guest took in its previous run, as libvirt's dnsmasq helper records it.
    const ip = `192.168.${subnet}.150`;
    const expiry = Math.floor(Date.now() / 1000) + 3000;
    const existing = await readFile(STATUS_FILE, 'utf8').catch(() => '[]');
    const leases = [
      ...(JSON.parse(existing.trim() || '[]') as object[]),
      { 'ip-address': ip, 'mac-address': MAC, hostname: 'old', 'expiry-time': expiry },
    ];
    await writeFile(STATUS_FILE, JSON.stringify(leases));

    await kubectlOk(cp(), ['apply', '-f', '-'], { input: yaml([machine!]) });
    const paused = await until(
      'the machine is paused',
      async () => {
        const v = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]).catch(() => undefined);
        return v?.status?.phase === 'Paused' ? v : undefined;
      },
      60_000,
    );
    expect(paused.status?.interfaces).toEqual([{ name: 'eth0', macAddress: MAC }]);
    // The passes that look for a missing address (every 5 s) do not bring it back.
    await morePasses(2);
    const later = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]);
    expect(later.status?.interfaces).toEqual([{ name: 'eth0', macAddress: MAC }]);

    // A lease the guest takes in this run (the helper replaces the MAC's entry) is shown.
    const fresh = `192.168.${subnet}.151`;
    await writeFile(
      STATUS_FILE,
      JSON.stringify([
        ...leases.slice(0, -1),
        { 'ip-address': fresh, 'mac-address': MAC, hostname: 'new', 'expiry-time': expiry + 60 },
      ]),
    );
    const shown = await until(
      'the new lease is shown',
      async () => {
        const v = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]).catch(() => undefined);
        return v?.status?.interfaces?.[0]?.ipAddresses;
      },
      30_000,
    );
    expect(shown).toEqual([fresh]);

    // A run the agent did not start: that lease is now the previous run's.
    await patchSpec(cp(), ['vm', VM, '-n', NS], { runStrategy: 'Manual' });
    const id = (await virsh('domid', DOMAIN)).stdout.trim();
    expect((await virsh('destroy', DOMAIN)).code).toBe(0);
    const restarted = await virsh('start', '--paused', DOMAIN);
    expect(restarted.code, restarted.stdout).toBe(0);
    expect((await virsh('domid', DOMAIN)).stdout.trim()).not.toBe(id);
    const bare = [{ name: 'eth0', macAddress: MAC }];
    await until(
      'the lease of the run before virsh start is no longer shown',
      async () => {
        const v = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]).catch(() => undefined);
        return isDeepStrictEqual(v?.status?.interfaces, bare);
      },
      30_000,
    );

    // A new agent process, the guest still paused since its start: the status showed no
    // address for this run, so the lease listed is still the previous run's.
    await agent?.stop();
    agent = await startTestAgent(cp(), { nodeName: NODE, libvirtUri: SYSTEM_URI });
    await morePasses(2);
    const afterRestart = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]);
    expect(afterRestart.status?.interfaces).toEqual(bare);

    // The lease this run's guest takes is shown by the new process.
    const third = `192.168.${subnet}.152`;
    await writeFile(
      STATUS_FILE,
      JSON.stringify([
        ...leases.slice(0, -1),
        { 'ip-address': third, 'mac-address': MAC, hostname: 'new', 'expiry-time': expiry + 120 },
      ]),
    );
    const thirdShown = await until(
      'the lease of this run is shown',
      async () => {
        const v = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]).catch(() => undefined);
        return v?.status?.interfaces?.[0]?.ipAddresses;
      },
      30_000,
    );
    expect(thirdShown).toEqual([third]);

    // Deleting: the guest (no OS) ignores the shutdown request for its grace period, and the
    // status written meanwhile judges leases as every other pass does: one this run takes
    // now is shown (the deletion passes had no record of the run's earlier leases, so hid
    // every lease the status did not already show).
    await patchSpec(cp(), ['vm', VM, '-n', NS], { terminationGracePeriodSeconds: 600 });
    await kubectlOk(cp(), ['delete', 'vm', VM, '-n', NS, '--wait=false']);
    // Deletion passes (one every 2 s) run before this run's lease appears.
    await morePasses(3);
    const fourth = `192.168.${subnet}.153`;
    await writeFile(
      STATUS_FILE,
      JSON.stringify([
        ...leases.slice(0, -1),
        { 'ip-address': fourth, 'mac-address': MAC, hostname: 'new', 'expiry-time': expiry + 180 },
      ]),
    );
    await annotate(cp(), ['vm', VM, '-n', NS], { 'e2e.virt.dev/poke': RUN });
    const whileDeleting = await until(
      'the lease this run took while stopping is shown',
      async () => {
        const v = await getJSON<Obj>(cp(), ['vm', VM, '-n', NS]).catch(() => undefined);
        const ips = v?.status?.interfaces?.[0]?.ipAddresses;
        return ips?.includes(fourth) ? ips : undefined;
      },
      30_000,
    );
    // Neither the earlier runs' leases nor the one this run's entry replaced. The guest, resumed
    // so that it can answer the shutdown request, may also have taken a real lease of this run
    // meanwhile (its firmware's PXE asks dnsmasq, which adds it to the file): rightly shown too.
    for (const earlier of [ip, fresh, third]) expect(whileDeleting).not.toContain(earlier);
    // No grace left: afterAll's delete need not wait for it.
    await patchSpec(cp(), ['vm', VM, '-n', NS], { terminationGracePeriodSeconds: 0 });
  });
});
