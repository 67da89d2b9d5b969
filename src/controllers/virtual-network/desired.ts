// VirtualNetwork spec -> the libvirt network document this node should have. Pure.
//
// Naming and addressing rules (part of what users see, so stated once here):
// - the libvirt network is named like the object and carries its metadata.uid as UUID;
// - the bridge is spec.bridge, else 'lvo' + the first 10 hex digits of SHA-256(metadata.uid):
//   13 characters, inside Linux's 15-character limit, the same on every node and every pass,
//   and distinct per object without a registry of names;
// - spec.ipv4.cidr names the host's own address on the network, 192.168.150.1/24 becoming
//   <ip address='192.168.150.1' prefix='24'>, or the network itself, 192.168.150.0/24, where
//   the host takes the first usable address (192.168.150.1); that address is the guests'
//   gateway and DNS server. spec.ipv6.cidr the same way (fd00:10:1::/64 -> fd00:10:1::1), as
//   a second <ip family='ipv6'>; IPv6 addresses are written as libvirt prints them (RFC 5952,
//   lower case), so what it reads back compares equal.
import { createHash } from 'node:crypto';
import type { VirtualNetwork } from '../../api/generated/types.js';
import { libvirtUuid } from '../../api/names.js';
import type {
  DhcpHost,
  DnsHost,
  ForwardMode,
  NetworkDocument,
  NetworkIp,
} from '../../libvirt/xml/network.js';
import { selectsNode } from '../node-selector.js';

export type NetworkMode = VirtualNetwork['spec']['mode'];

export function defaultBridgeName(uid: string): string {
  return 'lvo' + createHash('sha256').update(uid).digest('hex').slice(0, 10);
}

/** The libvirt network's UUID: the object's metadata.uid (a network has no spec.uuid). */
export function networkUuid(vnet: VirtualNetwork): string {
  return libvirtUuid({ metadata: vnet.metadata });
}

export function bridgeName(vnet: VirtualNetwork): string {
  return vnet.spec.bridge ?? defaultBridgeName(networkUuid(vnet));
}

export function modeOf(vnet: VirtualNetwork): NetworkMode {
  return vnet.spec.mode ?? 'nat';
}

/** 'a.b.c.d/n' -> address and prefix length; the CRD's pattern has already checked the form. */
export function parseCidr(cidr: string): { address: string; prefix: number } {
  const slash = cidr.indexOf('/');
  const prefix = Number(cidr.slice(slash + 1));
  if (slash < 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
    throw new TypeError(`spec.ipv4.cidr '${cidr}' is not an IPv4 address with a prefix length`);
  }
  return { address: cidr.slice(0, slash), prefix };
}

