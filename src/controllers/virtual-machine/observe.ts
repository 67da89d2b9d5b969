// What this host has for a VirtualMachine: the domain found by UUID (ours only when it carries
// our stamp for this very object), else a domain squatting on our name; its power state, live
// and persistent definitions, balloon size and addresses; and our files. I/O only: the result
// is a plain value that the pure plan and status read.
import { readdir } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { domainName, libvirtUuid } from '../../api/names.js';
import type { VirtualMachine } from '../../api/generated/types.js';
import type { Connect } from '../../libvirt/connection.js';
import { DomainInterfaceAddressesSource, DomainXMLFlags } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import type { Network, NetworkDHCPLease } from '../../libvirt/network.js';
import {
  isConnectionError,
  isLibvirtError,
  isTimeout,
  isUnsupported,
} from '../../libvirt/errors.js';
import { identityOf, type OwnershipStamp } from '../../ownership/metadata.js';
import { isOurStamp } from '../shared/machine-snapshot.js';
import { parseDomainXML, type DomainDocument } from '../../libvirt/xml/domain.js';
import { parseSnapshotXML } from '../../libvirt/xml/snapshot.js';
import { cloudInitDir, cloudInitPrefix } from './cloud-init.js';
import { heldKey } from './desired.js';
import { recordedRestoredRun, unpluggedInterfaces } from './plan.js';
import { absentIfNotFound } from '../shared/absent.js';

export interface PowerState {
  /** libvirt's state name: running, blocked, paused, shutdown, shutoff, crashed, pmsuspended. */
  state: string;
  /** The reason libvirt gives, e.g. booted, shutdown, destroyed, crashed, unknown. */
  reason: string;
}

export interface OursDomain {
  state: 'ours';
  domain: Domain;
  /** Runtime ID, -1 when inactive; it changes on every start. */
  id: number;
  uuid: string;
  name: string;
  power: PowerState;
  active: boolean;
  /** The running definition; undefined when inactive. */
  live: DomainDocument | undefined;
  /** The persistent definition; undefined for a transient domain. */
  config: DomainDocument | undefined;
  /** The guest's balloon size in KiB when the balloon driver reports it. */
  memoryActualKiB: number | undefined;
  /** IP addresses by lower-case MAC. */
  addresses: ReadonlyMap<string, readonly string[]>;
  /** Whether a DHCP lease lookup worked (libvirt's test driver has none). */
  leasesSupported: boolean;
  /**
   * The leases of earlier runs that addresses leaves out, for this run (its ID): what the
   * caller keeps in HostState earlierLeases for the next look. Undefined when inactive.
   */
  earlierLeases?: EarlierLeases;
  /**
   * The port UUIDs (lower case) of each network a running domain's interfaces name a port of,
   * where libvirt could list them (its test driver has no ports): see unpluggedInterfaces.
   */
  networkPorts?: ReadonlyMap<string, ReadonlySet<string>>;
}

/** A domain with our name or UUID that this object did not create. */
export interface ForeignDomain {
  state: 'foreign';
  /** How it clashes: it has our UUID, or our name. */
  clash: 'uuid' | 'name';
  name: string;
  uuid: string;
  stamp: OwnershipStamp | undefined;
}

export type ObservedDomain = { state: 'absent' } | OursDomain | ForeignDomain;

export interface ObservedMachine {
  domain: ObservedDomain;
  /** Our cloud-init ISOs for this object on this host (absolute paths, sorted). */
  cloudInitIsos: string[];
  /**
   * The ISOs of cloudInitIsos that a libvirt snapshot of the domain names (the definition
   * libvirt keeps with it): a revert to that snapshot opens them again. Looked up only for
   * ISOs the domain itself does not use, the ones a pass could remove.
   */
  snapshotIsos: string[];
}

/**
 * Leases of runs before the domain's current one (HostState earlierLeases, earlierLeasesOf):
 * `run` undefined while the run's ID is not known yet (the look right after a start this
 * process made).
 */
export interface EarlierLeases {
  run?: number;
  keys: ReadonlySet<string>;
}

