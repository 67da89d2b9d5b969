// npm run bench:converge -- --vms N [--idle-seconds S]
//
// Time from apply to Ready for N VirtualMachines on one agent (a separate process, as in
// production) against a real kube-apiserver and libvirt's test driver; API requests per VM;
// write requests in the quiet period after convergence; the agent's resident memory.
// Prints a table and, last, one JSON line.
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../src/commands/local/control-plane.js';
import { createKubeClient } from '../src/runtime/index.js';
import {
  createVms,
  requestTotals,
  peakRssMB,
  rssMB,
  startAgentProcess,
  stopAgentProcess,
  waitAgentReady,
  waitAllReady,
} from './agents.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '1000' },
    'idle-seconds': { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '32' },
    // Extra flags for the agent's node, to compare against what production runs.
    'node-flags': { type: 'string', default: '' },
  },
});
const vms = Number(values.vms);
const idleSeconds = Number(values['idle-seconds']);
const NODE = 'bench-node';

async function main(): Promise<void> {
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const nodeFlags = values['node-flags'].split(/\s+/).filter(Boolean);
  const agent = await startAgentProcess(cp, client, NODE, { nodeFlags });
  try {
    await waitAgentReady(agent);
    const pid = agent.child.pid!;
    const rssIdle = rssMB(pid);
    const before = requestTotals(await cp.apiServerMetrics());

    const start = performance.now();
    const names = Array.from({ length: vms }, (_, i) => ({
      name: `vm-${String(i).padStart(5, '0')}`,
      node: NODE,
    }));
    await createVms(client, names, Number(values.concurrency));
    const appliedSeconds = (performance.now() - start) / 1000;
    const polls = await waitAllReady(client, vms);
    const readySeconds = (performance.now() - start) / 1000;
    const converged = requestTotals(await cp.apiServerMetrics());
    const rssConverged = rssMB(pid);

    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const idle = requestTotals(await cp.apiServerMetrics());
    const rssAfterIdle = rssMB(pid);

    // The benchmark's own requests (creates and Ready polls) are subtracted.
    const agentRequests = converged.all - before.all - vms - polls;
    const result = {
      vms,
      appliedSeconds: Number(appliedSeconds.toFixed(2)),
      readySeconds: Number(readySeconds.toFixed(2)),
      apiRequestsPerVm: Number((Math.max(agentRequests, 0) / vms).toFixed(2)),
      apiWritesPerVm: Number(((converged.writes - before.writes - vms) / vms).toFixed(2)),
      idleSeconds,
      writesAfterConverge: idle.writes - converged.writes,
      rssMB: Number(Math.max(rssConverged, rssAfterIdle).toFixed(1)),
      rssIdleBeforeMB: Number(rssIdle.toFixed(1)),
      rssPeakMB: Number(peakRssMB(pid).toFixed(1)),
      nodeFlags: nodeFlags.join(' '),
      machine: `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
      date: new Date().toISOString(),
    };
    const rows: Array<[string, string]> = [
      ['VMs', String(vms)],
      ['all created (s)', String(result.appliedSeconds)],
      ['all Ready (s)', String(result.readySeconds)],
      ['agent API requests per VM', String(result.apiRequestsPerVm)],
      ['agent API writes per VM', String(result.apiWritesPerVm)],
      [`writes in ${idleSeconds} s after convergence`, String(result.writesAfterConverge)],
      ['agent RSS (MB)', String(result.rssMB)],
      ['agent peak RSS (MB)', String(result.rssPeakMB)],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(34)} ${v}`);
    console.log(JSON.stringify(result));
  } finally {
    await stopAgentProcess(agent);
    await cp.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`bench:converge: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
