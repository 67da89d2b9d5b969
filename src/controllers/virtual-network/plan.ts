// desired + observed -> the libvirt calls that close the gap. Pure.
//
// Only the fields the operator owns are compared, each projected from the document onto the
// spec field it comes from, so libvirt's additions (a generated MAC, <nat><port>, stp/delay on
// the bridge, a netmask where we wrote a prefix) are never drift.
//
// Two kinds of fields:
// - live: DHCP hosts and DNS hosts. virNetworkUpdate changes them in the running network
//   (dnsmasq is reloaded, guests stay connected).
// - restart-time: everything else. The persistent definition is redefined at once, but the
//   running network keeps its old settings until it is restarted, which disconnects every
//   guest from the bridge; the operator never does that by itself and reports RestartRequired
//   naming the fields instead (see README.md for how a user applies them).
import { isDeepStrictEqual } from 'node:util';
import type { DhcpHost, DnsHost, NetworkDocument, NetworkIp } from '../../libvirt/xml/network.js';
import type { VirtualNetwork } from '../../api/generated/types.js';
import {
  bridgeName,
  desiredNetwork,
  modeOf,
  specSubnets,
  subnetOf,
  subnetsOverlap,
  subnetString,
  unsupportedSpec,
  unusableAddress,
  type Subnet,
} from './desired.js';
import type { HostRoute, ObservedNetwork, OursNetwork } from './observe.js';
import type { Problem } from '../kit.js';

export type UpdateScope = 'live' | 'liveAndConfig';

export type NetworkStep =
  /** Define (or redefine) the persistent definition with our UUID. */
  | { op: 'define'; doc: NetworkDocument }
  | { op: 'setAutostart'; autostart: boolean }
  | { op: 'start' }
  | { op: 'dhcpHost'; command: 'add' | 'modify' | 'delete'; host: DhcpHost; scope: UpdateScope }
  | { op: 'dnsHost'; command: 'add' | 'delete'; host: DnsHost; scope: UpdateScope }
  | { op: 'destroy' }
  | { op: 'undefine' };

/**
 * The network lifecycle events (by name, as the agent routes them) that `executed` makes libvirt
 * send. A redefinition sends 'defined' even when the network already existed: were it to wake
 * the key, a pass that defines again every time (a pending restart-time change on a driver
 * that cannot show the persistent definition of a running network) would run without end.
 */
export function ownNetworkChanges(executed: readonly NetworkStep[]): string[] {
  const events: Partial<Record<NetworkStep['op'], string>> = {
    define: 'defined',
    start: 'started',
    destroy: 'stopped',
    undefine: 'undefined',
  };
  return executed.flatMap((s) => events[s.op] ?? []);
}

// ---- owned fields ----

function ipv4Of(doc: NetworkDocument): NetworkIp | undefined {
  return doc.ips.find((ip) => (ip.family ?? 'ipv4') === 'ipv4' && ip.address.includes('.'));
}

function ipv6Of(doc: NetworkDocument): NetworkIp | undefined {
  return doc.ips.find((ip) => ip.family === 'ipv6');
}

export function prefixOf(ip: NetworkIp): number | undefined {
  if (ip.prefix !== undefined) return ip.prefix;
  if (ip.netmask === undefined) return undefined;
  const bits = ip.netmask
    .split('.')
    .map((octet) => Number(octet).toString(2).padStart(8, '0'))
    .join('');
  return bits.replace(/0+$/, '').length;
}

const sortedDhcpHosts = (hosts: readonly DhcpHost[]): DhcpHost[] =>
  hosts
    .map((h) => ({ mac: h.mac?.toLowerCase() ?? null, ip: h.ip, name: h.name ?? null }))
    .sort((a, b) => hostKey(a).localeCompare(hostKey(b))) as DhcpHost[];

const sortedDnsHosts = (hosts: readonly DnsHost[]): DnsHost[] =>
  hosts
    .map((h) => ({ ip: h.ip, hostnames: [...h.hostnames].sort() }))
    .sort((a, b) => a.ip.localeCompare(b.ip));

