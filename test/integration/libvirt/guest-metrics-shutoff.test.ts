// Guest metrics cover running and paused machines (docs/api.md, "Guest metrics": a stopped VM
// has no series). libvirtd 9.0 reports a shut-off domain in virConnectGetAllDomainStats with its
// last cpu.time, balloon.current and vcpu.current, so without a filter a stopped VM kept its series
// (seen on qemu:///system after runStrategy: Halted). libvirt's test driver lists shut-off
// domains in the same call, which is all this needs.
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerGuestMetrics } from '../../../src/agent/guest-metrics.js';
import { Connect, type Domain } from '../../../src/libvirt/index.js';
import { buildDomainXML } from '../../../src/libvirt/xml/domain.js';
import { TEST_URI, uniqueName } from './fixtures.js';

describe('guest metrics of a stopped machine', () => {
  const uid = randomUUID();
  const name = uniqueName('halted');
  let conn: Connect;
  let domain: Domain;

  beforeAll(async () => {
    conn = await Connect.open(TEST_URI);
    domain = await conn.defineDomainXML(
      buildDomainXML({
        type: 'qemu',
        name: `ns_${name}`,
        uuid: uid,
        stamp: { kind: 'VirtualMachine', namespace: 'ns', name, uid },
        memoryKiB: 65536,
        vcpu: { current: 1, max: 1 },
        os: { type: 'hvm', arch: 'x86_64' },
        features: { acpi: false, apic: false },
        devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
      }),
    );
  });
  afterAll(async () => {
    await domain?.destroy().catch(() => undefined);
    await domain?.undefine().catch(() => undefined);
    await conn?.close();
  });

  it('has no series while shut off, and has them once running', async () => {
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, n) => (ns === 'ns' && n === name ? { uid, uuid: uid } : undefined),
    });
    expect(await metrics.collect()).toEqual([]);
    await domain.create();
    // A scrape's records are shared for up to a second (one bulk call per scrape).
    await new Promise((r) => setTimeout(r, 1_100));
    const owned = await metrics.collect();
    expect(owned.map((r) => `${r.namespace}/${r.name}`)).toEqual([`ns/${name}`]);
  });

  it('keeps a paused machine’s series (docs/api.md, "Guest metrics")', async () => {
    const metrics = registerGuestMetrics({
      registry: new Registry(),
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, n) => (ns === 'ns' && n === name ? { uid, uuid: uid } : undefined),
    });
    if (!(await domain.isActive())) await domain.create();
    await domain.suspend();
    try {
      const owned = await metrics.collect();
      expect(owned.map((r) => [r.name, r.stats.state?.stateName])).toEqual([[name, 'paused']]);
    } finally {
      await domain.resume();
    }
  });
});