export async function observeMachine(
  conn: Connect,
  vm: VirtualMachine,
  stateDir: string,
  opts: { allIsos?: boolean; earlierLeases?: EarlierLeases | undefined } = {},
): Promise<ObservedMachine> {
  const domain = await observeDomain(conn, vm, opts.earlierLeases);
  // The directory is only listed when there can be something of ours in it: it holds one ISO
  // per machine with cloud-init, and a pass over a thousand machines should not list it 1000x.
  const dir = cloudInitDir(stateDir);
  const mayHaveIsos =
    opts.allIsos === true ||
    vm.spec.cloudInit !== undefined ||
    (domain.state === 'ours' && [domain.live, domain.config].some((d) => usesDir(d, dir)));
  const cloudInitIsos = mayHaveIsos ? await listCloudInitIsos(dir, String(vm.metadata.uid)) : [];
  return { domain, cloudInitIsos, snapshotIsos: await isosOfSnapshots(domain, cloudInitIsos) };
}

/**
 * Which of `isos` the domain's libvirt snapshots name, when one of them is not in the domain's
 * own definitions (otherwise no ISO is to be removed, and the snapshots need not be read).
 */
async function isosOfSnapshots(domain: ObservedDomain, isos: readonly string[]): Promise<string[]> {
  if (domain.state !== 'ours') return [];
  const used = new Set(
    [domain.live, domain.config].flatMap((d) =>
      (d?.devices.disks ?? []).flatMap((disk) =>
        disk.source.type === 'file' ? [disk.source.file] : [],
      ),
    ),
  );
  if (isos.every((p) => used.has(p))) return [];
  const named = new Set<string>();
  const snapshots = await domain.domain.listAllSnapshots().catch(absentOn);
  for (const snapshot of snapshots ?? []) {
    try {
      // Deleted between the list and this read: it names nothing any more.
      const xml = await snapshot.getXMLDesc().catch(absentSnapshotOn);
      if (xml === undefined) continue;
      for (const disk of parseSnapshotXML(xml).disks)
        if (disk.source !== undefined) named.add(disk.source);
    } finally {
      snapshot.free();
    }
  }
  return isos.filter((p) => named.has(p));
}

function usesDir(doc: DomainDocument | undefined, dir: string): boolean {
  return (doc?.devices.disks ?? []).some(
    (d) => d.source.type === 'file' && d.source.file.startsWith(dir + sep),
  );
}

export async function observeDomain(
  conn: Connect,
  vm: VirtualMachine,
  earlier?: EarlierLeases,
): Promise<ObservedDomain> {
  // A domain found by a lookup can be undefined before the next read (another object's deletion,
  // someone's virsh): then it is absent, as the same pass a moment later would have seen it.
  const byUuid = await conn.lookupDomainByUUIDString(libvirtUuid(vm)).catch(absentOn);
  const described = byUuid && (await describe(byUuid, vm, earlier).catch(absentOn));
  if (described) return described;
  const byName = await conn.lookupDomainByName(domainName(vm)).catch(absentOn);
  // Read with identityOf: a foreign definition may be one our typed parser refuses.
  const xml = byName && (await byName.getXMLDesc().catch(absentOn));
  if (!xml) return { state: 'absent' };
  const who = identityOf(xml);
  return { state: 'foreign', clash: 'name', name: who.name, uuid: who.uuid, stamp: who.stamp };
}

const absentOn = absentIfNotFound('domain');
const absentSnapshotOn = absentIfNotFound('domainSnapshot');

