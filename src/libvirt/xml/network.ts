// The libvirt network XML the operator writes, typed after
// https://libvirt.org/formatnetwork.html for the fields it owns, plus the <host> snippets
// virNetworkUpdate takes for live DHCP and DNS host changes.
import {
  assign,
  attr,
  child,
  childText,
  children,
  flag,
  integer,
  oneOf,
  optionalInteger,
  optionalOneOf,
  requireValue,
  textOf,
  xmlCodec,
  type XmlElement,
  type XmlTree,
} from './codec.js';
import { stampFromMetadata, stampTree, type OwnershipStamp } from '../../ownership/metadata.js';
import { changedFields, normalMac, orNull } from '../../ownership/owned.js';

/** 'none' is an isolated network: libvirt's format has no <forward> element for it. */
export const FORWARD_MODES = ['nat', 'route', 'bridge', 'none'] as const;
export type ForwardMode = (typeof FORWARD_MODES)[number];
export const IP_FAMILIES = ['ipv4', 'ipv6'] as const;
export type IpFamily = (typeof IP_FAMILIES)[number];

export interface NetworkDocument {
  name: string;
  uuid: string;
  stamp?: OwnershipStamp;
  forward: ForwardMode;
  /** Absent name: libvirt picks virbrN. Linux limits bridge names to 15 characters. */
  bridge?: { name?: string; stp?: boolean; delay?: number };
  mtu?: number;
  dns?: { enable?: boolean; hosts: DnsHost[] };
  ips: NetworkIp[];
}

export interface NetworkIp {
  family?: IpFamily;
  address: string;
  /** One of netmask or prefix (libvirt accepts either, never both). */
  netmask?: string;
  prefix?: number;
  dhcp?: { ranges: DhcpRange[]; hosts: DhcpHost[] };
}
export interface DhcpRange {
  start: string;
  end: string;
}
export interface DhcpHost {
  mac?: string;
  ip: string;
  name?: string;
}
export interface DnsHost {
  ip: string;
  hostnames: string[];
}

/** The network document's elements that may repeat (the reader's lists). */
export const NETWORK_REPEATABLE = [
  'network.metadata.*',
  'network.ip',
  'network.ip.dhcp.range',
  'network.ip.dhcp.host',
  'network.dns.host',
  'network.dns.host.hostname',
];
const codec = xmlCodec('network', NETWORK_REPEATABLE);
const hostCodec = xmlCodec('host', ['host.hostname']);

// ---- build ----

export function buildNetworkXML(doc: NetworkDocument): string {
  return codec.build({
    name: doc.name,
    uuid: doc.uuid,
    metadata: doc.stamp ? stampTree(doc.stamp) : undefined,
    forward: doc.forward === 'none' ? undefined : { '@mode': doc.forward },
    bridge: doc.bridge
      ? {
          '@name': doc.bridge.name,
          '@stp': doc.bridge.stp === undefined ? undefined : doc.bridge.stp ? 'on' : 'off',
          '@delay': doc.bridge.delay,
        }
      : undefined,
    mtu: doc.mtu === undefined ? undefined : { '@size': doc.mtu },
    dns: doc.dns
      ? {
          '@enable': doc.dns.enable === undefined ? undefined : doc.dns.enable ? 'yes' : 'no',
          host: doc.dns.hosts.map(dnsHostTree),
        }
      : undefined,
    ip: doc.ips.map(ipTree),
  });
}

function ipTree(ip: NetworkIp): XmlTree {
  return {
    '@family': ip.family,
    '@address': ip.address,
    '@netmask': ip.netmask,
    '@prefix': ip.prefix,
    dhcp: ip.dhcp
      ? {
          range: ip.dhcp.ranges.map((r) => ({ '@start': r.start, '@end': r.end })),
          host: ip.dhcp.hosts.map(dhcpHostTree),
        }
      : undefined,
  };
}

function dhcpHostTree(host: DhcpHost): XmlTree {
  return { '@mac': host.mac, '@name': host.name, '@ip': host.ip };
}

function dnsHostTree(host: DnsHost): XmlTree {
  return { '@ip': host.ip, hostname: host.hostnames };
}

/** `<host mac= name= ip=/>` for virNetworkUpdate section IP_DHCP_HOST. */
export function buildDhcpHostXML(host: DhcpHost): string {
  return hostCodec.build(dhcpHostTree(host));
}

/** `<host ip=><hostname>…</hostname></host>` for virNetworkUpdate section DNS_HOST. */
export function buildDnsHostXML(host: DnsHost): string {
  return hostCodec.build(dnsHostTree(host));
}

export function parseDhcpHostXML(xml: string): DhcpHost {
  return parseDhcpHost(hostCodec.parse(xml), 'host');
}

export function parseDnsHostXML(xml: string): DnsHost {
  return parseDnsHost(hostCodec.parse(xml), 'host');
}

// ---- parse ----

