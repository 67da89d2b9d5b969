// npm run bench:parallel -- [--vms 20,100] [--rounds 1] [--grace 1] [--no-ansible]
//
// N VMs at once on the system libvirtd (qemu:///system, QEMU TCG), three ways to the same
// end, N running domains built from the same domain XML:
// - raw: in this process, through the binding, every domain defined and started in
//   parallel (defineDomainXML + create), with the XML the VM controller builds for the spec
//   below: the floor any tool driving libvirt over its socket has;
// - operator: N VirtualMachines POSTed in parallel to a real API server, the compiled agent
//   in its own process on the same libvirtd; until the watch shows every one Ready;
// - Ansible: community.libvirt's `virt` module (Debian's `ansible`), one playbook that
//   defines then starts the N domains from the same XML files, `ansible-playbook -c local`.
// Then the deletion: all N VirtualMachines DELETEd at once, with a grace period of `--grace`
// seconds, on guests that ignore ACPI (no boot device: SeaBIOS waits forever and nothing
// answers the power button), until the watch shows every one gone and libvirt has none left.
// Prints a table and, last, one JSON line.
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import type { VirtualMachine } from '../src/api/generated/types.js';
import { desiredDomain, machineInputs } from '../src/controllers/virtual-machine/desired.js';
import { startControlPlane, type ControlPlane } from '../src/commands/local/control-plane.js';
import { SYSTEM_URI, ensureLibvirtd } from '../src/commands/local/libvirtd.js';
import { Connect, type Domain } from '../src/libvirt/index.js';
import { buildDomainXML } from '../src/libvirt/xml/domain.js';
import { createKubeClient, type KubeClient } from '../src/runtime/index.js';
import { rssMB, startAgentProcess, stopAgentProcess, waitAgentReady } from './agents.js';
import {
  agentMetrics,
  gone,
  machine,
  metricSum,
  readyTrue,
  spread,
  watchVms,
  type VmWatch,
  type WatchedVm,
} from './vm-watch.js';

const run = promisify(execFile);
const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '1' },
    grace: { type: 'string', default: '1' },
    'no-ansible': { type: 'boolean', default: false },
  },
  strict: true,
});
const COUNTS = values.vms.split(',').map(Number);
const ROUNDS = Number(values.rounds);
const GRACE = Number(values.grace);
const RUN = randomBytes(3).toString('hex');
const NODE = `bench-${RUN}`;
const VMS = '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines';
const SPEC = {
  nodeName: NODE,
  domainType: 'qemu',
  vcpus: 1,
  memory: '64Mi',
  terminationGracePeriodSeconds: GRACE,
};

/** The XML the VM controller defines for a VM of SPEC (no volumes, networks or cloud-init). */
function controllerXML(name: string): string {
  return controllerDomain(name).xml;
}

/** That XML and the domain name in it (the controller names domains `<namespace>_<name>`). */
function controllerDomain(name: string): { xml: string; domainName: string } {
  const vm = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name, namespace: 'default', uid: randomUUID(), generation: 1 },
    spec: SPEC,
  } as VirtualMachine;
  const refs = { volume: () => undefined, network: () => undefined };
  const resolved = machineInputs(vm, refs, NODE, '/nonexistent');
  if (!('inputs' in resolved)) throw new Error(`spec refused: ${resolved.problem.message}`);
  const doc = desiredDomain(vm, resolved.inputs);
  return { xml: buildDomainXML(doc), domainName: doc.name };
}

/** What removing domains in parallel cost: the whole, and each destroy and undefine call. */
interface RemovalTimes {
  totalMs: number;
  destroyMs: number[];
  undefineMs: number[];
}

async function removeDomains(conn: Connect, domains: Domain[]): Promise<RemovalTimes> {
  const destroyMs: number[] = [];
  const undefineMs: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    domains.map(async (d) => {
      const a = performance.now();
      await d.destroy().catch(() => undefined);
      const b = performance.now();
      await d.undefine().catch(() => undefined);
      destroyMs.push(b - a);
      undefineMs.push(performance.now() - b);
    }),
  );
  return { totalMs: performance.now() - t0, destroyMs, undefineMs };
}

interface RawRun {
  ms: number;
  /** The same N domains destroyed and undefined in parallel afterwards: the deletion's floor. */
  removal: RemovalTimes;
}

async function rawParallel(conn: Connect, n: number, tag: string): Promise<RawRun> {
  const xmls = Array.from({ length: n }, (_, i) => controllerXML(`par-${RUN}-${tag}-raw-${i}`));
  const t0 = performance.now();
  const domains = await Promise.all(
    xmls.map(async (xml) => {
      const d = await conn.defineDomainXML(xml);
      await d.create();
      return d;
    }),
  );
  const elapsed = performance.now() - t0;
  return { ms: elapsed, removal: await removeDomains(conn, domains) };
}

