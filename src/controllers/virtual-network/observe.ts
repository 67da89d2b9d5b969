// What this host has for a VirtualNetwork: the libvirt network found by UUID (ours only when
// it carries our stamp for this very object), else a network squatting on the name. I/O only;
// the result is a plain value the pure plan and status read.
import { access, readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import type { VirtualMachine, VirtualNetwork } from '../../api/generated/types.js';
import type { Connect } from '../../libvirt/connection.js';
import {
  ConnectListAllDomainsFlags,
  ConnectListAllNetworksFlags,
  NetworkXMLFlags,
} from '../../libvirt/constants.js';
import { isUnsupported } from '../../libvirt/errors.js';
import type { Network } from '../../libvirt/network.js';
import { stampOf, type OwnershipStamp } from '../../ownership/metadata.js';
import { domainNetworks } from '../../libvirt/xml/domain.js';
import { parseNetworkXML, type NetworkDocument } from '../../libvirt/xml/network.js';
import { hostUUID, INDEX_NETWORK, INDEX_UUID } from '../indexes.js';
import { networkUuid, type Subnet } from './desired.js';
import type { ControllerContext } from '../context.js';
import { absentIfNotFound } from '../shared/absent.js';

export interface OursNetwork {
  state: 'ours';
  network: Network;
  uuid: string;
  active: boolean;
  persistent: boolean;
  autostart: boolean;
  /** The running definition when active, else the persistent one. */
  current: NetworkDocument;
  /**
   * The persistent definition: `current` when inactive; when active, read with the INACTIVE
   * flag, or undefined where the driver cannot show it (libvirt's test driver) or the network
   * is transient.
   */
  config: NetworkDocument | undefined;
}

/** A libvirt network with our name (or UUID) that this object did not create. */
export interface ForeignNetwork {
  state: 'foreign';
  name: string;
  uuid: string;
  /** The stamp it carries, when it belongs to another (e.g. an earlier, deleted) object. */
  stamp: OwnershipStamp | undefined;
}

export type ObservedNetwork = { state: 'absent' } | OursNetwork | ForeignNetwork;

export async function observeNetwork(
  conn: Connect,
  vnet: VirtualNetwork,
): Promise<ObservedNetwork> {
  const uuid = networkUuid(vnet);
  // A network found by a lookup can be undefined before the next read: then it is absent.
  const byUuid = await conn.lookupNetworkByUUIDString(uuid).catch(absentOn);
  const described = byUuid && (await describe(conn, byUuid, vnet).catch(absentOn));
  if (described) return described;
  const byName = await conn.lookupNetworkByName(String(vnet.metadata.name)).catch(absentOn);
  const xml = byName && (await byName.getXMLDesc().catch(absentOn));
  if (!byName || !xml) return { state: 'absent' };
  return foreign(byName, stampOf(xml));
}

// Only the stamp is read from a network that is not ours: it may use libvirt features our
// document does not model (forward mode 'open', 'hostdev', …) and must still be reported.
function foreign(network: Network, stamp: OwnershipStamp | undefined): ForeignNetwork {
  return { state: 'foreign', name: network.getName(), uuid: network.getUUIDString(), stamp };
}

const absentOn = absentIfNotFound('network');
const absentDomain = absentIfNotFound('domain');

async function describe(
  conn: Connect,
  network: Network,
  vnet: VirtualNetwork,
): Promise<ObservedNetwork> {
  const xml = await network.getXMLDesc();
  const stamp = stampOf(xml);
  if (!isOurs(stamp, vnet)) return foreign(network, stamp);
  const active = await network.isActive();
  const current = parseNetworkXML(xml);
  const persistent = await network.isPersistent();
  const autostart = persistent ? await network.getAutostart() : false;
  let config: NetworkDocument | undefined;
  if (!active) config = persistent ? current : undefined;
  else if (persistent) config = await inactiveDefinition(conn, network);
  return {
    state: 'ours',
    network,
    uuid: current.uuid,
    active,
    persistent,
    autostart,
    current,
    config,
  };
}

// libvirt's test driver refuses the INACTIVE flag ("unsupported flags (0x1)"): asked on
// every pass of every active network, that was one refused call each before the answer
// without it. A connection that refused it once is not asked again (as storage-pool/observe.ts
// does for pools); a new connection, to a driver that may take it, is.
const noInactiveFlag = new WeakSet<Connect>();

async function inactiveDefinition(
  conn: Connect,
  network: Network,
): Promise<NetworkDocument | undefined> {
  if (noInactiveFlag.has(conn)) return undefined;
  try {
    return parseNetworkXML(await network.getXMLDesc(NetworkXMLFlags.INACTIVE));
  } catch (err) {
    if (!isUnsupported(err)) throw err;
    noInactiveFlag.add(conn);
    return undefined;
  }
}

function isOurs(stamp: OwnershipStamp | undefined, vnet: VirtualNetwork): boolean {
  return (
    stamp !== undefined &&
    stamp.kind === 'VirtualNetwork' &&
    stamp.name === vnet.metadata.name &&
    stamp.uid === networkUuid(vnet)
  );
}

/**
 * The running guests on this node that removing the network would cut off, by name: each
 * VirtualMachine on this node whose spec references the network and whose domain runs (found
 * through the cache's network index, checked against libvirt by the VM's UUID), and each
 * running domain whose live definition has an interface on it. The spec alone is not enough:
 * a NIC switched to another network keeps the old one until the guest restarts, and a domain
 * the operator did not define can be attached too. A domain of a VirtualMachine is named
 * `namespace/name`, any other `libvirt domain '<name>'`.
 */
export async function runningUsers(
  ctx: ControllerContext,
  vnet: VirtualNetwork,
): Promise<string[]> {
  const name = String(vnet.metadata.name);
  const users = new Set<string>();
  const vmName = (vm: VirtualMachine) => `${vm.metadata.namespace}/${vm.metadata.name}`;
  const vms = ctx
    .byIndex<VirtualMachine>('VirtualMachine', INDEX_NETWORK, name)
    .filter((vm) => vm.spec?.nodeName === ctx.nodeName);
  for (const vm of vms) {
    const uuid = hostUUID(vm);
    if (!uuid) continue;
    const domain = await ctx.libvirt().lookupDomainByUUIDString(uuid).catch(absentDomain);
    if (domain && (await domain.isActive())) users.add(vmName(vm));
  }
  const running = await ctx.libvirt().listAllDomains(ConnectListAllDomainsFlags.ACTIVE);
  for (const domain of running) {
    try {
      // Gone between the list and this read: it holds no interface any more.
      const xml = await domain.getXMLDesc().catch(absentDomain);
      if (xml === undefined || !domainNetworks(xml).includes(name)) continue;
      const owner = ctx.byIndex<VirtualMachine>(
        'VirtualMachine',
        INDEX_UUID,
        domain.getUUIDString(),
      )[0];
      users.add(owner ? vmName(owner) : `libvirt domain '${domain.getName()}'`);
    } finally {
      domain.free();
    }
  }
  return [...users].sort();
}

/**
 * Whether this host has a bridge named `name` (libvirt starts a mode-bridge network without
 * looking, and only the first guest attached to it would fail). undefined where it cannot be
 * told: libvirt's test driver is a host of its own, with no bridges; and an agent in a pod
 * sees its pod's network namespace in /sys/class/net, not the host's (the DaemonSet does not
 * use hostNetwork), so there a missing bridge proves nothing.
 */
export async function hostBridgeExists(conn: Connect, name: string): Promise<boolean | undefined> {
  return hostNetPathExists(conn, name, '/bridge');
}

/**
 * The running libvirt network, other than the one of `uuid`, that made a bridge named `name`
 * for itself (any forward mode but 'bridge'): a mode-bridge network attached to it would put
 * its guests on that network, and lose them whenever that network stops. undefined when none.
 * libvirt answers this from its own list, so the test driver and an agent in a pod can tell.
 */
export async function bridgeOwnerNetwork(
  conn: Connect,
  name: string,
  uuid: string,
): Promise<string | undefined> {
  const networks = await conn.listAllNetworks(ConnectListAllNetworksFlags.ACTIVE);
  let owner: string | undefined;
  for (const network of networks) {
    try {
      if (owner !== undefined || network.getUUIDString() === uuid) continue;
      // Gone between the list and this read: it holds no bridge any more.
      const xml = await network.getXMLDesc().catch(absentOn);
      if (xml === undefined) continue;
      const doc = parseNetworkXML(xml);
      if (doc.forward !== 'bridge' && doc.bridge?.name === name) owner = network.getName();
    } finally {
      network.free();
    }
  }
  return owner;
}

/**
 * Whether this host has a network device (of any kind) named `name`: a bridge libvirt is to
 * create under that name cannot be created ("File exists"). undefined where it cannot be told,
 * for the reasons hostBridgeExists gives.
 */
export async function hostDeviceExists(conn: Connect, name: string): Promise<boolean | undefined> {
  return hostNetPathExists(conn, name, '');
}

async function hostNetPathExists(
  conn: Connect,
  name: string,
  below: string,
): Promise<boolean | undefined> {
  if (process.env.KUBERNETES_SERVICE_HOST) return undefined;
  if ((await conn.getType()).toUpperCase() === 'TEST') return undefined;
  if (name.includes('/') || name === '.' || name === '..') return false;
  return access(`/sys/class/net/${name}${below}`).then(
    () => true,
    () => false,
  );
}

/** A route the host has to a subnet: directly attached, or through a gateway. */
export interface HostRoute extends Subnet {
  iface: string;
  /** Through a gateway: the subnet is reached beyond the interface, not on it. */
  gateway: boolean;
}

// rtnetlink flags as /proc/net/route and /proc/net/ipv6_route print them.
const RTF_UP = 0x1;
const RTF_GATEWAY = 0x2;
const RTF_REJECT = 0x200;
/** An IPv6 cached (exception) route: a path MTU or redirect for one host, not a route. */
const RTF_CACHE = 0x01000000;

/**
 * The subnets this host routes (the main table; the default route aside), attached or through
 * a gateway, from the routing tables libvirt itself reads before starting a network. libvirt
 * refuses only a subnet equal to one of them ("Network is already in use by interface ..."):
 * one that overlaps partly starts, and the more specific route then steals the other's traffic.
 * undefined where it cannot be told, for the reasons hostBridgeExists gives.
 */
export async function hostRoutes(conn: Connect): Promise<HostRoute[] | undefined> {
  if (process.env.KUBERNETES_SERVICE_HOST) return undefined;
  if ((await conn.getType()).toUpperCase() === 'TEST') return undefined;
  const read = (path: string) => readFile(path, 'utf8').catch(() => '');
  return parseHostRoutes(await read('/proc/net/route'), await read('/proc/net/ipv6_route'));
}

/** Parses /proc/net/route and /proc/net/ipv6_route; keeps the routes to subnets. */
export function parseHostRoutes(
  ipv4: string,
  ipv6: string,
  le = endianness() === 'LE',
): HostRoute[] {
  const routes: HostRoute[] = [];
  const kept = (flags: number, iface: string, prefix: number) =>
    (flags & RTF_UP) !== 0 &&
    (flags & (RTF_REJECT | RTF_CACHE)) === 0 &&
    iface !== 'lo' &&
    prefix > 0;
  const gateway = (flags: number) => (flags & RTF_GATEWAY) !== 0;
  // Iface Destination Gateway Flags RefCnt Use Metric Mask ...; addresses are the kernel's
  // 32-bit words in host byte order.
  for (const line of ipv4.split('\n').slice(1)) {
    const [iface, dest, , flags, , , , mask] = line.trim().split(/\s+/);
    if (!iface || !dest || !flags || !mask) continue;
    const word = (hex: string) => {
      const bytes = Buffer.from(hex.padStart(8, '0'), 'hex');
      return BigInt((le ? bytes.reverse() : bytes).readUInt32BE(0));
    };
    const prefix = word(mask).toString(2).replace(/0+$/, '').length;
    const f = parseInt(flags, 16);
    if (!kept(f, iface, prefix)) continue;
    routes.push({ family: 'ipv4', network: word(dest), prefix, iface, gateway: gateway(f) });
  }
  // dest dest_prefix src src_prefix nexthop metric refcnt use flags iface, in hex.
  for (const line of ipv6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest = '', plen = '', iface = ''] = [f[0], f[1], f[9]];
    const prefix = parseInt(plen, 16);
    const flags = parseInt(f[8] ?? '0', 16);
    if (!kept(flags, iface, prefix)) continue;
    const network = BigInt(`0x${dest}`);
    routes.push({ family: 'ipv6', network, prefix, iface, gateway: gateway(flags) });
  }
  return routes;
}
