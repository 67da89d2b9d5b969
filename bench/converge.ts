// npm run bench:converge -- --vms N [--idle-seconds S] [--agent-finalizer | --preset-finalizer]
//
// By default the API server puts the agent's finalizer on each new VM at admission, with the
// policy manifests/components/finalizer-at-admission that manifests/overlays/local deploys on
// its Kubernetes 1.36 cluster. --agent-finalizer measures manifests/ without that component (a
// cluster older than 1.36): the agent adds its finalizer with a PATCH of its own, a second write
// per VM.
//
// Time from apply to Ready for N VirtualMachines on one agent (a separate process, as in
// production) against a real kube-apiserver and libvirt's test driver; API requests per VM;
// write requests in the quiet period after convergence; the agent's resident memory.
// Prints a table and, last, one JSON line.
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../src/commands/local/control-plane.js';
import { installFinalizerPolicy } from '../src/commands/local/finalizer-policy.js';
import { HOST_FINALIZER } from '../src/controllers/context.js';
import { createKubeClient } from '../src/runtime/index.js';
import {
  agentMetrics,
  cpuSeconds,
  createVms,
  metricSum,
  pidsMentioning,
  requestBreakdown,
  requestTotals,
  peakRssMB,
  rssMB,
  startAgentProcess,
  stopAgentProcess,
  waitAgentReady,
  watchAllReady,
  WRITE_VERBS,
} from './agents.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '1000' },
    'idle-seconds': { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '32' },
    // Extra flags for the agent's node, to compare against what production runs.
    'node-flags': { type: 'string', default: '' },
    // The manifests carry the agent's finalizer from the start, as a mutating admission policy
    // could put it there: what the agent's finalizer write costs the burst (one write per VM
    // instead of two). Not how the operator ships: see bench/README.md.
    'preset-finalizer': { type: 'boolean', default: false },
    // Without the policy (manifests/components/finalizer-at-admission): the agent adds its
    // finalizer with a PATCH, as with manifests/ on a cluster older than Kubernetes 1.36.
    'agent-finalizer': { type: 'boolean', default: false },
    // The default, named for the commands recorded in bench/README.md.
    'admission-finalizer': { type: 'boolean', default: false },
  },
});
const vms = Number(values.vms);
const finalizerFlags = (['preset-finalizer', 'agent-finalizer', 'admission-finalizer'] as const)
  .filter((f) => values[f])
  .map((f) => `--${f}`);
if (finalizerFlags.length > 1)
  throw new Error(`${finalizerFlags.join(' and ')} exclude each other`);
/** Who puts the agent's finalizer on a new VM. */
const finalizerBy: 'admission' | 'agent' | 'preset' = values['preset-finalizer']
  ? 'preset'
  : values['agent-finalizer']
    ? 'agent'
    : 'admission';
const FINALIZER_BY = {
  admission: 'the API server (finalizer-at-admission policy)',
  agent: "the agent's PATCH (--agent-finalizer)",
  preset: 'the manifests (--preset-finalizer)',
};
const idleSeconds = Number(values['idle-seconds']);
const NODE = 'bench-node';

