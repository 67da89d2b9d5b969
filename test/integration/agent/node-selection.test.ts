// A VirtualNetwork or StoragePool whose spec.nodeSelector selects no Node, on a real API server
// with two agents on libvirt's test driver, applied as Flux applies (server-side) and judged by
// kstatus (cli-utils), Flux's healthCheckExprs and Argo CD's script: Failed (Degraded) with
// NoMatchingNodes from the first status on, not Current for want of a status; Current once a
// Node is labelled; Failed again when the label goes, not "no selected node has reported yet"
// (InProgress) for ever; one Warning Event; and no status write while nothing changes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useControlPlane } from '../../harness/control-plane.js';
import {
  ensureNode,
  getJSON,
  passesDone,
  startTestAgent,
  until,
  writeRequests,
  type TestAgent,
} from '../../harness/agent.js';
import { argoHealth, fluxHealth, healthCheckTool, kstatus } from '../../harness/health-tools.js';
import { kubeReads } from '../../../src/agent/kube-reads.js';
import { selectsNode } from '../../../src/controllers/node-selector.js';
import { createKubeClient } from '../../../src/runtime/kube-client.js';
import { NODE_LABELS, SELECTOR_CASES } from '../../fixtures/node-selectors.js';

const A = 'select-a';
const B = 'select-b';
const LABEL = 'virt.dev/selection-test';