async function describe(
  domain: Domain,
  vm: VirtualMachine,
  earlier: EarlierLeases | undefined,
): Promise<ObservedDomain> {
  const xml = await domain.getXMLDesc();
  // One parse for ours, which the typed parser reads (its stamp included); identityOf, which
  // reads any domain, only when it refuses the definition. Parsing every definition twice was
  // a sixth of the agent's CPU time in a burst of 1,000 new machines (bench/README.md).
  let current: DomainDocument;
  try {
    current = parseDomainXML(xml);
  } catch (err) {
    const who = identityOf(xml);
    if (!isOurStamp(who.stamp, vm)) {
      return { state: 'foreign', clash: 'uuid', name: who.name, uuid: who.uuid, stamp: who.stamp };
    }
    throw err;
  }
  if (!isOurStamp(current.stamp, vm)) {
    return {
      state: 'foreign',
      clash: 'uuid',
      name: current.name,
      uuid: current.uuid.trim(),
      stamp: current.stamp,
    };
  }
  const [state, active, persistent] = await Promise.all([
    domain.getState(),
    domain.isActive(),
    domain.isPersistent(),
  ]);
  // getXMLDesc(0) is the running definition of an active domain, the persistent one otherwise.
  const live = active ? current : undefined;
  let config: DomainDocument | undefined;
  if (persistent) config = active ? await inactiveDefinition(domain, current) : current;
  const observed: OursDomain = {
    state: 'ours',
    domain,
    id: active ? domain.getID() : -1,
    uuid: current.uuid.toLowerCase(),
    name: current.name,
    power: { state: state.stateName, reason: state.reasonName },
    active,
    live,
    config,
    memoryActualKiB: undefined,
    addresses: new Map(),
    leasesSupported: false,
  };
  if (active) {
    observed.memoryActualKiB = await balloonActual(domain);
    const networks = await networksOf(domain, current);
    // Leases listed before this run began are the previous run's, however long they stay;
    // except for a checkpoint a restore brought back, whose guest memory still holds its lease.
    // Its first look sees the reason from_snapshot (the machine's controller stands aside
    // while the restore reverts, so nothing resumed it before); later ones read the run from
    // the held RestartRequired message.
    const restored =
      state.reasonName === 'from_snapshot' || recordedRestoredRun(vm.status)?.run === observed.id;
    const found = await addresses(domain, current, networks, (listed) =>
      earlierLeasesOf(observed.id, earlier, listed, addressesShownFor(vm), restored),
    );
    observed.addresses = found.addresses;
    observed.leasesSupported = found.leasesSupported;
    observed.earlierLeases = found.earlier;
    observed.networkPorts = await portsOfThisRun(domain, current, networks);
  }
  return observed;
}

/**
 * The network ports, as they bear on the run whose definition was read. A domain that stops
 * meanwhile has its ports released by libvirt before it reads as shut off: a port missing then
 * says nothing about this run (a machine being stopped was reported "unplugged: network was
 * restarted"). So a missing port counts only when the domain is still active afterwards.
 */
async function portsOfThisRun(
  domain: Domain,
  current: DomainDocument,
  networks: ReadonlyMap<string, Network>,
): Promise<Map<string, Set<string>>> {
  const ports = await networkPorts(current, networks);
  if (unpluggedInterfaces(current, ports).length === 0) return ports;
  return (await domain.isActive()) ? ports : new Map();
}

/** The libvirt networks the running definition's interfaces name, each looked up once. */
async function networksOf(domain: Domain, doc: DomainDocument): Promise<Map<string, Network>> {
  const networks = new Map<string, Network>();
  for (const name of new Set(doc.devices.interfaces.map((n) => n.source.network))) {
    const network = await domain.connect.lookupNetworkByName(name).catch(quietly);
    if (network) networks.set(name, network);
  }
  return networks;
}

/**
 * The ports of the networks the running definition's interfaces are plugged into (one list
 * call per network, only for interfaces that name a port). A network that is not running or
 * cannot list its ports (libvirt's test driver) is left out: nothing is known of it.
 */
async function networkPorts(
  doc: DomainDocument,
  networks: ReadonlyMap<string, Network>,
): Promise<Map<string, Set<string>>> {
  const ports = new Map<string, Set<string>>();
  const names = new Set(doc.devices.interfaces.flatMap((n) => (n.port ? [n.source.network] : [])));
  for (const name of names) {
    const uuids = await networks.get(name)?.listPortUUIDs().catch(quietly);
    if (uuids) ports.set(name, new Set(uuids.map((u) => u.toLowerCase())));
  }
  return ports;
}

async function inactiveDefinition(domain: Domain, current: DomainDocument) {
  try {
    return parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
  } catch (err) {
    // A driver that cannot show it: the running definition is the best knowledge there is.
    if (isUnsupported(err)) return current;
    throw err;
  }
}

/** Errors that mean "this host cannot tell us", as opposed to a broken connection. */
function quietly(err: unknown): undefined {
  if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
  return undefined;
}

