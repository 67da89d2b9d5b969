// A QEMU (TCG) domain started from XML on the real libvirtd, observed through lifecycle,
// reboot and device-removed events, and destroyed.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  Connect,
  DomainDeviceModifyFlags,
  DomainInterfaceAddressesSource,
  isNotFound,
  type Domain,
  type DomainDeviceRemovedEvent,
  type DomainLifecycleEvent,
} from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName } from './fixtures.js';

let daemon: LibvirtDaemon;
let conn: Connect;
let dom: Domain | undefined;
const exec = promisify(execFile);

beforeAll(async () => {
  daemon = await ensureLibvirtd();
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
});

afterAll(async () => {
  await dom?.destroy().catch(() => undefined);
  await conn?.close();
  await daemon?.stop();
});

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('a QEMU domain on a real libvirtd', () => {
  it('starts from XML, reports state, memory and events, resets and is destroyed', async () => {
    const name = uniqueName('qemu');
    const events: DomainLifecycleEvent[] = [];
    const reboots: string[] = [];
    const lifeId = await conn.domainEventLifecycleRegister((e) => {
      if (e.domain.getName() === name) events.push(e);
    });
    const rebootId = await conn.domainEventRebootRegister((e) => reboots.push(e.domain.getName()));

    dom = await conn.createDomainXML(qemuDomainXML(name, { memoryKiB: 131072 }));
    expect(await dom.isActive()).toBe(true);
    expect(await dom.isPersistent()).toBe(false);
    expect(dom.getID()).toBeGreaterThan(0);
    expect(await dom.getState()).toMatchObject({ stateName: 'running', reasonName: 'booted' });
    await until('the started event', () => events.some((e) => e.eventName === 'started'));
    expect(events.find((e) => e.eventName === 'started')?.detailName).toBe('booted');

    const info = await dom.getInfo();
    expect(info.maxMem).toBe(131072n);
    expect(info.nrVirtCpu).toBe(1);
    expect(await dom.getMaxMemory()).toBe(131072n);
    expect((await dom.memoryStats()).actual).toBe(131072n);
    expect(await dom.getXMLDesc()).toContain("type='qemu'");
    expect(await dom.interfaceAddresses(DomainInterfaceAddressesSource.LEASE)).toEqual([]);

    await dom.reset();
    await until('the reboot event', () => reboots.includes(name));

    await dom.destroy();
    await until('the stopped event', () => events.some((e) => e.eventName === 'stopped'));
    expect(events.find((e) => e.eventName === 'stopped')?.detailName).toBe('destroyed');
    const uuid = dom.getUUIDString();
    dom = undefined;
    // Transient: gone once destroyed.
    expect(isNotFound(await conn.lookupDomainByUUID(uuid).catch((e) => e), 'domain')).toBe(true);
    await conn.domainEventDeregister(lifeId);
    await conn.domainEventDeregister(rebootId);
  });

  it('reports the alias of a device QEMU released after a live detach', async () => {
    const name = uniqueName('unplug');
    const dir = await mkdtemp('/tmp/lvo-unplug-');
    const image = join(dir, 'data.img');
    await exec('qemu-img', ['create', '-f', 'raw', image, '1M']);
    const removed: DomainDeviceRemovedEvent[] = [];
    const id = await conn.domainEventDeviceRemovedRegister((e) => {
      if (e.domain.getName() === name) removed.push(e);
    });
    try {
      dom = await conn.createDomainXML(qemuDomainXML(name, { scsi: true }));
      const disk =
        `<disk type='file' device='disk'><driver name='qemu' type='raw'/>` +
        `<source file='${image}'/><target dev='sdb' bus='scsi'/></disk>`;
      await dom.attachDeviceFlags(disk, DomainDeviceModifyFlags.LIVE);
      const alias = /<target dev='sdb'[^]*?<alias name='([^']+)'/.exec(await dom.getXMLDesc())?.[1];
      expect(alias).toBeTruthy();
      // A SCSI disk needs no answer from the guest: the detach completes, then the event says so.
      await dom.detachDeviceFlags(disk, DomainDeviceModifyFlags.LIVE);
      await until('the device-removed event', () => removed.length > 0);
      expect(removed.map((e) => e.devAlias)).toEqual([alias]);
      expect(removed[0]!.domain.getUUIDString()).toBe(dom.getUUIDString());
      expect(await dom.getXMLDesc()).not.toContain("dev='sdb'");
    } finally {
      await dom?.destroy().catch(() => undefined);
      dom = undefined;
      await conn.domainEventDeregister(id);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
