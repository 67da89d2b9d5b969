// Shared by the binding's integration tests: unique object names and libvirt XML built with
// an XML library (never string templates), for libvirt's in-process test driver.
import { randomUUID } from 'node:crypto';
import { XMLBuilder } from 'fast-xml-parser';

export const TEST_URI = 'test:///default';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });

let counter = 0;
/** A name no other test (or other run) uses: prefix, pid, counter. */
export function uniqueName(prefix: string): string {
  counter += 1;
  return `lvbt-${prefix}-${process.pid}-${counter}`;
}

export interface DomainSpec {
  name: string;
  uuid?: string;
  type?: string;
  memoryKiB?: number;
  currentMemoryKiB?: number;
  vcpus?: number;
  maxVcpus?: number;
  /** One `<interface type='network'>` per name. */
  networks?: string[];
}

export function domainXML(spec: DomainSpec): string {
  const max = spec.maxVcpus ?? spec.vcpus ?? 1;
  return builder.build({
    domain: {
      '@_type': spec.type ?? 'test',
      name: spec.name,
      uuid: spec.uuid ?? randomUUID(),
      memory: { '@_unit': 'KiB', '#text': spec.memoryKiB ?? 262144 },
      currentMemory: {
        '@_unit': 'KiB',
        '#text': spec.currentMemoryKiB ?? spec.memoryKiB ?? 262144,
      },
      vcpu: { '@_current': spec.vcpus ?? max, '#text': max },
      os: { type: { '@_arch': 'i686', '#text': 'hvm' } },
      ...(spec.networks?.length
        ? {
            devices: {
              interface: spec.networks.map((network) => ({
                '@_type': 'network',
                source: { '@_network': network },
              })),
            },
          }
        : {}),
    },
  });
}

export function networkXML(name: string, opts: { bridge?: string; uuid?: string } = {}): string {
  return builder.build({
    network: {
      name,
      uuid: opts.uuid ?? randomUUID(),
      bridge: { '@_name': opts.bridge ?? `vb${counter}x${process.pid % 10000}` },
      ip: {
        '@_address': '192.168.240.1',
        '@_netmask': '255.255.255.0',
        dhcp: { range: { '@_start': '192.168.240.10', '@_end': '192.168.240.100' } },
      },
    },
  });
}

/** A network in mode bridge on an existing host bridge: no `<ip>`, as libvirt wants it. */
export function hostBridgeNetworkXML(name: string, bridge: string): string {
  return builder.build({
    network: {
      name,
      uuid: randomUUID(),
      forward: { '@_mode': 'bridge' },
      bridge: { '@_name': bridge },
    },
  });
}

export function dirPoolXML(name: string, targetPath: string, uuid?: string): string {
  return builder.build({
    pool: {
      '@_type': 'dir',
      name,
      uuid: uuid ?? randomUUID(),
      target: { path: targetPath },
    },
  });
}

export function volumeXML(name: string, capacityBytes: number, format = 'raw'): string {
  return builder.build({
    volume: {
      name,
      capacity: { '@_unit': 'bytes', '#text': capacityBytes },
      target: { format: { '@_type': format } },
    },
  });
}

export function dhcpHostXML(mac: string, ip: string, name: string): string {
  return builder.build({ host: { '@_mac': mac, '@_ip': ip, '@_name': name } });
}

export function dnsHostXML(ip: string, hostname: string): string {
  return builder.build({ host: { '@_ip': ip, hostname } });
}