async function main(): Promise<void> {
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const nodeFlags = values['node-flags'].split(/\s+/).filter(Boolean);
  const agent = await startAgentProcess(cp, client, NODE, { nodeFlags });
  try {
    await waitAgentReady(agent);
    if (finalizerBy === 'admission') await installFinalizerPolicy(cp, client, NODE);
    const pid = agent.child.pid!;
    const rssIdle = rssMB(pid);
    const serverBefore = await cp.apiServerMetrics();
    const before = requestTotals(serverBefore);
    const agentBefore = await agentMetrics(agent);
    const planePids = pidsMentioning(cp.dir).filter((p) => p.pid !== pid);
    const cpuOf = () =>
      new Map([
        ['agent', cpuSeconds(pid)],
        ['benchmark', process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6],
        ...planePids.map((p) => [p.command, cpuSeconds(p.pid)] as [string, number]),
      ]);
    const cpuBefore = cpuOf();

    // When 10 %, 50 %, 90 % and all of the VMs were seen Ready (by a watch opened first).
    const marks = [0.1, 0.5, 0.9, 1];
    const readyAt = new Map<number, number>();
    let start = 0;
    const waiting = await watchAllReady(client, vms, (ready) => {
      for (const m of marks) {
        if (ready >= m * vms && !readyAt.has(m)) readyAt.set(m, (performance.now() - start) / 1000);
      }
    });
    start = performance.now();
    const names = Array.from({ length: vms }, (_, i) => ({
      name: `vm-${String(i).padStart(5, '0')}`,
      node: NODE,
    }));
    const preset = finalizerBy === 'preset' ? [HOST_FINALIZER] : [];
    await createVms(client, names, Number(values.concurrency), preset);
    const appliedSeconds = (performance.now() - start) / 1000;
    const polls = await waiting.done;
    const readySeconds = (performance.now() - start) / 1000;
    const serverConverged = await cp.apiServerMetrics();
    const converged = requestTotals(serverConverged);
    const cpuConverged = cpuOf();
    const rssConverged = rssMB(pid);

    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const serverIdle = await cp.apiServerMetrics();
    const idle = requestTotals(serverIdle);
    const rssAfterIdle = rssMB(pid);
    // Only now: a scrape of the agent's /metrics reads every guest's stats from libvirt, memory
    // the RSS figures above are not about. Nothing is reconciled in the idle window, so the
    // counters are those of the burst.
    const agentConverged = await agentMetrics(agent);

    // The benchmark's own requests (creates, the list and watch that wait for Ready) are
    // subtracted.
    const agentRequests = converged.all - before.all - vms - polls;
    // On these cores, Ready cannot come sooner than the CPU everything but the agent used in
    // the burst (API server, etcd, the benchmark's own creates and watch) allows.
    const burstCpu = (who: string) => (cpuConverged.get(who) ?? 0) - (cpuBefore.get(who) ?? 0);
    const agentCpu = burstCpu('agent');
    const othersCpu = [...cpuConverged.keys()]
      .filter((who) => who !== 'agent')
      .reduce((t, who) => t + burstCpu(who), 0);
    // Watchers the API server ended for falling behind in the burst (the agent's and the
    // benchmark's; both resume from their last resourceVersion): a sign of its CPU starvation.
    const watcherKind = ['resource="virtualmachines"'];
    const terminatedWatchers =
      metricSum(serverConverged, 'apiserver_terminated_watchers_total', watcherKind) -
      metricSum(serverBefore, 'apiserver_terminated_watchers_total', watcherKind);
    const result = {
      vms,
      appliedSeconds: Number(appliedSeconds.toFixed(2)),
      readySeconds: Number(readySeconds.toFixed(2)),
      apiRequestsPerVm: Number((Math.max(agentRequests, 0) / vms).toFixed(2)),
      apiWritesPerVm: Number(((converged.writes - before.writes - vms) / vms).toFixed(2)),
      idleSeconds,
      writesAfterConverge: idle.writes - converged.writes,
      // Named in the JSON too: the rare run that counts some is then diagnosable from the one
      // line a script keeps (bench/README.md, "Convergence", fifteenth pass).
      writesAfter: writesAfter(serverConverged, serverIdle),
      // What the agent counted from before the VMs to after the idle window (non-zero only):
      // a run with writes after convergence then tells whether the agent wrote a status twice
      // (statusWrites.written over vms), retried after an error, or sent Events.
      agentCounts: agentCounts(agentBefore, agentConverged),
      rssMB: Number(Math.max(rssConverged, rssAfterIdle).toFixed(1)),
      rssIdleBeforeMB: Number(rssIdle.toFixed(1)),
      rssPeakMB: Number(peakRssMB(pid).toFixed(1)),
      agentCpuSeconds: Number(agentCpu.toFixed(2)),
      othersCpuSeconds: Number(othersCpu.toFixed(2)),
      floorWithoutAgentSeconds: Number((othersCpu / cpus().length).toFixed(2)),
      terminatedWatchers,
      presetFinalizer: finalizerBy === 'preset',
      admissionFinalizer: finalizerBy === 'admission',
      nodeFlags: nodeFlags.join(' '),
      machine: `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
      date: new Date().toISOString(),
    };
    const rows: Array<[string, string]> = [
      ['VMs', String(vms)],
      ['finalizer put on by', FINALIZER_BY[finalizerBy]],
      ['all created (s)', String(result.appliedSeconds)],
      ['all Ready (s)', String(result.readySeconds)],
      ['agent API requests per VM', String(result.apiRequestsPerVm)],
      ['agent API writes per VM', String(result.apiWritesPerVm)],
      [`writes in ${idleSeconds} s after convergence`, String(result.writesAfterConverge)],
      ['agent RSS (MB)', String(result.rssMB)],
      ['agent peak RSS (MB)', String(result.rssPeakMB)],
      [
        `Ready floor without the agent (s)`,
        `${result.floorWithoutAgentSeconds} (${result.othersCpuSeconds} CPU s of the others / ${cpus().length} cores)`,
      ],
      ['VM watchers the API server ended', String(terminatedWatchers)],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(34)} ${v}`);
    for (const [key, n] of Object.entries(result.writesAfter)) console.log(`  ${key}: ${n}`);
    printBreakdown({
      agentCounts: result.agentCounts,
      serverBefore,
      serverConverged,
      agentBefore,
      agentConverged,
      cpuBefore,
      cpuConverged,
      readyAt,
      vms,
    });
    console.log(JSON.stringify(result));
  } finally {
    await stopAgentProcess(agent);
    await cp.stop();
  }
}

/** What was written after convergence (there should be nothing), by verb, resource and code. */
function writesAfter(converged: string, idle: string): Record<string, number> {
  const before = requestBreakdown(converged).counts;
  const writes: Record<string, number> = {};
  for (const [key, n] of requestBreakdown(idle).counts) {
    const d = n - (before.get(key) ?? 0);
    if (d > 0 && WRITE_VERBS.has(key.slice(0, key.indexOf(' ')))) writes[key] = d;
  }
  return writes;
}

