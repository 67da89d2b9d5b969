// Shared pieces of the latency benchmarks: one watch on the VirtualMachines of a namespace that
// tells the moment a condition on an object first holds, percentiles, the agent's own metrics,
// and a description of the machine the figures were taken on.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { KubeClient } from '../src/runtime/index.js';

export interface WatchedVm {
  metadata: { name: string; generation?: number; uid?: string; resourceVersion?: string };
  spec: { memory?: string };
  status?: {
    phase?: string;
    observedGeneration?: number;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    memory?: { target?: string; actual?: string };
  };
}

interface Waiter {
  holds: (vm: WatchedVm | undefined) => boolean;
  resolve: (at: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface VmWatch {
  /**
   * Resolves with performance.now() of the first watch event after which `holds` is true for
   * the object (undefined = deleted); at once when it already holds.
   */
  until(
    name: string,
    what: string,
    holds: (vm: WatchedVm | undefined) => boolean,
    timeoutMs?: number,
  ): Promise<number>;
  latest(name: string): WatchedVm | undefined;
  stop(): void;
}

const VMS = '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines';

/**
 * Lists, then watches from the list's resourceVersion, in this process: the time an event is
 * seen here is the time a client would see it (the API server's fan-out included).
 */
export async function watchVms(client: KubeClient): Promise<VmWatch> {
  const list = (await client.request({ method: 'GET', path: VMS })) as {
    metadata: { resourceVersion: string };
    items: WatchedVm[];
  };
  const objects = new Map(list.items.map((o) => [o.metadata.name, o]));
  const waiters = new Map<string, Set<Waiter>>();
  const abort = new AbortController();
  let failure: Error | undefined;

  const settle = (name: string, at: number) => {
    for (const w of waiters.get(name) ?? []) {
      if (!w.holds(objects.get(name))) continue;
      clearTimeout(w.timer);
      waiters.get(name)!.delete(w);
      w.resolve(at);
    }
  };
  const fail = (err: Error) => {
    failure = err;
    for (const set of waiters.values()) {
      for (const w of set) {
        clearTimeout(w.timer);
        w.reject(err);
      }
      set.clear();
    }
  };

  // Watches from the last resourceVersion seen, and again from there when the API server ends
  // a watch (it may, at any time; under load the 100-VM run saw it); a resourceVersion too old
  // to resume from (410 Gone) is answered with a fresh list.
  let resourceVersion = list.metadata.resourceVersion;
  const relist = async () => {
    const fresh = (await client.request({ method: 'GET', path: VMS })) as typeof list;
    const at = performance.now();
    const names = new Set([...objects.keys(), ...fresh.items.map((o) => o.metadata.name)]);
    objects.clear();
    for (const o of fresh.items) objects.set(o.metadata.name, o);
    resourceVersion = fresh.metadata.resourceVersion;
    for (const name of names) settle(name, at);
  };
  const follow = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      const events = await client.stream({
        path: VMS,
        query: { watch: 1, resourceVersion, timeoutSeconds: 3600, allowWatchBookmarks: true },
        signal: abort.signal,
      });
      for await (const raw of events) {
        const at = performance.now();
        const ev = raw as { type: string; object: WatchedVm & { code?: number } };
        if (ev.type === 'ERROR') {
          if (ev.object.code !== 410) throw new Error(`watch error: ${JSON.stringify(ev.object)}`);
          await relist();
          break;
        }
        resourceVersion = ev.object.metadata.resourceVersion ?? resourceVersion;
        if (ev.type === 'BOOKMARK') continue;
        const name = ev.object.metadata.name;
        if (ev.type === 'DELETED') objects.delete(name);
        else objects.set(name, ev.object);
        settle(name, at);
      }
    }
  };
  follow().catch((err: unknown) => {
    if (!abort.signal.aborted) fail(err instanceof Error ? err : new Error(String(err)));
  });

  return {
    until(name, what, holds, timeoutMs = 60_000) {
      if (failure) return Promise.reject(failure);
      if (holds(objects.get(name))) return Promise.resolve(performance.now());
      return new Promise<number>((resolve, reject) => {
        const w: Waiter = {
          holds,
          resolve,
          reject,
          timer: setTimeout(() => {
            waiters.get(name)?.delete(w);
            const last = objects.get(name);
            reject(
              new Error(
                `VirtualMachine ${name}: ${what} did not happen within ${timeoutMs / 1000} s; ` +
                  `last conditions: ${JSON.stringify(last?.status?.conditions ?? 'none')}`,
              ),
            );
          }, timeoutMs),
        };
        if (!waiters.has(name)) waiters.set(name, new Set());
        waiters.get(name)!.add(w);
      });
    },
    latest: (name) => objects.get(name),
    stop: () => abort.abort(),
  };
}

export const readyTrue = (vm: WatchedVm | undefined): boolean =>
  vm?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

export const gone = (vm: WatchedVm | undefined): boolean => vm === undefined;

export interface Spread {
  n: number;
  p50: number;
  p90: number;
  max: number;
}

/** Nearest-rank percentiles (no interpolation: every figure is one that was measured). */
export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error('spread of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
  return { n: sorted.length, p50: rank(50), p90: rank(90), max: sorted[sorted.length - 1]! };
}

export const ms = (v: number): string => `${v.toFixed(1)} ms`;

/** Sums of a Prometheus metric's samples whose labels contain `labelPart`. */
export function metricSum(text: string, name: string, labelPart = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (labelPart && !line.includes(labelPart)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

export async function agentMetrics(healthPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${healthPort}/metrics`);
  if (!res.ok) throw new Error(`agent /metrics answered ${res.status}`);
  return res.text();
}

/** nproc, memory, kernel, CPU model and load average, for the figures' record. */
export function machine(): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const gib = (totalmem() / 2 ** 30).toFixed(0);
  return `${cpus().length} x ${model}, ${gib} GiB, Linux ${kernel}, Node ${process.version}, load ${load}`;
}
