// What the per-node summaries of VirtualNetwork and StoragePool cost and how they follow Nodes,
// on a real API server: (1) an object held back by one node stuck on a lasting state costs the
// other agents no Node GET at each pass (every pass ends with a summary; each asked the API
// server about the stuck node again); (2) an agent whose Node is not selected judges the
// summary again after JUDGED_TTL_MS though the object did not change, so a matching Node
// without an agent that is deleted, or a Node without an agent labelled, reaches the summary
// (judged once per resourceVersion, it never did), and forgets a deleted object's judgement.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setCondition } from '../../../src/api/conditions.js';
import type { KubeObject } from '../../../src/controllers/context.js';
import { JUDGED_TTL_MS } from '../../../src/controllers/shared/unselected.js';
import { reconcileVirtualNetwork } from '../../../src/controllers/virtual-network/index.js';
import { Connect } from '../../../src/libvirt/index.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { snapshotContext, type SnapshotContext } from '../../harness/controller-context.js';
import {
  ensureNode,
  getJSON,
  passesDone,
  startTestAgent,
  until,
  type TestAgent,
} from '../../harness/agent.js';

const suffix = randomBytes(3).toString('hex');
const cp = useControlPlane();

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
type Net = KubeObject & {
  status?: { conditions?: Cond[]; nodes?: { nodeName: string; conditions?: Cond[] }[] };
};
const ready = (o: Net) => o.status?.conditions?.find((c) => c.type === 'Ready');

