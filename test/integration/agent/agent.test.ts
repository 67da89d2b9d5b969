// The whole agent (runtime + four controllers + libvirt events) against a real API server and
// libvirt's test driver: issue 5's acceptance, driven with kubectl as a user would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connect } from '../../../src/libvirt/index.js';
import type { VirtKind } from '../../../src/api/generated/crds.js';
import type { Controller } from '../../../src/runtime/controller.js';
import { useControlPlane } from '../../harness/control-plane.js';
import {
  getJSON,
  startTestAgent,
  until,
  writeRequests,
  type TestAgent,
} from '../../harness/agent.js';

const NODE = 'node-a';
const manifests = (memory: string, extra = '') => `
apiVersion: virt.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: lab}
spec:
  mode: nat
  bridge: virbr-lab
  ipv4:
    cidr: 192.168.150.1/24
    dhcp: {rangeStart: 192.168.150.100, rangeEnd: 192.168.150.199}
---
apiVersion: virt.dev/v1alpha1
kind: StoragePool
metadata: {name: images}
spec: {path: /var/lib/libvirt-operator-test/images}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: root, namespace: default}
spec: {nodeName: ${NODE}, pool: images, capacity: 1Gi}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: keep, namespace: default}
spec: {nodeName: ${NODE}, pool: images, capacity: 1Gi, deletionPolicy: Retain}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web, namespace: default}
spec:
  nodeName: ${NODE}
  domainType: qemu
  vcpus: 1
  maxVcpus: 4
  memory: ${memory}
  maxMemory: 1Gi
  disks: [{name: root, volume: root, bootOrder: 1}]
  interfaces: [{name: eth0, network: lab}]
${extra}`;

interface Obj {
  metadata: { uid: string; name: string; generation?: number };
  spec: Record<string, unknown>;
  status?: {
    phase?: string;
    observedGeneration?: number;
    restartCount?: number;
    conditions?: Array<{
      type: string;
      status: string;
      reason?: string;
      message?: string;
      lastTransitionTime?: string;
    }>;
    memory?: { target?: string };
    vcpus?: { current?: number };
    nodes?: Array<{ nodeName: string; conditions?: Array<{ type: string; status: string }> }>;
  };
}
const ready = (o: Obj) => o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
const nodeReady = (o: Obj) =>
  o.status?.nodes?.find((n) => n.nodeName === NODE)?.conditions?.find((c) => c.type === 'Ready')
    ?.status === 'True';

