// npm run bench:latency -- [--driver test|qemu] [--iterations N]
//
// Apply-to-Ready latency of one VirtualMachine, one at a time: create it through the real API
// server, watch until Ready=True, delete it and watch until it is gone; N times. The agent is
// the compiled CLI in its own process, as in production. With --driver qemu the agent drives
// the system libvirtd (qemu:///system) and each VM boots the tiny guest (TCG, direct kernel
// boot from two Volumes in a dir pool); the time until the guest's ready line appears on its
// serial console is reported separately. Prints a table and, last, one JSON line.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../src/commands/local/control-plane.js';
import { ensureLibvirtd, SYSTEM_URI } from '../src/commands/local/libvirtd.js';
import {
  ensureTinyGuest,
  serveTinyGuest,
  type TinyGuestServer,
  GUEST_MARKER,
  TINY_GUEST_CMDLINE,
  waitForConsoleLine,
} from '../src/commands/local/tiny-guest.js';
import { createKubeClient, isNotFound, type KubeClient } from '../src/runtime/index.js';
import { startAgentProcess, stopAgentProcess, waitAgentReady } from './agents.js';
import { gone, machine, ms, readyTrue, spread, watchVms, type Spread } from './vm-watch.js';

const { values } = parseArgs({
  options: {
    driver: { type: 'string', default: 'test' },
    iterations: { type: 'string' },
  },
  strict: true,
});
const driver = values.driver;
const iterations = Number(values.iterations ?? (driver === 'test' ? 30 : 8));
const RUN = randomBytes(3).toString('hex');
const NODE = `bench-${RUN}`;
const POOL = `bench-pool-${RUN}`;
const KERNEL = `kernel-${RUN}`;
const INITRD = `initrd-${RUN}`;
const GROUP = '/apis/virt.dev/v1alpha1';
const VMS = `${GROUP}/namespaces/default/virtualmachines`;
const VOLUMES = `${GROUP}/namespaces/default/volumes`;
const POOLS = `${GROUP}/storagepools`;
/** The first iterations pay for cold caches and JIT on both sides; they are not counted. */
const WARMUP = driver === 'test' ? 3 : 1;

function vmBody(name: string) {
  const spec =
    driver === 'test'
      ? { nodeName: NODE, domainType: 'qemu', vcpus: 1, memory: '64Mi' }
      : {
          nodeName: NODE,
          domainType: 'qemu',
          vcpus: 1,
          memory: '128Mi',
          terminationGracePeriodSeconds: 30,
          boot: {
            kernel: { volume: KERNEL },
            initrd: { volume: INITRD },
            cmdline: TINY_GUEST_CMDLINE,
          },
        };
  const annotations = driver === 'qemu' ? { 'virt.dev/console-log': 'true' } : undefined;
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name, annotations },
    spec,
  };
}

/** A dir pool and the tiny guest's kernel and initrd as Volumes, served over loopback HTTP. */
async function guestVolumes(client: KubeClient, poolDir: string): Promise<TinyGuestServer> {
  const guest = await ensureTinyGuest();
  const server = await serveTinyGuest(guest);
  const base = server.base;
  await client.request({
    method: 'POST',
    path: POOLS,
    body: {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'StoragePool',
      metadata: { name: POOL },
      spec: { path: poolDir },
    },
  });
  for (const [name, url, sha256] of [
    [KERNEL, `${base}/vmlinuz`, guest.sha256.kernel],
    [INITRD, `${base}/initrd.img`, guest.sha256.initrd],
  ] as const) {
    await client.request({
      method: 'POST',
      path: VOLUMES,
      body: {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'Volume',
        metadata: { name },
        spec: { nodeName: NODE, pool: POOL, format: 'raw', source: { http: { url, sha256 } } },
      },
    });
  }
  for (const name of [KERNEL, INITRD]) {
    await pollUntil(`Volume ${name} Ready`, 120_000, async () => {
      const vol = (await client.request({ method: 'GET', path: `${VOLUMES}/${name}` })) as {
        status?: { conditions?: Array<{ type: string; status: string }> };
      };
      return readyTrue(vol as never);
    });
  }
  return server;
}

