// Which domains the guest metrics count (docs/api.md, "Guest metrics"): a VirtualMachine's own
// domain, found as the reconciles find it, by the machine's UUID. A copy of its definition
// under another UUID (virt-clone, or `virsh dumpxml` and `define`, keep <metadata> and so our
// stamp) is someone else's domain; counted too, it summed into the machine's counters. And a
// machine deleted and created again with the same spec.uuid, whose new domain has the same
// UUID and name as the old one, is counted under its new uid even when no scrape saw the gap.
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { registerGuestMetrics } from '../../../src/agent/guest-metrics.js';
import { Connect, type Domain } from '../../../src/libvirt/index.js';
import { buildDomainXML } from '../../../src/libvirt/xml/domain.js';
import { TEST_URI, uniqueName } from './fixtures.js';

/** A domain; with vm and uid, stamped as VirtualMachine ns/vm's. */
function domainXML(name: string, uuid: string, vm?: string, uid?: string): string {
  return buildDomainXML({
    type: 'qemu',
    name,
    uuid,
    stamp: vm && uid ? { kind: 'VirtualMachine', namespace: 'ns', name: vm, uid } : undefined,
    memoryKiB: 65536,
    vcpu: { current: 1, max: 1 },
    os: { type: 'hvm', arch: 'x86_64' },
    features: { acpi: false, apic: false },
    devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
  });
}

/** A scrape's records are shared for up to a second (one bulk call per scrape). */
const nextScrape = () => new Promise((r) => setTimeout(r, 1_100));

describe('guest metrics ownership', () => {
  let conn: Connect;
  const domains: Domain[] = [];

  beforeAll(async () => {
    conn = await Connect.open(TEST_URI);
  });
  afterEach(async () => {
    for (const d of domains.splice(0)) {
      await d.destroy().catch(() => undefined);
      await d.undefine().catch(() => undefined);
    }
  });
  afterAll(async () => {
    await conn?.close();
  });

  async function start(xml: string): Promise<Domain> {
    const d = await conn.defineDomainXML(xml);
    domains.push(d);
    await d.create();
    return d;
  }

  it('counts the machine’s own domain, not a copy of it under another UUID', async () => {
    const vm = uniqueName('orig');
    const uid = randomUUID();
    await start(domainXML(`ns_${vm}`, uid, vm, uid));
    const cloneUuid = randomUUID();
    await start(domainXML(`${vm}-clone`, cloneUuid, vm, uid));
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, n) => (ns === 'ns' && n === vm ? { uid, uuid: uid } : undefined),
    });
    // The records every collector renders: the clone's figures would be added to the
    // machine's counters (and race for its gauges).
    const owned = await metrics.collect();
    expect(owned.map((r) => r.stats.uuid)).toEqual([uid]);
  });

  it('reads the stamp again when the machine is recreated with the same spec.uuid', async () => {
    const vm = uniqueName('again');
    const uuid = randomUUID();
    let uid = randomUUID();
    const first = await start(domainXML(`ns_${vm}`, uuid, vm, uid));
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, n) => (ns === 'ns' && n === vm ? { uid, uuid } : undefined),
    });
    expect((await metrics.collect()).map((r) => r.name)).toEqual([vm]);

    // Deleted and created again between two scrapes: the same UUID and domain name, a new uid.
    await first.destroy();
    await first.undefine();
    domains.splice(domains.indexOf(first), 1);
    uid = randomUUID();
    await start(domainXML(`ns_${vm}`, uuid, vm, uid));
    await nextScrape();
    expect((await metrics.collect()).map((r) => r.name)).toEqual([vm]);
  });

  it('reads the stamps again through a new connection (libvirtd restarted)', async () => {
    const vm = uniqueName('reopen');
    const uid = randomUUID();
    // Someone's domain under the UUID and name the machine will have: remembered as foreign.
    const foreign = await start(domainXML(`ns_${vm}`, uid));
    let current = conn;
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => current,
      vm: (ns, n) => (ns === 'ns' && n === vm ? { uid, uuid: uid } : undefined),
    });
    expect(await metrics.collect()).toEqual([]);

    // While the agent was away from libvirtd, that domain went and the machine's took its place.
    await foreign.destroy();
    await foreign.undefine();
    domains.splice(domains.indexOf(foreign), 1);
    await start(domainXML(`ns_${vm}`, uid, vm, uid));
    const reopened = await Connect.open(TEST_URI);
    try {
      current = reopened;
      await nextScrape();
      expect((await metrics.collect()).map((r) => r.name)).toEqual([vm]);
    } finally {
      await reopened.close();
    }
  });

  it('reads a foreign domain again once the machine’s own took its UUID and name', async () => {
    const vm = uniqueName('taken');
    const uid = randomUUID();
    // Someone's domain with the machine's UUID and domain name (UUIDConflict for the machine).
    const foreign = await start(domainXML(`ns_${vm}`, uid));
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, n) => (ns === 'ns' && n === vm ? { uid, uuid: uid } : undefined),
    });
    expect(await metrics.collect()).toEqual([]);

    // Its owner removes it and the agent starts the machine's domain, between two scrapes.
    await foreign.destroy();
    await foreign.undefine();
    domains.splice(domains.indexOf(foreign), 1);
    await start(domainXML(`ns_${vm}`, uid, vm, uid));
    await nextScrape();
    expect((await metrics.collect()).map((r) => r.name)).toEqual([vm]);
  });
});