const manifests = `
apiVersion: virt.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: chosen-net}
spec:
  mode: isolated
  nodeSelector: {matchLabels: {${LABEL}: "yes"}}
---
apiVersion: virt.dev/v1alpha1
kind: StoragePool
metadata: {name: chosen-pool}
spec:
  path: /var/lib/lvo-selection-test/pool
  nodeSelector:
    matchExpressions: [{key: ${LABEL}, operator: In, values: ["yes"]}]
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
  status?: { observedGeneration?: number; conditions?: Cond[] };
}
interface KubeEvent {
  type: string;
  reason: string;
  note?: string;
  regarding: { kind: string; name: string };
}
/** LIST requests of Nodes the API server counted (apiserver_request_total). */
function nodeLists(metrics: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    if (!line.includes('verb="LIST"') || !line.includes('resource="nodes"')) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
const cond = (o: Obj, type: string) => o.status?.conditions?.find((c) => c.type === type);

describe('a selector that selects no Node', () => {
  const cp = useControlPlane();
  let a: TestAgent;
  let b: TestAgent;
  let hostDir: string;

  beforeAll(async () => {
    healthCheckTool();
    hostDir = mkdtempSync(join(tmpdir(), 'lvo-selection-'));
    writeFileSync(join(hostDir, 'node-b.xml'), '<node/>\n');
    // Retries from 1 s, not 5 s: the quiet window below then spans several of the blocked
    // agent's looks in a few seconds.
    a = await startTestAgent(cp(), { nodeName: A, retryMinMs: 1_000 });
    b = await startTestAgent(cp(), {
      nodeName: B,
      retryMinMs: 1_000,
      libvirtUri: `test://${join(hostDir, 'node-b.xml')}`,
    });
    const applied = await cp().kubectl(
      ['apply', '--server-side', '--field-manager=gitops', '-f', '-'],
      { input: manifests },
    );
    expect(applied.code, applied.stderr).toBe(0);
  }, 20 * 60_000);

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  const both = async () => [
    await getJSON<Obj>(cp(), ['vnet', 'chosen-net']),
    await getJSON<Obj>(cp(), ['pool', 'chosen-pool']),
  ];
  const verdicts = (objs: Obj[]) => {
    const ks = kstatus(objs);
    return objs.map((o) => ks.get(`${o.kind}/${o.metadata.name}`)?.status);
  };
  const readyReasons = async (reason: string) =>
    until(`Ready reason ${reason} on both`, async () => {
      const objs = await both();
      return (
        objs.every(
          (o) =>
            cond(o, 'Ready')?.reason === reason &&
            o.status?.observedGeneration === o.metadata.generation,
        ) && objs
      );
    });

  it('is Failed (Stalled, NoMatchingNodes) from the first status on', async () => {
    const objs = await readyReasons('NoMatchingNodes');
    for (const o of objs) {
      expect(cond(o, 'Ready')).toMatchObject({ status: 'False' });
      expect(cond(o, 'Stalled')).toMatchObject({ status: 'True', reason: 'NoMatchingNodes' });
      expect(cond(o, 'Reconciling')).toMatchObject({ status: 'False' });
      expect(cond(o, 'Ready')?.message).toContain('spec.nodeSelector selects no Node');
    }
    expect(verdicts(objs)).toEqual(['Failed', 'Failed']);
    const flux = fluxHealth(objs);
    for (const o of objs) {
      expect(flux.get(`${o.kind}/${o.metadata.name}`)?.status).toBe('Failed');
      expect(argoHealth(o).status).toBe('Degraded');
    }
    // One Warning Event each, from the agent whose write changed the summary, not one per agent.
    const events = await until('the NoMatchingNodes Events', async () => {
      const list = await getJSON<{ items: KubeEvent[] }>(cp(), ['events.events.k8s.io', '-A']);
      const found = list.items.filter((e) => e.reason === 'NoMatchingNodes');
      return found.length >= 2 && found;
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const all = await getJSON<{ items: KubeEvent[] }>(cp(), ['events.events.k8s.io', '-A']);
    const warned = all.items.filter((e) => e.reason === 'NoMatchingNodes');
    expect(warned.map((e) => `${e.type} ${e.regarding.kind}/${e.regarding.name}`).sort()).toEqual([
      'Warning StoragePool/chosen-pool',
      'Warning VirtualNetwork/chosen-net',
    ]);
    expect(events[0]?.note).toContain('spec.nodeSelector selects no Node');
  });

  it('writes nothing more and lists no Nodes while nothing changes', async () => {
    const resources = ['virtualnetworks', 'storagepools'];
    const before = await both();
    const writes = writeRequests(await cp().apiServerMetrics(), resources);
    // Every pass of an agent whose Node is not selected (the kinds resync each minute) used to
    // list the Nodes the selector matches again, though nothing had changed.
    const lists = nodeLists(await cp().apiServerMetrics());
    // Each round waited for to be done (a pass's writes and lists are in it), not a fixed
    // second; the second round sees what the first set off.
    for (let i = 0; i < 2; i++) {
      for (const agent of [a, b]) {
        agent.controllers.VirtualNetwork.enqueue('chosen-net');
        agent.controllers.StoragePool.enqueue('chosen-pool');
      }
      await passesDone(`round ${i + 1} of 2`, [a, b], ['VirtualNetwork', 'StoragePool']);
    }
    expect(writeRequests(await cp().apiServerMetrics(), resources) - writes).toBe(0);
    expect(nodeLists(await cp().apiServerMetrics()) - lists).toBe(0);
    expect((await both()).map((o) => o.metadata.resourceVersion)).toEqual(
      before.map((o) => o.metadata.resourceVersion),
    );
  });

  it('is Current once a Node is labelled, and Failed again when the label goes', async () => {
    await ensureNode(cp(), A, { [LABEL]: 'yes' });
    const ready = await readyReasons('AllNodesReady');
    expect(verdicts(ready)).toEqual(['Current', 'Current']);
    // kubectl get's NODES column: ready of selected (B's entry says NotSelected), where it
    // showed the first entry's node name only, whichever node that was.
    for (const resource of ['vnet/chosen-net', 'pool/chosen-pool']) {
      const got = await cp().kubectl(['get', resource]);
      const [head = '', row = ''] = got.stdout.trim().split('\n');
      // Cells are left-aligned under their heading; an isolated network's CIDR cell is empty.
      const cell = row.slice(head.indexOf(' NODES ') + 1).split(/\s+/)[0];
      expect(cell, resource).toBe('1/1');
    }

    await ensureNode(cp(), A, {});
    const left = await readyReasons('NoMatchingNodes');
    expect(verdicts(left)).toEqual(['Failed', 'Failed']);
  });

  it('a pool kept on an unlabelled node by its Volumes says so once, and agents do not flap', async () => {
    await ensureNode(cp(), A, { [LABEL]: 'yes' });
    await readyReasons('AllNodesReady');
    const vol = `
apiVersion: v1
kind: Namespace
metadata: {name: selection}
---
apiVersion: virt.dev/v1alpha1
kind: Volume
metadata: {name: kept, namespace: selection}
spec: {nodeName: ${A}, pool: chosen-pool, capacity: 16Mi}
`;
    const applied = await cp().kubectl(
      ['apply', '--server-side', '--field-manager=gitops', '-f', '-'],
      { input: vol },
    );
    expect(applied.code, applied.stderr).toBe(0);
    await until('Volume kept Ready', async () => {
      const v = await getJSON<Obj>(cp(), ['vol', 'kept', '-n', 'selection']);
      return cond(v, 'Ready')?.status === 'True';
    });
    await ensureNode(cp(), A, {});
    const pool = await until('pool blocked on A', async () => {
      const p = await getJSON<Obj>(cp(), ['pool', 'chosen-pool']);
      return cond(p, 'Ready')?.reason === 'NoMatchingNodes' && p;
    });
    expect(verdicts([pool])).toEqual(['Failed']);
    // Settled (the other agent's answer to that write arrives), then quiet: the blocked agent
    // looks again as long as it has been blocked (retryMinMs 1 s above: at about 2, 4 and 8 s),
    // and another agent wakes on each change; a window from about 2 s to 7 s spans two looks.
    await new Promise((r) => setTimeout(r, 2_000));
    const settled = await getJSON<Obj>(cp(), ['pool', 'chosen-pool']);
    expect(cond(settled, 'Ready')?.reason).toBe('NoMatchingNodes');
    const writes = writeRequests(await cp().apiServerMetrics(), ['storagepools']);
    await new Promise((r) => setTimeout(r, 5_000));
    expect(writeRequests(await cp().apiServerMetrics(), ['storagepools']) - writes).toBe(0);
    const after = await getJSON<Obj>(cp(), ['pool', 'chosen-pool']);
    expect(after.metadata.resourceVersion).toBe(settled.metadata.resourceVersion);
    const deleted = await cp().kubectl(['delete', '-n', 'selection', 'vol/kept', '--timeout=30s'], {
      timeoutMs: 40_000,
    });
    expect(deleted.code, deleted.stderr).toBe(0);
  }, 60_000);

  it('the API server selects the Nodes selectsNode selects (the query agents send)', async () => {
    await ensureNode(cp(), 'select-probe', NODE_LABELS);
    const reads = kubeReads(createKubeClient(cp().kubeConfig));
    for (const [name, selector, expected] of SELECTOR_CASES) {
      expect(selectsNode(selector, NODE_LABELS), name).toBe(expected);
      const matching = await reads.matchingNodes(selector, 100);
      expect(matching.includes('select-probe'), name).toBe(expected);
    }
    expect(await reads.matchingNodes({ matchLabels: { [LABEL]: 'yes' } }, 10)).toEqual([]);
  });

  it('deletes at once', async () => {
    const deleted = await cp().kubectl(
      ['delete', 'vnet/chosen-net', 'pool/chosen-pool', '--timeout=30s'],
      { timeoutMs: 40_000 },
    );
    expect(deleted.code, deleted.stderr).toBe(0);
  });
});
