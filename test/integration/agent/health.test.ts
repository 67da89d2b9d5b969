// Health that tools can read (issue 16), on a real API server with two agents on libvirt's test
// driver (node-a on test:///default, node-b on its own test:///FILE host): top-level Ready on
// networks and pools that `kubectl wait` sees and both agents write without fighting, and what
// kstatus (cli-utils), Flux's healthCheckExprs (cel-go) and Argo CD's Lua script conclude about
// the real objects: Current exactly when Ready, Failed for a name clash, InProgress while
// importing. With LVO_CAPTURE_HEALTH_FIXTURES=1 the objects are saved to
// test/fixtures/health/ for the Lua unit test.
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connect, type Domain } from '../../../src/libvirt/index.js';
import { buildDomainXML } from '../../../src/libvirt/xml/domain.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { useControlPlane } from '../../harness/control-plane.js';
import {
  getJSON,
  passesDone,
  startTestAgent,
  until,
  writeRequests,
  type TestAgent,
} from '../../harness/agent.js';
import { argoHealth, fluxHealth, healthCheckTool, kstatus } from '../../harness/health-tools.js';
import { annotate, kubectlOk, patchSpec } from '../../harness/kubectl.js';

const NS = 'health';
const A = 'health-a';
const B = 'health-b';
/** A node no agent runs on (a typo in spec.nodeName, a node not set up yet). */
const GONE = 'health-gone';

const manifests = (slowUrl: string) => `
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: health-net}
spec:
  mode: nat
  ipv4:
    cidr: 10.216.7.1/24
    dhcp: {rangeStart: 10.216.7.100, rangeEnd: 10.216.7.199}
---
apiVersion: virt.dev/v1alpha1
kind: StoragePool
metadata: {name: health-pool}
spec: {path: /var/lib/lvo-health-test/pool}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: root, namespace: ${NS}}
spec: {nodeName: ${A}, pool: health-pool, capacity: 64Mi}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: slow, namespace: ${NS}}
spec:
  nodeName: ${A}
  pool: health-pool
  format: raw
  source: {http: {url: "${slowUrl}", sha256: "${'0'.repeat(64)}"}}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web, namespace: ${NS}}
spec:
  nodeName: ${A}
  domainType: qemu
  vcpus: 1
  maxVcpus: 2
  memory: 128Mi
  disks: [{name: root, volume: root}]
  interfaces: [{name: eth0, network: health-net}]
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: clash, namespace: ${NS}}
spec:
  nodeName: ${A}
  domainType: qemu
  vcpus: 1
  memory: 64Mi
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: stray, namespace: ${NS}}
spec: {nodeName: ${GONE}, domainType: qemu, vcpus: 1, memory: 64Mi}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: stray, namespace: ${NS}}
spec: {nodeName: ${GONE}, pool: health-pool, capacity: 16Mi}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: on-b, namespace: ${NS}}
spec: {nodeName: ${B}, pool: health-pool, capacity: 16Mi}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: copy-far, namespace: ${NS}}
spec: {nodeName: ${A}, pool: health-pool, source: {clone: {volume: on-b}}}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: far, namespace: ${NS}}
spec:
  nodeName: ${A}
  domainType: qemu
  vcpus: 1
  memory: 64Mi
  disks: [{name: root, volume: on-b}]
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachineSnapshot
metadata: {name: web-snap, namespace: ${NS}}
spec: {vmName: web}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachineRestore
metadata: {name: waiting, namespace: ${NS}}
spec: {vmName: web, snapshotName: not-yet}
`;

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface Obj {
  kind: string;
  metadata: { name: string; generation?: number; resourceVersion?: string };
  status?: {
    phase?: string;
    observedGeneration?: number;
    conditions?: Cond[];
    nodes?: Array<{ nodeName: string; conditions?: Cond[] }>;
  };
}
const cond = (o: Obj, type: string) => o.status?.conditions?.find((c) => c.type === type);