const dhcpOf = (doc: NetworkDocument) => ipv4Of(doc)?.dhcp;
const dnsEnabled = (doc: NetworkDocument) => doc.dns?.enable !== false;

/** Restart-time fields, by the spec field they come from. */
const RESTART_FIELDS: ReadonlyArray<readonly [string, (doc: NetworkDocument) => unknown]> = [
  ['spec.mode', (doc) => doc.forward],
  ['spec.bridge', (doc) => doc.bridge?.name ?? null],
  ['spec.mtu', (doc) => doc.mtu ?? null],
  ['spec.dns.enabled', dnsEnabled],
  [
    'spec.ipv4.cidr',
    (doc) => {
      const ip = ipv4Of(doc);
      return ip ? `${ip.address}/${prefixOf(ip)}` : null;
    },
  ],
  ['spec.ipv4.dhcp', (doc) => dhcpOf(doc)?.ranges.map((r) => `${r.start}-${r.end}`) ?? null],
  [
    'spec.ipv6.cidr',
    (doc) => {
      const ip = ipv6Of(doc);
      return ip ? `${ip.address}/${ip.prefix}` : null;
    },
  ],
  ['spec.ipv6.dhcp', (doc) => ipv6Of(doc)?.dhcp?.ranges.map((r) => `${r.start}-${r.end}`) ?? null],
];

const LIVE_FIELDS: ReadonlyArray<readonly [string, (doc: NetworkDocument) => unknown]> = [
  ['spec.ipv4.dhcp.hosts', (doc) => sortedDhcpHosts(dhcpOf(doc)?.hosts ?? [])],
  ['spec.dns.hosts', (doc) => sortedDnsHosts(dnsEnabled(doc) ? (doc.dns?.hosts ?? []) : [])],
];

function differing(
  fields: typeof RESTART_FIELDS,
  desired: NetworkDocument,
  observed: NetworkDocument,
): string[] {
  return fields
    .filter(([, get]) => !isDeepStrictEqual(get(desired), get(observed)))
    .map(([field]) => field);
}

/** The spec fields the running network does not reflect and only a restart would apply. */
export function restartFields(desired: NetworkDocument, running: NetworkDocument): string[] {
  return differing(RESTART_FIELDS, desired, running);
}

function configDiffers(desired: NetworkDocument, config: NetworkDocument): boolean {
  return (
    differing(RESTART_FIELDS, desired, config).length > 0 ||
    differing(LIVE_FIELDS, desired, config).length > 0
  );
}

// ---- live host updates ----

function hostKey(h: { mac?: string | null; name?: string | null; ip: string }): string {
  return h.mac ? `mac:${h.mac.toLowerCase()}` : h.name ? `name:${h.name}` : `ip:${h.ip}`;
}

type DhcpChange = { command: 'add' | 'modify' | 'delete'; host: DhcpHost };

/**
 * DHCP host changes, keyed by MAC. Deletions come first, then modifications, then additions,
 * because libvirt refuses to add a host whose MAC, IP or name another entry still has. A
 * changed host whose new IP or name another remaining entry holds (two hosts swapping
 * addresses) is deleted and re-added: libvirt's MODIFY would match that other entry.
 */
export function dhcpHostChanges(
  observed: readonly DhcpHost[],
  desired: readonly DhcpHost[],
): DhcpChange[] {
  const want = new Map(desired.map((h) => [hostKey(h), h]));
  const have = new Map(observed.map((h) => [hostKey(h), h]));
  const deletes: DhcpChange[] = [];
  const modifies: DhcpChange[] = [];
  const adds: DhcpChange[] = [];
  const kept = observed.filter((h) => want.has(hostKey(h)));
  for (const old of observed) {
    const next = want.get(hostKey(old));
    if (!next) deletes.push({ command: 'delete', host: old });
    else if (old.ip !== next.ip || (old.name ?? null) !== (next.name ?? null)) {
      const clash = kept.some(
        (other) =>
          hostKey(other) !== hostKey(old) &&
          (other.ip === next.ip || (next.name !== undefined && other.name === next.name)),
      );
      if (clash) {
        deletes.push({ command: 'delete', host: old });
        adds.push({ command: 'add', host: next });
      } else modifies.push({ command: 'modify', host: next });
    }
  }
  for (const host of desired) {
    if (!have.has(hostKey(host))) adds.push({ command: 'add', host });
  }
  return [...deletes, ...modifies, ...adds];
}

