// Benchmark of the libvirt binding: lookups per second sequentially and with many calls in
// flight, on the in-process test driver and through a real libvirtd, against the same lookup
// done by spawning `virsh`, and the event-loop delay while 1,000 calls are in flight.
// Run: npm run bench:binding   (root; starts libvirtd if none answers, stops it afterwards)
// The last line printed is one JSON object with the headline figures.
import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { XMLBuilder } from 'fast-xml-parser';
import { ensureLibvirtd, type LibvirtDaemon } from '../src/harness/libvirtd.js';
import { Connect, bindingStats, getLibVersion, type Domain } from '../src/libvirt/index.js';

const run = promisify(execFile);
const TEST_URI = 'test:///default';

interface Row {
  name: string;
  calls: number;
  inFlight: number;
  ms: number;
}

const rows: Row[] = [];

function perSec(r: Row): number {
  return (r.calls / r.ms) * 1000;
}

/** Keeps `inFlight` calls running until `total` have completed; resolves with elapsed ms. */
function windowed(total: number, inFlight: number, call: () => Promise<unknown>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let started = 0;
    let done = 0;
    const next = (): void => {
      if (started >= total) return;
      started++;
      call().then(() => {
        done++;
        if (done === total) resolve(performance.now() - t0);
        else next();
      }, reject);
    };
    for (let i = 0; i < Math.min(inFlight, total); i++) next();
  });
}

async function measure(
  name: string,
  total: number,
  inFlight: number,
  call: () => Promise<unknown>,
): Promise<Row> {
  const ms = await windowed(total, inFlight, call);
  const row = { name, calls: total, inFlight, ms };
  rows.push(row);
  return row;
}

async function virshPerCall(uri: string, uuid: string, n: number): Promise<Row> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await run('virsh', ['-c', uri, 'domname', uuid]);
  const row = {
    name: `virsh process per lookup (${uri})`,
    calls: n,
    inFlight: 1,
    ms: performance.now() - t0,
  };
  rows.push(row);
  return row;
}

async function eventLoopDelay(conn: Connect, uuid: string, inFlight: number, total: number) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await windowed(total, inFlight, () => conn.lookupDomainByUUID(uuid));
  h.disable();
  return {
    p50: h.percentile(50) / 1e6,
    p99: h.percentile(99) / 1e6,
    max: h.max / 1e6,
  };
}

function qemuDomainXML(name: string): string {
  const b = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });
  return b.build({
    domain: {
      '@_type': 'qemu',
      name,
      uuid: randomUUID(),
      memory: { '@_unit': 'KiB', '#text': 65536 },
      vcpu: 1,
      os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
    },
  });
}

async function main(): Promise<void> {
  const test = await Connect.open(TEST_URI);
  const testDom = await test.lookupDomainByName('test');
  const testUUID = testDom.getUUIDString();
  const lookup = () => test.lookupDomainByUUID(testUUID);

  await windowed(50_000, 1_000, lookup); // warm-up: JIT, allocator, worker threads
  const seq = await measure('test:///default lookupDomainByUUID, sequential', 20_000, 1, lookup);
  let best: Row | undefined;
  for (const inFlight of [1_000, 10_000]) {
    const r = await measure(
      `test:///default lookupDomainByUUID, ${inFlight} in flight`,
      300_000,
      inFlight,
      lookup,
    );
    if (!best || perSec(r) > perSec(best)) best = r;
  }
  const delay = await eventLoopDelay(test, testUUID, 1_000, 200_000);
  const virshTest = await virshPerCall(TEST_URI, testUUID, 40);

  // Through a real libvirtd: the same lookup is an RPC over the unix socket.
  let daemon: LibvirtDaemon | undefined;
  let remote: Connect | undefined;
  let remoteDom: Domain | undefined;
  let remoteSeq: Row | undefined;
  let remoteConc: Row | undefined;
  let virshRemote: Row | undefined;
  try {
    daemon = await ensureLibvirtd();
    remote = await Connect.open(daemon.uri);
    remoteDom = await remote.defineDomainXML(qemuDomainXML(`lvbt-bench-${process.pid}`));
    const uuid = remoteDom.getUUIDString();
    const rlookup = () => remote!.lookupDomainByUUID(uuid);
    await windowed(5_000, 100, rlookup);
    remoteSeq = await measure('qemu:///system lookupDomainByUUID, sequential', 5_000, 1, rlookup);
    remoteConc = await measure(
      'qemu:///system lookupDomainByUUID, 1000 in flight',
      50_000,
      1_000,
      rlookup,
    );
    virshRemote = await virshPerCall(daemon.uri, uuid, 40);
  } catch (err) {
    console.error(`libvirtd part skipped: ${(err as Error).message}`);
  } finally {
    await remoteDom?.undefine().catch(() => undefined);
    await remote?.close().catch(() => undefined);
    await daemon?.stop();
  }
  await test.close();

  const pad = (s: string, n: number) => s.padEnd(n);
  const num = (v: number) => Math.round(v).toLocaleString('en-US');
  console.log(
    `libvirt binding benchmark — ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, libvirt ${getLibVersion()}, ${bindingStats().workerThreads} worker threads`,
  );
  console.log(pad('case', 56) + pad('calls', 10) + pad('calls/s', 12) + 'µs/call');
  for (const r of rows) {
    console.log(
      pad(r.name, 56) +
        pad(num(r.calls), 10) +
        pad(num(perSec(r)), 12) +
        ((r.ms * 1000) / r.calls).toFixed(1),
    );
  }
  console.log(
    `event-loop delay with 1,000 calls in flight: p50 ${delay.p50.toFixed(2)} ms, p99 ${delay.p99.toFixed(2)} ms, max ${delay.max.toFixed(2)} ms`,
  );

  const virshPerSec = perSec(virshTest);
  const result = {
    lookupsPerSecConcurrent: Math.round(perSec(best!)),
    lookupsPerSecSequential: Math.round(perSec(seq)),
    virshLookupsPerSec: Number(virshPerSec.toFixed(1)),
    virshSpeedup: Math.round(perSec(best!) / virshPerSec),
    eventLoopDelayP99Ms: Number(delay.p99.toFixed(2)),
    libvirtdLookupsPerSecSequential: remoteSeq ? Math.round(perSec(remoteSeq)) : null,
    libvirtdLookupsPerSecConcurrent: remoteConc ? Math.round(perSec(remoteConc)) : null,
    libvirtdVirshSpeedup:
      remoteConc && virshRemote ? Math.round(perSec(remoteConc) / perSec(virshRemote)) : null,
  };
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