describe('health for GitOps tools', () => {
  const cp = useControlPlane();
  let a: TestAgent;
  let b: TestAgent;
  let conn: Connect;
  let foreign: Domain;
  let server: Server;
  let hostDir: string;
  let text: string;

  beforeAll(async () => {
    // The kstatus/CEL tool is built (and cached) by the project's script before anything runs.
    healthCheckTool();
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': 64 * 1024 * 1024 });
      res.write(Buffer.alloc(4096));
      // never finishes: the Volume stays Importing
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    conn = await Connect.open('test:///default');
    // A foreign domain holding VM clash's name: only a user can resolve that.
    foreign = await conn.defineDomainXML(
      buildDomainXML({
        type: 'qemu',
        name: `${NS}_clash`,
        uuid: randomUUID(),
        memoryKiB: 65536,
        vcpu: { current: 1, max: 1 },
        os: { type: 'hvm', arch: 'x86_64' },
        features: { acpi: false, apic: false },
        devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
      }),
    );
    hostDir = mkdtempSync(join(tmpdir(), 'lvo-health-'));
    writeFileSync(join(hostDir, 'node-b.xml'), '<node/>\n');
    a = await startTestAgent(cp(), { nodeName: A });
    b = await startTestAgent(cp(), {
      nodeName: B,
      libvirtUri: `test://${join(hostDir, 'node-b.xml')}`,
    });
    text = manifests(`http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.img`);
    // Applied the way Flux applies: server-side, under one field manager.
    await kubectlOk(cp(), ['apply', '--server-side', '--field-manager=gitops', '-f', '-'], {
      input: text,
    });
  }, 20 * 60_000);

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await foreign?.undefine().catch(() => undefined);
    await conn?.close();
    server?.closeAllConnections();
    server?.close();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  const get = (args: string[]) => getJSON<Obj>(cp(), args);
  const objects = async () => [
    await get(['vnet', 'health-net']),
    await get(['pool', 'health-pool']),
    await get(['vol', 'root', '-n', NS]),
    await get(['vm', 'web', '-n', NS]),
    await get(['vm', 'clash', '-n', NS]),
    await get(['vol', 'slow', '-n', NS]),
    await get(['vmsnap', 'web-snap', '-n', NS]),
    await get(['vmrestore', 'waiting', '-n', NS]),
    await get(['vm', 'stray', '-n', NS]),
    await get(['vol', 'stray', '-n', NS]),
    await get(['vm', 'far', '-n', NS]),
    await get(['vol', 'copy-far', '-n', NS]),
  ];

  it('kubectl wait --for=condition=Ready succeeds on networks and pools selected on two nodes', async () => {
    // Both agents' entries first: the summary counts only nodes that have written one (docs/api.md),
    // so a wait that starts before node B's first write can end on node A alone (a CI run did).
    await until('both nodes reported on the network and the pool', async () => {
      const reported = [await get(['vnet', 'health-net']), await get(['pool', 'health-pool'])].map(
        (o) => ((o.status?.nodes ?? []) as { nodeName: string }[]).map((e) => e.nodeName).sort(),
      );
      return reported.every((names) => names.join() === [A, B].sort().join());
    });
    await kubectlOk(
      cp(),
      ['wait', '--for=condition=Ready', 'vnet/health-net', 'pool/health-pool', '--timeout=60s'],
      { timeoutMs: 70_000 },
    );
    for (const o of [await get(['vnet', 'health-net']), await get(['pool', 'health-pool'])]) {
      expect(cond(o, 'Ready')?.message, o.kind).toBe(`ready on 2 node(s): ${A}, ${B}`);
      expect(o.status?.observedGeneration).toBe(o.metadata.generation);
      expect(cond(o, 'Reconciling')?.status).toBe('False');
      expect(cond(o, 'Stalled')?.status).toBe('False');
    }
  });

  it('kstatus, Flux CEL and Argo CD: Current/Healthy when Ready, Failed/Degraded for a name clash, InProgress/Progressing while importing', async () => {
    await until('VM web Ready, clash Stalled, slow Importing', async () => {
      const [, , root, web, clash, slow, snap, restore, , , far, copyFar] = await objects();
      return (
        cond(root!, 'Ready')?.status === 'True' &&
        cond(web!, 'Ready')?.status === 'True' &&
        cond(clash!, 'Stalled')?.status === 'True' &&
        slow!.status?.phase === 'Importing' &&
        cond(snap!, 'Ready')?.status === 'True' &&
        cond(restore!, 'Reconciling')?.status === 'True' &&
        far!.status?.conditions !== undefined &&
        copyFar!.status?.conditions !== undefined
      );
    });
    const objs = await objects();
    if (process.env.LVO_CAPTURE_HEALTH_FIXTURES === '1') {
      const dir = join(packageRoot(), 'test', 'fixtures', 'health');
      mkdirSync(dir, { recursive: true });
      for (const o of objs) {
        const clean = { ...o, metadata: { ...o.metadata, managedFields: undefined } };
        writeFileSync(
          join(dir, `${o.kind}-${o.metadata.name}.json`),
          `${JSON.stringify(clean, null, 2)}\n`,
        );
      }
    }
    const expected: Record<string, [string, string]> = {
      'VirtualNetwork/health-net': ['Current', 'Healthy'],
      'StoragePool/health-pool': ['Current', 'Healthy'],
      'Volume/root': ['Current', 'Healthy'],
      'VirtualMachine/web': ['Current', 'Healthy'],
      'VirtualMachine/clash': ['Failed', 'Degraded'],
      'Volume/slow': ['InProgress', 'Progressing'],
      'VirtualMachineSnapshot/web-snap': ['Current', 'Healthy'],
      // A restore of a snapshot that does not exist (yet) waits: it is not a failure.
      'VirtualMachineRestore/waiting': ['InProgress', 'Progressing'],
      // On a node no agent runs on: no status is ever written. Waiting, not done: kstatus read
      // an object without status as Current, so a typo in spec.nodeName looked healthy.
      'VirtualMachine/stray': ['InProgress', 'Progressing'],
      'Volume/stray': ['InProgress', 'Progressing'],
      // Its Volume is on another node, and spec.nodeName is immutable on both: only a user
      // can fix it (node-a's cache holds only its own Volumes: it said VolumeNotReady for ever).
      'VirtualMachine/far': ['Failed', 'Degraded'],
      // Likewise a clone of a Volume on the other node (it said SourceNotReady for ever).
      'Volume/copy-far': ['Failed', 'Degraded'],
    };
    const ks = kstatus(objs);
    const flux = fluxHealth(objs);
    for (const o of objs) {
      const id = `${o.kind}/${o.metadata.name}`;
      const [status, argo] = expected[id]!;
      expect(ks.get(id)?.status, `kstatus ${id}: ${ks.get(id)?.message}`).toBe(status);
      expect(flux.get(id)?.status, `flux ${id}: ${flux.get(id)?.message}`).toBe(status);
      expect(argoHealth(o).status, `argo ${id}`).toBe(argo);
    }
    expect(ks.get('VirtualMachine/clash')?.message).toContain(`${NS}_clash`);
    expect(argoHealth(objs[4]).message).toContain(`${NS}_clash`);
    expect(ks.get('VirtualMachine/far')?.message).toContain(`Volume 'on-b' is on node '${B}'`);
    expect(ks.get('Volume/copy-far')?.message).toContain(`${NS}/on-b is on node ${B}`);
  });

  it('guest metrics count only this node’s own machines (stamp and uid), from one bulk call', async () => {
    const owned = await a.guestMetrics.collect();
    // Not the foreign domain holding clash's name, not the driver's own 'test' domain.
    expect(owned.map((r) => `${r.namespace}/${r.name}`)).toEqual([`${NS}/web`]);
    expect(owned[0]?.stats.state?.stateName).toBe('running');
    expect(await b.guestMetrics.collect()).toEqual([]);
    // The test driver reports only the state group: no guest series, but the families exist.
    const text = await a.runtime.metrics.registry.metrics();
    expect(text).toContain('# TYPE virt_vm_cpu_usage_seconds_total counter');
    expect(text).toContain('# TYPE virt_vm_memory_balloon_bytes gauge');
  });

  it('both agents leave a converged network and pool alone: no status write, no flapping', async () => {
    const resources = ['virtualnetworks', 'storagepools'];
    const before = await Promise.all([get(['vnet', 'health-net']), get(['pool', 'health-pool'])]);
    const writes = writeRequests(await cp().apiServerMetrics(), resources);
    // Every agent looks again, twice, as a resync or a Node change would make it. Each round
    // waited for to be done (a pass's status writes are in it), not a fixed second; the second
    // round sees what the first set off.
    for (let i = 0; i < 2; i++) {
      for (const agent of [a, b]) {
        agent.controllers.VirtualNetwork.enqueue('health-net');
        agent.controllers.StoragePool.enqueue('health-pool');
      }
      await passesDone(`round ${i + 1} of 2`, [a, b], ['VirtualNetwork', 'StoragePool']);
    }
    const after = await Promise.all([get(['vnet', 'health-net']), get(['pool', 'health-pool'])]);
    expect(writeRequests(await cp().apiServerMetrics(), resources) - writes).toBe(0);
    expect(after.map((o) => o.metadata.resourceVersion)).toEqual(
      before.map((o) => o.metadata.resourceVersion),
    );
  });

  it('a Ready machine and Volume and a Stalled machine are left alone: no status write, no flapping', async () => {
    const keys = [`${NS}/web`, `${NS}/clash`];
    const read = () =>
      Promise.all([
        get(['vm', 'web', '-n', NS]),
        get(['vm', 'clash', '-n', NS]),
        get(['vol', 'root', '-n', NS]),
      ]);
    const before = await read();
    const writes = writeRequests(await cp().apiServerMetrics(), ['virtualmachines', 'events']);
    for (let i = 0; i < 3; i++) {
      for (const key of keys) a.controllers.VirtualMachine.enqueue(key);
      a.controllers.Volume.enqueue(`${NS}/root`);
      await passesDone(`round ${i + 1} of 3`, [a], ['VirtualMachine', 'Volume']);
    }
    // Events are posted without the pass waiting for them: time for the last round's to land.
    await new Promise((r) => setTimeout(r, 500));
    const after = await read();
    expect(
      writeRequests(await cp().apiServerMetrics(), ['virtualmachines', 'events']) - writes,
    ).toBe(0);
    expect(after.map((o) => o.metadata.resourceVersion)).toEqual(
      before.map((o) => o.metadata.resourceVersion),
    );
  });

  it('re-applying the same manifests changes nothing (server-side dry-run diff is empty)', async () => {
    // What Flux's apply engine does before applying: a server-side dry run compared with the
    // live object; kubectl diff is the same comparison and exits 0 when nothing would change.
    const diff = await cp().kubectl(
      ['diff', '--server-side', '--field-manager=gitops', '-f', '-'],
      { input: text },
    );
    expect(diff.stdout).toBe('');
    expect(diff.code, diff.stderr).toBe(0);
  });

  it('a pending restart-time change keeps kstatus Current once observed', async () => {
    await patchSpec(cp(), ['vm', 'web', '-n', NS], { maxVcpus: 4 });
    const vm = await until('RestartRequired observed', async () => {
      const o = await get(['vm', 'web', '-n', NS]);
      return (
        o.status?.observedGeneration === o.metadata.generation &&
        cond(o, 'RestartRequired')?.status === 'True' &&
        o
      );
    });
    expect(kstatus([vm]).get('VirtualMachine/web')?.status).toBe('Current');
    expect(argoHealth(vm).status).toBe('Healthy');
  });

  it('a machine paused by its annotation is Current for kstatus and Flux, Suspended for Argo CD', async () => {
    await annotate(cp(), ['vm', 'web', '-n', NS], { 'virt.dev/paused': 'true' });
    const vm = await until('phase Paused', async () => {
      const o = await get(['vm', 'web', '-n', NS]);
      return o.status?.phase === 'Paused' && o;
    });
    expect(cond(vm, 'Ready')).toMatchObject({ status: 'True', reason: 'PausedByRequest' });
    expect(kstatus([vm]).get('VirtualMachine/web')?.status).toBe('Current');
    expect(fluxHealth([vm]).get('VirtualMachine/web')?.status).toBe('Current');
    expect(argoHealth(vm).status).toBe('Suspended');
    await annotate(cp(), ['vm', 'web', '-n', NS], { 'virt.dev/paused': undefined });
    await until('Running again', async () => {
      const o = await get(['vm', 'web', '-n', NS]);
      return o.status?.phase === 'Running' && cond(o, 'Ready')?.reason === 'Running';
    });
  });
});