export function parseNetworkXML(xml: string): NetworkDocument {
  const el = codec.parse(xml);
  const doc: NetworkDocument = {
    name: requireValue(childText(el, 'name'), 'network/name'),
    uuid: requireValue(childText(el, 'uuid'), 'network/uuid').trim(),
    forward: parseForward(child(el, 'forward')),
    ips: children(el, 'ip').map((ip, i) => parseIp(ip, `network/ip[${i}]`)),
  };
  const stamp = stampFromMetadata(child(el, 'metadata'));
  if (stamp) doc.stamp = stamp;
  const bridge = child(el, 'bridge');
  if (bridge) {
    doc.bridge = {};
    assign(doc.bridge, 'name', attr(bridge, 'name'));
    assign(doc.bridge, 'stp', flag(attr(bridge, 'stp'), 'network/bridge@stp'));
    assign(doc.bridge, 'delay', optionalInteger(attr(bridge, 'delay'), 'network/bridge@delay'));
  }
  const mtu = child(el, 'mtu');
  if (mtu)
    doc.mtu = integer(requireValue(attr(mtu, 'size'), 'network/mtu@size'), 'network/mtu@size');
  const dns = child(el, 'dns');
  if (dns) {
    doc.dns = {
      hosts: children(dns, 'host').map((h, i) => parseDnsHost(h, `network/dns/host[${i}]`)),
    };
    assign(doc.dns, 'enable', flag(attr(dns, 'enable'), 'network/dns@enable'));
  }
  return doc;
}

// A <forward> without mode means NAT, libvirt's default.
function parseForward(el: XmlElement | undefined): ForwardMode {
  if (el === undefined) return 'none';
  return oneOf(
    attr(el, 'mode') ?? 'nat',
    ['nat', 'route', 'bridge'] as const,
    'network/forward@mode',
  );
}

function parseIp(el: XmlElement, at: string): NetworkIp {
  const ip: NetworkIp = { address: requireValue(attr(el, 'address'), `${at}@address`) };
  assign(ip, 'family', optionalOneOf(attr(el, 'family'), IP_FAMILIES, `${at}@family`));
  assign(ip, 'netmask', attr(el, 'netmask'));
  assign(ip, 'prefix', optionalInteger(attr(el, 'prefix'), `${at}@prefix`));
  const dhcp = child(el, 'dhcp');
  if (dhcp) {
    ip.dhcp = {
      ranges: children(dhcp, 'range').map((r, i) => ({
        start: requireValue(attr(r, 'start'), `${at}/dhcp/range[${i}]@start`),
        end: requireValue(attr(r, 'end'), `${at}/dhcp/range[${i}]@end`),
      })),
      hosts: children(dhcp, 'host').map((h, i) => parseDhcpHost(h, `${at}/dhcp/host[${i}]`)),
    };
  }
  return ip;
}

function parseDhcpHost(el: XmlElement, at: string): DhcpHost {
  const host: DhcpHost = { ip: requireValue(attr(el, 'ip'), `${at}@ip`) };
  assign(host, 'mac', attr(el, 'mac'));
  assign(host, 'name', attr(el, 'name'));
  return host;
}

function parseDnsHost(el: XmlElement, at: string): DnsHost {
  return {
    ip: requireValue(attr(el, 'ip'), `${at}@ip`),
    hostnames: children(el, 'hostname').map((h) => textOf(h)),
  };
}

// ---- owned fields ----

/**
 * The fields of a network the operator owns (see owned.ts for the null/undefined
 * convention). An unset bridge name, STP or delay is libvirt's choice (virbrN, on, 0).
 */
export function ownedNetworkFields(doc: NetworkDocument) {
  const dnsHosts = doc.dns?.hosts ?? [];
  return {
    name: doc.name,
    uuid: doc.uuid.toLowerCase(),
    forward: doc.forward,
    bridge: {
      name: doc.bridge?.name,
      stp: doc.bridge?.stp,
      delay: doc.bridge?.delay,
    },
    mtu: orNull(doc.mtu),
    // An empty <dns/> and no <dns> mean the same: libvirt's default DNS service.
    dnsEnable: doc.dns?.enable,
    dnsHosts: dnsHosts.map((h) => ({ ip: h.ip, hostnames: [...h.hostnames] })),
    ips: doc.ips.map((ip) => ({
      family: ip.family,
      address: ip.address,
      netmask: orNull(ip.netmask),
      prefix: orNull(ip.prefix),
      dhcpRanges: (ip.dhcp?.ranges ?? []).map((r) => ({ start: r.start, end: r.end })),
      dhcpHosts: (ip.dhcp?.hosts ?? []).map((h) => ({
        mac: orNull(normalMac(h.mac)),
        ip: h.ip,
        name: orNull(h.name),
      })),
    })),
  };
}
export type OwnedNetworkFields = ReturnType<typeof ownedNetworkFields>;

export function changedNetworkFields(
  desired: NetworkDocument,
  observed: NetworkDocument,
): string[] {
  return changedFields(ownedNetworkFields(desired), ownedNetworkFields(observed));
}
