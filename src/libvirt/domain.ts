import {
  FREED,
  HANDLE,
  impactFlags,
  native,
  type CallOptions,
  type DomainCalls,
  type DomainHandle,
  type Impact,
  type RawDomainInfo,
  type RawDomainState,
  type RawInterface,
} from './addon.js';
import { DomainMemoryModFlags, DomainVcpuFlags } from './constants.js';
import { domainStateName, domainStateReasonName, vcpuStateName } from './names.js';
import { DomainSnapshot } from './snapshot.js';
import { DefinedObject, type Kind } from './object.js';
import { liveStreamHandle, type Stream } from './stream.js';
import { guardInterfaceAddresses } from './test-driver.js';

export interface DomainInfo {
  state: number;
  stateName: string;
  /** KiB */
  maxMem: bigint;
  /** KiB */
  memory: bigint;
  nrVirtCpu: number;
  /** nanoseconds */
  cpuTime: bigint;
}

export interface DomainStateInfo {
  state: number;
  reason: number;
  /** 'running', 'shutoff', … (DomainState without its prefix, lowercased) */
  stateName: string;
  /** 'booted', 'destroyed', … (the reason enum of that state, lowercased) */
  reasonName: string;
}

/** virDomainMemoryStats by tag; only the tags the driver reported are present. KiB except the counters. */
export interface DomainMemoryStats {
  swapIn?: bigint;
  swapOut?: bigint;
  majorFault?: bigint;
  minorFault?: bigint;
  unused?: bigint;
  available?: bigint;
  /** Current balloon size. */
  actual?: bigint;
  rss?: bigint;
  usable?: bigint;
  lastUpdate?: bigint;
  diskCaches?: bigint;
  hugetlbPgalloc?: bigint;
  hugetlbPgfail?: bigint;
}

export type DomainInterface = RawInterface;

/** One vCPU of a running domain (virVcpuInfo and its row of the affinity map). */
export interface VcpuInfo {
  /** The vCPU's index in the guest. */
  number: number;
  /** VcpuState */
  state: number;
  /** 'offline', 'running', 'blocked' */
  stateName: string;
  /** nanoseconds */
  cpuTime: bigint;
  /** The host CPU it runs on now (-1 when offline). */
  cpu: number;
  /** Per host CPU (index = CPU number): whether this vCPU may run there. */
  affinity: boolean[];
}

export interface VcpuImpact extends Impact {
  /** Change the maximum instead of the current count (VIR_DOMAIN_VCPU_MAXIMUM). */
  maximum?: boolean;
  /** Change the count inside the guest through the agent (VIR_DOMAIN_VCPU_GUEST). */
  guest?: boolean;
}

// The two reads an agent makes of every domain, named and shaped without an async function or
// an object spread (the addon returns getInfo as a tuple): on a host where libvirtd's CPU bounds
// a lookup + getInfo pair, the client's CPU per call sets the rate, and those cost the JS thread
// ~2 µs per pair (bench/README.md, binding tenth pass). Native calls reject rather than throw,
// so nothing is lost by not being async.
function domainInfo([state, maxMem, memory, nrVirtCpu, cpuTime]: RawDomainInfo): DomainInfo {
  return { state, maxMem, memory, nrVirtCpu, cpuTime, stateName: domainStateName(state) };
}

function domainStateInfo({ state, reason }: RawDomainState): DomainStateInfo {
  return {
    state,
    reason,
    stateName: domainStateName(state),
    reasonName: domainStateReasonName(state, reason),
  };
}

/**
 * A libvirt domain (virDomainPtr). Obtained from a Connect lookup, listAllDomains,
 * defineDomainXML/createDomainXML or an event; released by the garbage collector or free().
 */
export class Domain extends DefinedObject<DomainHandle, DomainCalls> {
  protected get kind(): Kind<DomainHandle, DomainCalls> {
    return DOMAIN;
  }

  /** The runtime ID as of the lookup; -1 for an inactive domain. */
  getID(): number {
    return native.domain.getID(this[HANDLE]);
  }

  getInfo(opts?: CallOptions): Promise<DomainInfo> {
    return native.domain.getInfo(this[HANDLE], this.timeout(opts)).then(domainInfo);
  }

  getState(opts?: CallOptions): Promise<DomainStateInfo> {
    return native.domain.getState(this[HANDLE], 0, this.timeout(opts)).then(domainStateInfo);
  }

  getOSType(opts?: CallOptions): Promise<string> {
    return native.domain.getOSType(this[HANDLE], this.timeout(opts));
  }

  isUpdated(opts?: CallOptions): Promise<boolean> {
    return native.domain.isUpdated(this[HANDLE], this.timeout(opts));
  }