type DnsChange = { command: 'add' | 'delete'; host: DnsHost };

/**
 * DNS host changes, keyed by IP. libvirt cannot modify a DNS host record ("only added or
 * deleted"), so a changed one is deleted and re-added. A deletion names only the IP: libvirt
 * matches a record by IP or by any of its names and refuses when several match.
 */
export function dnsHostChanges(
  observed: readonly DnsHost[],
  desired: readonly DnsHost[],
): DnsChange[] {
  const want = new Map(desired.map((h) => [h.ip, h]));
  const have = new Map(observed.map((h) => [h.ip, h]));
  const deletes: DnsChange[] = [];
  const adds: DnsChange[] = [];
  for (const old of observed) {
    const next = want.get(old.ip);
    if (!next || !sameNames(old, next))
      deletes.push({ command: 'delete', host: { ip: old.ip, hostnames: [] } });
  }
  for (const host of desired) {
    const old = have.get(host.ip);
    if (!old || !sameNames(old, host)) adds.push({ command: 'add', host });
  }
  return [...deletes, ...adds];
}

const sameNames = (a: DnsHost, b: DnsHost) =>
  isDeepStrictEqual([...a.hostnames].sort(), [...b.hostnames].sort());

/**
 * The host updates that bring `running` to `desired`, or none when the sections they live in
 * differ in a restart-time way (another subnet, DHCP or DNS switched on or off): then the
 * hosts come with the restart.
 */
function hostUpdates(
  desired: NetworkDocument,
  running: NetworkDocument,
  scope: UpdateScope,
): NetworkStep[] {
  const steps: NetworkStep[] = [];
  const sameSubnet = !restartFields(desired, running).includes('spec.ipv4.cidr');
  const want = dhcpOf(desired);
  const have = dhcpOf(running);
  if (sameSubnet && want && have) {
    for (const c of dhcpHostChanges(have.hosts, want.hosts))
      steps.push({ op: 'dhcpHost', ...c, scope });
  }
  if (dnsEnabled(desired) && dnsEnabled(running)) {
    const changes = dnsHostChanges(running.dns?.hosts ?? [], desired.dns?.hosts ?? []);
    for (const c of changes) steps.push({ op: 'dnsHost', ...c, scope });
  }
  return steps;
}

// ---- plans ----

export interface NetworkPlan {
  steps: NetworkStep[];
  /** Set when the plan stops short of the goal (and then has no steps). */
  problem?: Problem;
}

/** A libvirt network with our name that is not ours: reported, never adopted or changed. */
export function nameConflict(observed: ObservedNetwork, nodeName: string): Problem | undefined {
  if (observed.state !== 'foreign') return undefined;
  const owner = observed.stamp
    ? `it belongs to ${observed.stamp.kind} ${observed.stamp.name} with uid ${observed.stamp.uid}`
    : 'the operator did not create it';
  return {
    reason: 'NameConflict',
    message:
      `node ${nodeName} already has a libvirt network '${observed.name}' (uuid ${observed.uuid}); ` +
      `${owner}, so it is left untouched. Remove or rename it on the node, or rename this object.`,
  };
}

/** Deletion waits while guests on this node are attached to the network. */
export function inUse(guests: readonly string[], nodeName: string): Problem {
  return {
    reason: 'InUse',
    message:
      `not removed from node ${nodeName}: running guests still use it (${guests.join(', ')}); ` +
      `it is removed once they are stopped or deleted`,
  };
}

/** What only the node itself can tell; undefined = not known (libvirt's test driver has no host). */
export interface HostFacts {
  /** For mode bridge: whether the host has a bridge of that name. */
  bridgeExists?: boolean;
  /** For mode bridge: the other running libvirt network that made that bridge, if one did. */
  bridgeOwner?: string;
  /**
   * For the other modes, when a running network's spec names another bridge or a network is
   * about to be created or started: whether a host device already has the bridge's name
   * (libvirt's define checks only its own networks' bridges).
   */
  bridgeTaken?: boolean;
  /** The subnets the host's interfaces are attached to. */
  routes?: readonly HostRoute[];
}