/** GET requests of single Nodes the API server counted (apiserver_request_total). */
function nodeGets(metrics: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    if (!line.includes('verb="GET"') || !line.includes('resource="nodes"')) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function apply(manifest: object): Promise<void> {
  const res = await cp().kubectl(['apply', '--server-side', '-f', '-'], {
    input: JSON.stringify(manifest),
  });
  expect(res.code, res.stderr).toBe(0);
}

let conn: Connect;
let stateDir: string;
const contextFor = (nodeName: string): SnapshotContext =>
  snapshotContext({ kubeConfig: cp().kubeConfig, conn, nodeName, stateDir });

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  stateDir = mkdtempSync(join(tmpdir(), 'lvo-lookups-'));
});
afterAll(async () => {
  await conn?.close();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

describe('an object held back by one stuck node', () => {
  const A = `live-${suffix}`;
  const STUCK = `stuck-${suffix}`;
  const NET = `held-${suffix}`;
  let a: TestAgent | undefined;

  beforeAll(async () => {
    a = await startTestAgent(cp(), { nodeName: A });
    await ensureNode(cp(), STUCK);
  }, 5 * 60_000);
  afterAll(async () => {
    await cp().kubectl(['delete', 'vnet', NET, '--ignore-not-found', '--timeout=30s']);
    await a?.stop();
  });

  it('costs the other agents no Node GET at each pass', async () => {
    await apply({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualNetwork',
      metadata: { name: NET },
      spec: { mode: 'isolated' },
    });
    await until('Ready on the live node', async () => {
      const o = await getJSON<Net>(cp(), ['vnet', NET]);
      return ready(o)?.status === 'True';
    });
    // The stuck node's entry, written as its agent writes it: a lasting refusal.
    const stuck = contextFor(STUCK);
    const entry = {
      nodeName: STUCK,
      conditions: setCondition(
        [],
        {
          type: 'Ready',
          status: 'False',
          reason: 'BridgeNotFound',
          message: 'bridge br-missing does not exist on this node',
        },
        new Date(),
      ),
    };
    // From the object as it now stands: the live agent's writes may still be settling (409).
    await until('the stuck entry written', async () => {
      await stuck.refresh();
      const stored = stuck.get<Net>('VirtualNetwork', undefined, NET);
      if (!stored) return false;
      const written = { ...entry, observedGeneration: stored.metadata.generation };
      await stuck.applyNodeStatus('VirtualNetwork', stored, written);
      return true;
    });
    await until('held back by the stuck node only', async () => {
      const o = await getJSON<Net>(cp(), ['vnet', NET]);
      const own = o.status?.nodes?.find((n) => n.nodeName === A);
      return (
        own?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' &&
        ready(o)?.reason === 'BridgeNotFound'
      );
    });

    // Passes of the live node's agent (the kind resyncs each minute): each ended with a
    // summary that asked the API server about the stuck node again.
    // Each pass waited for to be done, not a fixed second: the summary, and any lookup it
    // makes, is part of the pass.
    a!.controllers.VirtualNetwork.enqueue(NET);
    await passesDone('the first pass', [a!], ['VirtualNetwork']);
    const before = nodeGets(await cp().apiServerMetrics());
    for (let i = 0; i < 3; i++) {
      a!.controllers.VirtualNetwork.enqueue(NET);
      await passesDone(`pass ${i + 1} of 3`, [a!], ['VirtualNetwork']);
    }
    expect(nodeGets(await cp().apiServerMetrics()) - before).toBe(0);
    expect(ready(await getJSON<Net>(cp(), ['vnet', NET]))?.reason).toBe('BridgeNotFound');
  }, 60_000);
});

describe('an agent whose Node is not selected', () => {
  const JUDGE = `judge-${suffix}`;
  const GHOST = `ghost-${suffix}`;
  const LABEL = `virt.dev/lookups-${suffix}`;
  const NET = `ghosted-${suffix}`;
  let ctx: SnapshotContext;
  let skew = 0;
  const pass = async () => {
    await ctx.refresh();
    await reconcileVirtualNetwork(NET, ctx);
  };
  const summary = async () => ready(await getJSON<Net>(cp(), ['vnet', NET]));

  beforeAll(async () => {
    await ensureNode(cp(), JUDGE);
    await ensureNode(cp(), GHOST, { [LABEL]: 'yes' });
    ctx = contextFor(JUDGE);
    // The agent's clock, moved on by the test instead of waiting JUDGED_TTL_MS.
    ctx.now = () => new Date(Date.now() + skew);
  });
  afterAll(async () => {
    await cp().kubectl(['delete', 'vnet', NET, '--ignore-not-found', '--wait=false']);
    await cp().kubectl(['delete', 'node', GHOST, JUDGE, '--ignore-not-found']);
  });

  it('follows a matching Node without an agent that is deleted, then labelled', async () => {
    await apply({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualNetwork',
      metadata: { name: NET },
      spec: { mode: 'isolated', nodeSelector: { matchLabels: { [LABEL]: 'yes' } } },
    });
    await pass();
    // The ghost Node matches: its agent is left to report, nothing is written.
    expect(await summary()).toBeUndefined();

    // (A) The only matching Node goes; the object does not change.
    const del = await cp().kubectl(['delete', 'node', GHOST]);
    expect(del.code, del.stderr).toBe(0);
    await pass();
    expect(await summary()).toBeUndefined();
    skew = JUDGED_TTL_MS;
    await pass();
    expect(await summary()).toMatchObject({ status: 'False', reason: 'NoMatchingNodes' });

    // (B) A Node without an agent is labelled after NoMatchingNodes was written.
    await pass(); // the written version, judged once: unchanged
    await ensureNode(cp(), GHOST, { [LABEL]: 'yes' });
    await pass();
    expect(await summary()).toMatchObject({ reason: 'NoMatchingNodes' });
    skew = 2 * JUDGED_TTL_MS;
    await pass();
    const now = await summary();
    expect(now).toMatchObject({ status: 'False', reason: 'NoNodes' });
    expect(now?.message).toContain(GHOST);
  }, 60_000);

  it('forgets the judgement of a deleted object', async () => {
    expect(ctx.host.summariesJudged.size).toBe(1);
    const del = await cp().kubectl(['delete', 'vnet', NET, '--timeout=30s']);
    expect(del.code, del.stderr).toBe(0);
    await pass();
    expect(ctx.host.summariesJudged.size).toBe(0);
  });
});