async function balloonActual(domain: Domain): Promise<number | undefined> {
  const stats = await domain.memoryStats().catch(quietly);
  return stats?.actual === undefined ? undefined : Number(stats.actual);
}

/**
 * DHCP leases of each interface's libvirt network first (they exist as soon as the guest asked
 * for an address), then the guest agent's view when an agent answers. Drivers without leases
 * (libvirt's test driver) or guests without an agent simply contribute nothing.
 */
async function addresses(
  domain: Domain,
  doc: DomainDocument,
  networks: ReadonlyMap<string, Network>,
  earlierOf: (listed: readonly NetworkDHCPLease[]) => EarlierLeases,
): Promise<{
  addresses: Map<string, string[]>;
  leasesSupported: boolean;
  earlier: EarlierLeases;
}> {
  const found = new Map<string, Set<string>>();
  const add = (mac: string | null | undefined, ip: string | null | undefined) => {
    if (!mac || !ip) return;
    const key = mac.toLowerCase();
    const set = found.get(key) ?? new Set<string>();
    set.add(ip);
    found.set(key, set);
  };
  let leasesSupported = false;
  const listed: NetworkDHCPLease[] = [];
  for (const nic of doc.devices.interfaces) {
    const network = networks.get(nic.source.network);
    if (!nic.mac || !network) continue;
    const leases = await network.getDHCPLeases(nic.mac).catch(quietly);
    if (!leases) continue;
    leasesSupported = true;
    listed.push(...currentLeases(leases));
  }
  const earlier = earlierOf(listed);
  for (const lease of listed) {
    if (!earlier.keys.has(leaseKey(lease))) add(lease.mac, lease.ipaddr);
  }
  if (doc.devices.interfaces.length > 0) {
    const agent = await domain
      .interfaceAddresses(DomainInterfaceAddressesSource.AGENT)
      .catch(quietly);
    for (const iface of agent ?? []) {
      for (const a of iface.addrs) {
        // Link-local IPv6 addresses say nothing a user can connect to.
        if (!a.addr.toLowerCase().startsWith('fe80:')) add(iface.hwaddr, a.addr);
      }
    }
  }
  return {
    addresses: new Map([...found].map(([mac, ips]) => [mac, [...ips].sort()])),
    leasesSupported,
    earlier,
  };
}

/**
 * Which leases are an earlier run's, for run `run`. Known from before the start when this
 * process made it (HostState earlierLeases, `run` undefined or this run). Any other run, one
 * this process did not start (`virsh start`, a start while it was down), is seen by its new
 * ID, normally within moments of its start, before the guest asked for an address: the leases
 * listed at that first look are the previous run's, which a guest still booting (or started
 * paused) does not hold. Not so a checkpoint a restore brought back (`restored`, libvirt's
 * reason from_snapshot): a new QEMU with the guest's memory as it was, holding the lease it had
 * then (same MAC, and libvirt's dnsmasq gives a MAC its address again), so none is hidden: the
 * guest renews it only at half the lease time. Except, when this process has no record of
 * the machine at all (its first look since it started), the addresses the status already
 * shows for a run that was up (`shownBefore`): an earlier agent process showed them for this
 * very run. A run that began while no agent watched and whose guest already took its lease has
 * it hidden until the guest renews (new expiry, new key). Pure.
 */
export function earlierLeasesOf(
  run: number,
  known: EarlierLeases | undefined,
  listed: readonly NetworkDHCPLease[],
  shownBefore: ReadonlySet<string>,
  restored = false,
): EarlierLeases {
  if (known && (known.run === undefined || known.run === run)) return { run, keys: known.keys };
  if (restored) return { run, keys: new Set() };
  const carried = known === undefined ? shownBefore : new Set<string>();
  const keys = listed.filter((l) => !carried.has(l.ipaddr ?? '')).map(leaseKey);
  return { run, keys: new Set(keys) };
}

/**
 * The addresses the status shows, when it was written for a running (or paused) domain: an
 * earlier agent process's view of a run that may still be the current one. Pure.
 */
export function addressesShownFor(vm: VirtualMachine): Set<string> {
  const state = vm.status?.state?.state;
  if (state === undefined || state === 'shutoff') return new Set();
  return new Set(
    (vm.status?.interfaces ?? []).flatMap((i) => (i.ipAddresses ?? []).map(bareAddress)),
  );
}

