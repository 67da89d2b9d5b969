// npm run bench:api-costs -- [--objects 1000] [--concurrency 32] [--rounds 2]
//
// What each API write of a new VirtualMachine costs the API server and etcd, in CPU time, on
// a bare control plane (no agent): the create, the agent's finalizer patch (the JSON patch
// src/runtime/finalizer.ts sends) and its status apply (server-side apply on /status, as the
// status writer sends it). Each write kind is measured three ways: as shipped, with one watch
// on the kind open (an agent always has one), and against a copy of the CRD without its CEL
// rules. The sum says how much of a 1,000-VM burst's CPU the API server needs whatever the
// agent does (bench/README.md, "Convergence of one agent"). Prints a table and one JSON line.
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { startControlPlane } from '../src/commands/local/control-plane.js';
import { FIELD_MANAGER } from '../src/agent/kube-writes.js';
import { HOST_FINALIZER } from '../src/controllers/context.js';
import { addFinalizerPatch } from '../src/runtime/finalizer.js';
import { CONTENT_TYPE, createKubeClient, type KubeClient } from '../src/runtime/index.js';
import { nodeFieldManager } from '../src/runtime/status-writer.js';
import { cpuSeconds, pidsMentioning } from './agents.js';

const { values } = parseArgs({
  options: {
    objects: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '2' },
  },
});
/** A positive whole number from the command line, or exit naming the option. */
function count(option: 'objects' | 'concurrency' | 'rounds'): number {
  const n = Number(values[option]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(
      `bench:api-costs: --${option} must be a positive whole number, got '${values[option]}'`,
    );
    process.exit(2);
  }
  return n;
}
const objects = count('objects');
const concurrency = count('concurrency');
const rounds = count('rounds');
const NODE = 'bench-node';
const VERSION = 'v1alpha1';
/** The CRD's copy without x-kubernetes-validations, in a group of its own. */
const PLAIN_GROUP = 'plain.bench.virt.dev';

type Variant = 'as shipped' | 'one watch open' | 'no CEL rules';
type Write = 'create' | 'finalizer patch' | 'status apply';

interface Row {
  round: number;
  variant: Variant;
  write: Write;
  seconds: number;
  /** CPU milliseconds per object. */
  apiServerMs: number;
  etcdMs: number;
}

/** The status an agent applies for a running machine of the benchmark's shape. */
function runningStatus(name: string, i: number, now: string) {
  return {
    phase: 'Running',
    uuid: `6f1c8a52-1111-4222-8333-${String(i).padStart(12, '0')}`,
    domainName: `default_${name}`,
    nodeName: NODE,
    restartCount: 0,
    observedGeneration: 1,
    state: { state: 'running', reason: 'booted' },
    vcpus: { current: 1, max: 1 },
    memory: { target: '64Mi' },
    startedAt: now,
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'Running',
        message: 'the domain is running',
        lastTransitionTime: now,
        observedGeneration: 1,
      },
    ],
  };
}