/** The subnets a network document puts on its bridge. */
function documentSubnets(doc: NetworkDocument): Subnet[] {
  return doc.ips.flatMap((ip) => {
    const prefix = prefixOf(ip);
    if (prefix === undefined) return [];
    const family = ip.family === 'ipv6' || ip.address.includes(':') ? 'ipv6' : 'ipv4';
    return [subnetOf(family, `${ip.address}/${prefix}`)];
  });
}

/**
 * Whether a host route would take traffic of the network's subnet: any attached subnet that
 * overlaps it, and a gateway route inside it (more specific, it wins over the bridge's route).
 * A gateway route holding the subnet (10.0.0.0/8 through a VPN) loses to the bridge: no clash.
 */
const takesPart = (route: HostRoute, subnet: Subnet) =>
  subnetsOverlap(route, subnet) && (!route.gateway || route.prefix >= subnet.prefix);

const sameSubnet = (a: Subnet, b: Subnet) =>
  a.family === b.family && a.network === b.network && a.prefix === b.prefix;

/**
 * A subnet of the spec that a host interface other than the network's own bridge already
 * uses: starting the network would split the host's routing between two interfaces. For a
 * network that is running (`running`, its live definition) only the subnets a restart would
 * bring are judged, since its current ones are on its own bridge: a clash is reported before
 * the user restarts the network into it (which would leave it down, its guests cut off).
 */
export function subnetConflict(
  vnet: VirtualNetwork,
  routes: readonly HostRoute[],
  nodeName: string,
  running?: NetworkDocument,
): Problem | undefined {
  const own = new Set([bridgeName(vnet), running?.bridge?.name]);
  const held = running ? documentSubnets(running) : [];
  for (const { field, subnet } of specSubnets(vnet)) {
    if (held.some((h) => sameSubnet(h, subnet))) continue;
    const clash = routes.find((r) => !own.has(r.iface) && takesPart(r, subnet));
    if (clash) {
      const where = clash.gateway
        ? `, routed through a gateway on interface ${clash.iface}`
        : ` of interface ${clash.iface}`;
      const kept = running
        ? '; the running network keeps its current subnet and its saved definition is unchanged'
        : '';
      return {
        reason: 'SubnetConflict',
        message:
          `${field} ${subnetString(subnet)} overlaps ${subnetString(clash)}${where} ` +
          `on node ${nodeName}; choose a subnet no host interface uses${kept}`,
      };
    }
  }
  return undefined;
}

/**
 * A running network with a bridge of its own whose spec moves it to mode bridge on that very
 * bridge: the bridge exists now only because libvirt made it for this network, and goes when
 * the network stops, so the restart that applies the mode would leave it down with no bridge to
 * attach to (BridgeNotFound, its guests cut off). Judged before the change is saved.
 */
function bridgeGoingWithRestart(
  vnet: VirtualNetwork,
  observed: ObservedNetwork,
  nodeName: string,
): Problem | undefined {
  if (modeOf(vnet) !== 'bridge' || observed.state !== 'ours' || !observed.active) return undefined;
  const bridge = bridgeName(vnet);
  if (observed.current.forward === 'bridge' || observed.current.bridge?.name !== bridge) {
    return undefined;
  }
  return {
    reason: 'BridgeNotFound',
    message:
      `spec.bridge: '${bridge}' on node ${nodeName} is the bridge libvirt made for this network, ` +
      `which goes when the network stops, so mode bridge would find no bridge after the restart; ` +
      `create a host bridge under another name and name it (the running network keeps its ` +
      `current mode and its saved definition is unchanged)`,
  };
}