  /** Starts a defined domain (virDomainCreateWithFlags); flags: DomainCreateFlags. */
  create(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.create(this[HANDLE], flags, this.timeout(opts));
  }

  /** Asks the guest to shut down (virDomainShutdownFlags); flags: DomainShutdownFlags. */
  shutdown(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.shutdown(this[HANDLE], flags, this.timeout(opts));
  }

  reboot(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.reboot(this[HANDLE], flags, this.timeout(opts));
  }

  reset(opts?: CallOptions): Promise<void> {
    return native.domain.reset(this[HANDLE], 0, this.timeout(opts));
  }

  /** Powers off at once (virDomainDestroyFlags); flags: DomainDestroyFlags. */
  destroy(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.destroy(this[HANDLE], flags, this.timeout(opts));
  }

  /** Removes the persistent definition (virDomainUndefineFlags); flags: DomainUndefineFlags. */
  undefine(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.undefine(this[HANDLE], flags, this.timeout(opts));
  }

  suspend(opts?: CallOptions): Promise<void> {
    return native.domain.suspend(this[HANDLE], this.timeout(opts));
  }

  resume(opts?: CallOptions): Promise<void> {
    return native.domain.resume(this[HANDLE], this.timeout(opts));
  }

  /**
   * Wakes a guest its OS suspended to RAM (virDomainPMWakeup; QEMU's system_wakeup). libvirt
   * reports the domain running again once QEMU's WAKEUP event arrives, a moment after the call.
   */
  pmWakeup(opts?: CallOptions): Promise<void> {
    return native.domain.pmWakeup(this[HANDLE], 0, this.timeout(opts));
  }

  /** virDomainSetMemoryFlags; kib in KiB, flags: DomainMemoryModFlags. */
  setMemoryFlags(kib: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.setMemoryFlags(this[HANDLE], kib, flags, this.timeout(opts));
  }

  /** The current memory (balloon target) in KiB, for the running domain and/or its config. */
  setMemory(kib: number | bigint, impact?: Impact, opts?: CallOptions): Promise<void> {
    return this.setMemoryFlags(kib, impactFlags(impact), opts);
  }

  /** The maximum memory in KiB (VIR_DOMAIN_MEM_MAXIMUM). */
  setMaxMemory(kib: number | bigint, impact?: Impact, opts?: CallOptions): Promise<void> {
    return this.setMemoryFlags(kib, impactFlags(impact) | DomainMemoryModFlags.MAXIMUM, opts);
  }

  /** KiB */
  getMaxMemory(opts?: CallOptions): Promise<bigint> {
    return native.domain.getMaxMemory(this[HANDLE], this.timeout(opts));
  }

  /** virDomainSetVcpusFlags; flags: DomainVcpuFlags. */
  setVcpusFlags(vcpus: number, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.setVcpusFlags(this[HANDLE], vcpus, flags, this.timeout(opts));
  }

  setVcpus(vcpus: number, impact?: VcpuImpact, opts?: CallOptions): Promise<void> {
    return this.setVcpusFlags(vcpus, vcpuFlags(impact), opts);
  }

  /** virDomainGetVcpusFlags; flags: DomainVcpuFlags. */
  getVcpusFlags(flags = 0, opts?: CallOptions): Promise<number> {
    return native.domain.getVcpusFlags(this[HANDLE], flags, this.timeout(opts));
  }

  /**
   * virDomainGetVcpus: state, CPU time, host CPU and affinity of each vCPU of a running
   * domain (an inactive one rejects with VIR_ERR_OPERATION_INVALID). The count of vCPUs is
   * getVcpusFlags.
   */
  async getVcpus(opts?: CallOptions): Promise<VcpuInfo[]> {
    const raw = await native.domain.getVcpus(this[HANDLE], this.timeout(opts));
    return raw.map((v) => ({ ...v, stateName: vcpuStateName(v.state) }));
  }

  memoryStats(flags = 0, opts?: CallOptions): Promise<DomainMemoryStats> {
    return native.domain.memoryStats(this[HANDLE], flags, this.timeout(opts));
  }

  /**
   * source: DomainInterfaceAddressesSource (LEASE, AGENT, ARP). On libvirt's test driver, a
   * domain with an interface on a network without `<ip>` rejects with VIR_ERR_NO_SUPPORT
   * instead of calling libvirt, whose test driver would crash the process (test-driver.ts).
   */
  async interfaceAddresses(
    source: number,
    flags = 0,
    opts?: CallOptions,
  ): Promise<DomainInterface[]> {
    await guardInterfaceAddresses(
      this.connect,
      () => this.getName(),
      () => this.getXMLDesc(0, opts),
      opts,
    );
    return native.domain.interfaceAddresses(this[HANDLE], source, flags, this.timeout(opts));
  }