/** An address without a prefix length (status addresses carry none; tolerate one). */
export function bareAddress(ip: string): string {
  return ip.split('/')[0]!;
}

/**
 * One lease as libvirt lists it: a renewal or a new lease has a new expiry time, so a key
 * seen before a run began never names a lease the guest took in that run.
 */
export function leaseKey(lease: NetworkDHCPLease): string {
  return `${(lease.mac ?? '').toLowerCase()} ${lease.ipaddr ?? ''} ${lease.expiryTime}`;
}

/**
 * The leases libvirt lists for a definition's interfaces: read just before a start, they are
 * all of earlier runs (the guest has not run yet). Drivers without leases list none.
 */
export async function leaseKeysOf(conn: Connect, doc: DomainDocument): Promise<Set<string>> {
  const keys = new Set<string>();
  const networks = new Map<string, Network | undefined>();
  for (const nic of doc.devices.interfaces) {
    if (!nic.mac) continue;
    const name = nic.source.network;
    if (!networks.has(name))
      networks.set(name, await conn.lookupNetworkByName(name).catch(quietly));
    const leases = await networks.get(name)?.getDHCPLeases(nic.mac).catch(quietly);
    for (const lease of leases ?? []) keys.add(leaseKey(lease));
  }
  return keys;
}

/**
 * The leases a guest can still hold. libvirt lists every lease its status file has until it
 * expires (an hour for IPv4, a day for IPv6 here), also after the network changed: a lease
 * from before a change of the DHCP range is listed beside the one the guest took after it, and
 * leases of a family the running network no longer has (IPv6 removed) stay listed with prefix
 * 0 (libvirt takes the prefix from the network's first address of the lease's family). So: no
 * lease of a family the running network lacks, and of the leases one client took for one
 * identity association (the same MAC, family, client ID and IAID), only the newest, as the
 * server hands one address to it. Pure.
 */
export function currentLeases(leases: readonly NetworkDHCPLease[]): NetworkDHCPLease[] {
  const newest = new Map<string, NetworkDHCPLease>();
  for (const lease of leases) {
    if (lease.prefix === 0) continue;
    const key = [lease.mac?.toLowerCase(), lease.type, lease.clientid, lease.iaid].join(' ');
    const seen = newest.get(key);
    if (!seen || lease.expiryTime > seen.expiryTime) newest.set(key, lease);
  }
  return [...newest.values()];
}

async function listCloudInitIsos(dir: string, uid: string): Promise<string[]> {
  const prefix = cloudInitPrefix(uid);
  try {
    return (await readdir(dir))
      .filter((f) => f.startsWith(prefix) && f.endsWith('.iso'))
      .sort()
      .map((f) => join(dir, f));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Which of `wanted` ("<network> <mac>") the running domains of `others` hold by their live
 * definitions. A guest whose NIC was switched to another network stays on the old one, with
 * its MAC, until it restarts, where no VirtualMachine spec shows it. `others` are the machines
 * whose spec has one of the MACs (cache index `mac`), so a pass reads nothing when none does.
 */
export async function heldMacs(
  conn: Connect,
  others: readonly VirtualMachine[],
  wanted: ReadonlySet<string>,
): Promise<Map<string, string>> {
  const held = new Map<string, string>();
  for (const other of others) {
    const domain = await conn.lookupDomainByUUIDString(libvirtUuid(other)).catch(absentOn);
    if (!domain) continue;
    try {
      if (!(await domain.isActive())) continue;
      const xml = await domain.getXMLDesc().catch(absentOn);
      if (xml === undefined) continue;
      let live: DomainDocument;
      try {
        live = parseDomainXML(xml);
      } catch {
        continue; // not a definition of ours: its UUID is another's
      }
      for (const nic of live.devices.interfaces) {
        const key = nic.mac ? heldKey(nic.source.network, nic.mac) : undefined;
        if (key && wanted.has(key) && !held.has(key))
          held.set(key, `${other.metadata.namespace}/${other.metadata.name}`);
      }
    } finally {
      domain.free();
    }
  }
  return held;
}
