// npm run bench:converge -- --vms N [--idle-seconds S]
//
// Time from apply to Ready for N VirtualMachines on one agent (a separate process, as in
// production) against a real kube-apiserver and libvirt's test driver; API requests per VM;
// write requests in the quiet period after convergence; the agent's resident memory.
// Prints a table and, last, one JSON line.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../src/harness/control-plane.js';
import { freePort } from '../src/harness/control-plane.js';
import { packageRoot } from '../src/harness/package-root.js';
import { createKubeClient } from '../src/runtime/index.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '1000' },
    'idle-seconds': { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '32' },
  },
});
const vms = Number(values.vms);
const idleSeconds = Number(values['idle-seconds']);
const NODE = 'bench-node';

function requestTotals(metrics: string): { all: number; writes: number } {
  let all = 0;
  let writes = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const n = Number(line.slice(line.lastIndexOf(' ') + 1));
    const resource = /resource="([^"]*)"/.exec(line)?.[1] ?? '';
    if (
      ![
        'virtualmachines',
        'volumes',
        'virtualnetworks',
        'storagepools',
        'events',
        'nodes',
      ].includes(resource)
    )
      continue;
    all += n;
    if (/verb="(POST|PUT|PATCH|DELETE|APPLY)"/.test(line)) writes += n;
  }
  return { all, writes };
}

function rssMB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function main(): Promise<void> {
  const cli = join(packageRoot(), 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing; run 'npm run build' first`);
  const cp = await startControlPlane();
  const stateDir = mkdtempSync(join(tmpdir(), 'lvo-bench-'));
  const client = createKubeClient(cp.kubeConfig);
  const healthPort = await freePort();
  await client.request({
    method: 'POST',
    path: '/api/v1/nodes',
    body: { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
  });
  const agent = spawn(
    process.execPath,
    [
      // The compiled CLI, as production runs it (tsx would add its compiler to the RSS).
      cli,
      'run',
      `--node-name=${NODE}`,
      '--libvirt-uri=test:///default',
      `--kubeconfig=${cp.kubeconfigPath}`,
      `--health-addr=127.0.0.1:${healthPort}`,
      `--state-dir=${stateDir}`,
      '--lease-namespace=default',
      '--log-level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  try {
    // Ready to work: its /readyz says informers synced, libvirt open, lease held.
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${healthPort}/readyz`)
        .then((r) => r.ok)
        .catch(() => false);
      if (ok) break;
      if (i > 600) throw new Error('agent did not become ready within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const rssIdle = rssMB(agent.pid!);
    const before = requestTotals(await cp.apiServerMetrics());

    const start = performance.now();
    const names = Array.from({ length: vms }, (_, i) => `vm-${String(i).padStart(5, '0')}`);
    let next = 0;
    await Promise.all(
      Array.from({ length: Number(values.concurrency) }, async () => {
        while (next < names.length) {
          const name = names[next++]!;
          await client.request({
            method: 'POST',
            path: '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines',
            body: {
              apiVersion: 'virt.dev/v1alpha1',
              kind: 'VirtualMachine',
              metadata: { name },
              spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '64Mi' },
            },
          });
        }
      }),
    );
    const appliedSeconds = (performance.now() - start) / 1000;

    let readyCount = 0;
    while (readyCount < vms) {
      const list = (await client.request({
        method: 'GET',
        path: '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines',
      })) as {
        items: Array<{ status?: { conditions?: Array<{ type: string; status: string }> } }>;
      };
      readyCount = list.items.filter((o) =>
        o.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      ).length;
      if ((performance.now() - start) / 1000 > 600)
        throw new Error(`only ${readyCount}/${vms} Ready after 600 s`);
      if (readyCount < vms) await new Promise((r) => setTimeout(r, 200));
    }
    const readySeconds = (performance.now() - start) / 1000;
    const converged = requestTotals(await cp.apiServerMetrics());
    const rssConverged = rssMB(agent.pid!);

    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const idle = requestTotals(await cp.apiServerMetrics());
    const rssAfterIdle = rssMB(agent.pid!);

    // The benchmark's own requests (creates and Ready polls) are subtracted: POSTs = vms.
    const agentRequests = converged.all - before.all - vms - Math.ceil(readySeconds / 0.2);
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
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(34)} ${v}`);
    console.log(JSON.stringify(result));
  } finally {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    await cp.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench:converge: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
