// Shared pieces of the agent benchmarks: a control plane, compiled agents as separate
// processes on libvirt's test driver, bulk VM creation, and the API server's own counters.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type ControlPlane } from '../src/commands/local/control-plane.js';
import { packageRoot } from '../src/commands/local/package-root.js';
import type { KubeClient } from '../src/runtime/index.js';
import { isGone } from '../src/runtime/kube-client.js';

export interface AgentProcess {
  node: string;
  child: ChildProcess;
  healthPort: number;
  stateDir: string;
}

const OUR_RESOURCES = [
  'virtualmachines',
  'volumes',
  'virtualnetworks',
  'storagepools',
  'events',
  'nodes',
];

/** The verbs of apiserver_request_total that change something. */
export const WRITE_VERBS: ReadonlySet<string> = new Set([
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'APPLY',
]);

/** Whether a metric line of apiserver_request_* counts writes. */
export function isWriteLine(line: string): boolean {
  return WRITE_VERBS.has(/verb="([^"]*)"/.exec(line)?.[1] ?? '');
}

/** apiserver_request_total summed over our kinds (all verbs, and write verbs only). */
export function requestTotals(metrics: string): { all: number; writes: number } {
  let all = 0;
  let writes = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const resource = /resource="([^"]*)"/.exec(line)?.[1] ?? '';
    if (!OUR_RESOURCES.includes(resource)) continue;
    const n = Number(line.slice(line.lastIndexOf(' ') + 1));
    all += n;
    if (isWriteLine(line)) writes += n;
  }
  return { all, writes };
}

/** Write requests (POST/PUT/PATCH/DELETE/APPLY) to one resource, e.g. 'leases'. */
export function writesTo(metrics: string, resource: string): number {
  let n = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{') || !line.includes(`resource="${resource}"`))
      continue;
    if (isWriteLine(line)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

export function rssMB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** The highest RSS the process has had (VmHWM). */
export function peakRssMB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/**
 * Starts `node dist/cli.js run` for `node` (the compiled CLI, as production runs it), on
 * libvirt's in-process test driver unless `libvirtUri` names another host.
 */
export async function startAgentProcess(
  cp: ControlPlane,
  client: KubeClient,
  node: string,
  opts: { libvirtUri?: string; nodeFlags?: string[] } = {},
): Promise<AgentProcess> {
  const cli = join(packageRoot(), 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing; run 'npm run build' first`);
  // The node flags of the CLI's shebang line, which an installed `libvirt-operator run`
  // (the DaemonSet's command) starts with.
  const shebang = readFileSync(cli, 'utf8').split('\n', 1)[0] ?? '';
  const cliFlags = shebang.split(/\s+/).filter((w) => w.startsWith('--'));
  await client.request({
    method: 'POST',
    path: '/api/v1/nodes',
    body: { apiVersion: 'v1', kind: 'Node', metadata: { name: node } },
  });
  const healthPort = await freePort();
  const stateDir = mkdtempSync(join(tmpdir(), 'lvo-bench-'));
  const child = spawn(
    process.execPath,
    [
      ...cliFlags,
      ...(opts.nodeFlags ?? []),
      cli,
      'run',
      `--node-name=${node}`,
      `--libvirt-uri=${opts.libvirtUri ?? 'test:///default'}`,
      `--kubeconfig=${cp.kubeconfigPath}`,
      `--health-addr=127.0.0.1:${healthPort}`,
      `--state-dir=${stateDir}`,
      '--lease-namespace=default',
      '--log-level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return { node, child, healthPort, stateDir };
}

/** Waits until the agent's /readyz answers 200 (informers synced, libvirt open, lease held). */
export async function waitAgentReady(agent: AgentProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { exitCode, signalCode } = agent.child;
    if (exitCode !== null || signalCode !== null) {
      throw new Error(
        `agent ${agent.node} exited (${signalCode ?? `code ${exitCode}`}) before it was ready`,
      );
    }
    const ok = await fetch(`http://127.0.0.1:${agent.healthPort}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`agent ${agent.node} did not become ready within ${timeoutMs / 1000} s`);
}

export async function stopAgentProcess(agent: AgentProcess): Promise<void> {
  // A child killed by a signal has no exit code but has exited: waiting would hang.
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.child.kill('SIGTERM');
    await new Promise((r) => agent.child.once('exit', r));
  }
  rmSync(agent.stateDir, { recursive: true, force: true });
}

/** Creates VMs (1 vCPU, 64Mi, no devices) with `concurrency` parallel POSTs. */
export async function createVms(
  client: KubeClient,
  vms: Array<{ name: string; node: string }>,
  concurrency = 32,
  /** Finalizers the manifests carry from the start (bench:converge --preset-finalizer). */
  finalizers: string[] = [],
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < vms.length) {
        const vm = vms[next++]!;
        await client.request({
          method: 'POST',
          path: '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines',
          body: {
            apiVersion: 'virt.dev/v1alpha1',
            kind: 'VirtualMachine',
            metadata: { name: vm.name, ...(finalizers.length > 0 ? { finalizers } : {}) },
            spec: { nodeName: vm.node, domainType: 'qemu', vcpus: 1, memory: '64Mi' },
          },
        });
      }
    }),
  );
}

export interface VmStatusView {
  metadata: { name: string };
  spec: { nodeName: string };
  status?: {
    nodeName?: string;
    domainName?: string;
    conditions?: Array<{ type: string; status: string }>;
  };
}

export async function listVms(client: KubeClient): Promise<VmStatusView[]> {
  const list = (await client.request({
    method: 'GET',
    path: '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines',
  })) as {
    items: VmStatusView[];
  };
  return list.items;
}

