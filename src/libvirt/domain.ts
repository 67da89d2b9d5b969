import {
  FREED,
  HANDLE,
  impactFlags,
  native,
  type CallOptions,
  type DomainHandle,
  type Impact,
  type RawInterface,
} from './addon.js';
import type { Connect } from './connection.js';
import { DomainMemoryModFlags, DomainVcpuFlags } from './constants.js';
import { domainStateName, domainStateReasonName, vcpuStateName } from './names.js';
import { DomainSnapshot } from './snapshot.js';
import { liveStreamHandle, type Stream } from './stream.js';

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

/**
 * A libvirt domain (virDomainPtr). Obtained from a Connect lookup, listAllDomains,
 * defineDomainXML/createDomainXML or an event; released by the garbage collector or free().
 */
export class Domain {
  [HANDLE]: DomainHandle;

  /** @internal handles come from Connect */
  constructor(
    readonly connect: Connect,
    handle: DomainHandle,
  ) {
    this[HANDLE] = handle;
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  getName(): string {
    return native.domainGetName(this[HANDLE]);
  }

  getUUIDString(): string {
    return native.domainGetUUIDString(this[HANDLE]);
  }

  getUUID(): Buffer {
    return native.domainGetUUID(this[HANDLE]);
  }

  /** The runtime ID as of the lookup; -1 for an inactive domain. */
  getID(): number {
    return native.domainGetID(this[HANDLE]);
  }

  /** Drops the libvirt reference now instead of at garbage collection; later calls reject. */
  free(): void {
    native.domainFree(this[HANDLE]);
    this[HANDLE] = FREED.domain;
  }

  async getInfo(opts?: CallOptions): Promise<DomainInfo> {
    const info = await native.domainGetInfo(this[HANDLE], this.#t(opts));
    return { ...info, stateName: domainStateName(info.state) };
  }

  async getState(opts?: CallOptions): Promise<DomainStateInfo> {
    const { state, reason } = await native.domainGetState(this[HANDLE], 0, this.#t(opts));
    return {
      state,
      reason,
      stateName: domainStateName(state),
      reasonName: domainStateReasonName(state, reason),
    };
  }

  /** flags: DomainXMLFlags (INACTIVE for the persistent definition). */
  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return native.domainGetXMLDesc(this[HANDLE], flags, this.#t(opts));
  }

  getOSType(opts?: CallOptions): Promise<string> {
    return native.domainGetOSType(this[HANDLE], this.#t(opts));
  }

  isActive(opts?: CallOptions): Promise<boolean> {
    return native.domainIsActive(this[HANDLE], this.#t(opts));
  }

  isPersistent(opts?: CallOptions): Promise<boolean> {
    return native.domainIsPersistent(this[HANDLE], this.#t(opts));
  }

  isUpdated(opts?: CallOptions): Promise<boolean> {
    return native.domainIsUpdated(this[HANDLE], this.#t(opts));
  }

  getAutostart(opts?: CallOptions): Promise<boolean> {
    return native.domainGetAutostart(this[HANDLE], this.#t(opts));
  }

  setAutostart(autostart: boolean, opts?: CallOptions): Promise<void> {
    return native.domainSetAutostart(this[HANDLE], autostart, this.#t(opts));
  }

  /** Starts a defined domain (virDomainCreateWithFlags); flags: DomainCreateFlags. */
  create(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainCreate(this[HANDLE], flags, this.#t(opts));
  }

  /** Asks the guest to shut down (virDomainShutdownFlags); flags: DomainShutdownFlags. */
  shutdown(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainShutdown(this[HANDLE], flags, this.#t(opts));
  }

  reboot(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainReboot(this[HANDLE], flags, this.#t(opts));
  }

  reset(opts?: CallOptions): Promise<void> {
    return native.domainReset(this[HANDLE], 0, this.#t(opts));
  }

  /** Powers off at once (virDomainDestroyFlags); flags: DomainDestroyFlags. */
  destroy(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainDestroy(this[HANDLE], flags, this.#t(opts));
  }

  /** Removes the persistent definition (virDomainUndefineFlags); flags: DomainUndefineFlags. */
  undefine(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainUndefine(this[HANDLE], flags, this.#t(opts));
  }

  suspend(opts?: CallOptions): Promise<void> {
    return native.domainSuspend(this[HANDLE], this.#t(opts));
  }

  resume(opts?: CallOptions): Promise<void> {
    return native.domainResume(this[HANDLE], this.#t(opts));
  }

  /** virDomainSetMemoryFlags; kib in KiB, flags: DomainMemoryModFlags. */
  setMemoryFlags(kib: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainSetMemoryFlags(this[HANDLE], kib, flags, this.#t(opts));
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
    return native.domainGetMaxMemory(this[HANDLE], this.#t(opts));
  }

  /** virDomainSetVcpusFlags; flags: DomainVcpuFlags. */
  setVcpusFlags(vcpus: number, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainSetVcpusFlags(this[HANDLE], vcpus, flags, this.#t(opts));
  }

  setVcpus(vcpus: number, impact?: VcpuImpact, opts?: CallOptions): Promise<void> {
    return this.setVcpusFlags(vcpus, vcpuFlags(impact), opts);
  }

  /** virDomainGetVcpusFlags; flags: DomainVcpuFlags. */
  getVcpusFlags(flags = 0, opts?: CallOptions): Promise<number> {
    return native.domainGetVcpusFlags(this[HANDLE], flags, this.#t(opts));
  }

  /**
   * virDomainGetVcpus: state, CPU time, host CPU and affinity of each vCPU of a running
   * domain (an inactive one rejects with VIR_ERR_OPERATION_INVALID). The count of vCPUs is
   * getVcpusFlags.
   */
  async getVcpus(opts?: CallOptions): Promise<VcpuInfo[]> {
    const raw = await native.domainGetVcpus(this[HANDLE], this.#t(opts));
    return raw.map((v) => ({ ...v, stateName: vcpuStateName(v.state) }));
  }

  memoryStats(flags = 0, opts?: CallOptions): Promise<DomainMemoryStats> {
    return native.domainMemoryStats(this[HANDLE], flags, this.#t(opts));
  }

  /** source: DomainInterfaceAddressesSource (LEASE, AGENT, ARP). */
  interfaceAddresses(source: number, flags = 0, opts?: CallOptions): Promise<DomainInterface[]> {
    return native.domainInterfaceAddresses(this[HANDLE], source, flags, this.#t(opts));
  }

  /** flags: DomainDeviceModifyFlags. */
  attachDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainAttachDeviceFlags(this[HANDLE], xml, flags, this.#t(opts));
  }

  detachDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainDetachDeviceFlags(this[HANDLE], xml, flags, this.#t(opts));
  }

  updateDeviceFlags(xml: string, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainUpdateDeviceFlags(this[HANDLE], xml, flags, this.#t(opts));
  }

  /** type: DomainMetadataType; for ELEMENT, `uri` is the namespace. flags: DomainModificationImpact. */
  getMetadata(
    type: number,
    uri: string | null = null,
    flags = 0,
    opts?: CallOptions,
  ): Promise<string> {
    return native.domainGetMetadata(this[HANDLE], type, uri, flags, this.#t(opts));
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
    return native.domainSetMetadata(this[HANDLE], type, metadata, key, uri, flags, this.#t(opts));
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
    return native.domainOpenConsole(this[HANDLE], devName, st, flags, this.#t(opts));
  }

  /** Grows a disk of a running domain; size in KiB, or bytes with DomainBlockResizeFlags.BYTES. */
  blockResize(disk: string, size: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainBlockResize(this[HANDLE], disk, size, flags, this.#t(opts));
  }

  /** virDomainSnapshotCreateXML; flags: DomainSnapshotCreateFlags. */
  async createSnapshotXML(xml: string, flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshotCreateXML(this[HANDLE], xml, flags, this.#t(opts));
    return new DomainSnapshot(this, h);
  }

  /** virDomainSnapshotLookupByName; a missing one rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async lookupSnapshotByName(name: string, flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshotLookupByName(this[HANDLE], name, flags, this.#t(opts));
    return new DomainSnapshot(this, h);
  }

  /** virDomainListAllSnapshots; flags: DomainSnapshotListFlags. */
  async listAllSnapshots(flags = 0, opts?: CallOptions): Promise<DomainSnapshot[]> {
    const hs = await native.domainListAllSnapshots(this[HANDLE], flags, this.#t(opts));
    return hs.map((h) => new DomainSnapshot(this, h));
  }

  /** virDomainSnapshotNum; flags: DomainSnapshotListFlags. */
  numOfSnapshots(flags = 0, opts?: CallOptions): Promise<number> {
    return native.domainSnapshotNum(this[HANDLE], flags, this.#t(opts));
  }

  hasCurrentSnapshot(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainHasCurrentSnapshot(this[HANDLE], flags, this.#t(opts));
  }

  /**
   * Freezes the guest's filesystems through the QEMU guest agent (virDomainFSFreeze); null
   * mountpoints: all. Resolves with the number frozen. No agent: VIR_ERR_ARGUMENT_UNSUPPORTED
   * (not configured) or VIR_ERR_AGENT_UNRESPONSIVE (configured, nobody answers).
   */
  fsFreeze(mountpoints: string[] | null = null, flags = 0, opts?: CallOptions): Promise<number> {
    return native.domainFSFreeze(this[HANDLE], mountpoints, flags, this.#t(opts));
  }

  /** virDomainFSThaw; resolves with the number thawed. */
  fsThaw(mountpoints: string[] | null = null, flags = 0, opts?: CallOptions): Promise<number> {
    return native.domainFSThaw(this[HANDLE], mountpoints, flags, this.#t(opts));
  }

  /** virDomainSnapshotCurrent; none rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async currentSnapshot(flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshotCurrent(this[HANDLE], flags, this.#t(opts));
    return new DomainSnapshot(this, h);
  }
}

function vcpuFlags(impact: VcpuImpact | undefined): number {
  return (
    impactFlags(impact) |
    (impact?.maximum ? DomainVcpuFlags.MAXIMUM : 0) |
    (impact?.guest ? DomainVcpuFlags.GUEST : 0)
  );
}