function ipv4String(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * The host's address and the prefix length of spec.ipv4.cidr: the address as written, or for
 * the network form (192.168.150.0/24) the first usable address of the network.
 */
export function ipv4HostAddress(cidr: string): { address: string; prefix: number } {
  const { address, prefix } = parseCidr(cidr);
  const [first] = rangeOf(cidr);
  const n = ipv4Number(address);
  return { address: n === first ? ipv4String(first + 1) : address, prefix };
}

/** An IPv6 address as 128-bit number; undefined when it is not one. */
function ipv6Number(address: string): bigint | undefined {
  if (!/^[0-9a-fA-F:]+$/.test(address) || address.split('::').length > 2) return undefined;
  const [head = '', tail] = address.split('::');
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const missing = 8 - left.length - right.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined;
  const all = [...left, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...right];
  if (all.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  return all.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/**
 * RFC 5952 text, as libvirt (inet_ntop) prints it: lower case, no leading zeros, the longest
 * run of two or more zero groups (the first of equals) as '::'.
 */
function ipv6String(n: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best.len < 2) return hex(groups);
  return `${hex(groups.slice(0, best.at))}::${hex(groups.slice(best.at + best.len))}`;
}

/** A valid IPv6 address in libvirt's spelling (the CRD has checked it is one). */
export function canonicalIpv6(address: string): string {
  const n = ipv6Number(address);
  if (n === undefined) throw new TypeError(`'${address}' is not an IPv6 address`);
  return ipv6String(n);
}

/** Like ipv4HostAddress, for spec.ipv6.cidr: fd00:10:1::/64 -> fd00:10:1::1. */
export function ipv6HostAddress(cidr: string): { address: string; prefix: number } {
  const slash = cidr.indexOf('/');
  const n = ipv6Number(cidr.slice(0, slash));
  const prefix = Number(cidr.slice(slash + 1));
  if (slash < 0 || n === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 128) {
    throw new TypeError(`spec.ipv6.cidr '${cidr}' is not an IPv6 address with a prefix length`);
  }
  const hostBits = BigInt(128 - prefix);
  const network = (n >> hostBits) << hostBits;
  return { address: ipv6String(n === network ? network + 1n : n), prefix };
}

/** A subnet as a routing table holds it: the network's first address as a number, and the prefix. */
export interface Subnet {
  family: 'ipv4' | 'ipv6';
  network: bigint;
  prefix: number;
}

/** The subnet of an address/prefix (host or network form) of either family. */
export function subnetOf(family: Subnet['family'], cidr: string): Subnet {
  if (family === 'ipv4') {
    return { family, network: BigInt(rangeOf(cidr)[0]), prefix: parseCidr(cidr).prefix };
  }
  const { address, prefix } = ipv6HostAddress(cidr);
  const bits = BigInt(128 - prefix);
  return { family, network: ((ipv6Number(address) ?? 0n) >> bits) << bits, prefix };
}

/** The subnets the spec puts on the bridge, by the field that asks for each (none in mode bridge). */
export function specSubnets(vnet: VirtualNetwork): Array<{ field: string; subnet: Subnet }> {
  if (modeOf(vnet) === 'bridge') return [];
  const out: Array<{ field: string; subnet: Subnet }> = [];
  const v4 = vnet.spec.ipv4?.cidr;
  if (v4 !== undefined) out.push({ field: 'spec.ipv4.cidr', subnet: subnetOf('ipv4', v4) });
  const v6 = vnet.spec.ipv6?.cidr;
  if (v6 !== undefined) out.push({ field: 'spec.ipv6.cidr', subnet: subnetOf('ipv6', v6) });
  return out;
}

/** Whether two subnets share an address: the shorter prefix's network holds the other's. */
export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
  if (a.family !== b.family) return false;
  const shift = BigInt((a.family === 'ipv4' ? 32 : 128) - Math.min(a.prefix, b.prefix));
  return a.network >> shift === b.network >> shift;
}

export function subnetString(s: Subnet): string {
  const address = s.family === 'ipv4' ? ipv4String(Number(s.network)) : ipv6String(s.network);
  return `${address}/${s.prefix}`;
}

/**
 * What the spec asks for that libvirt or the host cannot do in this mode, or undefined. The
 * CRD already refuses ipv4 with mode bridge; libvirt also refuses an MTU there ("mtu size only
 * allowed in open, route, nat, and isolated mode"), and a host bridge has no dnsmasq to serve
 * DNS records. Caught here so the user gets the field name instead of a libvirt XML error.
 */
export function unsupportedSpec(vnet: VirtualNetwork): string | undefined {
  if (modeOf(vnet) !== 'bridge') return unusableInRoutedModes(vnet);
  if (vnet.spec.mtu !== undefined) {
    return 'spec.mtu cannot be set with mode bridge: the host bridge keeps its own MTU';
  }
  if ((vnet.spec.dns?.hosts ?? []).length > 0) {
    return 'spec.dns.hosts cannot be set with mode bridge: libvirt serves no DNS on a host bridge';
  }
  return undefined;
}

/** IPv6 needs links of at least this many bytes (RFC 8200). */
const IPV6_MIN_MTU = 1280;

/**
 * What the modes with their own bridge cannot do although the schema lets it through: the
 * kernel puts no IPv6 address on a link below 1280 bytes, so libvirt's start fails with only
 * "Failed to add IP address"; and with neither ipv4 nor ipv6 libvirt runs no dnsmasq, so DNS
 * records would be accepted and serve nothing.
 */
function unusableInRoutedModes(vnet: VirtualNetwork): string | undefined {
  const { mtu, ipv4, ipv6, dns } = vnet.spec;
  if (mtu !== undefined && mtu < IPV6_MIN_MTU && ipv6 !== undefined) {
    return (
      `spec.mtu ${mtu} is below ${IPV6_MIN_MTU}, the smallest MTU IPv6 works on: the host ` +
      `cannot put spec.ipv6 on the bridge; raise spec.mtu or remove spec.ipv6`
    );
  }
  if ((dns?.hosts ?? []).length > 0 && dns?.enabled !== false && !ipv4 && !ipv6) {
    return (
      'spec.dns.hosts needs spec.ipv4 or spec.ipv6: libvirt serves DNS only on an address of ' +
      'the network, and this one has none'
    );
  }
  return undefined;
}

/**
 * The most addresses libvirt 9.0 lets one IPv4 DHCP range hold (measured: 65534 defines,
 * 65535 is "too large (> 65535)"). An IPv6 range must stay inside one 16-bit block.
 */
const MAX_DHCP_RANGE = 65534;

/** Ranges a network's own address must never lie in: the host has them for itself. */
const RESERVED_RANGES: Array<[cidr: string, what: string]> = [
  ['0.0.0.0/8', '"this network"'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
];

function ipv4Number(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function rangeOf(cidr: string): [first: number, last: number] {
  const { address, prefix } = parseCidr(cidr);
  const size = 2 ** (32 - prefix);
  const first = Math.floor(ipv4Number(address) / size) * size;
  return [first, first + size - 1];
}

/**
 * Why spec.ipv4.cidr (or the IPv6 DHCP range) cannot be given to a bridge, or undefined.
 * libvirt checks a new network against the host's routes, but loopback routes live in the
 * local table it does not read: 127.0.0.2/8 starts, and a bridge then claims the host's
 * loopback range.
 */
export function unusableAddress(vnet: VirtualNetwork): string | undefined {
  // CEL has no order on IPv6 addresses, so this check is the controller's.
  const dhcp6 = vnet.spec.ipv6?.dhcp;
  if (dhcp6 && modeOf(vnet) !== 'bridge') {
    const start = ipv6Number(dhcp6.rangeStart);
    const end = ipv6Number(dhcp6.rangeEnd);
    if (start !== undefined && end !== undefined && end < start) {
      return `spec.ipv6.dhcp.rangeEnd ${dhcp6.rangeEnd} is lower than rangeStart ${dhcp6.rangeStart}`;
    }
    if (start !== undefined && end !== undefined && start >> 16n !== end >> 16n) {
      return `spec.ipv6.dhcp: the range ${dhcp6.rangeStart} - ${dhcp6.rangeEnd} spans more than one block of 65536 addresses; libvirt serves a DHCPv6 range only where rangeStart and rangeEnd differ in their last group`;
    }
  }
  const ipv4 = vnet.spec.ipv4;
  if (ipv4 === undefined || modeOf(vnet) === 'bridge') return undefined;
  const cidr = ipv4.cidr;
  const [first, last] = rangeOf(cidr);
  for (const [reserved, what] of RESERVED_RANGES) {
    const [rFirst, rLast] = rangeOf(reserved);
    if (first <= rLast && rFirst <= last) {
      return `spec.ipv4.cidr ${cidr} overlaps ${reserved} (${what}), which the host keeps for itself; use a private range such as 192.168.150.1/24`;
    }
  }
  return unservableIpv4(ipv4);
}

/**
 * Addresses inside the subnet that cannot do what the spec gives them. libvirt refuses a DHCP
 * range from the network address, up to the broadcast address or of more than 65535 addresses
 * only at define, in words a retry cannot change (so a refusal would read as transient); it
 * takes the broadcast address for the host and a fixed lease on the host's own address, and
 * the network then cannot route for its guests or hands out the gateway's address. The CEL
 * rules have put every address inside the subnet already.
 */
function unservableIpv4(ipv4: NonNullable<VirtualNetwork['spec']['ipv4']>): string | undefined {
  const [first, last] = rangeOf(ipv4.cidr);
  const subnet = `${ipv4String(first)}/${parseCidr(ipv4.cidr).prefix}`;
  const host = ipv4HostAddress(ipv4.cidr).address;
  if (ipv4Number(host) === last) {
    return `spec.ipv4.cidr ${ipv4.cidr}: the host address is the broadcast address of ${subnet}; give the host another one, e.g. ${ipv4String(first + 1)}`;
  }
  const dhcp = ipv4.dhcp;
  if (!dhcp) return undefined;
  if (ipv4Number(dhcp.rangeStart) === first) {
    return `spec.ipv4.dhcp.rangeStart ${dhcp.rangeStart} is the network address of ${subnet}; start the range above it`;
  }
  const size = ipv4Number(dhcp.rangeEnd) - ipv4Number(dhcp.rangeStart) + 1;
  if (size > MAX_DHCP_RANGE) {
    return `spec.ipv4.dhcp: the range ${dhcp.rangeStart} - ${dhcp.rangeEnd} holds ${size} addresses; libvirt serves at most ${MAX_DHCP_RANGE}`;
  }
  if (ipv4Number(dhcp.rangeEnd) === last) {
    return `spec.ipv4.dhcp.rangeEnd ${dhcp.rangeEnd} is the broadcast address of ${subnet}; end the range below it`;
  }
  for (const h of dhcp.hosts ?? []) {
    const n = ipv4Number(h.ipAddress);
    const what =
      h.ipAddress === host
        ? "the host address (the guests' gateway)"
        : n === first
          ? `the network address of ${subnet}`
          : n === last
            ? `the broadcast address of ${subnet}`
            : undefined;
    if (what) {
      return `spec.ipv4.dhcp.hosts[${h.macAddress}].ipAddress ${h.ipAddress} is ${what}; give that guest another address`;
    }
  }
  return undefined;
}

const FORWARD: Record<NetworkMode, ForwardMode> = {
  nat: 'nat',
  route: 'route',
  bridge: 'bridge',
  isolated: 'none',
};

/** The full document to define. Call unsupportedSpec first: this does not repeat its checks. */
export function desiredNetwork(vnet: VirtualNetwork): NetworkDocument {
  const name = String(vnet.metadata.name);
  const uuid = networkUuid(vnet);
  const mode = modeOf(vnet);
  const doc: NetworkDocument = {
    name,
    uuid,
    stamp: { kind: 'VirtualNetwork', name, uid: uuid },
    forward: FORWARD[mode],
    bridge: { name: bridgeName(vnet) },
    ips: [],
  };
  if (mode === 'bridge') return doc;
  if (vnet.spec.mtu !== undefined) doc.mtu = vnet.spec.mtu;
  const dns = desiredDns(vnet);
  if (dns) doc.dns = dns;
  if (vnet.spec.ipv4) doc.ips = [desiredIp(vnet.spec.ipv4)];
  if (vnet.spec.ipv6) doc.ips.push(desiredIpv6(vnet.spec.ipv6));
  return doc;
}

// DNS is on by default in libvirt, so an enabled DNS without records is no element at all:
// that is also what libvirt reads back, and the plan compares like with like.
function desiredDns(vnet: VirtualNetwork): NetworkDocument['dns'] {
  if (vnet.spec.dns?.enabled === false) return { enable: false, hosts: [] };
  const hosts = desiredDnsHosts(vnet);
  return hosts.length > 0 ? { hosts } : undefined;
}

function desiredIpv6(ipv6: NonNullable<VirtualNetwork['spec']['ipv6']>): NetworkIp {
  const ip: NetworkIp = { family: 'ipv6', ...ipv6HostAddress(ipv6.cidr) };
  if (ipv6.dhcp) {
    ip.dhcp = {
      ranges: [
        { start: canonicalIpv6(ipv6.dhcp.rangeStart), end: canonicalIpv6(ipv6.dhcp.rangeEnd) },
      ],
      hosts: [],
    };
  }
  return ip;
}

function desiredIp(ipv4: NonNullable<VirtualNetwork['spec']['ipv4']>): NetworkIp {
  const { address, prefix } = ipv4HostAddress(ipv4.cidr);
  const ip: NetworkIp = { address, prefix };
  if (ipv4.dhcp) {
    ip.dhcp = {
      ranges: [{ start: ipv4.dhcp.rangeStart, end: ipv4.dhcp.rangeEnd }],
      hosts: (ipv4.dhcp.hosts ?? []).map(dhcpHost),
    };
  }
  return ip;
}

function dhcpHost(h: { macAddress: string; ipAddress: string; hostname?: string }): DhcpHost {
  const host: DhcpHost = { mac: h.macAddress.toLowerCase(), ip: h.ipAddress };
  if (h.hostname !== undefined) host.name = h.hostname;
  return host;
}

function desiredDnsHosts(vnet: VirtualNetwork): DnsHost[] {
  if (vnet.spec.dns?.enabled === false) return [];
  return (vnet.spec.dns?.hosts ?? []).map((h) => ({
    ip: h.ipAddress,
    hostnames: [...h.hostnames],
  }));
}

/**
 * Whether this node should have the network. 'unknown' when the selector needs the Node's
 * labels and the Node is not (yet) in the cache: then nothing is created or removed, since a
 * missing Node must never read as "no longer selected" and tear a network down.
 */
export function placementOn(
  vnet: VirtualNetwork,
  node: { metadata?: { labels?: Record<string, string> } } | undefined,
): 'selected' | 'notSelected' | 'unknown' {
  const selector = vnet.spec.nodeSelector;
  const empty =
    !selector ||
    (Object.keys(selector.matchLabels ?? {}).length === 0 &&
      (selector.matchExpressions ?? []).length === 0);
  if (empty) return 'selected';
  if (!node) return 'unknown';
  return selectsNode(selector, node.metadata?.labels ?? {}) ? 'selected' : 'notSelected';
}

/**
 * Whether the network should exist on this node: a deleted object is absent everywhere; else
 * the node selector decides ('unknown' while it cannot).
 */
export function wantedOn(
  vnet: VirtualNetwork,
  node: { metadata?: { labels?: Record<string, string> } } | undefined,
): 'present' | 'absent' | 'unknown' {
  if (vnet.metadata.deletionTimestamp) return 'absent';
  const placement = placementOn(vnet, node);
  return placement === 'selected' ? 'present' : placement === 'notSelected' ? 'absent' : 'unknown';
}
