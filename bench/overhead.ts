// npm run bench:overhead -- [--iterations N] [--uri qemu:///system]
//
// What the operator adds over the libvirt calls it makes, on libvirt's test driver (or, with
// --uri qemu:///system, on the system libvirtd: a QEMU domain with no boot device, so QEMU
// runs SeaBIOS and the cost of starting the process is in both figures). Each
// iteration does, interleaved (alternating which goes first):
// - raw: in this process, through the binding, the calls the VM controller makes to bring a
//   new VM to Running (defineXML of the same XML, create) and then to change its memory
//   (setMemoryFlags LIVE|CONFIG, which the test driver refuses as "mutually exclusive", then
//   LIVE and CONFIG apart, as act.ts does); timed bare and with the controller's own reads
//   around them (observeDomain before and after, as one reconcile pass makes them);
// - operator: POST the VirtualMachine to the real API server and watch until Ready=True and
//   phase Running; PATCH spec.memory and watch until status.memory.target shows it. The agent
//   is the compiled CLI in its own process (on its own test:///default, or the same libvirtd).
// The agent's /metrics before and after each operator step tell where its share goes (passes,
// time in reconcile, time keys waited in the queue). Prints a table and, last, one JSON line.
import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { VirtualMachine } from '../src/api/generated/types.js';
import { desiredDomain, machineInputs } from '../src/controllers/virtual-machine/desired.js';
import { observeDomain } from '../src/controllers/virtual-machine/observe.js';
import { startControlPlane, type ControlPlane } from '../src/commands/local/control-plane.js';
import { ensureLibvirtd } from '../src/commands/local/libvirtd.js';
import { Connect, ErrorCode, isLibvirtError, type Domain } from '../src/libvirt/index.js';
import { buildDomainXML } from '../src/libvirt/xml/domain.js';
import { CONTENT_TYPE, createKubeClient, type KubeClient } from '../src/runtime/index.js';
import { isWriteLine, startAgentProcess, stopAgentProcess, waitAgentReady } from './agents.js';
import {
  agentMetrics,
  gone,
  machine,
  metricSum,
  ms,
  readyTrue,
  spread,
  watchVms,
  type VmWatch,
  type WatchedVm,
} from './vm-watch.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '30' },
    uri: { type: 'string', default: 'test:///default' },
  },
  strict: true,
});
const iterations = Number(values.iterations);
const WARMUP = 3;
const RUN = randomBytes(3).toString('hex');
const NODE = `bench-${RUN}`;
const VMS = '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines';
const URI = values.uri;
const SPEC = {
  nodeName: NODE,
  domainType: 'qemu',
  vcpus: 1,
  memory: '64Mi',
  maxMemory: '128Mi',
  // No guest answers ACPI under SeaBIOS: deletion destroys at once instead of waiting 60 s.
  ...(URI === 'test:///default' ? {} : { terminationGracePeriodSeconds: 0 }),
};
const NEW_MEMORY = '96Mi';
const NEW_MEMORY_KIB = 96 * 1024;

interface Timing {
  /** The mutating calls alone. */
  bare: number;
  /** With the controller's reads before and after, as one pass makes them. */
  withReads: number;
}

/** The VirtualMachine as the agent's cache would hold it, for the controller's pure parts. */
function vmObject(name: string): VirtualMachine {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name, namespace: 'default', uid: randomUUID(), generation: 1 },
    spec: SPEC,
  } as VirtualMachine;
}

/** The XML the VM controller defines for `vm` (no volumes, networks or cloud-init). */
function controllerXML(vm: VirtualMachine): string {
  const refs = { volume: () => undefined, network: () => undefined };
  const resolved = machineInputs(vm, refs, NODE, '/nonexistent');
  if (!('inputs' in resolved)) throw new Error(`spec refused: ${resolved.problem.message}`);
  return buildDomainXML(desiredDomain(vm, resolved.inputs));
}

/** act.ts's setMemory step on a driver that takes LIVE and CONFIG one at a time. */
async function setMemoryBoth(domain: Domain, kib: number): Promise<void> {
  try {
    await domain.setMemory(kib, { live: true, config: true });
  } catch (err) {
    if (!isLibvirtError(err) || err.code !== ErrorCode.VIR_ERR_INVALID_ARG) throw err;
    await domain.setMemory(kib, { live: true, config: false });
    await domain.setMemory(kib, { live: false, config: true });
  }
}

