// XML for the binding's end-to-end tests against a real libvirtd with QEMU, built with an
// XML library. Names are unique per process so tests sharing a daemon never collide.
import { randomUUID } from 'node:crypto';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import { Connect, type Domain } from '../../../src/libvirt/index.js';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });

let counter = 0;
export function uniqueName(prefix: string): string {
  counter += 1;
  return `lvbt-${prefix}-${process.pid}-${counter}`;
}

/** A Linux bridge name (at most 15 characters) unique to this process. */
export function uniqueBridge(): string {
  counter += 1;
  return `lvbt${process.pid % 100000}x${counter}`.slice(0, 15);
}

/**
 * A TCG domain without disks: QEMU starts it (and idles in the firmware) in well under a second.
 * `scsi`: a virtio-scsi controller, whose disks QEMU unplugs without asking the guest.
 */
export function qemuDomainXML(
  name: string,
  opts: { memoryKiB?: number; scsi?: boolean } = {},
): string {
  return builder.build({
    domain: {
      '@_type': 'qemu',
      name,
      uuid: randomUUID(),
      memory: { '@_unit': 'KiB', '#text': opts.memoryKiB ?? 65536 },
      vcpu: 1,
      os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
      devices: {
        ...(opts.scsi ? { controller: { '@_type': 'scsi', '@_model': 'virtio-scsi' } } : {}),
        memballoon: { '@_model': 'virtio' },
      },
    },
  });
}

export function natNetworkXML(name: string, bridge: string, subnet: number): string {
  return builder.build({
    network: {
      name,
      uuid: randomUUID(),
      forward: { '@_mode': 'nat' },
      bridge: { '@_name': bridge, '@_stp': 'on', '@_delay': 0 },
      ip: {
        '@_address': `10.${subnet >> 8}.${subnet & 255}.1`,
        '@_netmask': '255.255.255.0',
        dhcp: {
          range: {
            '@_start': `10.${subnet >> 8}.${subnet & 255}.10`,
            '@_end': `10.${subnet >> 8}.${subnet & 255}.100`,
          },
        },
      },
    },
  });
}

export function dirPoolXML(name: string, targetPath: string): string {
  return builder.build({
    pool: { '@_type': 'dir', name, uuid: randomUUID(), target: { path: targetPath } },
  });
}

export function volumeXML(name: string, capacityBytes: number, format = 'raw'): string {
  return builder.build({
    volume: {
      name,
      capacity: { '@_unit': 'bytes', '#text': capacityBytes },
      // Sparse: libvirt refuses to shrink a volume below what is allocated.
      allocation: { '@_unit': 'bytes', '#text': 0 },
      target: { format: { '@_type': format } },
    },
  });
}

export function dhcpHostXML(mac: string, ip: string, name: string): string {
  return builder.build({ host: { '@_mac': mac, '@_ip': ip, '@_name': name } });
}

/**
 * For a test file: the system libvirtd (started if need be) and one connection to it, opened
 * before the file's tests and closed after them; the domains given to `throwAway` are undefined
 * first (a test may have undefined one itself).
 */
export function useSystemLibvirt(): {
  daemon: () => LibvirtDaemon;
  conn: () => Connect;
  throwAway: (dom: Domain) => Domain;
} {
  let daemon: LibvirtDaemon | undefined;
  let conn: Connect | undefined;
  const domains: Domain[] = [];
  beforeAll(async () => {
    daemon = await ensureLibvirtd();
    conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
  });
  afterAll(async () => {
    for (const d of domains) await d.undefine().catch(() => undefined);
    await conn?.close();
    await daemon?.stop();
  });
  return {
    daemon: () => daemon!,
    conn: () => conn!,
    throwAway: (dom) => {
      domains.push(dom);
      return dom;
    },
  };
}
