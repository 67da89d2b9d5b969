// The TypeScript twin of every CEL rule (x-kubernetes-validations) in crds/*.yaml, keyed by the
// rule's exact text. The validator refuses to start when a CRD rule has no twin here, and a
// unit test fails when a twin has no rule left, so the two cannot drift apart silently.
// A twin sees the node after defaulting, exactly as CEL's `self` (and `oldSelf` on update).
import {
  cidrContainsIP,
  cidrFamily,
  cidrPrefixLength,
  ipFamily,
  cidrAddress,
  ipIsGlobalUnicast,
  ipv4Number,
  isCIDR,
  isIP,
  isURL,
  urlHostname,
} from './cel-library.js';
import { compareQuantities, isQuantity } from './quantity.js';

// Twins read the JSON the schema has already shaped, as CEL does; `any` keeps them as short as
// the CEL they mirror (a rule only runs when the schema's type checks passed).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Node = any;
export type RuleTwin = (self: Node, oldSelf: Node) => boolean;

const has = (o: Node, key: string): boolean =>
  o !== null && typeof o === 'object' && o[key] !== undefined;
const str = (v: Node): string => String(v);

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return (
    ka.length === kb.length &&
    ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  );
}

const between = (q: Node, low: string, high: string): boolean =>
  !isQuantity(str(q)) ||
  (compareQuantities(str(q), low) >= 0 && compareQuantities(str(q), high) <= 0);

const countOf = <T>(list: T[], pred: (x: T) => boolean): number => list.filter(pred).length;

const selectorValuesRule: RuleTwin = (s) =>
  ['In', 'NotIn'].includes(s.operator)
    ? has(s, 'values') && s.values.length > 0
    : !has(s, 'values') || s.values.length === 0;

/** A label key as Kubernetes spells it ([prefix/]name): the CRDs' selector key pattern. */
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

const SYSTEM_DIRS = [
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/lib',
  '/lib32',
  '/lib64',
  '/proc',
  '/sbin',
  '/sys',
  '/usr',
];

/** The system directory `path` is or lies in (StoragePool.spec.path must not), if any. */
export function systemDirOf(path: string): string | undefined {
  return SYSTEM_DIRS.find((p) => path === p || path.startsWith(p + '/'));
}

/** No two items of the list set `field` to the same value (CEL names the items `a` and `b`). */
function uniqueWhereSet(field: string, a: string, b: string): [string, RuleTwin] {
  return [
    `self.all(${a}, !has(${a}.${field}) || self.exists_one(${b}, has(${b}.${field}) && ${b}.${field} == ${a}.${field}))`,
    (s) =>
      s.every(
        (x: Node) =>
          !has(x, field) || countOf(s, (y: Node) => has(y, field) && y[field] === x[field]) === 1,
      ),
  ];
}

/** VirtualNetwork: the DHCP range's start or end lies in the network's CIDR. */
function dhcpRangeInCIDR(end: 'rangeStart' | 'rangeEnd'): [string, RuleTwin] {
  return [
    `!has(self.dhcp) || !isCIDR(self.cidr) || !isIP(self.dhcp.${end}) || cidr(self.cidr).containsIP(self.dhcp.${end})`,
    (s) =>
      !has(s, 'dhcp') ||
      !isCIDR(s.cidr) ||
      !isIP(s.dhcp[end]) ||
      cidrContainsIP(s.cidr, s.dhcp[end]),
  ];
}