async function rawIteration(conn: Connect, name: string): Promise<[Timing, Timing]> {
  const vm = vmObject(name);
  const xml = controllerXML(vm);
  const kib = NEW_MEMORY_KIB;
  const bareStart = async () => {
    const t0 = performance.now();
    const domain = await conn.defineDomainXML(xml);
    await domain.create();
    return { domain, ms: performance.now() - t0 };
  };
  const time = async (fn: () => Promise<unknown>) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };

  const a = await bareStart();
  const bareMemory = await time(() => setMemoryBoth(a.domain, kib));
  await teardown(a.domain);

  let b: Domain | undefined;
  const startWithReads = await time(async () => {
    await observeDomain(conn, vm);
    b = (await bareStart()).domain;
    await observeDomain(conn, vm);
  });
  const memoryWithReads = await time(async () => {
    await observeDomain(conn, vm);
    await setMemoryBoth(b!, kib);
    await observeDomain(conn, vm);
  });
  await teardown(b!);
  return [
    { bare: a.ms, withReads: startWithReads },
    { bare: bareMemory, withReads: memoryWithReads },
  ];
}

async function teardown(domain: Domain): Promise<void> {
  await domain.destroy();
  await domain.undefine();
}

interface AgentShare {
  passes: number;
  reconcileMs: number;
  queueMs: number;
  statusWrites: number;
  /** Write requests to virtualmachines (any subresource, ours included), and their server time. */
  apiWrites: number;
  apiWriteMs: number;
  /** Requests to virtualmachines answered 409 Conflict (a write from a stale cache). */
  conflicts: number;
}

