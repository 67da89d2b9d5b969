// A snapshot and a restore naming a VirtualMachine that exists on no node, with two agents on
// libvirt's test driver (node-a on test:///default, node-b on its own test:///FILE host). No
// agent has the machine in its cache, so no agent used to write any status, and kstatus read
// the status-less objects as Current. Now they say VirtualMachineNotFound; once the machine is
// created on node-b, that node's agent takes the snapshot and reverts to it as usual.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useControlPlane } from '../../harness/control-plane.js';
import {
  getJSON,
  startTestAgent,
  until,
  writeRequests,
  type TestAgent,
} from '../../harness/agent.js';
import { fluxHealth, kstatus } from '../../harness/health-tools.js';

const NS = 'missing';
const A = 'missing-a';
const B = 'missing-b';

const waiting = `
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: virt.dev/v1alpha1
kind: StoragePool
metadata: {name: missing-pool}
spec: {path: /var/lib/lvo-missing-test/pool}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: root, namespace: ${NS}}
spec: {nodeName: ${B}, pool: missing-pool, capacity: 64Mi}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachineSnapshot
metadata: {name: before, namespace: ${NS}}
spec: {vmName: web}
---
apiVersion: virt.dev/v1alpha1
kind: VirtualMachineRestore
metadata: {name: back, namespace: ${NS}}
spec: {vmName: web, snapshotName: before}
`;

const machine = `
apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web, namespace: ${NS}}
spec:
  nodeName: ${B}
  domainType: qemu
  vcpus: 1
  memory: 128Mi
  disks: [{name: root, volume: root}]
`;

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface Obj {
  kind: string;
  metadata: { name: string; finalizers?: string[]; resourceVersion?: string };
  status?: { phase?: string; conditions?: Cond[] };
}
const cond = (o: Obj, type: string) => o.status?.conditions?.find((c) => c.type === type);

/** GET requests the API server answered for `resource` (not lists or watches). */
function getRequests(metrics: string, resource: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    if (!line.includes('verb="GET"') || !line.includes(`resource="${resource}"`)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

describe('a snapshot or restore of a machine that exists nowhere', () => {
  const cp = useControlPlane();
  let a: TestAgent;
  let b: TestAgent;
  let hostDir: string;

  beforeAll(async () => {
    hostDir = mkdtempSync(join(tmpdir(), 'lvo-missing-'));
    writeFileSync(join(hostDir, 'node-b.xml'), '<node/>\n');
    a = await startTestAgent(cp(), { nodeName: A });
    b = await startTestAgent(cp(), {
      nodeName: B,
      libvirtUri: `test://${join(hostDir, 'node-b.xml')}`,
    });
    const applied = await cp().kubectl(['apply', '--server-side', '-f', '-'], { input: waiting });
    expect(applied.code, applied.stderr).toBe(0);
  }, 5 * 60_000);

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  const get = (args: string[]) => getJSON<Obj>(cp(), args);
  const both = async () => [
    await get(['vmsnap', 'before', '-n', NS]),
    await get(['vmrestore', 'back', '-n', NS]),
  ];

  it('says so: Pending, Ready=False VirtualMachineNotFound, kstatus and Flux InProgress', async () => {
    const objs = await until('both report VirtualMachineNotFound', async () => {
      const objs = await both();
      return objs.every((o) => cond(o, 'Ready')?.reason === 'VirtualMachineNotFound') && objs;
    });
    for (const o of objs) {
      expect(o.status?.phase, o.kind).toBe('Pending');
      expect(cond(o, 'Ready'), o.kind).toMatchObject({
        status: 'False',
        message: `VirtualMachine web does not exist in namespace ${NS}; waiting for it to be created`,
      });
      expect(cond(o, 'Reconciling')?.status, o.kind).toBe('True');
      expect(cond(o, 'Stalled')?.status, o.kind).toBe('False');
      const id = `${o.kind}/${o.metadata.name}`;
      expect(kstatus([o]).get(id)?.status, id).toBe('InProgress');
      expect(fluxHealth([o]).get(id)?.status, id).toBe('InProgress');
    }
    // No agent claimed the snapshot or the restore: none has its machine.
    expect(objs[0]!.metadata.finalizers ?? []).toEqual([]);
    expect(objs[1]!.status).not.toHaveProperty('nodeName');
    // And a Warning Event for `kubectl describe`, from the agent whose write landed.
    await until('the Warning Events', async () => {
      const listed = await cp().kubectl([
        'get',
        'events.events.k8s.io',
        '-n',
        NS,
        '--field-selector',
        'reason=VirtualMachineNotFound,type=Warning',
        '-o',
        'jsonpath={range .items[*]}{.regarding.kind}/{.regarding.name}{"\\n"}{end}',
      ]);
      const kinds = new Set(listed.stdout.split('\n').filter(Boolean));
      return kinds.has('VirtualMachineSnapshot/before') && kinds.has('VirtualMachineRestore/back');
    });
  });

  it('once said, costs no agent a read or a write on later passes', async () => {
    const before = await both();
    const metrics = await cp().apiServerMetrics();
    const reads = getRequests(metrics, 'virtualmachines');
    const writes = writeRequests(metrics, ['virtualmachinesnapshots', 'virtualmachinerestores']);
    // Every agent looks again, as a resync would make it.
    for (let i = 0; i < 2; i++) {
      for (const agent of [a, b]) {
        agent.controllers.VirtualMachineSnapshot.enqueue(`${NS}/before`);
        agent.controllers.VirtualMachineRestore.enqueue(`${NS}/back`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const after = await cp().apiServerMetrics();
    expect(getRequests(after, 'virtualmachines') - reads).toBe(0);
    expect(
      writeRequests(after, ['virtualmachinesnapshots', 'virtualmachinerestores']) - writes,
    ).toBe(0);
    expect((await both()).map((o) => o.metadata.resourceVersion)).toEqual(
      before.map((o) => o.metadata.resourceVersion),
    );
  });

  it('once the machine is created, its node’s agent takes the snapshot and restores it', async () => {
    const applied = await cp().kubectl(['apply', '--server-side', '-f', '-'], { input: machine });
    expect(applied.code, applied.stderr).toBe(0);
    const [snap, restore] = await until(
      'the snapshot Ready and the restore Succeeded',
      async () => {
        const [snap, restore] = await both();
        return snap!.status?.phase === 'Ready' && restore!.status?.phase === 'Succeeded'
          ? [snap!, restore!]
          : undefined;
      },
      60_000,
    );
    expect(cond(snap, 'Ready')).toMatchObject({ status: 'True', reason: 'Checkpoint' });
    expect(snap.metadata.finalizers).toEqual([`node.virt.dev/${B}`]);
    expect(cond(restore, 'Ready')).toMatchObject({ status: 'True', reason: 'Restored' });
    // Its claim, which the admission policy keys on (docs/deploy.md).
    expect(restore.status).toHaveProperty('nodeName', B);
  });

  it('goes with the machine, as before: its deletion deletes the snapshot and the restore', async () => {
    const removed = await cp().kubectl(['delete', 'vm', 'web', '-n', NS, '--wait=false']);
    expect(removed.code, removed.stderr).toBe(0);
    await until(
      'the snapshot and the restore deleted',
      async () => {
        const left = await cp().kubectl(['get', 'vmsnap,vmrestore', '-n', NS, '-o', 'name']);
        return left.code === 0 && left.stdout.trim() === '';
      },
      60_000,
    );
  });
});