describe('the agent converges a host on the declared objects', () => {
  const cp = useControlPlane();
  let agent: TestAgent;
  let conn: Connect;
  let original: { domains: string[]; networks: string[]; pools: string[] };

  beforeAll(async () => {
    conn = await Connect.open('test:///default');
    original = await hostNames(conn);
    agent = await startTestAgent(cp(), { nodeName: NODE });
  });
  afterAll(async () => {
    await agent?.stop();
    await conn?.close();
  });

  it('makes every object Ready, with libvirt objects carrying the objects’ UUIDs', async () => {
    const applied = await cp().kubectl(['apply', '-f', '-'], { input: manifests('512Mi') });
    expect(applied.code, applied.stderr).toBe(0);
    const vm = await until('VM Ready', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'web']);
      return ready(o) && o;
    });
    const net = await until('network Ready on the node and in summary', async () => {
      const o = await getJSON<Obj>(cp(), ['vnet', 'lab']);
      return nodeReady(o) && ready(o) && o;
    });
    const pool = await until('pool Ready on the node and in summary', async () => {
      const o = await getJSON<Obj>(cp(), ['pool', 'images']);
      return nodeReady(o) && ready(o) && o;
    });
    const vol = await until('volume in use', async () => {
      const o = await getJSON<Obj>(cp(), ['vol', 'root']);
      return o.status?.phase === 'InUse' && o;
    });
    expect(vol.status?.phase).toBe('InUse');

    const domain = await conn.lookupDomainByUUIDString(vm.metadata.uid);
    expect(domain.getName()).toBe('default_web');
    expect(await domain.isActive()).toBe(true);
    expect(vm.status?.phase).toBe('Running');
    expect(vm.status?.observedGeneration).toBe(vm.metadata.generation);
    expect((await conn.lookupNetworkByUUIDString(net.metadata.uid)).getName()).toBe('lab');
    expect((await conn.lookupStoragePoolByUUIDString(pool.metadata.uid)).getName()).toBe('images');

    // Readiness (the summary over the selected nodes) and the count of ready nodes show in
    // the printer columns of the cluster-scoped kinds.
    // Read by the header's offsets: an empty cell (IPV6 of an IPv4 network) has no word.
    for (const kind of ['vnet/lab', 'pool/images']) {
      const table = await cp().kubectl(['get', kind]);
      const [head = '', row = ''] = table.stdout.trimEnd().split('\n');
      const cell = (name: string) => {
        // A column's cells start where its header does and end where the next header starts.
        const start = ` ${head} `.indexOf(` ${name} `);
        const end = head.slice(start + name.length).search(/\S/);
        return row.slice(start, end < 0 ? undefined : start + name.length + end).trim();
      };
      expect(cell('NODES'), kind).toBe('1/1');
      expect(cell('READY'), kind).toBe('True');
    }
  });

  it('applies a memory and a vCPU change live: same domain ID, no restart', async () => {
    const vm = await getJSON<Obj>(cp(), ['vm', 'web']);
    const domain = await conn.lookupDomainByUUIDString(vm.metadata.uid);
    const id = await domain.getID();
    const patched = await cp().kubectl([
      'patch',
      'vm',
      'web',
      '--type=merge',
      '-p',
      '{"spec":{"memory":"384Mi","vcpus":2}}',
    ]);
    expect(patched.code, patched.stderr).toBe(0);
    const after = await until('live change in status', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'web']);
      return (
        o.status?.observedGeneration === o.metadata.generation &&
        o.status?.vcpus?.current === 2 &&
        ready(o) &&
        o
      );
    });
    expect(await (await conn.lookupDomainByUUIDString(vm.metadata.uid)).getID()).toBe(id);
    expect((await domain.getInfo()).memory).toBe(384n * 1024n);
    expect(
      after.status?.conditions?.find((c) => c.type === 'RestartRequired')?.status ?? 'False',
    ).toBe('False');
  });

  it('names a restart-time change in RestartRequired', async () => {
    const patched = await cp().kubectl([
      'patch',
      'vm',
      'web',
      '--type=merge',
      '-p',
      '{"spec":{"maxVcpus":8}}',
    ]);
    expect(patched.code, patched.stderr).toBe(0);
    const vm = await until('RestartRequired', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'web']);
      const c = o.status?.conditions?.find((x) => x.type === 'RestartRequired');
      return c?.status === 'True' && o;
    });
    expect(vm.status?.conditions?.find((x) => x.type === 'RestartRequired')?.message).toMatch(
      /maxVcpus/,
    );
  });

  it('brings back a domain destroyed behind its back, within a second, and records an Event', async () => {
    const vm = await getJSON<Obj>(cp(), ['vm', 'web']);
    const before = vm.status?.restartCount ?? 0;
    await (await conn.lookupDomainByUUIDString(vm.metadata.uid)).destroy();
    const destroyedAt = Date.now();
    await until(
      'domain running again',
      async () => (await conn.lookupDomainByUUIDString(vm.metadata.uid)).isActive(),
      5_000,
    );
    // The lifecycle event, not the 60 s resync; 3 s leaves room for a loaded CI machine.
    expect(Date.now() - destroyedAt).toBeLessThan(3_000);
    const after = await until('restartCount', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'web']);
      return (o.status?.restartCount ?? 0) > before && o;
    });
    expect(after.status?.restartCount).toBe(before + 1);
    await until('an Event about the restart', async () => {
      const events = await getJSON<{
        items: Array<{ regarding?: { name?: string }; reason?: string }>;
      }>(cp(), ['events.v1.events.k8s.io', '-n', 'default']);
      return events.items.some(
        (e) => e.regarding?.name === 'web' && /restart/i.test(e.reason ?? ''),
      );
    });
  });

  it('makes no API write once converged', async () => {
    const resources = ['virtualmachines', 'volumes', 'virtualnetworks', 'storagepools', 'events'];
    const controllers = Object.entries(agent.controllers) as Array<[VirtKind, Controller]>;
    const idle = () =>
      controllers.every(
        ([, c]) => c.queue()?.length() === 0 && c.queue()?.processing().length === 0,
      );
    // Let the last reconciles settle, then make every object pass again: a pass over converged
    // objects is what a resync or a requeue runs, so it must write nothing. Waiting for those
    // passes (and a short window after them for what they set off) replaces a long idle wait
    // for a timer to fire.
    await until('the queues idle', async () => idle());
    await new Promise((r) => setTimeout(r, 1_000));
    const before = writeRequests(await cp().apiServerMetrics(), resources);
    let passes = 0;
    for (const [kind, c] of controllers)
      for (const key of agent.informers[kind].cache.keys()) {
        c.enqueue(key);
        passes++;
      }
    expect(passes).toBeGreaterThanOrEqual(4);
    await until('the queues idle after a pass of every object', async () => idle());
    await new Promise((r) => setTimeout(r, 2_000));
    const after = writeRequests(await cp().apiServerMetrics(), resources);
    expect(after - before).toBe(0);
  });

  it('stops the VM gracefully for runStrategy Halted', async () => {
    const patched = await cp().kubectl([
      'patch',
      'vm',
      'web',
      '--type=merge',
      '-p',
      '{"spec":{"runStrategy":"Halted"}}',
    ]);
    expect(patched.code, patched.stderr).toBe(0);
    const vm = await until('Stopped', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'web']);
      return o.status?.phase === 'Stopped' && o;
    });
    const state = await (await conn.lookupDomainByUUIDString(vm.metadata.uid)).getState();
    expect(state.stateName).toBe('shutoff');
    expect(state.reasonName).toBe('shutdown');
  });

  // MACAddressInUse: the machine held back used to wait for its backoff (as long as it had
  // been waiting, up to 5 min) after the holder let go; the holder's deletion now wakes it.
  it("starts a machine held back by another's MAC as soon as that machine is deleted", async () => {
    const mac = '52:54:00:7e:57:01';
    const machine = (name: string) => `
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: ${name}, namespace: default}
spec:
  nodeName: ${NODE}
  vcpus: 1
  memory: 64Mi
  interfaces: [{name: eth0, network: lab, macAddress: "${mac}"}]
`;
    const apply = async (name: string) => {
      const applied = await cp().kubectl(['apply', '-f', '-'], { input: machine(name) });
      expect(applied.code, applied.stderr).toBe(0);
    };
    await apply('mac-first');
    await until('the first machine Ready', async () =>
      ready(await getJSON<Obj>(cp(), ['vm', 'mac-first'])),
    );
    await apply('mac-second');
    const held = await until('the second machine held back', async () => {
      const o = await getJSON<Obj>(cp(), ['vm', 'mac-second']);
      const i = o.status?.conditions?.findIndex((c) => c.type === 'Synced') ?? -1;
      return o.status?.conditions?.[i]?.reason === 'MACAddressInUse' && i + 1;
    });
    // Held back for an hour, as Synced's lastTransitionTime (the backoff's memory) says: the
    // pass this write wakes schedules the next retry 5 min away, and a deletion that wakes
    // nothing leaves it there.
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const patch = [
      { op: 'replace', path: `/status/conditions/${held - 1}/lastTransitionTime`, value: hourAgo },
    ];
    const patched = await cp().kubectl([
      'patch',
      'vm',
      'mac-second',
      '--subresource=status',
      '--type=json',
      '-p',
      JSON.stringify(patch),
    ]);
    expect(patched.code, patched.stderr).toBe(0);
    // The pass that write wakes has run once the retry is minutes away (before it, the backoff
    // of a machine held back for seconds was seconds): waiting for that, not a fixed 2 s.
    const vms = agent.controllers.VirtualMachine.queue()!;
    await until('the retry scheduled minutes away', async () => {
      const due = vms.dueAt('default/mac-second');
      return due !== undefined && due - Date.now() > 60_000;
    });
    const deleted = await cp().kubectl(['delete', 'vm/mac-first', '--wait=false']);
    expect(deleted.code, deleted.stderr).toBe(0);
    await until(
      'the second machine Ready',
      async () => ready(await getJSON<Obj>(cp(), ['vm', 'mac-second'])),
      20_000,
    );
    const gone = await cp().kubectl(['delete', 'vm/mac-second', '--wait=true', '--timeout=60s']);
    expect(gone.code, gone.stderr).toBe(0);
  });

  it('leaves the host as it found it after everything is deleted, but keeps a Retain volume', async () => {
    const pool = await getJSON<Obj>(cp(), ['pool', 'images']);
    const gone = await cp().kubectl([
      'delete',
      'vm/web',
      'vol/root',
      'vol/keep',
      '--wait=true',
      '--timeout=60s',
    ]);
    expect(gone.code, gone.stderr).toBe(0);
    const libvirtPool = await conn.lookupStoragePoolByUUIDString(pool.metadata.uid);
    const volumes = (await libvirtPool.listAllVolumes()).map((v) => v.getName());
    expect(volumes).toContain('default_keep');
    expect(volumes).not.toContain('default_root');

    const rest = await cp().kubectl([
      'delete',
      'pool/images',
      'vnet/lab',
      '--wait=true',
      '--timeout=60s',
    ]);
    expect(rest.code, rest.stderr).toBe(0);
    expect(await hostNames(conn)).toEqual(original);
  });
});

async function hostNames(
  conn: Connect,
): Promise<{ domains: string[]; networks: string[]; pools: string[] }> {
  return {
    domains: (await conn.listAllDomains()).map((d) => d.getName()).sort(),
    networks: (await conn.listAllNetworks()).map((n) => n.getName()).sort(),
    pools: (await conn.listAllStoragePools()).map((p) => p.getName()).sort(),
  };
}
