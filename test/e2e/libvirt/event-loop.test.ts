// The binding's event loop (src/libvirt/native/event-loop.cc) on a real libvirtd: while many
// calls share one remote connection, libvirt's client hands its socket from thread to thread
// and re-enables the loop's watch in between; the loop must sleep through that instead of
// spinning on the readable socket. Events still arrive meanwhile.
import { readFile, readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { DomainLifecycleEvent } from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName, useSystemLibvirt } from './fixtures.js';

const libvirt = useSystemLibvirt();

/** CPU ticks (user + system) per thread name of this process. */
async function ticksByThread(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const tid of await readdir('/proc/self/task')) {
    try {
      const name = (await readFile(`/proc/self/task/${tid}/comm`, 'utf8')).trim();
      const stat = await readFile(`/proc/self/task/${tid}/stat`, 'utf8');
      // utime and stime are fields 14 and 15 of stat(5).
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + Number(f[11]) + Number(f[12]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

describe('the binding event loop on a remote connection', () => {
  it('stays idle while 1,000 calls are in flight on one connection, and delivers events', async () => {
    const events: DomainLifecycleEvent[] = [];
    const conn = libvirt.conn();
    const id = await conn.domainEventLifecycleRegister((e) => events.push(e));
    try {
      const dom = libvirt.throwAway(
        await conn.defineDomainXML(qemuDomainXML(uniqueName('evloop'))),
      );
      const uuid = dom.getUUIDString();
      const before = await ticksByThread();
      let started = 0;
      await Promise.all(
        Array.from({ length: 1_000 }, async () => {
          while (started++ < 20_000) await conn.lookupDomainByUUID(uuid);
        }),
      );
      const after = await ticksByThread();
      const used = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
      const total = [...after.keys()].reduce((sum, name) => sum + used(name), 0);
      // Spinning, the event thread took about a third of the process's CPU here.
      expect(total).toBeGreaterThan(0);
      expect(used('libvirt-events')).toBeLessThanOrEqual(Math.max(2, total * 0.05));

      await dom.undefine();
      const name = dom.getName();
      const deadline = Date.now() + 10_000;
      while (!events.some((e) => e.domain.getName() === name && e.eventName === 'undefined')) {
        if (Date.now() > deadline) throw new Error('no undefined event within 10 s');
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await conn.domainEventDeregister(id);
    }
  });
});