async function ansibleParallel(conn: Connect, n: number, tag: string): Promise<number> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lvo-bench-ansible-'));
  try {
    const vms = Array.from({ length: n }, (_, i) => controllerDomain(`par-${RUN}-${tag}-ans-${i}`));
    // Ansible addresses domains by their libvirt name, the one inside the XML.
    const names = vms.map((v) => v.domainName);
    for (const v of vms) await writeFile(path.join(dir, `${v.domainName}.xml`), v.xml);
    // JSON is YAML: the playbook is data, not a template.
    const playbook = [
      {
        hosts: 'localhost',
        gather_facts: false,
        vars: { names },
        tasks: [
          {
            name: 'define',
            'community.libvirt.virt': {
              command: 'define',
              uri: SYSTEM_URI,
              xml: `{{ lookup('file', '${dir}/' + item + '.xml') }}`,
            },
            loop: '{{ names }}',
          },
          {
            name: 'start',
            'community.libvirt.virt': { name: '{{ item }}', state: 'running', uri: SYSTEM_URI },
            loop: '{{ names }}',
          },
        ],
      },
    ];
    const file = path.join(dir, 'playbook.yml');
    await writeFile(file, JSON.stringify(playbook));
    const t0 = performance.now();
    await run('ansible-playbook', ['-i', 'localhost,', '-c', 'local', file], {
      env: { ...process.env, ANSIBLE_NOCOLOR: '1', ANSIBLE_HOST_KEY_CHECKING: 'False' },
      maxBuffer: 64 * 1024 * 1024,
    }).catch(async (err: Error & { stdout?: string }) => {
      // Whatever it managed to define must not stay behind on the shared daemon.
      const found = await Promise.all(
        names.map((name) => conn.lookupDomainByName(name).catch(() => undefined)),
      );
      await removeDomains(
        conn,
        found.filter((d): d is Domain => d !== undefined),
      );
      throw new Error(`ansible-playbook failed: ${err.message}\n${err.stdout ?? ''}`);
    });
    const elapsed = performance.now() - t0;
    const domains = await Promise.all(names.map((name) => conn.lookupDomainByName(name)));
    for (const d of domains) {
      if (!(await d.isActive())) throw new Error(`ansible left ${d.getName()} not running`);
    }
    await removeDomains(conn, domains);
    return elapsed;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface OperatorRun {
  readyMs: number;
  deleteMs: number;
  writesPerVm: number;
  passesPerVm: number;
  timeline: DeleteTimeline;
}

async function apiWrites(cp: ControlPlane): Promise<number> {
  const text = await cp.apiServerMetrics();
  let n = 0;
  for (const line of text.split('\n')) {
    if (
      !line.startsWith('apiserver_request_total{') ||
      !line.includes('resource="virtualmachines"')
    )
      continue;
    if (/verb="(PUT|PATCH|APPLY)"/.test(line)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

async function operatorParallel(
  cp: ControlPlane,
  client: KubeClient,
  watch: VmWatch,
  healthPort: number,
  conn: Connect,
  n: number,
  tag: string,
): Promise<OperatorRun> {
  const names = Array.from({ length: n }, (_, i) => `par-${RUN}-${tag}-op-${i}`);
  const passes0 = metricSum(
    await agentMetrics(healthPort),
    'controller_runtime_reconcile_time_seconds_count',
    'VirtualMachine',
  );
  const writes0 = await apiWrites(cp).catch(() => NaN);
  const t0 = performance.now();
  await Promise.all(
    names.map((name) =>
      client.request({
        method: 'POST',
        path: VMS,
        body: {
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'VirtualMachine',
          metadata: { name },
          spec: SPEC,
        },
      }),
    ),
  );
  const ready = await Promise.all(
    names.map((name) => watch.until(name, 'Ready', readyTrue, 300_000)),
  );
  const readyMs = Math.max(...ready) - t0;
  const passes =
    metricSum(
      await agentMetrics(healthPort),
      'controller_runtime_reconcile_time_seconds_count',
      'VirtualMachine',
    ) - passes0;
  const writes = (await apiWrites(cp).catch(() => NaN)) - writes0;

  // The deletion's timeline, per VM: libvirt's lifecycle events on a connection of this
  // process say when each domain stopped and was undefined; the watch when the agent's
  // ShutdownRequested status arrived and when the object went.
  const domainNames = new Set(names.map((name) => `default_${name}`));
  const libvirtAt = { stopped: new Map<string, number>(), undefined: new Map<string, number>() };
  const callback = await conn.domainEventLifecycleRegister((e) => {
    const name = e.domain.getName();
    if (!domainNames.has(name)) return;
    if (e.eventName === 'stopped' || e.eventName === 'undefined') {
      libvirtAt[e.eventName].set(name, performance.now());
    }
  });
  const t1 = performance.now();
  try {
    const deleteAnswered = await Promise.all(
      names.map((name) =>
        client
          .request({ method: 'DELETE', path: `${VMS}/${name}` })
          .then(() => performance.now() - t1),
      ),
    );
    const [requested, deleted] = await Promise.all([
      Promise.all(
        names.map((name) => watch.until(name, 'ShutdownRequested', shutdownSeen, 300_000)),
      ),
      Promise.all(names.map((name) => watch.until(name, 'deletion', gone, 300_000))),
    ]);
    const deleteMs = Math.max(...deleted) - t1;
    const since = (at: Map<string, number>) =>
      names.map((name) => (at.get(`default_${name}`) ?? NaN) - t1);
    const timeline: DeleteTimeline = {
      deleteAnswered,
      shutdownRequested: requested.map((at) => at - t1),
      stopped: since(libvirtAt.stopped),
      undefined: since(libvirtAt.undefined),
      gone: deleted.map((at) => at - t1),
    };
    const left = (await conn.listAllDomains()).filter((d) => domainNames.has(d.getName()));
    if (left.length > 0) throw new Error(`${left.length} domains left after deletion`);
    return { readyMs, deleteMs, writesPerVm: writes / n, passesPerVm: passes / n, timeline };
  } finally {
    await conn.domainEventDeregister(callback).catch(() => undefined);
  }
}

/** A deleted VM's ShutdownRequested condition, or its deletion if that came first. */
const shutdownSeen = (vm: WatchedVm | undefined): boolean =>
  vm === undefined ||
  (vm.status?.conditions?.some((c) => c.type === 'ShutdownRequested' && c.status === 'True') ??
    false);

/** ms since the DELETEs were sent, per VM, of each step of the deletion. */
interface DeleteTimeline {
  deleteAnswered: number[];
  shutdownRequested: number[];
  stopped: number[];
  undefined: number[];
  gone: number[];
}

/** One line per step: first, median and last VM, in seconds since the DELETEs were sent. */
function timelineRows(t: DeleteTimeline): string[] {
  const s = (v: number) => (Number.isFinite(v) ? `${(v / 1000).toFixed(2)} s` : '–');
  const steps: Array<[string, number[]]> = [
    ['DELETE answered', t.deleteAnswered],
    ['ShutdownRequested seen (watch)', t.shutdownRequested],
    ['domain stopped (libvirt event)', t.stopped],
    ['domain undefined (libvirt event)', t.undefined],
    ['object gone (watch)', t.gone],
  ];
  return steps.map(([what, values]) => {
    const known = values.filter(Number.isFinite);
    const sp = known.length > 0 ? spread(known) : undefined;
    const first = known.length > 0 ? Math.min(...known) : NaN;
    return `| ${what} | ${s(first)} | ${s(sp?.p50 ?? NaN)} | ${s(sp?.max ?? NaN)} | ${known.length}/${values.length} |`;
  });
}

/**
 * A connection of its own per phase: the system libvirtd is shared, and another user may
 * restart it between phases.
 */
async function withConn<T>(fn: (conn: Connect) => Promise<T>): Promise<T> {
  const conn = await Connect.open(SYSTEM_URI);
  try {
    return await fn(conn);
  } finally {
    await conn.close().catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const daemon = await ensureLibvirtd();
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const agent = await startAgentProcess(cp, client, NODE, { libvirtUri: daemon.uri });
  const results: Array<{
    vms: number;
    round: number;
    rawMs: number;
    rawRemoval: RemovalTimes;
    operator: OperatorRun;
    ansibleMs: number | null;
  }> = [];
  let rss = 0;
  try {
    await waitAgentReady(agent);
    const watch = await watchVms(client);
    try {
      // Warm-up: QEMU's binary and firmware in the page cache, the agent's code paths.
      await withConn((c) => rawParallel(c, 2, 'warm'));
      await withConn((c) => operatorParallel(cp, client, watch, agent.healthPort, c, 2, 'warm'));
      for (const n of COUNTS) {
        for (let round = 1; round <= ROUNDS; round++) {
          const tag = `${n}-${round}`;
          console.error(`${n} VMs, round ${round}: raw`);
          const raw = await withConn((c) => rawParallel(c, n, tag));
          const rawMs = raw.ms;
          console.error(`${n} VMs, round ${round}: operator`);
          const operator = await withConn((c) =>
            operatorParallel(cp, client, watch, agent.healthPort, c, n, tag),
          );
          console.error(
            `${n} VMs, round ${round}: raw ${(rawMs / 1000).toFixed(2)} s, operator ${(operator.readyMs / 1000).toFixed(2)} s, ` +
              `delete ${(operator.deleteMs / 1000).toFixed(2)} s; ansible`,
          );
          const ansibleMs = values['no-ansible']
            ? null
            : await withConn((c) => ansibleParallel(c, n, tag));
          results.push({ vms: n, round, rawMs, rawRemoval: raw.removal, operator, ansibleMs });
          rss = Math.max(rss, rssMB(agent.child.pid!));
          console.error(
            `${n} VMs, round ${round}: raw ${(rawMs / 1000).toFixed(2)} s, operator ${(operator.readyMs / 1000).toFixed(2)} s ` +
              `(${(operator.readyMs / rawMs).toFixed(2)}x), ansible ${ansibleMs === null ? '-' : (ansibleMs / 1000).toFixed(2) + ' s'}, ` +
              `delete ${(operator.deleteMs / 1000).toFixed(2)} s`,
          );
        }
      }
    } finally {
      watch.stop();
    }
  } finally {
    await stopAgentProcess(agent);
    await cp.stop();
    await daemon.stop();
  }

  console.log(`N parallel creates on qemu:///system — ${machine()}`);
  console.log(
    '| VMs | round | raw (binding) | operator → all Ready | operator / raw | Ansible | Ansible / operator | delete (grace ' +
      `${GRACE} s) | VM writes/VM | passes/VM |`,
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const s = (v: number) => `${(v / 1000).toFixed(2)} s`;
  for (const r of results) {
    console.log(
      `| ${r.vms} | ${r.round} | ${s(r.rawMs)} | ${s(r.operator.readyMs)} | ${(r.operator.readyMs / r.rawMs).toFixed(2)}x | ` +
        `${r.ansibleMs === null ? '-' : s(r.ansibleMs)} | ${r.ansibleMs === null ? '-' : (r.ansibleMs / r.operator.readyMs).toFixed(2) + 'x'} | ` +
        `${s(r.operator.deleteMs)} | ${r.operator.writesPerVm.toFixed(2)} | ${r.operator.passesPerVm.toFixed(2)} |`,
    );
  }
  for (const r of results) {
    const rm = r.rawRemoval;
    const p = (v: number[]) => {
      const sp = spread(v);
      return `median ${(sp.p50 / 1000).toFixed(2)} s, max ${(sp.max / 1000).toFixed(2)} s`;
    };
    console.log(
      `\n${r.vms} VMs, round ${r.round}: raw removal (the benchmark's own destroy + undefine of ` +
        `the raw phase's domains, in parallel on one connection): ${(rm.totalMs / 1000).toFixed(2)} s; ` +
        `destroy calls ${p(rm.destroyMs)}; undefine calls ${p(rm.undefineMs)}`,
    );
    console.log(`Deletion timeline (s since the DELETEs were sent), grace ${GRACE} s:`);
    console.log('| step | first VM | median | last VM | seen |');
    console.log('|---|---|---|---|---|');
    for (const row of timelineRows(r.operator.timeline)) console.log(row);
  }
  console.log(
    JSON.stringify({
      grace: GRACE,
      agentRssMB: Math.round(rss),
      results: results.map((r) => ({
        vms: r.vms,
        round: r.round,
        rawSeconds: Number((r.rawMs / 1000).toFixed(2)),
        operatorReadySeconds: Number((r.operator.readyMs / 1000).toFixed(2)),
        operatorOverRaw: Number((r.operator.readyMs / r.rawMs).toFixed(2)),
        ansibleSeconds: r.ansibleMs === null ? null : Number((r.ansibleMs / 1000).toFixed(2)),
        ansibleOverOperator:
          r.ansibleMs === null ? null : Number((r.ansibleMs / r.operator.readyMs).toFixed(2)),
        deleteSeconds: Number((r.operator.deleteMs / 1000).toFixed(2)),
        rawRemovalSeconds: Number((r.rawRemoval.totalMs / 1000).toFixed(2)),
        deleteTimelineSeconds: Object.fromEntries(
          Object.entries(r.operator.timeline).map(([step, v]) => [
            step,
            (v as number[]).map((ms) =>
              Number.isFinite(ms) ? Number((ms / 1000).toFixed(2)) : null,
            ),
          ]),
        ),
        vmWritesPerVm: Number(r.operator.writesPerVm.toFixed(2)),
        passesPerVm: Number(r.operator.passesPerVm.toFixed(2)),
      })),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
