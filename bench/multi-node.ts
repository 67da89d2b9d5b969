// npm run bench:multi-node -- [--nodes 5,10,20] [--vms-per-node 50,100]
//
// N agents (separate processes, each with its own node name and its own in-process
// test:///default host) against one real kube-apiserver; VMs spread over the nodes. For each
// (nodes, VMs per node): time until every VM is Ready, whether every VM was reconciled by the
// agent of its own node only (status.nodeName), API requests per second per agent while
// converging and while idle, and agent memory. Prints a table and, last, one JSON line.
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../src/commands/local/control-plane.js';
import { createKubeClient } from '../src/runtime/index.js';
import {
  createVms,
  listVms,
  requestTotals,
  rssMB,
  startAgentProcess,
  stopAgentProcess,
  waitAgentReady,
  waitAllReady,
  writesTo,
  type AgentProcess,
} from './agents.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '5,10,20' },
    'vms-per-node': { type: 'string', default: '50,100' },
    'idle-seconds': { type: 'string', default: '20' },
  },
});
const nodeCounts = values.nodes.split(',').map(Number);
const perNode = values['vms-per-node'].split(',').map(Number);
const idleSeconds = Number(values['idle-seconds']);

interface Row {
  nodes: number;
  vmsPerNode: number;
  vms: number;
  readySeconds: number;
  misplaced: number;
  requestsPerSecPerAgentConverging: number;
  requestsPerSecPerAgentIdle: number;
  leaseWritesPerSecPerAgentIdle: number;
  rssMeanMB: number;
  rssMaxMB: number;
}

async function measure(nodes: number, vmsPerNode: number): Promise<Row> {
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const agents: AgentProcess[] = [];
  try {
    for (let i = 0; i < nodes; i++)
      agents.push(await startAgentProcess(cp, client, `sim-node-${i}`));
    await Promise.all(agents.map((a) => waitAgentReady(a, 120_000)));
    const vms = Array.from({ length: nodes * vmsPerNode }, (_, i) => ({
      name: `vm-${String(i).padStart(6, '0')}`,
      node: `sim-node-${i % nodes}`,
    }));
    const before = requestTotals(await cp.apiServerMetrics());
    const start = performance.now();
    await createVms(client, vms);
    const polls = await waitAllReady(client, vms.length);
    const readySeconds = (performance.now() - start) / 1000;
    const convergedMetrics = await cp.apiServerMetrics();
    const converged = requestTotals(convergedMetrics);
    // Each VM's status is written by the agent of the node it names, and only that one.
    const misplaced = (await listVms(client)).filter(
      (vm) => vm.status?.nodeName !== vm.spec.nodeName,
    ).length;
    const rss = agents.map((a) => rssMB(a.child.pid!));

    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const idleMetrics = await cp.apiServerMetrics();
    const idle = requestTotals(idleMetrics);
    const leaseWrites = writesTo(idleMetrics, 'leases') - writesTo(convergedMetrics, 'leases');
    const agentRequests = converged.all - before.all - vms.length - polls - 1;
    return {
      nodes,
      vmsPerNode,
      vms: vms.length,
      readySeconds: Number(readySeconds.toFixed(2)),
      misplaced,
      requestsPerSecPerAgentConverging: Number((agentRequests / readySeconds / nodes).toFixed(2)),
      requestsPerSecPerAgentIdle: Number(
        ((idle.all - converged.all) / idleSeconds / nodes).toFixed(3),
      ),
      // Includes the API server's own identity lease renewals (a few per minute).
      leaseWritesPerSecPerAgentIdle: Number((leaseWrites / idleSeconds / nodes).toFixed(3)),
      rssMeanMB: Number((rss.reduce((a, b) => a + b, 0) / rss.length).toFixed(1)),
      rssMaxMB: Number(Math.max(...rss).toFixed(1)),
    };
  } finally {
    await Promise.all(agents.map(stopAgentProcess));
    await cp.stop();
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  console.log(
    'nodes  VMs/node  VMs     Ready(s)  misplaced  req/s/agent(converging)  req/s/agent(idle)  RSS mean/max (MB)',
  );
  for (const n of nodeCounts) {
    for (const v of perNode) {
      const r = await measure(n, v);
      rows.push(r);
      console.log(
        `${String(r.nodes).padEnd(7)}${String(r.vmsPerNode).padEnd(10)}${String(r.vms).padEnd(8)}${String(r.readySeconds).padEnd(10)}${String(r.misplaced).padEnd(11)}${String(r.requestsPerSecPerAgentConverging).padEnd(25)}${String(r.requestsPerSecPerAgentIdle).padEnd(19)}${String(r.leaseWritesPerSecPerAgentIdle).padEnd(22)}${r.rssMeanMB}/${r.rssMaxMB}`,
      );
    }
  }
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`;
  console.log(JSON.stringify({ rows, idleSeconds, machine, date: new Date().toISOString() }));
}

main().catch((err: unknown) => {
  console.error(`bench:multi-node: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