async function pollUntil(what: string, timeoutMs: number, check: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function deleteAndWait(client: KubeClient, path: string, timeoutMs = 120_000) {
  await client.request({ method: 'DELETE', path }).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
  await pollUntil(`${path} gone`, timeoutMs, () =>
    client.request({ method: 'GET', path }).then(
      () => false,
      (err: unknown) => {
        if (isNotFound(err)) return true;
        throw err;
      },
    ),
  );
}

interface Sample {
  created: number;
  ready: number;
  guestReady: number | undefined;
  deleted: number;
}

async function main(): Promise<void> {
  if (driver !== 'test' && driver !== 'qemu') {
    throw new Error(`--driver must be 'test' or 'qemu', not '${driver}'`);
  }
  if (!Number.isInteger(iterations) || iterations < 1) {
    throw new Error(`--iterations must be a positive integer, not '${values.iterations}'`);
  }
  if (driver === 'qemu') await ensureLibvirtd();
  const cp = await startControlPlane();
  const client = createKubeClient(cp.kubeConfig);
  const libvirtUri = driver === 'qemu' ? SYSTEM_URI : undefined;
  const agent = await startAgentProcess(cp, client, NODE, { libvirtUri });
  const workDir = await mkdtemp(join(tmpdir(), 'lvo-bench-latency-'));
  let server: TinyGuestServer | undefined;
  const samples: Sample[] = [];
  try {
    await waitAgentReady(agent);
    if (driver === 'qemu') server = await guestVolumes(client, join(workDir, 'pool'));
    const watch = await watchVms(client);
    try {
      for (let i = 0; i < WARMUP + iterations; i++) {
        const name = `lat-${RUN}-${i}`;
        const t0 = performance.now();
        const created = (await client.request({
          method: 'POST',
          path: VMS,
          body: vmBody(name),
        })) as { metadata: { uid: string } };
        const tCreated = performance.now();
        const ready = await watch.until(name, 'Ready=True', readyTrue, 180_000);
        let guestReady: number | undefined;
        if (driver === 'qemu') {
          const log = join(agent.stateDir, 'console', `${created.metadata.uid}.log`);
          await waitForConsoleLine(log, GUEST_MARKER.ready, 120_000, { intervalMs: 50 });
          guestReady = performance.now();
        }
        const tDelete = performance.now();
        await client.request({ method: 'DELETE', path: `${VMS}/${name}` });
        const deleted = await watch.until(name, 'deletion', gone, 180_000);
        const sample = {
          created: tCreated - t0,
          ready: ready - t0,
          guestReady: guestReady === undefined ? undefined : guestReady - t0,
          deleted: deleted - tDelete,
        };
        if (i >= WARMUP) samples.push(sample);
        const guest = sample.guestReady === undefined ? '' : `, guest ${ms(sample.guestReady)}`;
        const tag = i < WARMUP ? ' (warm-up)' : '';
        console.error(
          `${name}: Ready ${ms(sample.ready)}${guest}, gone ${ms(sample.deleted)}${tag}`,
        );
      }
    } finally {
      watch.stop();
    }
  } finally {
    if (driver === 'qemu') {
      for (const name of [KERNEL, INITRD]) await deleteAndWait(client, `${VOLUMES}/${name}`);
      await deleteAndWait(client, `${POOLS}/${POOL}`);
    }
    await stopAgentProcess(agent);
    await cp.stop();
    await server?.close();
    await rm(workDir, { recursive: true, force: true });
  }

  const rows: Array<[key: string, label: string, Spread]> = [
    ['createdMs', 'create answered', spread(samples.map((s) => s.created))],
    ['readyMs', 'apply -> Ready=True (watch)', spread(samples.map((s) => s.ready))],
  ];
  if (driver === 'qemu') {
    const guest = samples.map((s) => s.guestReady ?? NaN);
    rows.push(['guestReadyMs', 'apply -> guest ready line', spread(guest)]);
  }
  rows.push(['deletedMs', 'delete -> gone (watch)', spread(samples.map((s) => s.deleted))]);
  console.log(`driver ${driver}, ${iterations} iterations after ${WARMUP} warm-up`);
  console.log(
    ['case'.padEnd(30), 'p50', 'p90', 'max'].map((c, i) => (i ? c.padStart(10) : c)).join(' '),
  );
  for (const [, label, s] of rows) {
    console.log(
      [label.padEnd(30), ...[s.p50, s.p90, s.max].map((v) => ms(v).padStart(10))].join(' '),
    );
  }
  const round = (s: Spread) => ({
    p50: Number(s.p50.toFixed(1)),
    p90: Number(s.p90.toFixed(1)),
    max: Number(s.max.toFixed(1)),
  });
  console.log(
    JSON.stringify({
      driver,
      iterations,
      ...Object.fromEntries(rows.map(([key, , s]) => [key, round(s)])),
      machine: machine(),
      date: new Date().toISOString(),
    }),
  );
}

main().catch((err: unknown) => {
  console.error(`bench:latency: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