/** The network should exist on this node: create it, converge it, or say why not. */
export function planPresent(
  vnet: VirtualNetwork,
  observed: ObservedNetwork,
  nodeName: string,
  host: HostFacts = {},
): NetworkPlan {
  const unsupported = unsupportedSpec(vnet);
  if (unsupported) return { steps: [], problem: { reason: 'Unsupported', message: unsupported } };
  const unusable = unusableAddress(vnet);
  if (unusable) return { steps: [], problem: { reason: 'InvalidAddress', message: unusable } };
  if (modeOf(vnet) === 'bridge' && host.bridgeExists === false) {
    const bridge = bridgeName(vnet);
    return {
      steps: [],
      problem: {
        reason: 'BridgeNotFound',
        message: `spec.bridge: node ${nodeName} has no bridge '${bridge}'; create it on the node or name an existing one`,
      },
    };
  }
  if (modeOf(vnet) === 'bridge' && host.bridgeOwner !== undefined) {
    const bridge = bridgeName(vnet);
    return {
      steps: [],
      problem: {
        reason: 'BridgeInUse',
        message:
          `spec.bridge: '${bridge}' on node ${nodeName} is the bridge libvirt network ` +
          `'${host.bridgeOwner}' made for itself: guests attached here would be on that network ` +
          `and lose their link whenever it stops; attach them to that network, or name a host ` +
          `bridge of your own`,
      },
    };
  }
  const ownBridge = bridgeGoingWithRestart(vnet, observed, nodeName);
  if (ownBridge) return { steps: [], problem: ownBridge };
  const conflict = nameConflict(observed, nodeName);
  if (conflict || observed.state === 'foreign') return { steps: [], problem: conflict };
  if (modeOf(vnet) !== 'bridge' && host.bridgeTaken === true) {
    // Judged before anything is defined: before a new bridge name (or a mode leaving 'bridge')
    // of a running network is saved, since the restart that would apply it fails; and before
    // a network is created or started, which would fail on the device and leave a network
    // defined (and marked for autostart) that cannot run.
    const bridge = bridgeName(vnet);
    const leaving =
      observed.state === 'ours' && observed.current.forward === 'bridge'
        ? `spec.mode ${modeOf(vnet)} has libvirt create the bridge itself, but `
        : '';
    const kept =
      observed.state === 'absent'
        ? 'nothing was created on the node'
        : observed.active
          ? 'the running network keeps its current bridge and its saved definition is unchanged'
          : 'the saved definition is unchanged';
    const fromSpec = vnet.spec.bridge !== undefined;
    const device = deviceHasBridgeName(`node ${nodeName}`, bridge, fromSpec);
    const message = `${fromSpec ? `spec.bridge: ${leaving}` : ''}${device} (${kept})`;
    return { steps: [], problem: { reason: 'BridgeInUse', message } };
  }
  // Judged before any define, so the saved definition (what a restart or a host reboot starts)
  // never takes a subnet that cannot start.
  const running = observed.state === 'ours' && observed.active ? observed.current : undefined;
  const clash = host.routes && subnetConflict(vnet, host.routes, nodeName, running);
  if (clash) return { steps: [], problem: clash };
  const autostart = vnet.spec.autostart ?? true;
  return observed.state === 'absent'
    ? planCreate(desiredNetwork(vnet), autostart)
    : planUpdate(desiredNetwork(vnet), autostart, observed);
}

/**
 * Why a host device already named like the network's bridge stops the network from starting,
 * and what to do: judged before a start (planPresent) and, when that look missed it, from
 * libvirt's refused start (actNetwork). `where` is the host ("node n1"), `bridgeFromSpec`
 * whether spec.bridge is set. The name derived from metadata.uid is this network's alone: a
 * device with it is, in all likelihood, the network's own bridge, left when libvirtd lost its
 * runtime state without a reboot (its /run not kept across a restart), so "omit spec.bridge"
 * would not help there.
 */
export function deviceHasBridgeName(
  where: string,
  bridge: string,
  bridgeFromSpec: boolean,
): string {
  return bridgeFromSpec
    ? `${where} already has a network device '${bridge}' that is not this network's, so the ` +
        `network could not start on it; name another bridge or omit spec.bridge`
    : `${where} already has a network device '${bridge}', the bridge name this network takes ` +
        `from its metadata.uid, that no libvirt network there made: most likely this network's ` +
        `own bridge, left behind when libvirtd lost its runtime state without a reboot, so the ` +
        `network could not start; once no guest uses it, remove it (ip link del ${bridge}), or ` +
        `set spec.bridge to another name`;
}

