// The binding keeps its worker threads on the JS thread's CPU while two or more calls to a daemon
// are in flight (src/libvirt/native/runtime.cc, EnvState::Colocate): on two vCPUs, the JS thread
// and the workers on different CPUs made the same lookups cost twice the CPU (bench/README.md).
// Checked here from the threads' own affinity masks, on the real libvirtd; calls to the
// in-process test driver never move them, and LIBVIRT_NATIVE_COLOCATE=0 turns it off.
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { bindingStats, Connect, type Domain } from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName, useSystemLibvirt } from './fixtures.js';

/** The binding's entry point, for the child processes below (whatever their directory). */
const LIBVIRT_INDEX = fileURLToPath(new URL('../../../src/libvirt/index.ts', import.meta.url));

const libvirt = useSystemLibvirt();
let dom: Domain;

beforeAll(async () => {
  dom = libvirt.throwAway(
    await libvirt.conn().defineDomainXML(qemuDomainXML(uniqueName('colocate'))),
  );
});

/** The CPUs each worker thread may run on, as /proc lists them ("0", "0-1"). */
async function workerCpus(): Promise<string[]> {
  const out: string[] = [];
  for (const tid of await readdir('/proc/self/task')) {
    try {
      if ((await readFile(`/proc/self/task/${tid}/comm`, 'utf8')).trim() !== 'libvirt-worker')
        continue;
      const status = await readFile(`/proc/self/task/${tid}/status`, 'utf8');
      out.push(/^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1] ?? '?');
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Keeps `inFlight` calls going until `total` were made. */
async function burst(call: () => Promise<unknown>, inFlight: number, total: number) {
  let started = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (started++ < total) await call();
    }),
  );
}

/** The highest CPU the workers were kept on while `run` ran (-1: never kept), sampled. */
async function keptWhile(run: () => Promise<unknown>): Promise<number> {
  let kept = -1;
  const sampling = setInterval(() => {
    kept = Math.max(kept, bindingStats().workersKeptOnCpu);
  }, 2);
  try {
    await run();
  } finally {
    clearInterval(sampling);
  }
  return Math.max(kept, bindingStats().workersKeptOnCpu);
}

describe("worker threads kept on the JS thread's CPU", () => {
  it('while 1,000 lookups are in flight on a remote connection, and let go after', async () => {
    expect(cpus().length, 'this check needs a machine with more than one CPU').toBeGreaterThan(1);
    const all = (await workerCpus())[0];
    const uuid = dom.getUUIDString();
    const seen: { kept: number; workers: string[] }[] = [];
    let running = true;
    const sampling = (async () => {
      while (running) {
        seen.push({ kept: bindingStats().workersKeptOnCpu, workers: await workerCpus() });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await burst(() => libvirt.conn().lookupDomainByUUID(uuid), 1_000, 30_000);
    running = false;
    await sampling;
    // Some sample caught every worker on the CPU the pool was kept on at that moment.
    const together = seen.filter(
      (s) => s.kept >= 0 && s.workers.length > 0 && s.workers.every((w) => w === String(s.kept)),
    );
    expect(together.length, JSON.stringify(seen.slice(0, 5))).toBeGreaterThan(0);

    // One call at a time: let go (after the 10 ms between moves), and a worker that runs a call
    // is back on every CPU it started with.
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 50; i++) await libvirt.conn().lookupDomainByUUID(uuid);
    expect(bindingStats().workersKeptOnCpu).toBe(-1);
    expect(await workerCpus()).toContain(all);
  });

  it('from two calls in flight on, never for one at a time', async () => {
    const uuid = dom.getUUIDString();
    const lookup = () => libvirt.conn().lookupDomainByUUID(uuid);
    // Two at a time: each completion makes the next call, so two stay pending.
    expect(await keptWhile(() => burst(lookup, 2, 4_000))).toBeGreaterThanOrEqual(0);

    // One at a time, once the pool was let go (the first calls, 10 ms apart from the last move).
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 50; i++) await lookup();
    expect(bindingStats().workersKeptOnCpu).toBe(-1);
    expect(
      await keptWhile(async () => {
        for (let i = 0; i < 2_000; i++) await lookup();
      }),
    ).toBe(-1);
  });

  it('never for calls to the in-process test driver', async () => {
    const test = await Connect.open('test:///default');
    try {
      const [first] = await test.listAllDomains();
      const uuid = first!.getUUIDString();
      expect(await keptWhile(() => burst(() => test.lookupDomainByUUID(uuid), 1_000, 50_000))).toBe(
        -1,
      );
    } finally {
      await test.close();
    }
  });

  it('never with LIBVIRT_NATIVE_COLOCATE=0, also with no call limit otherwise', async () => {
    const script = `
      import { bindingStats, Connect } from ${JSON.stringify(LIBVIRT_INDEX)};
      const conn = await Connect.open(${JSON.stringify(libvirt.daemon().uri)});
      const uuid = ${JSON.stringify(dom.getUUIDString())};
      let kept = -1, started = 0;
      await Promise.all(Array.from({ length: 1000 }, async () => {
        while (started++ < 10000) {
          await conn.lookupDomainByUUID(uuid);
          kept = Math.max(kept, bindingStats().workersKeptOnCpu);
        }
      }));
      await conn.close();
      console.log(JSON.stringify({ kept }));`;
    const run = (env: NodeJS.ProcessEnv) =>
      promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        {
          env: { ...process.env, ...env },
        },
      ).then(({ stdout }) => JSON.parse(stdout.trim().split('\n').pop()!) as { kept: number });
    expect((await run({ LIBVIRT_NATIVE_COLOCATE: '0' })).kept).toBe(-1);
    // The same script without it does move them: the check above can fail. A connection
    // without a call limit (LIBVIRT_NATIVE_REMOTE_CALLS=0) still goes to a daemon.
    expect((await run({})).kept).toBeGreaterThanOrEqual(0);
    expect((await run({ LIBVIRT_NATIVE_REMOTE_CALLS: '0' })).kept).toBeGreaterThanOrEqual(0);
  });
});