  /** flags: DomainDeviceModifyFlags. */
  attachDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.attachDeviceFlags(this[HANDLE], xml, flags, this.timeout(opts));
  }

  detachDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.detachDeviceFlags(this[HANDLE], xml, flags, this.timeout(opts));
  }

  updateDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.updateDeviceFlags(this[HANDLE], xml, flags, this.timeout(opts));
  }

  /** type: DomainMetadataType; for ELEMENT, `uri` is the namespace. flags: DomainModificationImpact. */
  getMetadata(
    type: number,
    uri: string | null = null,
    flags = 0,
    opts?: CallOptions,
  ): Promise<string> {
    return native.domain.getMetadata(this[HANDLE], type, uri, flags, this.timeout(opts));
  }

  /** metadata null removes it; for ELEMENT, `key` is the namespace prefix and `uri` the namespace. */
  setMetadata(
    type: number,
    metadata: string | null,
    key: string | null = null,
    uri: string | null = null,
    flags = 0,
    opts?: CallOptions,
  ): Promise<void> {
    return this.call(native.domain.setMetadata, opts, type, metadata, key, uri, flags);
  }

  /**
   * virDomainOpenConsole: attaches `stream` (from Connect.newStream) to the console or serial
   * device `devName` (its alias, e.g. 'serial0'; null: the first console). flags:
   * DomainConsoleFlags (FORCE takes over a console another session holds). The domain must be
   * running with a pty console; the test driver has no consoles (VIR_ERR_NO_SUPPORT).
   */
  async openConsole(
    devName: string | null,
    stream: Stream,
    flags = 0,
    opts?: CallOptions,
  ): Promise<void> {
    const st = liveStreamHandle(stream);
    return native.domain.openConsole(this[HANDLE], devName, st, flags, this.timeout(opts));
  }

  /** Grows a disk of a running domain; size in KiB, or bytes with DomainBlockResizeFlags.BYTES. */
  blockResize(disk: string, size: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domain.blockResize(this[HANDLE], disk, size, flags, this.timeout(opts));
  }

  /** virDomainSnapshotCreateXML; flags: DomainSnapshotCreateFlags. */
  async createSnapshotXML(xml: string, flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshot.createXML(this[HANDLE], xml, flags, this.timeout(opts));
    return new DomainSnapshot(this, h);
  }

  /** virDomainSnapshotLookupByName; a missing one rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async lookupSnapshotByName(name: string, flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshot.lookupByName(
      this[HANDLE],
      name,
      flags,
      this.timeout(opts),
    );
    return new DomainSnapshot(this, h);
  }

  /** virDomainListAllSnapshots; flags: DomainSnapshotListFlags. */
  async listAllSnapshots(flags = 0, opts?: CallOptions): Promise<DomainSnapshot[]> {
    const hs = await native.domainSnapshot.listAll(this[HANDLE], flags, this.timeout(opts));
    return hs.map((h) => new DomainSnapshot(this, h));
  }

  /** virDomainSnapshotNum; flags: DomainSnapshotListFlags. */
  numOfSnapshots(flags = 0, opts?: CallOptions): Promise<number> {
    return native.domainSnapshot.num(this[HANDLE], flags, this.timeout(opts));
  }

  hasCurrentSnapshot(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainSnapshot.hasCurrent(this[HANDLE], flags, this.timeout(opts));
  }

  /**
   * Freezes the guest's filesystems through the QEMU guest agent (virDomainFSFreeze); null
   * mountpoints: all. Resolves with the number frozen. No agent: VIR_ERR_ARGUMENT_UNSUPPORTED
   * (not configured) or VIR_ERR_AGENT_UNRESPONSIVE (configured, nobody answers).
   */
  fsFreeze(mountpoints: string[] | null = null, flags = 0, opts?: CallOptions): Promise<number> {
    return native.domain.fsFreeze(this[HANDLE], mountpoints, flags, this.timeout(opts));
  }

  /** virDomainFSThaw; resolves with the number thawed. */
  fsThaw(mountpoints: string[] | null = null, flags = 0, opts?: CallOptions): Promise<number> {
    return native.domain.fsThaw(this[HANDLE], mountpoints, flags, this.timeout(opts));
  }

  /** virDomainSnapshotCurrent; none rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async currentSnapshot(flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshot.current(this[HANDLE], flags, this.timeout(opts));
    return new DomainSnapshot(this, h);
  }
}

const DOMAIN: Kind<DomainHandle, DomainCalls> = { calls: native.domain, freed: FREED.domain };

function vcpuFlags(impact: VcpuImpact | undefined): number {
  return (
    impactFlags(impact) |
    (impact?.maximum ? DomainVcpuFlags.MAXIMUM : 0) |
    (impact?.guest ? DomainVcpuFlags.GUEST : 0)
  );
}