/**
 * The agent's VirtualMachine reconcile passes, status writes and Events by result between two
 * scrapes of its /metrics; results that did not occur are left out.
 */
function agentCounts(
  before: string,
  after: string,
): Record<'passes' | 'statusWrites' | 'events', Record<string, number>> {
  const count = (name: string, labels: string[], results: string[]) => {
    const out: Record<string, number> = {};
    for (const result of results) {
      const l = [...labels, `result="${result}"`];
      const n = metricSum(after, name, l) - metricSum(before, name, l);
      if (n > 0) out[result] = n;
    }
    return out;
  };
  return {
    passes: count(
      'controller_runtime_reconcile_total',
      ['controller="VirtualMachine"'],
      ['success', 'requeue_after', 'error'],
    ),
    statusWrites: count(
      'runtime_status_writes_total',
      ['resource="virtualmachines.virt.dev"'],
      ['written', 'unchanged', 'stale', 'error'],
    ),
    events: count(
      'runtime_events_total',
      [],
      ['created', 'series_updated', 'suppressed', 'dropped', 'error'],
    ),
  };
}

/** Where the burst's time went: timeline, API requests by kind, agent metrics, CPU seconds. */
function printBreakdown(b: {
  agentCounts: ReturnType<typeof agentCounts>;
  serverBefore: string;
  serverConverged: string;
  agentBefore: string;
  agentConverged: string;
  cpuBefore: Map<string, number>;
  cpuConverged: Map<string, number>;
  readyAt: Map<number, number>;
  vms: number;
}): void {
  console.log('\nReady VMs over time (first poll that saw them):');
  for (const [m, s] of b.readyAt)
    console.log(`  ${String(m * 100).padStart(3)} %  ${s.toFixed(2)} s`);
  const before = requestBreakdown(b.serverBefore);
  const after = requestBreakdown(b.serverConverged);
  console.log(
    '\nAPI server requests during the burst (verb resource code: count, server ms/request):',
  );
  for (const [key, n] of [...after.counts].sort()) {
    const d = n - (before.counts.get(key) ?? 0);
    if (d <= 0) continue;
    const what = key.slice(0, key.lastIndexOf(' '));
    const s = (after.seconds.get(what) ?? 0) - (before.seconds.get(what) ?? 0);
    const all = [...after.counts]
      .filter(([k]) => k.startsWith(`${what} `))
      .reduce((t, [k, v]) => t + v - (before.counts.get(k) ?? 0), 0);
    console.log(
      `  ${key.padEnd(44)} ${String(d).padStart(6)}  ${((s / all) * 1000).toFixed(1)} ms`,
    );
  }
  const delta = (name: string, labels: string[] = []) =>
    metricSum(b.agentConverged, name, labels) - metricSum(b.agentBefore, name, labels);
  const vm = 'controller="VirtualMachine"';
  const queue = 'name="VirtualMachine"';
  const passes = delta('controller_runtime_reconcile_total', [vm]);
  console.log('\nAgent (VirtualMachine controller) during the burst:');
  console.log(`  reconcile passes ${passes} (${(passes / b.vms).toFixed(2)} per VM)`);
  const counts = b.agentCounts;
  for (const [result, n] of Object.entries(counts.passes)) console.log(`    ${result}: ${n}`);
  const mean = (name: string, labels: string[]) =>
    (delta(`${name}_sum`, labels) / Math.max(1, delta(`${name}_count`, labels))) * 1000;
  console.log(
    `  time in a pass: mean ${mean('controller_runtime_reconcile_time_seconds', [vm]).toFixed(1)} ms`,
  );
  console.log(
    `  queue wait: mean ${mean('workqueue_queue_duration_seconds', [queue]).toFixed(1)} ms`,
  );
  for (const [result, n] of Object.entries(counts.statusWrites))
    console.log(`  status writes ${result}: ${n}`);
  for (const [result, n] of Object.entries(counts.events)) console.log(`  events ${result}: ${n}`);
  const mb = (m: string, name: string, labels: string[] = []) =>
    (metricSum(m, name, labels) / 2 ** 20).toFixed(1);
  console.log(
    `  after the idle window: V8 heap used ${mb(b.agentConverged, 'nodejs_heap_size_used_bytes')} MB of ${mb(b.agentConverged, 'nodejs_heap_size_total_bytes')} MB (before the VMs: ${mb(b.agentBefore, 'nodejs_heap_size_used_bytes')} of ${mb(b.agentBefore, 'nodejs_heap_size_total_bytes')}), external ${mb(b.agentConverged, 'nodejs_external_memory_bytes')} MB`,
  );
  console.log('\nCPU seconds during the burst:');
  for (const [who, s] of b.cpuConverged) {
    console.log(`  ${who.padEnd(16)} ${(s - (b.cpuBefore.get(who) ?? 0)).toFixed(2)}`);
  }
}

main().catch((err: unknown) => {
  console.error(`bench:converge: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
