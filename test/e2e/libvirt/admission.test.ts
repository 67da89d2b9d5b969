// Admission of one connection's calls into libvirtd. The daemon reads at most
// max_client_requests (5 by default) requests of a client at once and stops reading that
// client's socket while they run, keepalive answers included; when those calls outlast the
// daemon's keepalive window it drops the client. The binding keeps at most 4 calls of a remote
// connection inside the daemon (LIBVIRT_NATIVE_REMOTE_CALLS), so one slot stays free for
// keepalive. Slow calls here are real: memory-stats queries on a domain whose QEMU is
// SIGSTOPped wait on its monitor (the first) or on the domain's job lock (the others).
// Lookups of domains and networks, and a domain's info, state, XML and whether it is active or
// persistent, pass the gate: the daemon answers them from its object lists without the domain's
// job or monitor, so they keep flowing (through the free slot) while slow calls fill the gate.
// A private libvirtd with a short daemon-side keepalive (1 s x 2) keeps the test short.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import { Connect, type ConnectionClosedEvent } from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName } from './fixtures.js';

const SLOW_CALLS = 8;
const LOOKUPS = 20;
// Well past the daemon's keepalive window (interval 1 s x count 2, plus a ping interval).
const HOLD_MS = 6_000;

let daemon: LibvirtDaemon;

beforeAll(async () => {
  daemon = await startPrivateLibvirtd({
    libvirtdConf: 'keepalive_interval = 1\nkeepalive_count = 2\nmax_client_requests = 5\n',
  });
});

afterAll(async () => {
  await daemon?.stop();
});

function qemuPid(name: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.some((a) => a === `guest=${name},debug-threads=on` || a === name)) {
        if (args[0]?.includes('qemu-system')) return Number(entry);
      }
    } catch {
      // exited meanwhile
    }
  }
  throw new Error(`no QEMU process found for domain ${name}`);
}

interface Outcome {
  closed: ConnectionClosedEvent[];
  settled: number;
  pendingAfterHold: number;
  /** Lookup, then getInfo, getState, isActive, isPersistent and getXMLDesc of the frozen
   * domain, answered during the hold, in turn. */
  lookupsDuringHold: number;
  failures: unknown[];
  aliveAfter: boolean;
}

/** Starts a domain, freezes its QEMU, issues SLOW_CALLS calls on one connection, waits
 * HOLD_MS, thaws QEMU and reports what happened to the calls and the connection. */
async function slowCallsOnOneConnection(remoteCalls: string | undefined): Promise<Outcome> {
  const before = process.env.LIBVIRT_NATIVE_REMOTE_CALLS;
  if (remoteCalls === undefined) delete process.env.LIBVIRT_NATIVE_REMOTE_CALLS;
  else process.env.LIBVIRT_NATIVE_REMOTE_CALLS = remoteCalls;
  // The limit is read when a connection opens.
  const conn = await Connect.open(daemon.uri).finally(() => {
    if (before === undefined) delete process.env.LIBVIRT_NATIVE_REMOTE_CALLS;
    else process.env.LIBVIRT_NATIVE_REMOTE_CALLS = before;
  });
  const closed: ConnectionClosedEvent[] = [];
  conn.registerCloseCallback((e) => closed.push(e));
  expect(await conn.setKeepAlive(1, 2)).toBe(0);
  const name = uniqueName('admission');
  const dom = await conn.createDomainXML(qemuDomainXML(name));
  const pid = qemuPid(name);
  let settled = 0;
  const failures: unknown[] = [];
  process.kill(pid, 'SIGSTOP');
  let calls: Promise<void>[];
  let pendingAfterHold: number;
  let lookupsDuringHold = 0;
  try {
    calls = Array.from({ length: SLOW_CALLS }, () =>
      dom.memoryStats().then(
        () => {
          settled += 1;
        },
        (e: unknown) => {
          settled += 1;
          failures.push(e);
        },
      ),
    );
    const holdOver = new Promise((resolve) => setTimeout(resolve, HOLD_MS));
    let holding = true;
    void holdOver.then(() => (holding = false));
    // Once the slow calls are in, look the domain up again and again while they hang.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const uuid = dom.getUUIDString();
    while (holding && lookupsDuringHold < LOOKUPS) {
      // The frozen domain's info, state, XML and whether it is active and persistent too: none
      // needs the domain's job or its monitor.
      const found = await Promise.race([
        conn
          .lookupDomainByUUID(uuid)
          .then(async (d) => {
            await d.getInfo();
            await Promise.all([d.getState(), d.isActive(), d.isPersistent()]);
            return d.getXMLDesc();
          })
          .catch(() => null),
        holdOver,
      ]);
      if (!holding || !found) break;
      lookupsDuringHold += 1;
    }
    await holdOver;
    pendingAfterHold = SLOW_CALLS - settled;
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await Promise.all(calls);
  const aliveAfter = await conn.getHostname().then(
    () => true,
    () => false,
  );
  if (aliveAfter) await dom.destroy().catch(() => undefined);
  await conn.close().catch(() => undefined);
  return { closed, settled, pendingAfterHold, lookupsDuringHold, failures, aliveAfter };
}

describe('calls of one connection to libvirtd', () => {
  it('keep the connection alive while more calls than the daemon serves per client hang', async () => {
    const r = await slowCallsOnOneConnection(undefined);
    // The calls really were slow: all still pending after the keepalive window had passed.
    expect(r.pendingAfterHold).toBe(SLOW_CALLS);
    // Lookups and the domain's quick reads did not queue behind them: they kept being answered
    // during the hold (all 20 on a quiet host, 19 under the full suite's load; without the
    // gate bypass none).
    expect(r.lookupsDuringHold).toBeGreaterThanOrEqual(3);
    expect(r.closed).toEqual([]);
    expect(r.failures).toEqual([]);
    expect(r.aliveAfter).toBe(true);
  }, 60_000);

  it('without the admission limit the daemon drops the connection (what the limit prevents)', async () => {
    const r = await slowCallsOnOneConnection('0');
    // Dropped within the hold: every call rejected as the connection went away.
    expect(r.closed.length).toBeGreaterThan(0);
    expect(r.pendingAfterHold).toBe(0);
    expect(r.failures).toHaveLength(SLOW_CALLS);
    expect(r.aliveAfter).toBe(false);
  }, 60_000);
});
