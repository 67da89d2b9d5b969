import { describe, expect, it } from 'vitest';
import {
  ErrorCode,
  LibvirtError,
  ReconnectingConnection,
  bindingStats,
  type DomainLifecycleEvent,
  type StateChange,
} from '../../../src/libvirt/index.js';
import { TEST_URI, domainXML, uniqueName } from './fixtures.js';

async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('ReconnectingConnection on test:///default', () => {
  it('opens, reconnects after a reported connection error, keeps subscriptions and closes', async () => {
    const states: StateChange[] = [];
    const connectionsBefore = bindingStats().openConnections;
    const rc = new ReconnectingConnection(TEST_URI, { backoff: { initialMs: 10 } });
    rc.on('state', (s) => states.push(s));
    const first = await rc.ready({ timeoutMs: 5_000 });
    expect(rc.state).toBe('open');
    expect(rc.connection).toBe(first);
    expect(await first.getType()).toBe('TEST');

    const events: DomainLifecycleEvent[] = [];
    await rc.domainEventLifecycleRegister((e) => events.push(e));

    // A caller saw the connection fail: the wrapper replaces it.
    rc.reportError(
      new LibvirtError('gone', { code: ErrorCode.VIR_ERR_INVALID_CONN, domain: 0, level: 2 }),
    );
    await until('a new connection', () => rc.connection !== undefined && rc.connection !== first);
    expect(first.isClosed).toBe(true);
    expect(states.map((s) => s.state)).toEqual(['open', 'reconnecting', 'open']);

    // The subscription was re-registered on the new connection.
    const conn = await rc.ready();
    const name = uniqueName('rc');
    const d = await conn.defineDomainXML(domainXML({ name }));
    await until('the define event', () => events.some((e) => e.domain.getName() === name));
    await d.undefine();

    // Errors that are not about the connection change nothing.
    rc.reportError(
      new LibvirtError('no', { code: ErrorCode.VIR_ERR_NO_DOMAIN, domain: 0, level: 2 }),
    );
    expect(rc.connection).toBe(conn);

    await rc.close();
    expect(rc.state).toBe('closed');
    expect(conn.isClosed).toBe(true);
    await expect(rc.ready()).rejects.toThrow(/closed/);
    expect(bindingStats().eventRegistrations).toBe(0);
    // Both the replaced and the last connection were closed in libvirt.
    expect(bindingStats().openConnections).toBe(connectionsBefore);
  });

  it('keeps retrying with backoff while the URI cannot be opened, reporting each failure', async () => {
    const states: StateChange[] = [];
    const rc = new ReconnectingConnection('qemu+unix:///system?socket=/nonexistent/lvbt.sock', {
      backoff: { initialMs: 20, maxMs: 40 },
    });
    rc.on('state', (s) => states.push(s));
    rc.start();
    await until('three failed attempts', () => states.length >= 3);
    expect(rc.state).toBe('connecting');
    expect(states.every((s) => s.state === 'connecting' && s.error instanceof LibvirtError)).toBe(
      true,
    );
    expect(states.map((s) => s.attempt).slice(0, 3)).toEqual([1, 2, 3]);
    // What the agent's /readyz shows for libvirt: the URI and libvirt's reason.
    expect(rc.describe()).toMatch(
      /^libvirt connection to qemu\+unix:\/\/\/system\?socket=\/nonexistent\/lvbt\.sock is connecting; last attempt: .*\/nonexistent\/lvbt\.sock/,
    );
    // The reason is libvirt's, so an agent that gives up can say why (a socket, a permission).
    await expect(rc.ready({ timeoutMs: 50 })).rejects.toThrow(
      /not open after 50 ms \(state connecting; last attempt: .*\/nonexistent\/lvbt\.sock/,
    );
    await rc.close();
    expect(rc.state).toBe('closed');
  });

  it('deregisters a subscription so it is not re-registered', async () => {
    const rc = await ReconnectingConnection.open(TEST_URI);
    const before = bindingStats().eventRegistrations;
    const id = await rc.networkEventLifecycleRegister(() => undefined);
    expect(bindingStats().eventRegistrations).toBe(before + 1);
    await rc.deregister(id);
    expect(bindingStats().eventRegistrations).toBe(before);
    await rc.close();
  });
});
