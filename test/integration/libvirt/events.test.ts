import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  bindingStats,
  type DomainLifecycleEvent,
  type NetworkLifecycleEvent,
  type StoragePoolLifecycleEvent,
} from '../../../src/libvirt/index.js';
import { TEST_URI, dirPoolXML, domainXML, networkXML, uniqueName } from './fixtures.js';

let conn: Connect;

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
});

afterAll(async () => {
  await conn?.close();
});

/** Collects events and lets a test wait until `count` of them arrived. */
function collector<E>() {
  const events: E[] = [];
  let wake: (() => void) | undefined;
  return {
    events,
    listener: (e: E) => {
      events.push(e);
      wake?.();
    },
    async waitFor(count: number, timeoutMs = 5_000): Promise<E[]> {
      const deadline = Date.now() + timeoutMs;
      while (events.length < count) {
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(`got ${events.length} of ${count} events in ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      return events;
    },
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

describe('lifecycle events on test:///default', () => {
  it('delivers domain define/start/stop/undefine events with names and a usable domain', async () => {
    const c = collector<DomainLifecycleEvent>();
    const before = bindingStats().eventRegistrations;
    const id = await conn.domainEventLifecycleRegister(c.listener);
    expect(bindingStats().eventRegistrations).toBe(before + 1);
    const name = uniqueName('ev');
    const d = await conn.defineDomainXML(domainXML({ name }));
    await d.create();
    await d.destroy();
    await d.undefine();
    const mine = (await c.waitFor(4)).filter((e) => e.domain.getName() === name);
    expect(mine.map((e) => [e.eventName, e.detailName])).toEqual([
      ['defined', 'added'],
      ['started', 'booted'],
      ['stopped', 'destroyed'],
      ['undefined', 'removed'],
    ]);
    expect(mine[0]!.domain.getUUIDString()).toBe(d.getUUIDString());
    await conn.domainEventDeregister(id);
    expect(bindingStats().eventRegistrations).toBe(before);
  });

  it('filters events to one domain when asked, and stops after deregistering', async () => {
    const a = await conn.defineDomainXML(domainXML({ name: uniqueName('only') }));
    const b = await conn.defineDomainXML(domainXML({ name: uniqueName('other') }));
    const c = collector<DomainLifecycleEvent>();
    const id = await conn.domainEventLifecycleRegister(c.listener, { domain: a });
    await b.create();
    await a.create();
    await c.waitFor(1);
    await settle();
    expect(c.events.map((e) => e.domain.getName())).toEqual([a.getName()]);
    await conn.domainEventDeregister(id);
    await a.destroy();
    await settle();
    expect(c.events).toHaveLength(1);
    await b.destroy();
    await a.undefine();
    await b.undefine();
  });

  it('registers and deregisters the reboot event (the test driver never emits it)', async () => {
    const before = bindingStats().eventRegistrations;
    const id = await conn.domainEventRebootRegister(() => undefined);
    expect(bindingStats().eventRegistrations).toBe(before + 1);
    await conn.domainEventDeregister(id);
    expect(bindingStats().eventRegistrations).toBe(before);
  });

  it('delivers network lifecycle events', async () => {
    const c = collector<NetworkLifecycleEvent>();
    const id = await conn.networkEventLifecycleRegister(c.listener);
    const name = uniqueName('evnet');
    const n = await conn.defineNetworkXML(networkXML(name));
    await n.create();
    await n.destroy();
    await n.undefine();
    const mine = (await c.waitFor(4)).filter((e) => e.network.getName() === name);
    expect(mine.map((e) => e.eventName)).toEqual(['defined', 'started', 'stopped', 'undefined']);
    await conn.networkEventDeregister(id);
  });

  it('delivers storage pool lifecycle and refresh events', async () => {
    const life = collector<StoragePoolLifecycleEvent>();
    const refresh = collector<{ pool: { getName(): string } }>();
    const lifeId = await conn.storagePoolEventLifecycleRegister(life.listener);
    const refreshId = await conn.storagePoolEventRefreshRegister(refresh.listener);
    const name = uniqueName('evpool');
    const p = await conn.defineStoragePoolXML(dirPoolXML(name, `/nonexistent/lvbt/${name}`));
    await p.build();
    await p.create();
    await p.refresh();
    await p.destroy();
    await p.undefine();
    const mine = (await life.waitFor(5)).filter((e) => e.pool.getName() === name);
    expect(mine.map((e) => e.eventName)).toEqual([
      'defined',
      'created',
      'started',
      'stopped',
      'undefined',
    ]);
    expect((await refresh.waitFor(1)).map((e) => e.pool.getName())).toContain(name);
    await conn.storagePoolEventDeregister(lifeId);
    await conn.storagePoolEventDeregister(refreshId);
  });

  it('ends every registration and route when the connection closes', async () => {
    const base = bindingStats();
    const c2 = await Connect.open(TEST_URI);
    await c2.domainEventLifecycleRegister(() => undefined);
    await c2.networkEventLifecycleRegister(() => undefined);
    await c2.storagePoolEventLifecycleRegister(() => undefined);
    expect(bindingStats().eventRegistrations).toBe(base.eventRegistrations + 3);
    expect(bindingStats().eventRoutes).toBe(base.eventRoutes + 4);
    await c2.close();
    expect(bindingStats().eventRegistrations).toBe(base.eventRegistrations);
    expect(bindingStats().eventRoutes).toBe(base.eventRoutes);
  });

  it('rejects a registration with a non-function listener or a deregistration of an unknown ID', async () => {
    await expect(conn.domainEventLifecycleRegister(undefined as never)).rejects.toThrow(TypeError);
    await expect(conn.domainEventDeregister(987654)).rejects.toMatchObject({
      name: 'LibvirtError',
    });
  });
});