export const ruleTwins: ReadonlyMap<string, RuleTwin> = new Map<string, RuleTwin>([
  // Shared: immutability.
  ['self == oldSelf', (s, o) => deepEqual(s, o)],

  // VirtualNetwork and StoragePool: spec.nodeSelector.matchLabels
  // The key pattern bounds each DNS label and the name; the prefix as a whole is bounded apart.
  [
    "self.all(k, k.size() <= 317 && k.indexOf('/') <= 253 && k.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",
    (s) =>
      Object.keys(s).every((k) => k.length <= 317 && k.indexOf('/') <= 253 && LABEL_KEY.test(k)),
  ],
  // spec.nodeSelector.matchExpressions[].key
  ["self.indexOf('/') <= 253", (s) => str(s).indexOf('/') <= 253],

  // VirtualMachine
  [
    '!has(self.maxVcpus) || self.vcpus <= self.maxVcpus',
    (s) => !has(s, 'maxVcpus') || s.vcpus <= s.maxVcpus,
  ],
  [
    '!has(self.maxMemory) || !isQuantity(string(self.memory)) || !isQuantity(string(self.maxMemory)) || quantity(string(self.memory)).compareTo(quantity(string(self.maxMemory))) <= 0',
    (s) =>
      !has(s, 'maxMemory') ||
      !isQuantity(str(s.memory)) ||
      !isQuantity(str(s.maxMemory)) ||
      compareQuantities(str(s.memory), str(s.maxMemory)) <= 0,
  ],
  ['has(self.uuid) == has(oldSelf.uuid)', (s, o) => has(s, 'uuid') === has(o, 'uuid')],
  [
    '!has(self.boot) || !has(self.disks) || self.disks.all(d, d.volume != self.boot.kernel.volume && (!has(self.boot.initrd) || d.volume != self.boot.initrd.volume))',
    (s) =>
      !has(s, 'boot') ||
      !has(s, 'disks') ||
      s.disks.every(
        (d: Node) =>
          d.volume !== s.boot.kernel.volume &&
          (!has(s.boot, 'initrd') || d.volume !== s.boot.initrd.volume),
      ),
  ],
  [
    "!isQuantity(string(self)) || (quantity(string(self)).compareTo(quantity('1Mi')) >= 0 && quantity(string(self)).compareTo(quantity('16Ti')) <= 0)",
    (s) => between(s, '1Mi', '16Ti'),
  ],
  uniqueWhereSet('bootOrder', 'd', 'e'),
  [
    'self.all(d, self.exists_one(e, e.volume == d.volume))',
    (s) => s.every((d: Node) => countOf(s, (e: Node) => e.volume === d.volume) === 1),
  ],
  uniqueWhereSet('macAddress', 'i', 'j'),
  uniqueWhereSet('hostname', 'h', 'o'),
  [
    '!has(self.hosts) || size(self.hosts) == 0 || !has(self.enabled) || self.enabled',
    (s) => !has(s, 'hosts') || s.hosts.length === 0 || !has(s, 'enabled') || s.enabled === true,
  ],
  [
    "!has(self.secureBoot) || !self.secureBoot || self.firmware == 'uefi'",
    (s) => !has(s, 'secureBoot') || !s.secureBoot || s.firmware === 'uefi',
  ],
  [
    '!has(self.cpu) || !has(self.cpu.topology) || self.cpu.topology.sockets * self.cpu.topology.cores * self.cpu.topology.threads == (has(self.maxVcpus) ? self.maxVcpus : self.vcpus)',
    (s) =>
      !has(s, 'cpu') ||
      !has(s.cpu, 'topology') ||
      s.cpu.topology.sockets * s.cpu.topology.cores * s.cpu.topology.threads ===
        (has(s, 'maxVcpus') ? s.maxVcpus : s.vcpus),
  ],
  [
    "!has(self.cpu) || !has(self.cpu.mode) || self.cpu.mode != 'host-passthrough' || !has(self.domainType) || self.domainType != 'qemu'",
    (s) =>
      !has(s, 'cpu') ||
      !has(s.cpu, 'mode') ||
      s.cpu.mode !== 'host-passthrough' ||
      !has(s, 'domainType') ||
      s.domainType !== 'qemu',
  ],
  [
    "!has(self.mode) || self.mode != 'custom' || has(self.model)",
    (s) => !has(s, 'mode') || s.mode !== 'custom' || has(s, 'model'),
  ],
  [
    "!has(self.model) || (has(self.mode) && self.mode == 'custom')",
    (s) => !has(s, 'model') || (has(s, 'mode') && s.mode === 'custom'),
  ],
  [
    "!has(self.device) || self.device != 'cdrom' || !has(self.bus) || self.bus != 'virtio'",
    (s) => !has(s, 'device') || s.device !== 'cdrom' || !has(s, 'bus') || s.bus !== 'virtio',
  ],
  [
    "!has(self.readOnly) || !self.readOnly || !has(self.bus) || self.bus != 'sata' || (has(self.device) && self.device == 'cdrom')",
    (s) =>
      !has(s, 'readOnly') ||
      !s.readOnly ||
      !has(s, 'bus') ||
      s.bus !== 'sata' ||
      (has(s, 'device') && s.device === 'cdrom'),
  ],
  ["self.matches('^[0-9a-f][02468ace]')", (s) => /^[0-9a-f][02468ace]/.test(s)],
  [
    '!has(self.secretRef) || !(has(self.userData) || has(self.metaData) || has(self.networkData))',
    (s) =>
      !has(s, 'secretRef') || !(has(s, 'userData') || has(s, 'metaData') || has(s, 'networkData')),
  ],

  // Volume
  [
    '!has(self.spec.source) || !has(self.spec.source.clone) || self.spec.source.clone.volume != self.metadata.name',
    (s) =>
      !has(s.spec, 'source') ||
      !has(s.spec.source, 'clone') ||
      s.spec.source.clone.volume !== s.metadata?.name,
  ],
  [
    '!has(self.spec.source) || !has(self.spec.source.backingVolume) || self.spec.source.backingVolume.volume != self.metadata.name',
    (s) =>
      !has(s.spec, 'source') ||
      !has(s.spec.source, 'backingVolume') ||
      s.spec.source.backingVolume.volume !== s.metadata?.name,
  ],
  ['has(self.capacity) || has(self.source)', (s) => has(s, 'capacity') || has(s, 'source')],
  [
    '!has(oldSelf.capacity) || has(self.capacity)',
    (s, o) => !has(o, 'capacity') || has(s, 'capacity'),
  ],
  ['has(self.source) == has(oldSelf.source)', (s, o) => has(s, 'source') === has(o, 'source')],
  [
    "!has(self.source) || !has(self.source.backingVolume) || self.format == 'qcow2'",
    (s) => !has(s, 'source') || !has(s.source, 'backingVolume') || s.format === 'qcow2',
  ],
  [
    "!isQuantity(string(self)) || (quantity(string(self)).compareTo(quantity('1Mi')) >= 0 && quantity(string(self)).compareTo(quantity('64Ti')) <= 0)",
    (s) => between(s, '1Mi', '64Ti'),
  ],
  [
    '!isQuantity(string(self)) || !isQuantity(string(oldSelf)) || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0',
    (s, o) => !isQuantity(str(s)) || !isQuantity(str(o)) || compareQuantities(str(s), str(o)) >= 0,
  ],
  [
    '[has(self.clone), has(self.backingVolume), has(self.http)].filter(x, x).size() == 1',
    (s) => [has(s, 'clone'), has(s, 'backingVolume'), has(s, 'http')].filter(Boolean).length === 1,
  ],
  ["isURL(self) && url(self).getHostname() != ''", (s) => isURL(s) && urlHostname(s) !== ''],
  ["!self.matches('^https?://[^/?#]*@')", (s) => !/^https?:\/\/[^/?#]*@/.test(s)],

  // VirtualNetwork
  ["!(self in ['all', 'default'])", (s) => !['all', 'default'].includes(s)],
  ["self.mode != 'bridge' || has(self.bridge)", (s) => s.mode !== 'bridge' || has(s, 'bridge')],
  ["self.mode != 'bridge' || !has(self.ipv4)", (s) => s.mode !== 'bridge' || !has(s, 'ipv4')],
  [
    "!(self.mode in ['nat', 'route']) || has(self.ipv4)",
    (s) => !['nat', 'route'].includes(s.mode) || has(s, 'ipv4'),
  ],
  dhcpRangeInCIDR('rangeStart'),
  dhcpRangeInCIDR('rangeEnd'),
  [
    '!has(self.dhcp) || !has(self.dhcp.hosts) || !isCIDR(self.cidr) || self.dhcp.hosts.all(h, !isIP(h.ipAddress) || cidr(self.cidr).containsIP(h.ipAddress))',
    (s) =>
      !has(s, 'dhcp') ||
      !has(s.dhcp, 'hosts') ||
      !isCIDR(s.cidr) ||
      s.dhcp.hosts.every((h: Node) => !isIP(h.ipAddress) || cidrContainsIP(s.cidr, h.ipAddress)),
  ],
  ['!isCIDR(self) || cidr(self).ip().family() == 4', (s) => !isCIDR(s) || cidrFamily(s) === 4],
  [
    '!isCIDR(self) || cidr(self).ip().family() != 4 || (cidr(self).prefixLength() >= 8 && cidr(self).prefixLength() <= 30)',
    (s) =>
      !isCIDR(s) || cidrFamily(s) !== 4 || (cidrPrefixLength(s) >= 8 && cidrPrefixLength(s) <= 30),
  ],
  ["self.mode != 'bridge' || !has(self.ipv6)", (s) => s.mode !== 'bridge' || !has(s, 'ipv6')],
  ['isCIDR(self) && cidr(self).ip().family() == 6', (s) => isCIDR(s) && cidrFamily(s) === 6],
  [
    '!isCIDR(self) || cidr(self).ip().family() != 6 || (cidr(self).prefixLength() >= 64 && cidr(self).prefixLength() <= 126)',
    (s) =>
      !isCIDR(s) ||
      cidrFamily(s) !== 6 ||
      (cidrPrefixLength(s) >= 64 && cidrPrefixLength(s) <= 126),
  ],
  [
    '!isCIDR(self) || cidr(self).ip().family() != 6 || cidr(self).ip().isGlobalUnicast()',
    (s) => !isCIDR(s) || cidrFamily(s) !== 6 || ipIsGlobalUnicast(cidrAddress(s)),
  ],
  ['isIP(self) && ip(self).family() == 6', (s) => isIP(s) && ipFamily(s) === 6],
  [
    "!isIP(self.rangeStart) || !isIP(self.rangeEnd) || ip(self.rangeStart).family() != 4 || ip(self.rangeEnd).family() != 4 || int(self.rangeStart.split('.')[0]) * 16777216 + int(self.rangeStart.split('.')[1]) * 65536 + int(self.rangeStart.split('.')[2]) * 256 + int(self.rangeStart.split('.')[3]) <= int(self.rangeEnd.split('.')[0]) * 16777216 + int(self.rangeEnd.split('.')[1]) * 65536 + int(self.rangeEnd.split('.')[2]) * 256 + int(self.rangeEnd.split('.')[3])",
    (s) =>
      !isIP(s.rangeStart) ||
      !isIP(s.rangeEnd) ||
      ipFamily(s.rangeStart) !== 4 ||
      ipFamily(s.rangeEnd) !== 4 ||
      ipv4Number(s.rangeStart) <= ipv4Number(s.rangeEnd),
  ],
  [
    'self.all(h, self.exists_one(o, o.ipAddress == h.ipAddress))',
    (s) => s.every((h: Node) => countOf(s, (o: Node) => o.ipAddress === h.ipAddress) === 1),
  ],
  [
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
    selectorValuesRule,
  ],

  // StoragePool
  ["!self.matches('/[.]{1,2}(/|$)')", (s) => !/\/[.]{1,2}(\/|$)/.test(s)],
  [
    "!['/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/proc', '/sbin', '/sys', '/usr'].exists(p, self == p || self.startsWith(p + '/'))",
    (s) => systemDirOf(s) === undefined,
  ],
]);