async function inParallel(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** Writes the CRD for VirtualMachines once more, without CEL rules, into `dir`. */
async function plainCrd(dir: string): Promise<void> {
  const crd = parseYaml(
    await readFile(new URL('../crds/virtualmachine.yaml', import.meta.url), 'utf8'),
  );
  const strip = (node: unknown): void => {
    if (!node || typeof node !== 'object') return;
    delete (node as Record<string, unknown>)['x-kubernetes-validations'];
    for (const child of Object.values(node)) strip(child);
  };
  strip(crd);
  crd.metadata.name = `virtualmachines.${PLAIN_GROUP}`;
  crd.spec.group = PLAIN_GROUP;
  await writeFile(join(dir, 'virtualmachine.yaml'), stringifyYaml(crd));
}

/** Keeps one watch on the group's VirtualMachines open and read, as an agent's informer does. */
async function openWatch(client: KubeClient, group: string, signal: AbortSignal): Promise<void> {
  const events = await client.stream({
    path: `/apis/${group}/${VERSION}/virtualmachines`,
    query: { watch: 1, allowWatchBookmarks: true },
    timeoutMs: 3_600_000,
    signal,
  });
  void (async () => {
    try {
      for await (const _ of events) {
        /* read and dropped: the cost measured is the server's */
      }
    } catch {
      /* aborted at the end */
    }
  })();
}

async function main(): Promise<void> {
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const dir = await mkdtemp(join(tmpdir(), 'api-costs-'));
  const rows: Row[] = [];
  const manager = nodeFieldManager(FIELD_MANAGER, NODE);
  try {
    await plainCrd(dir);
    await cp.installCRDs(dir);
    const plane = pidsMentioning(cp.dir);
    const cpuOf = (command: string) =>
      plane.filter((p) => p.command === command).reduce((s, p) => s + cpuSeconds(p.pid), 0);

    for (let round = 1; round <= rounds; round++) {
      for (const variant of ['as shipped', 'one watch open', 'no CEL rules'] as Variant[]) {
        const group = variant === 'no CEL rules' ? PLAIN_GROUP : 'virt.dev';
        const base = `/apis/${group}/${VERSION}/namespaces/default/virtualmachines`;
        const prefix = `r${round}-${variant.toLowerCase().replace(/ /g, '-')}`;
        const watching = new AbortController();
        if (variant === 'one watch open') await openWatch(client, group, watching.signal);
        const measure = async (write: Write, fn: (i: number, name: string) => Promise<unknown>) => {
          const [api0, etcd0, t0] = [cpuOf('kube-apiserver'), cpuOf('etcd'), performance.now()];
          await inParallel(objects, (i) => fn(i, `${prefix}-${i}`));
          const seconds = (performance.now() - t0) / 1000;
          rows.push({
            round,
            variant,
            write,
            seconds: Number(seconds.toFixed(2)),
            apiServerMs: Number((((cpuOf('kube-apiserver') - api0) * 1000) / objects).toFixed(2)),
            etcdMs: Number((((cpuOf('etcd') - etcd0) * 1000) / objects).toFixed(2)),
          });
        };
        const now = new Date().toISOString();
        await measure('create', (_, name) =>
          client.request({
            method: 'POST',
            path: base,
            body: {
              apiVersion: `${group}/${VERSION}`,
              kind: 'VirtualMachine',
              metadata: { name },
              spec: { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '64Mi' },
            },
          }),
        );
        await measure('finalizer patch', (_, name) =>
          client.request({
            method: 'PATCH',
            path: `${base}/${name}`,
            contentType: CONTENT_TYPE.jsonPatch,
            body: addFinalizerPatch({ metadata: { name } }, HOST_FINALIZER),
          }),
        );
        await measure('status apply', (i, name) =>
          client.request({
            method: 'PATCH',
            path: `${base}/${name}/status`,
            query: { fieldManager: manager, force: true },
            contentType: CONTENT_TYPE.apply,
            body: {
              apiVersion: `${group}/${VERSION}`,
              kind: 'VirtualMachine',
              metadata: { name, namespace: 'default' },
              status: runningStatus(name, i, now),
            },
          }),
        );
        watching.abort();
      }
    }
  } finally {
    await cp.stop();
    await rm(dir, { recursive: true, force: true });
  }

  const load = loadavg()[0]!.toFixed(1);
  console.log(
    `API server CPU per write, ${objects} objects, ${concurrency} in parallel ` +
      `(${cpus().length} x ${cpus()[0]?.model.trim()}, load ${load} at the end)`,
  );
  console.log(
    `${'round'.padEnd(6)}${'variant'.padEnd(16)}${'write'.padEnd(17)}${'wall s'.padStart(8)}` +
      `${'apiserver ms/obj'.padStart(18)}${'etcd ms/obj'.padStart(13)}`,
  );
  for (const r of rows) {
    console.log(
      `${String(r.round).padEnd(6)}${r.variant.padEnd(16)}${r.write.padEnd(17)}` +
        `${r.seconds.toFixed(2).padStart(8)}${r.apiServerMs.toFixed(2).padStart(18)}` +
        `${r.etcdMs.toFixed(2).padStart(13)}`,
    );
  }
  // Per object, the last round (caches warm), with a watch open: what a burst with an agent pays.
  const last = rows.filter((r) => r.round === rounds && r.variant === 'one watch open');
  const perVm = (writes: Write[]) =>
    last.filter((r) => writes.includes(r.write)).reduce((s, r) => s + r.apiServerMs + r.etcdMs, 0);
  const twoWrites = perVm(['create', 'finalizer patch', 'status apply']);
  const oneWrite = perVm(['create', 'status apply']);
  const cores = cpus().length;
  console.log(
    `\nAPI server + etcd CPU per VM (last round, one watch open): create + finalizer + status ` +
      `${twoWrites.toFixed(2)} ms, create + status only ${oneWrite.toFixed(2)} ms; for 1,000 VMs on ` +
      `${cores} cores at least ${((twoWrites * 1000) / 1000 / cores).toFixed(2)} s and ` +
      `${((oneWrite * 1000) / 1000 / cores).toFixed(2)} s of wall time`,
  );
  console.log(
    JSON.stringify({
      objects,
      concurrency,
      rows,
      perVmMs: { createFinalizerStatus: twoWrites, createStatus: oneWrite },
      machine: `${cores} x ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB`,
      date: new Date().toISOString(),
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