/** apiserver_request_duration_seconds `_sum` or `_count` over writes to virtualmachines. */
function vmWriteDurations(text: string, suffix: '_sum' | '_count'): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`apiserver_request_duration_seconds${suffix}{`)) continue;
    if (!line.includes('resource="virtualmachines"')) continue;
    if (!isWriteLine(line)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

function conflictCount(text: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{') || !line.includes('code="409"')) continue;
    if (line.includes('resource="virtualmachines"'))
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function counters(cp: ControlPlane, healthPort: number): Promise<AgentShare> {
  const [text, server] = await Promise.all([agentMetrics(healthPort), cp.apiServerMetrics()]);
  const vm = 'VirtualMachine';
  return {
    passes: metricSum(text, 'controller_runtime_reconcile_time_seconds_count', vm),
    reconcileMs: metricSum(text, 'controller_runtime_reconcile_time_seconds_sum', vm) * 1000,
    queueMs: metricSum(text, 'workqueue_queue_duration_seconds_sum', vm) * 1000,
    statusWrites: metricSum(text, 'runtime_status_writes_total', 'result="written"'),
    apiWrites: vmWriteDurations(server, '_count'),
    apiWriteMs: vmWriteDurations(server, '_sum') * 1000,
    conflicts: conflictCount(server),
  };
}

const minus = (a: AgentShare, b: AgentShare): AgentShare => ({
  passes: a.passes - b.passes,
  reconcileMs: a.reconcileMs - b.reconcileMs,
  queueMs: a.queueMs - b.queueMs,
  statusWrites: a.statusWrites - b.statusWrites,
  apiWrites: a.apiWrites - b.apiWrites,
  apiWriteMs: a.apiWriteMs - b.apiWriteMs,
  conflicts: a.conflicts - b.conflicts,
});

/** Lets the passes an operator step causes after its result is visible finish first. */
const settle = () => new Promise((r) => setTimeout(r, 150));

async function operatorIteration(
  cp: ControlPlane,
  client: KubeClient,
  watch: VmWatch,
  healthPort: number,
  name: string,
): Promise<{ start: number; memory: number; shares: [AgentShare, AgentShare] }> {
  const c0 = await counters(cp, healthPort);
  const t0 = performance.now();
  await client.request({
    method: 'POST',
    path: VMS,
    body: {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name },
      spec: SPEC,
    },
  });
  const running = (vm: WatchedVm | undefined) => readyTrue(vm) && vm?.status?.phase === 'Running';
  const t1 = await watch.until(name, 'Ready=True and phase Running', running);
  await settle();
  const c1 = await counters(cp, healthPort);

  const t2 = performance.now();
  await client.request({
    method: 'PATCH',
    path: `${VMS}/${name}`,
    contentType: CONTENT_TYPE.mergePatch,
    body: { spec: { memory: NEW_MEMORY } },
  });
  const t3 = await watch.until(
    name,
    `status.memory.target ${NEW_MEMORY}`,
    (vm) => vm?.status?.memory?.target === NEW_MEMORY,
  );
  await settle();
  const c2 = await counters(cp, healthPort);

  await client.request({ method: 'DELETE', path: `${VMS}/${name}` });
  await watch.until(name, 'deletion', gone);
  return { start: t1 - t0, memory: t3 - t2, shares: [minus(c1, c0), minus(c2, c1)] };
}

async function main(): Promise<void> {
  if (!Number.isInteger(iterations) || iterations < 1) {
    throw new Error(`--iterations must be a positive integer, not '${values.iterations}'`);
  }
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  if (URI !== 'test:///default') await ensureLibvirtd();
  const agent = await startAgentProcess(cp, client, NODE, { libvirtUri: URI });
  const conn = await Connect.open(URI);
  const raw: Array<[Timing, Timing]> = [];
  const op: Array<{ start: number; memory: number; shares: [AgentShare, AgentShare] }> = [];
  try {
    await waitAgentReady(agent);
    const watch = await watchVms(client);
    try {
      for (let i = 0; i < WARMUP + iterations; i++) {
        const name = `ovh-${RUN}-${i}`;
        // Alternate the order, so neither side always runs right after the other's work.
        // The raw domain gets its own name: on a shared libvirtd the operator's would clash.
        const r = i % 2 === 0 ? await rawIteration(conn, `${name}-raw`) : undefined;
        const o = await operatorIteration(cp, client, watch, agent.healthPort, name);
        const r2 = r ?? (await rawIteration(conn, `${name}-raw`));
        if (i < WARMUP) continue;
        raw.push(r2);
        op.push(o);
        console.error(
          `${name}: start raw ${ms(r2[0].bare)} / operator ${ms(o.start)}; ` +
            `memory raw ${ms(r2[1].bare)} / operator ${ms(o.memory)}`,
        );
      }
    } finally {
      watch.stop();
    }
  } finally {
    await conn.close();
    await stopAgentProcess(agent);
    await cp.stop();
  }
  report(raw, op);
}

function report(
  raw: Array<[Timing, Timing]>,
  op: Array<{ start: number; memory: number; shares: [AgentShare, AgentShare] }>,
): void {
  const p50 = (v: number[]) => spread(v).p50;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const figures = (
    [
      ['start', 0],
      ['memory', 1],
    ] as const
  ).map(([step, k]) => {
    const shares = op.map((o) => o.shares[k]);
    return {
      step,
      rawBareP50: p50(raw.map((r) => r[k].bare)),
      rawWithReadsP50: p50(raw.map((r) => r[k].withReads)),
      operatorP50: p50(op.map((o) => o[step])),
      operatorP90: spread(op.map((o) => o[step])).p90,
      overheadP50: p50(op.map((o, i) => o[step] - raw[i]![k].bare)),
      agentPassesMean: mean(shares.map((s) => s.passes)),
      agentReconcileMsMean: mean(shares.map((s) => s.reconcileMs)),
      agentQueueMsMean: mean(shares.map((s) => s.queueMs)),
      statusWritesMean: mean(shares.map((s) => s.statusWrites)),
      apiWritesMean: mean(shares.map((s) => s.apiWrites)),
      apiWriteMsMean: mean(shares.map((s) => s.apiWriteMs)),
      conflictsMean: mean(shares.map((s) => s.conflicts)),
    };
  });
  console.log(`${op.length} interleaved iterations after ${WARMUP} warm-up, ${URI}`);
  const head = [
    '',
    'raw',
    'raw+reads',
    'operator',
    'op p90',
    'overhead',
    'passes',
    'in pass',
    'queued',
  ];
  console.log(head.map((h, i) => (i ? h.padStart(10) : h.padEnd(8))).join(' '));
  for (const f of figures) {
    const cells = [
      f.rawBareP50,
      f.rawWithReadsP50,
      f.operatorP50,
      f.operatorP90,
      f.overheadP50,
    ].map((v) => ms(v).padStart(10));
    const agentCells = [
      f.agentPassesMean.toFixed(1).padStart(10),
      ms(f.agentReconcileMsMean).padStart(10),
      ms(f.agentQueueMsMean).padStart(10),
      f.apiWritesMean.toFixed(1).padStart(10),
      ms(f.apiWriteMsMean).padStart(10),
      f.conflictsMean.toFixed(1).padStart(10),
    ];
    console.log([f.step.padEnd(8), ...cells, ...agentCells].join(' '));
  }
  console.log(
    '(raw, raw+reads, operator, overhead: p50; passes, in pass, queued: agent means; ' +
      'API writes: to virtualmachines incl. the benchmark own, mean count and server time)',
  );
  const round = (v: number) => Number(v.toFixed(2));
  console.log(
    JSON.stringify({
      uri: URI,
      iterations: op.length,
      ...Object.fromEntries(
        figures.map((f) => [
          f.step,
          Object.fromEntries(
            Object.entries(f).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]),
          ),
        ]),
      ),
      machine: machine(),
      date: new Date().toISOString(),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(`bench:overhead: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