export const isReady = (vm: VmStatusView): boolean =>
  vm.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/**
 * Polls every 200 ms until `count` VMs are Ready; returns the number of polls made.
 * `progress` sees each poll's count of Ready VMs.
 */
export async function waitAllReady(
  client: KubeClient,
  count: number,
  timeoutMs = 600_000,
  progress?: (ready: number) => void,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (let polls = 1; ; polls++) {
    const ready = (await listVms(client)).filter(isReady).length;
    progress?.(ready);
    if (ready >= count) return polls;
    if (Date.now() > deadline)
      throw new Error(`only ${ready}/${count} VMs Ready after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * apiserver_request_total and the server-side time (apiserver_request_duration_seconds_sum)
 * per "verb resource[/subresource] code" for our kinds; durations have no code label, so they
 * are keyed by "verb resource[/subresource]".
 */
export function requestBreakdown(metrics: string): {
  counts: Map<string, number>;
  seconds: Map<string, number>;
} {
  const counts = new Map<string, number>();
  const seconds = new Map<string, number>();
  const label = (line: string, name: string) => new RegExp(`${name}="([^"]*)"`).exec(line)?.[1];
  for (const line of metrics.split('\n')) {
    const total = line.startsWith('apiserver_request_total{');
    const sum = line.startsWith('apiserver_request_duration_seconds_sum{');
    if (!total && !sum) continue;
    const resource = label(line, 'resource') ?? '';
    if (!OUR_RESOURCES.includes(resource)) continue;
    const sub = label(line, 'subresource');
    const what = `${label(line, 'verb')} ${resource}${sub ? `/${sub}` : ''}`;
    const n = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (total) {
      const key = `${what} ${label(line, 'code')}`;
      counts.set(key, (counts.get(key) ?? 0) + n);
    } else {
      seconds.set(what, (seconds.get(what) ?? 0) + n);
    }
  }
  return { counts, seconds };
}

/** User + system CPU seconds of a process so far (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** The pids of processes whose command line mentions `marker` (e.g. a control plane's dir). */
export function pidsMentioning(marker: string): Array<{ pid: number; command: string }> {
  const found: Array<{ pid: number; command: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.some((a) => a.includes(marker))) {
        found.push({ pid: Number(entry), command: args[0]!.split('/').pop() ?? '' });
      }
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

/** The agent's own Prometheus text (its health port's /metrics). */
export async function agentMetrics(agent: AgentProcess): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${agent.healthPort}/metrics`);
  return res.text();
}

/** Sums the samples of one metric whose labels contain every `labels` fragment. */
export function metricSum(metrics: string, name: string, labels: string[] = []): number {
  let n = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!labels.every((l) => line.includes(l))) continue;
    n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

/**
 * Watches the VirtualMachines and resolves once `count` of them are Ready, as a user's
 * `kubectl wait` would: a LIST for the starting point, then a watch from it. When the server
 * ends the watch (it does to a watcher that falls behind: `apiserver_terminated_watchers_total`
 * counts 3-15 in a burst of 1,000 on two cores), the watch resumes from the last
 * resourceVersion seen, as kubectl's reflector does; only an ERROR event (410 Gone: that
 * version has left the watch cache) takes a new LIST. Exact: each VM's Ready is seen when its
 * status arrives, not at the next poll. Open it before creating. `progress` sees the count of
 * Ready VMs after each change. `done` resolves with the number of requests made.
 */
export async function watchAllReady(
  client: KubeClient,
  count: number,
  progress?: (ready: number) => void,
  timeoutMs = 600_000,
): Promise<{ done: Promise<number> }> {
  const path = '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines';
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let ready = new Set<string>();
  let requests = 0;
  let version = '';
  const list = async () => {
    const page = await client.request<{
      metadata: { resourceVersion: string };
      items: VmStatusView[];
    }>({ method: 'GET', path });
    ready = new Set(page.items.filter(isReady).map((vm) => vm.metadata.name));
    version = page.metadata.resourceVersion;
    requests++;
  };
  const watch = () => {
    requests++;
    return client.stream({
      path,
      query: { watch: true, resourceVersion: version, timeoutSeconds: 3600 },
      signal: abort.signal,
    });
  };
  await list();
  let lines: Iterable<unknown> | AsyncIterable<unknown> = await watch();
  const done = (async () => {
    try {
      for (;;) {
        let failed = false;
        for await (const line of lines) {
          const event = line as {
            type: string;
            object: VmStatusView & { metadata: { resourceVersion?: string } };
          };
          if (event.type === 'ERROR') {
            failed = true;
            break;
          }
          if (event.type === 'DELETED' || !isReady(event.object))
            ready.delete(event.object.metadata.name);
          else ready.add(event.object.metadata.name);
          version = event.object.metadata.resourceVersion ?? version;
          progress?.(ready.size);
          if (ready.size >= count) return requests;
        }
        if (failed) await list();
        progress?.(ready.size);
        if (ready.size >= count) return requests;
        // A version already gone may also be refused at the start of the watch: handled as
        // the ERROR event it usually comes as.
        lines = await watch().catch((err: unknown) => {
          if (!isGone(err)) throw err;
          return [{ type: 'ERROR' }];
        });
      }
    } catch (err) {
      if (abort.signal.aborted)
        throw new Error(`only ${ready.size}/${count} VMs Ready after ${timeoutMs / 1000} s`, {
          cause: err,
        });
      throw err;
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  })();
  // Awaited by the caller after its creates; until then a failure must not go unhandled.
  done.catch(() => undefined);
  return { done };
}
