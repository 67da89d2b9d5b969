// The few Kubernetes CEL library functions our CRD rules call (ip, cidr, url), in TypeScript.
// They follow the API server's Go semantics where these differ from Node's: no leading zeros
// in IPv4, no IPv6 zones, no IPv4-mapped IPv6, URLs parsed like Go's url.ParseRequestURI.
import { BlockList, isIPv6 } from 'node:net';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** CEL isIP(): an IPv4 or IPv6 address in canonical-enough form, as Go's netip accepts it. */
export function isIP(s: string): boolean {
  return ipFamily(s) !== undefined;
}

/** CEL ip(s).family(): 4, 6, or undefined when s is not an address. */
export function ipFamily(s: string): 4 | 6 | undefined {
  if (IPV4.test(s)) return 4;
  // Zones (fe80::1%eth0) and IPv4-mapped forms (::ffff:1.2.3.4) are refused by the API server.
  if (isIPv6(s) && !s.includes('%') && !/^::ffff:[\d.]+$/i.test(s)) return 6;
  return undefined;
}

interface Cidr {
  address: string;
  family: 4 | 6;
  prefix: number;
}

function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const address = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  const family = ipFamily(address);
  if (family === undefined || !/^(0|[1-9]\d{0,2})$/.test(bits)) return undefined;
  const prefix = Number(bits);
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { address, family, prefix };
}

/** CEL isCIDR(). */
export function isCIDR(s: string): boolean {
  return parseCidr(s) !== undefined;
}

function mustCidr(s: string): Cidr {
  const c = parseCidr(s);
  if (!c) throw new TypeError(`'${s}' is not a CIDR`);
  return c;
}

/** CEL cidr(s).ip().family(). */
export function cidrFamily(s: string): 4 | 6 {
  return mustCidr(s).family;
}

/** CEL cidr(s).prefixLength(). */
export function cidrPrefixLength(s: string): number {
  return mustCidr(s).prefix;
}

/** CEL cidr(s).containsIP(ip): false for an address of the other family. */
export function cidrContainsIP(s: string, ip: string): boolean {
  const c = mustCidr(s);
  const family = ipFamily(ip);
  if (family !== c.family) return false;
  const list = new BlockList();
  const type = c.family === 4 ? 'ipv4' : 'ipv6';
  list.addSubnet(c.address, c.prefix, type);
  return list.check(ip, type);
}

function ipv4ToNumber(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function numberToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** The IPv4 address as an integer, for ordering (what our rule computes with split and int). */
export function ipv4Number(ip: string): number {
  if (!IPV4.test(ip)) throw new TypeError(`'${ip}' is not an IPv4 address`);
  return ipv4ToNumber(ip);
}

/** CEL string(cidr(s).masked()) for IPv4: the network address and prefix, e.g. 10.0.0.0/8. */
export function ipv4CidrMasked(s: string): string {
  const c = mustCidr(s);
  if (c.family !== 4) throw new TypeError(`'${s}' is not an IPv4 CIDR`);
  const size = 2 ** (32 - c.prefix);
  return `${numberToIpv4(Math.floor(ipv4ToNumber(c.address) / size) * size)}/${c.prefix}`;
}

/** CEL cidr(s).ip(), as text. */
export function cidrAddress(s: string): string {
  return mustCidr(s).address;
}

const NOT_GLOBAL_UNICAST = new BlockList();
NOT_GLOBAL_UNICAST.addAddress('0.0.0.0', 'ipv4');
NOT_GLOBAL_UNICAST.addAddress('255.255.255.255', 'ipv4');
NOT_GLOBAL_UNICAST.addSubnet('127.0.0.0', 8, 'ipv4');
NOT_GLOBAL_UNICAST.addSubnet('169.254.0.0', 16, 'ipv4');
NOT_GLOBAL_UNICAST.addSubnet('224.0.0.0', 4, 'ipv4');
NOT_GLOBAL_UNICAST.addAddress('::', 'ipv6');
NOT_GLOBAL_UNICAST.addAddress('::1', 'ipv6');
NOT_GLOBAL_UNICAST.addSubnet('fe80::', 10, 'ipv6');
NOT_GLOBAL_UNICAST.addSubnet('ff00::', 8, 'ipv6');

/**
 * CEL ip(s).isGlobalUnicast(), after Go's netip: anything but the unspecified, loopback,
 * link-local and multicast addresses (and IPv4's broadcast); private ranges count as global.
 */
export function ipIsGlobalUnicast(ip: string): boolean {
  const family = ipFamily(ip);
  if (family === undefined) throw new TypeError(`'${ip}' is not an IP address`);
  return !NOT_GLOBAL_UNICAST.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

// Characters Go's url package refuses in a host name (everything else printable is allowed,
// including the sub-delims and '<', '>', '"').
const BAD_HOST_CHAR = /[^A-Za-z0-9\-._~!$&'()*+,;=:[\]<>"%]/;
const BAD_USERINFO_CHAR = /[^A-Za-z0-9\-._~!$&'()*+,;=:%@]/;
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

interface RequestUri {
  hostname: string;
}

/** Go's url.ParseRequestURI, reduced to what CEL's isURL() and getHostname() need. */
function parseRequestUri(s: string): RequestUri | undefined {
  if (hasControlCharacter(s)) return undefined;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(s);
  if (!scheme)
    return s.startsWith('/') && !BAD_ESCAPE.test(s.split('?')[0] ?? '')
      ? { hostname: '' }
      : undefined;
  let rest = s.slice(scheme[0].length);
  if (!rest.startsWith('/')) return { hostname: '' }; // an opaque URI (mailto:x) is valid too
  rest = rest.split('?')[0] ?? '';
  if (!rest.startsWith('//')) return BAD_ESCAPE.test(rest) ? undefined : { hostname: '' };
  const afterSlashes = rest.slice(2);
  const slash = afterSlashes.indexOf('/');
  const authority = slash < 0 ? afterSlashes : afterSlashes.slice(0, slash);
  const path = slash < 0 ? '' : afterSlashes.slice(slash);
  if (BAD_ESCAPE.test(path)) return undefined;
  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? '' : authority.slice(0, at);
  if (BAD_USERINFO_CHAR.test(userinfo) || BAD_ESCAPE.test(userinfo)) return undefined;
  let host = at < 0 ? authority : authority.slice(at + 1);
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close < 0 || !/^(:\d*)?$/.test(host.slice(close + 1))) return undefined;
    return { hostname: host.slice(1, close) };
  }
  const colon = host.lastIndexOf(':');
  if (colon >= 0) {
    if (!/^\d*$/.test(host.slice(colon + 1))) return undefined;
    host = host.slice(0, colon);
  }
  if (BAD_HOST_CHAR.test(host) || BAD_ESCAPE.test(host)) return undefined;
  return { hostname: host };
}

/** CEL isURL(). */
export function isURL(s: string): boolean {
  return parseRequestUri(s) !== undefined;
}

/** CEL url(s).getHostname(): the host without port or IPv6 brackets ('' when there is none). */
export function urlHostname(s: string): string {
  const u = parseRequestUri(s);
  if (!u) throw new TypeError(`'${s}' is not a URL`);
  return u.hostname;
}