/**
 * The network should not exist on this node (deleted, or no longer selected). Only our own
 * network is removed, and not while running guests (`users`) are attached to it.
 */
export function planAbsent(
  observed: ObservedNetwork,
  users: readonly string[],
  nodeName: string,
): NetworkPlan {
  if (observed.state !== 'ours') return { steps: [] };
  if (users.length > 0) return { steps: [], problem: inUse(users, nodeName) };
  return planRemoval(observed);
}

/**
 * Whether the restart that applies the spec would have libvirt create a bridge the running
 * network does not already hold: a new spec.bridge, or a mode-bridge network (attached to a
 * host bridge it did not make) turning into one with its own bridge under that same name.
 * Then the host's devices are looked at first (HostFacts.bridgeTaken), since libvirt's define
 * checks only its own networks' bridges and the start would fail with "File exists", leaving
 * the network down.
 */
export function createsBridge(vnet: VirtualNetwork, observed: ObservedNetwork): boolean {
  if (modeOf(vnet) === 'bridge') return false;
  const pending = pendingRestart(vnet, observed);
  if (pending.includes('spec.bridge')) return true;
  return (
    pending.includes('spec.mode') &&
    observed.state === 'ours' &&
    observed.current.forward === 'bridge'
  );
}

/** The restart-time fields the running network of ours does not reflect yet. */
export function pendingRestart(vnet: VirtualNetwork, observed: ObservedNetwork): string[] {
  if (observed.state !== 'ours' || !observed.active || unsupportedSpec(vnet)) return [];
  return restartFields(desiredNetwork(vnet), observed.current);
}

/** Create the network this node lacks: define, mark autostart, start (each step resumable). */
export function planCreate(desired: NetworkDocument, autostart: boolean): NetworkPlan {
  const steps: NetworkStep[] = [{ op: 'define', doc: desired }];
  if (autostart) steps.push({ op: 'setAutostart', autostart: true });
  steps.push({ op: 'start' });
  return { steps };
}

/**
 * Converge an existing network of ours. The persistent definition is kept equal to the
 * desired one; the running network gets the live changes only.
 */
export function planUpdate(
  desired: NetworkDocument,
  autostart: boolean,
  observed: OursNetwork,
): NetworkPlan {
  const steps: NetworkStep[] = [];
  // Where the driver cannot show the persistent definition of a running network (libvirt's
  // test driver), the running one stands for it: then a pending restart-time change is
  // redefined on every pass, which is harmless, while live changes are written once.
  const config = observed.persistent ? (observed.config ?? observed.current) : undefined;
  if (!observed.active) {
    if (!config || configDiffers(desired, config)) steps.push({ op: 'define', doc: desired });
    if (observed.autostart !== autostart) steps.push({ op: 'setAutostart', autostart });
    steps.push({ op: 'start' });
    return { steps };
  }
  const running = observed.current;
  if (config && !configDiffers(desired, config)) {
    steps.push(...hostUpdates(desired, running, 'live'));
  } else if (
    config &&
    differing(RESTART_FIELDS, desired, config).length === 0 &&
    differing(LIVE_FIELDS, config, running).length === 0 &&
    restartFields(desired, running).length === 0
  ) {
    // Persistent and running definitions agree and differ from the spec in hosts only: one
    // virNetworkUpdate per host changes both, with no redefinition.
    steps.push(...hostUpdates(desired, running, 'liveAndConfig'));
  } else {
    steps.push({ op: 'define', doc: desired }, ...hostUpdates(desired, running, 'live'));
  }
  if (observed.autostart !== autostart) steps.push({ op: 'setAutostart', autostart });
  return { steps };
}

/** Remove our network from this host; each step is skipped once done, so it resumes. */
export function planRemoval(observed: OursNetwork): NetworkPlan {
  const steps: NetworkStep[] = [];
  if (observed.active) steps.push({ op: 'destroy' });
  if (observed.persistent) steps.push({ op: 'undefine' });
  return { steps };
}
