// Hung calls: a storage upload from a FIFO nobody writes to blocks its worker thread in
// open(2), exactly like a call to a daemon that stopped answering. The binding must reject
// such calls at their timeout, keep libuv's pool (fs, crypto, dns) free, and keep serving
// other calls by growing its own pool.
import { execFileSync } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  LibvirtError,
  bindingStats,
  isTimeout,
  type StoragePool,
  type StorageVol,
} from '../../../src/libvirt/index.js';
import { TEST_URI, dirPoolXML, uniqueName, volumeXML } from './fixtures.js';

let conn: Connect;
let pool: StoragePool;
let vol: StorageVol;
let dir: string;
let fifoCount = 0;

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
  const name = uniqueName('tpool');
  pool = await conn.createStoragePoolXML(dirPoolXML(name, `/nonexistent/lvbt/${name}`));
  vol = await pool.createVolumeXML(volumeXML(uniqueName('tvol'), 1024 * 1024));
  dir = await mkdtemp(path.join(tmpdir(), 'lvbt-fifo-'));
});

afterAll(async () => {
  await pool?.destroy().catch(() => undefined);
  await conn?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function fifo(): string {
  fifoCount += 1;
  const p = path.join(dir, `hang-${fifoCount}`);
  execFileSync('mkfifo', [p]);
  return p;
}

/** Lets the worker blocked in open(2) on this FIFO continue (it then reads EOF). */
function release(p: string): void {
  closeSync(openSync(p, 'w'));
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the worker pool', () => {
  it('runs calls on its own named threads, at the priority of the event loop', async () => {
    await conn.getType();
    const tasks = await readdir('/proc/self/task');
    const threads = await Promise.all(
      tasks.map(async (tid) => {
        const stat = await readFile(`/proc/self/task/${tid}/stat`, 'utf8');
        const name = (await readFile(`/proc/self/task/${tid}/comm`, 'utf8')).trim();
        // Fields after the parenthesised command name; nice is field 19 of stat(5).
        return { name, nice: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]) };
      }),
    );
    const workers = threads.filter((t) => t.name === 'libvirt-worker');
    expect(workers.length).toBe(bindingStats().workerThreads);
    // Unless LIBVIRT_NATIVE_WORKER_NICE asks for less, as the JS thread.
    const nice = Number(process.env.LIBVIRT_NATIVE_WORKER_NICE ?? 0);
    for (const w of workers) expect(w.nice).toBe(nice);
    expect(threads.filter((t) => t.name === 'libvirt-events')).toHaveLength(1);
  });
});

describe('hung calls', () => {
  it('reject with a timeout error naming the call once timeoutMs passes', async () => {
    const p = fifo();
    const started = Date.now();
    const err = await vol.upload(p, { timeoutMs: 200 }).catch((e: unknown) => e);
    const took = Date.now() - started;
    expect(err).toBeInstanceOf(LibvirtError);
    expect(isTimeout(err)).toBe(true);
    expect((err as LibvirtError).codeName).toBe('VIR_ERR_OPERATION_TIMEOUT');
    expect((err as LibvirtError).message).toContain(
      'virStorageVolUpload did not complete within 200 ms',
    );
    expect(took).toBeGreaterThanOrEqual(195);
    expect(took).toBeLessThan(2_000);
    expect(bindingStats().pendingCalls).toBe(0);
    release(p);
  });

  it('take the connection default timeout when the call gives none', async () => {
    const c = await Connect.open(TEST_URI, { callTimeoutMs: 150 });
    const v = await c.lookupStorageVolByKey(vol.getKey());
    const p = fifo();
    const err = await v.upload(p).catch((e: unknown) => e);
    expect(isTimeout(err)).toBe(true);
    expect((err as Error).message).toContain('within 150 ms');
    release(p);
    await c.close();
  });

  it('never starve fs, crypto or dns, and the pool grows so other calls still complete', async () => {
    const threadsBefore = bindingStats().workerThreads;
    const fifos = Array.from({ length: threadsBefore + 2 }, fifo);
    const hung = fifos.map((p) => vol.upload(p, { timeoutMs: 30_000 }).catch((e: unknown) => e));
    await waitFor(
      'the uploads to occupy the pool',
      () => bindingStats().pendingCalls === fifos.length,
    );

    const t0 = Date.now();
    await Promise.all([
      readFile(path.join(dir, '..', path.basename(dir)), { encoding: 'utf8' }).catch(() => ''),
      readFile(new URL(import.meta.url), 'utf8'),
      promisify(pbkdf2)('secret', 'salt', 1000, 32, 'sha256'),
      lookup('localhost'),
    ]);
    expect(Date.now() - t0).toBeLessThan(1_000);

    // Every worker is stuck: the next call waits for the stall detector to add a thread.
    const t1 = Date.now();
    expect(await conn.getType({ timeoutMs: 5_000 })).toBe('TEST');
    expect(Date.now() - t1).toBeLessThan(3_000);
    expect(bindingStats().workerThreads).toBeGreaterThan(threadsBefore);

    for (const p of fifos) release(p);
    const results = await Promise.all(hung);
    // Released, each upload reaches libvirt, which the test driver does not support.
    for (const r of results) expect((r as LibvirtError).codeName).toBe('VIR_ERR_NO_SUPPORT');
    expect(bindingStats().pendingCalls).toBe(0);
  });

  it('still close a connection whose close() timed out while queued', async () => {
    const before = bindingStats().openConnections;
    const c = await Connect.open(TEST_URI);
    expect(bindingStats().openConnections).toBe(before + 1);
    const threads = bindingStats().workerThreads;
    const fifos = Array.from({ length: threads }, fifo);
    const hung = fifos.map((p) => vol.upload(p, { timeoutMs: 20_000 }).catch((e: unknown) => e));
    await waitFor('the uploads to start', () => bindingStats().pendingCalls === fifos.length);
    const err = await c.close({ timeoutMs: 20 }).catch((e: unknown) => e);
    expect(isTimeout(err)).toBe(true);
    expect(c.isClosed).toBe(true);
    for (const p of fifos) release(p);
    await Promise.all(hung);
    await waitFor('the close to run', () => bindingStats().openConnections === before);
  });

  it('settle calls that timed out while still queued without running them later', async () => {
    const threads = bindingStats().workerThreads;
    const fifos = Array.from({ length: threads }, fifo);
    const hung = fifos.map((p) => vol.upload(p, { timeoutMs: 20_000 }).catch((e: unknown) => e));
    await waitFor('the uploads to start', () => bindingStats().pendingCalls === fifos.length);
    // Queued behind the hung ones (before the stall detector reacts), then timed out.
    const queued = await Promise.all(
      Array.from({ length: 5 }, () => conn.getType({ timeoutMs: 50 }).catch((e: unknown) => e)),
    );
    for (const q of queued) {
      if (typeof q !== 'string') expect(isTimeout(q)).toBe(true);
    }
    for (const p of fifos) release(p);
    await Promise.all(hung);
    expect(bindingStats().pendingCalls).toBe(0);
    expect(await conn.getType()).toBe('TEST');
  });
});
