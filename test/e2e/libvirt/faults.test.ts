// Faults of the daemon itself, on a private libvirtd (its own mount namespace) so freezing and
// restarting it disturbs no other test: keepalive turns a frozen daemon into a rejected call
// within the keepalive window, and the reconnecting wrapper comes back with its event
// subscriptions after the daemon resumes or restarts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  Connect,
  ReconnectingConnection,
  isConnectionError,
  type ConnectionClosedEvent,
  type DomainLifecycleEvent,
  type StateChange,
} from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName } from './fixtures.js';

const INTERVAL = 1;
const COUNT = 2;
// libvirt pings after INTERVAL idle seconds and gives up after COUNT unanswered pings.
const WINDOW_MS = INTERVAL * (COUNT + 1) * 1000;

let daemon: LibvirtDaemon;

beforeAll(async () => {
  daemon = await startPrivateLibvirtd();
});

afterAll(async () => {
  daemon?.resume();
  await daemon?.stop();
});

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('a frozen or restarted libvirtd', () => {
  it('rejects a pending call within the keepalive window once the daemon is SIGSTOPped', async () => {
    const conn = await Connect.open(daemon.uri);
    const closed: ConnectionClosedEvent[] = [];
    conn.registerCloseCallback((e) => closed.push(e));
    expect(await conn.setKeepAlive(INTERVAL, COUNT)).toBe(0);
    expect(await conn.getHostname()).not.toBe('');

    daemon.pause();
    try {
      const started = Date.now();
      const err = await conn.getCapabilities().then(
        () => undefined,
        (e: unknown) => e,
      );
      const took = Date.now() - started;
      expect(err, 'the call should have failed').toBeDefined();
      expect(isConnectionError(err)).toBe(true);
      expect(took).toBeLessThan(WINDOW_MS + 3_000);
      await until('the close callback', () => closed.length > 0, 5_000);
      expect(closed[0]!.reasonName).toBe('keepalive');
      // The connection is dead for good: later calls fail at once.
      expect(isConnectionError(await conn.getHostname().catch((e) => e))).toBe(true);
    } finally {
      daemon.resume();
    }
    await conn.close();
  });

  it('reconnects after SIGCONT and after a restart, and events flow again each time', async () => {
    const states: StateChange[] = [];
    const events: DomainLifecycleEvent[] = [];
    const rc = new ReconnectingConnection(daemon.uri, {
      keepAlive: { interval: INTERVAL, count: COUNT },
      openTimeoutMs: 2_000,
      callTimeoutMs: 30_000,
      backoff: { initialMs: 100, maxMs: 1_000 },
    });
    rc.on('state', (s) => states.push(s));
    await rc.ready({ timeoutMs: 20_000 });
    await rc.domainEventLifecycleRegister((e) => events.push(e));

    const defineAndWait = async (label: string) => {
      const conn = await rc.ready({ timeoutMs: 30_000 });
      const name = uniqueName(label);
      const dom = await conn.defineDomainXML(qemuDomainXML(name));
      await until(`the defined event of ${name}`, () =>
        events.some((e) => e.domain.getName() === name && e.eventName === 'defined'),
      );
      await dom.undefine();
    };
    await defineAndWait('before');

    daemon.pause();
    await until(
      'the wrapper to notice the frozen daemon',
      () => rc.state === 'reconnecting',
      WINDOW_MS + 5_000,
    );
    expect(states.find((s) => s.state === 'reconnecting')?.closeReason).toBe('keepalive');
    daemon.resume();
    await until('the wrapper to reconnect', () => rc.state === 'open', 30_000);
    await defineAndWait('after-sigcont');

    const opensBefore = states.filter((s) => s.state === 'open').length;
    const seen = states.length;
    await daemon.restart();
    await until(
      'a reconnect after the restart',
      () => states.filter((s) => s.state === 'open').length > opensBefore,
      30_000,
    );
    // The first transition after the restart is the drop; failed attempts follow it.
    const dropped = states.slice(seen).find((s) => s.state === 'reconnecting');
    expect(dropped?.closeReason).toBe('eof');
    await defineAndWait('after-restart');

    await rc.close();
    expect(rc.state).toBe('closed');
  });
});
