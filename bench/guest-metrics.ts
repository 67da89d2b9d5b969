// Benchmark of the guest metrics scrape (src/agent/guest-metrics.ts): 1,000 running domains
// with the operator's stamp on the in-process test driver, one registry as the agent has it.
// Measures a whole /metrics rendering (prom-client text) from a cold start (every stamp read
// once) and warm (one virConnectGetAllDomainStats, no other libvirt call), and the event-loop
// delay while scrapes run back to back (what a reconcile sharing the thread would wait).
// Run: npm run bench:guest-metrics   (no root needed; test:///default only)
// The last line printed is one JSON object with the headline figures.
import { randomUUID } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { registerGuestMetrics } from '../src/agent/guest-metrics.js';
import { Connect, type Domain } from '../src/libvirt/index.js';
import { buildDomainXML } from '../src/libvirt/xml/domain.js';

const N = Number(process.env.BENCH_DOMAINS ?? 1000);
const WARM = Number(process.env.BENCH_SCRAPES ?? 50);

async function main(): Promise<void> {
  const conn = await Connect.open('test:///default');
  const uids = new Map<string, string>();
  const domains: Domain[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const uid = randomUUID();
      const name = `vm-${i}`;
      uids.set(`bench/${name}`, uid);
      const dom = await conn.defineDomainXML(
        buildDomainXML({
          type: 'qemu',
          name: `bench_${name}`,
          uuid: uid,
          stamp: { kind: 'VirtualMachine', namespace: 'bench', name, uid },
          memoryKiB: 131072,
          currentMemoryKiB: 131072,
          vcpu: { current: 1, max: 2 },
          os: { type: 'hvm', arch: 'x86_64' },
          features: { acpi: true, apic: true },
          devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
        } as never),
      );
      await dom.create();
      domains.push(dom);
    }),
  );
  console.log(`defined and started ${N} domains in ${(performance.now() - t0).toFixed(0)} ms`);

  // Each domain's UUID is its machine's uid, as for a VirtualMachine without spec.uuid.
  const vm = (ns: string, name: string) => {
    const uid = uids.get(`${ns}/${name}`);
    return uid === undefined ? undefined : { uid, uuid: uid };
  };
  const registry = new Registry();
  const guest = registerGuestMetrics({
    registry,
    nodeName: 'bench-node',
    connection: () => conn,
    vm,
    onError: (err) => console.error('scrape failed', err),
  });

  const scrape = async (r: Registry = registry) => {
    const s = performance.now();
    const text = await r.metrics();
    return { ms: performance.now() - s, text };
  };
  const cold = await scrape();
  const series = cold.text.split('\n').filter((l) => l.startsWith('virt_vm_')).length;
  const owned = (await guest.collect()).length;

  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const warm: number[] = [];
  for (let i = 0; i < WARM; i++) warm.push((await scrape()).ms);
  h.disable();
  warm.sort((x, y) => x - y);
  const pct = (p: number) => warm[Math.min(warm.length - 1, Math.floor(p * warm.length))]!;

  // The test driver reports only the state group, so the scrape above renders no guest series.
  // The rendering cost of full records is measured with the same real bulk call whose records
  // are given the counters a QEMU guest reports (cpu, balloon, vcpu, one NIC, one disk).
  // One object, as a connection is: a new one at each scrape would read every stamp again.
  const qemuLike = {
    getAllDomainStats: async (stats: number, flags: number) =>
      (await conn.getAllDomainStats(stats, flags)).map((r) => ({
        ...r,
        cpu: { time: 123_456_789_012n },
        balloon: { current: 131072n, maximum: 131072n, rss: 90_000n, available: 120_000n },
        vcpu: { current: 1, maximum: 2 },
        interfaces: [{ name: 'vnet0', rxBytes: 1_000_000n, txBytes: 20_000n }],
        blocks: [{ name: 'vda', rdBytes: 50_000_000n, wrBytes: 1_000_000n }],
      })),
    lookupDomainByUUIDString: (uuid: string) => conn.lookupDomainByUUIDString(uuid),
  } as unknown as Connect;
  const full = new Registry();
  registerGuestMetrics({
    registry: full,
    nodeName: 'bench-node',
    connection: () => qemuLike,
    vm,
  });
  await scrape(full);
  const fullRuns: number[] = [];
  let fullSeries = 0;
  for (let i = 0; i < 20; i++) {
    const r = await scrape(full);
    fullRuns.push(r.ms);
    fullSeries = r.text.split('\n').filter((l) => l.startsWith('virt_vm_')).length;
  }
  fullRuns.sort((x, y) => x - y);

  const rows = [
    ['domains (owned)', `${N} (${owned})`],
    ['series in one scrape', String(series)],
    ['cold scrape (stamps read once)', `${cold.ms.toFixed(1)} ms`],
    [
      `warm scrape p50 / p90 / max (${WARM} scrapes)`,
      `${pct(0.5).toFixed(1)} / ${pct(0.9).toFixed(1)} / ${warm[warm.length - 1]!.toFixed(1)} ms`,
    ],
    [
      'event-loop delay p50 / p99 / max during warm scrapes',
      `${(h.percentile(50) / 1e6).toFixed(1)} / ${(h.percentile(99) / 1e6).toFixed(1)} / ${(h.max / 1e6).toFixed(1)} ms`,
    ],
    [
      `with QEMU-like records: ${fullSeries} series, p50 / max (20 scrapes)`,
      `${fullRuns[10]!.toFixed(1)} / ${fullRuns[19]!.toFixed(1)} ms`,
    ],
  ];
  for (const [k, v] of rows) console.log(`${k!.padEnd(56)} ${v}`);

  await Promise.all(domains.map(async (d) => (await d.destroy(), await d.undefine())));
  await conn.close();
  console.log(
    JSON.stringify({
      domains: N,
      owned,
      series,
      coldMs: Number(cold.ms.toFixed(1)),
      warmP50Ms: Number(pct(0.5).toFixed(1)),
      warmMaxMs: Number(warm[warm.length - 1]!.toFixed(1)),
      eventLoopDelayP99Ms: Number((h.percentile(99) / 1e6).toFixed(1)),
      fullSeries,
      fullP50Ms: Number(fullRuns[10]!.toFixed(1)),
      fullMaxMs: Number(fullRuns[19]!.toFixed(1)),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
