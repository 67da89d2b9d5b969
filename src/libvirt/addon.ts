// Loads the compiled addon and describes its flat function table. Everything here is
// internal: the typed classes in connection.ts, domain.ts, network.ts and storage.ts are the
// public surface. Handles are opaque tagged externals owned by those classes.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { LibvirtError, type LibvirtErrorDetails } from './errors.js';

declare const handleKind: unique symbol;
export interface ConnHandle {
  readonly [handleKind]: 'connect';
}
export interface DomainHandle {
  readonly [handleKind]: 'domain';
}
export interface NetworkHandle {
  readonly [handleKind]: 'network';
}
export interface PoolHandle {
  readonly [handleKind]: 'storagePool';
}
export interface VolHandle {
  readonly [handleKind]: 'storageVol';
}
export interface SnapshotHandle {
  readonly [handleKind]: 'domainSnapshot';
}

export interface StreamHandle {
  readonly [handleKind]: 'stream';
}

/** What a stream's listener receives (mirrors MsgKind in native/stream.cc). */
export const StreamMessage = { Data: 0, End: 1, Error: 2, Sent: 3 } as const;
export type StreamMessage = (typeof StreamMessage)[keyof typeof StreamMessage];

/** Trailing `timeoutMs` argument of every asynchronous native function; 0 or undefined: none. */
type T = number | undefined;
type U64 = number | bigint;

export interface RawNodeInfo {
  model: string;
  memory: bigint;
  cpus: number;
  mhz: number;
  nodes: number;
  sockets: number;
  cores: number;
  threads: number;
}
export interface RawDomainInfo {
  state: number;
  maxMem: bigint;
  memory: bigint;
  nrVirtCpu: number;
  cpuTime: bigint;
}
export interface RawVcpuInfo {
  number: number;
  state: number;
  cpuTime: bigint;
  cpu: number;
  affinity: boolean[];
}
export interface RawInterface {
  name: string | null;
  hwaddr: string | null;
  addrs: { type: number; addr: string; prefix: number }[];
}
export interface RawLease {
  iface: string | null;
  expiryTime: number;
  type: number;
  mac: string | null;
  iaid: string | null;
  ipaddr: string | null;
  prefix: number;
  hostname: string | null;
  clientid: string | null;
}
/** One domain's typed parameters, keyed by libvirt's field name ('cpu.time', 'net.0.name'). */
export interface RawDomainStatsRecord {
  name: string;
  uuid: string;
  params: Record<string, number | bigint | boolean | string>;
}

export interface RawPoolInfo {
  state: number;
  capacity: bigint;
  allocation: bigint;
  available: bigint;
}
export interface RawVolInfo {
  type: number;
  capacity: bigint;
  allocation: bigint;
}

/** What the addon's event dispatcher is called for (mirrors EventKind in runtime.h). */
export const EventKind = {
  DomainLifecycle: 0,
  NetworkLifecycle: 1,
  StoragePoolLifecycle: 2,
  ConnectionClosed: 3,
  DomainReboot: 4,
  StoragePoolRefresh: 5,
} as const;
export type EventKind = (typeof EventKind)[keyof typeof EventKind];

export type EventDispatcher = (
  kind: EventKind,
  key: number,
  handle: DomainHandle | NetworkHandle | PoolHandle | undefined,
  event: number,
  detail: number,
) => void;

export interface NativeBinding {
  setErrorConstructor(ctor: new (message: string, details: LibvirtErrorDetails) => Error): void;
  setEventDispatcher(dispatcher: EventDispatcher): void;
  setThreadPoolSize(size: number): number;
  stats(): {
    pendingCalls: number;
    eventRegistrations: number;
    workerThreads: number;
    openConnections: number;
    handleReferences: number;
  };
  getVersion(): number;
  freedHandles(): {
    domain: DomainHandle;
    network: NetworkHandle;
    storagePool: PoolHandle;
    storageVol: VolHandle;
  };

  connectOpen(uri: string | null, flags: number, closeKey: number, t: T): Promise<ConnHandle>;
  connectClose(c: ConnHandle, t: T): Promise<number>;
  connectGetType(c: ConnHandle, t: T): Promise<string>;
  connectGetVersion(c: ConnHandle, t: T): Promise<number>;
  connectGetLibVersion(c: ConnHandle, t: T): Promise<number>;
  connectGetHostname(c: ConnHandle, t: T): Promise<string>;
  connectGetURI(c: ConnHandle, t: T): Promise<string>;
  connectGetCapabilities(c: ConnHandle, t: T): Promise<string>;
  connectGetSysinfo(c: ConnHandle, flags: number, t: T): Promise<string>;
  connectGetMaxVcpus(c: ConnHandle, type: string | null, t: T): Promise<number>;
  connectIsAlive(c: ConnHandle, t: T): Promise<boolean>;
  connectSetKeepAlive(c: ConnHandle, interval: number, count: number, t: T): Promise<number>;
  nodeGetInfo(c: ConnHandle, t: T): Promise<RawNodeInfo>;
  nodeGetFreeMemory(c: ConnHandle, t: T): Promise<bigint>;
  connectNumOfDomains(c: ConnHandle, t: T): Promise<number>;
  connectNumOfDefinedDomains(c: ConnHandle, t: T): Promise<number>;
  connectNumOfNetworks(c: ConnHandle, t: T): Promise<number>;
  connectNumOfDefinedNetworks(c: ConnHandle, t: T): Promise<number>;
  connectNumOfStoragePools(c: ConnHandle, t: T): Promise<number>;
  connectNumOfDefinedStoragePools(c: ConnHandle, t: T): Promise<number>;
  connectListAllDomains(c: ConnHandle, flags: number, t: T): Promise<DomainHandle[]>;
  connectListAllNetworks(c: ConnHandle, flags: number, t: T): Promise<NetworkHandle[]>;
  connectListAllStoragePools(c: ConnHandle, flags: number, t: T): Promise<PoolHandle[]>;
  connectGetAllDomainStats(
    c: ConnHandle,
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;
  domainListGetStats(
    d: DomainHandle[],
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;

  domainLookupByID(c: ConnHandle, id: number, t: T): Promise<DomainHandle>;
  domainLookupByName(c: ConnHandle, name: string, t: T): Promise<DomainHandle>;
  domainLookupByUUIDString(c: ConnHandle, uuid: string, t: T): Promise<DomainHandle>;
  domainLookupByUUID(c: ConnHandle, uuid: Uint8Array, t: T): Promise<DomainHandle>;
  networkLookupByName(c: ConnHandle, name: string, t: T): Promise<NetworkHandle>;
  networkLookupByUUIDString(c: ConnHandle, uuid: string, t: T): Promise<NetworkHandle>;
  networkLookupByUUID(c: ConnHandle, uuid: Uint8Array, t: T): Promise<NetworkHandle>;
  storagePoolLookupByName(c: ConnHandle, name: string, t: T): Promise<PoolHandle>;
  storagePoolLookupByUUIDString(c: ConnHandle, uuid: string, t: T): Promise<PoolHandle>;
  storagePoolLookupByUUID(c: ConnHandle, uuid: Uint8Array, t: T): Promise<PoolHandle>;
  storagePoolLookupByTargetPath(c: ConnHandle, path: string, t: T): Promise<PoolHandle>;
  storageVolLookupByKey(c: ConnHandle, key: string, t: T): Promise<VolHandle>;
  storageVolLookupByPath(c: ConnHandle, path: string, t: T): Promise<VolHandle>;
  domainDefineXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<DomainHandle>;
  domainCreateXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<DomainHandle>;
  networkDefineXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<NetworkHandle>;
  networkCreateXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<NetworkHandle>;
  storagePoolDefineXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<PoolHandle>;
  storagePoolCreateXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<PoolHandle>;

  connectDomainEventRegisterAny(
    c: ConnHandle,
    d: DomainHandle | null,
    eventID: number,
    key: number,
    t: T,
  ): Promise<number>;
  connectNetworkEventRegisterAny(
    c: ConnHandle,
    n: NetworkHandle | null,
    eventID: number,
    key: number,
    t: T,
  ): Promise<number>;
  connectStoragePoolEventRegisterAny(
    c: ConnHandle,
    p: PoolHandle | null,
    eventID: number,
    key: number,
    t: T,
  ): Promise<number>;
  connectDomainEventDeregisterAny(c: ConnHandle, callbackID: number, t: T): Promise<void>;
  connectNetworkEventDeregisterAny(c: ConnHandle, callbackID: number, t: T): Promise<void>;
  connectStoragePoolEventDeregisterAny(c: ConnHandle, callbackID: number, t: T): Promise<void>;

  domainGetName(d: DomainHandle): string;
  domainGetUUIDString(d: DomainHandle): string;
  domainGetUUID(d: DomainHandle): Buffer;
  domainGetID(d: DomainHandle): number;
  domainFree(d: DomainHandle): void;
  domainGetInfo(d: DomainHandle, t: T): Promise<RawDomainInfo>;
  domainGetState(d: DomainHandle, flags: number, t: T): Promise<{ state: number; reason: number }>;
  domainGetXMLDesc(d: DomainHandle, flags: number, t: T): Promise<string>;
  domainGetOSType(d: DomainHandle, t: T): Promise<string>;
  domainIsActive(d: DomainHandle, t: T): Promise<boolean>;
  domainIsPersistent(d: DomainHandle, t: T): Promise<boolean>;
  domainIsUpdated(d: DomainHandle, t: T): Promise<boolean>;
  domainGetAutostart(d: DomainHandle, t: T): Promise<boolean>;
  domainSetAutostart(d: DomainHandle, autostart: boolean, t: T): Promise<void>;
  domainCreate(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainShutdown(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainReboot(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainReset(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainDestroy(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainUndefine(d: DomainHandle, flags: number, t: T): Promise<void>;
  domainSuspend(d: DomainHandle, t: T): Promise<void>;
  domainResume(d: DomainHandle, t: T): Promise<void>;
  domainSetMemoryFlags(d: DomainHandle, kib: U64, flags: number, t: T): Promise<void>;
  domainGetMaxMemory(d: DomainHandle, t: T): Promise<bigint>;
  domainSetVcpusFlags(d: DomainHandle, n: number, flags: number, t: T): Promise<void>;
  domainGetVcpusFlags(d: DomainHandle, flags: number, t: T): Promise<number>;
  domainGetVcpus(d: DomainHandle, t: T): Promise<RawVcpuInfo[]>;
  domainMemoryStats(d: DomainHandle, flags: number, t: T): Promise<Record<string, bigint>>;
  domainInterfaceAddresses(
    d: DomainHandle,
    source: number,
    flags: number,
    t: T,
  ): Promise<RawInterface[]>;
  domainAttachDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
  domainDetachDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
  domainUpdateDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
  domainGetMetadata(
    d: DomainHandle,
    type: number,
    uri: string | null,
    flags: number,
    t: T,
  ): Promise<string>;
  domainSetMetadata(
    d: DomainHandle,
    type: number,
    metadata: string | null,
    key: string | null,
    uri: string | null,
    flags: number,
    t: T,
  ): Promise<void>;
  domainBlockResize(d: DomainHandle, disk: string, size: U64, flags: number, t: T): Promise<void>;

  domainSnapshotCreateXML(
    d: DomainHandle,
    xml: string,
    flags: number,
    t: T,
  ): Promise<SnapshotHandle>;
  domainSnapshotLookupByName(
    d: DomainHandle,
    name: string,
    flags: number,
    t: T,
  ): Promise<SnapshotHandle>;
  domainListAllSnapshots(d: DomainHandle, flags: number, t: T): Promise<SnapshotHandle[]>;
  domainSnapshotNum(d: DomainHandle, flags: number, t: T): Promise<number>;
  domainHasCurrentSnapshot(d: DomainHandle, flags: number, t: T): Promise<boolean>;
  domainSnapshotCurrent(d: DomainHandle, flags: number, t: T): Promise<SnapshotHandle>;
  domainSnapshotGetName(s: SnapshotHandle): string;
  domainSnapshotFree(s: SnapshotHandle): void;
  domainSnapshotFreedHandle(): SnapshotHandle;
  domainSnapshotGetXMLDesc(s: SnapshotHandle, flags: number, t: T): Promise<string>;
  domainSnapshotGetParent(s: SnapshotHandle, flags: number, t: T): Promise<SnapshotHandle>;
  domainSnapshotIsCurrent(s: SnapshotHandle, flags: number, t: T): Promise<boolean>;
  domainSnapshotHasMetadata(s: SnapshotHandle, flags: number, t: T): Promise<boolean>;
  domainRevertToSnapshot(s: SnapshotHandle, flags: number, t: T): Promise<void>;
  domainSnapshotDelete(s: SnapshotHandle, flags: number, t: T): Promise<void>;
  domainFSFreeze(
    d: DomainHandle,
    mountpoints: string[] | null,
    flags: number,
    t: T,
  ): Promise<number>;
  domainFSThaw(d: DomainHandle, mountpoints: string[] | null, flags: number, t: T): Promise<number>;

  networkGetName(n: NetworkHandle): string;
  networkGetUUIDString(n: NetworkHandle): string;
  networkGetUUID(n: NetworkHandle): Buffer;
  networkFree(n: NetworkHandle): void;
  networkGetXMLDesc(n: NetworkHandle, flags: number, t: T): Promise<string>;
  networkGetBridgeName(n: NetworkHandle, t: T): Promise<string>;
  networkGetAutostart(n: NetworkHandle, t: T): Promise<boolean>;
  networkSetAutostart(n: NetworkHandle, autostart: boolean, t: T): Promise<void>;
  networkIsActive(n: NetworkHandle, t: T): Promise<boolean>;
  networkIsPersistent(n: NetworkHandle, t: T): Promise<boolean>;
  networkCreate(n: NetworkHandle, t: T): Promise<void>;
  networkDestroy(n: NetworkHandle, t: T): Promise<void>;
  networkUndefine(n: NetworkHandle, t: T): Promise<void>;
  networkUpdate(
    n: NetworkHandle,
    command: number,
    section: number,
    parentIndex: number,
    xml: string,
    flags: number,
    t: T,
  ): Promise<void>;
  networkGetDHCPLeases(
    n: NetworkHandle,
    mac: string | null,
    flags: number,
    t: T,
  ): Promise<RawLease[]>;

  storagePoolGetName(p: PoolHandle): string;
  storagePoolGetUUIDString(p: PoolHandle): string;
  storagePoolGetUUID(p: PoolHandle): Buffer;
  storagePoolFree(p: PoolHandle): void;
  storagePoolBuild(p: PoolHandle, flags: number, t: T): Promise<void>;
  storagePoolCreate(p: PoolHandle, flags: number, t: T): Promise<void>;
  storagePoolDelete(p: PoolHandle, flags: number, t: T): Promise<void>;
  storagePoolRefresh(p: PoolHandle, flags: number, t: T): Promise<void>;
  storagePoolDestroy(p: PoolHandle, t: T): Promise<void>;
  storagePoolUndefine(p: PoolHandle, t: T): Promise<void>;
  storagePoolIsActive(p: PoolHandle, t: T): Promise<boolean>;
  storagePoolIsPersistent(p: PoolHandle, t: T): Promise<boolean>;
  storagePoolNumOfVolumes(p: PoolHandle, t: T): Promise<number>;
  storagePoolGetInfo(p: PoolHandle, t: T): Promise<RawPoolInfo>;
  storagePoolGetXMLDesc(p: PoolHandle, flags: number, t: T): Promise<string>;
  storagePoolGetAutostart(p: PoolHandle, t: T): Promise<boolean>;
  storagePoolSetAutostart(p: PoolHandle, autostart: boolean, t: T): Promise<void>;
  storagePoolListAllVolumes(p: PoolHandle, flags: number, t: T): Promise<VolHandle[]>;
  storageVolLookupByName(p: PoolHandle, name: string, t: T): Promise<VolHandle>;
  storageVolCreateXML(p: PoolHandle, xml: string, flags: number, t: T): Promise<VolHandle>;
  storageVolCreateXMLFrom(
    p: PoolHandle,
    xml: string,
    clone: VolHandle,
    flags: number,
    t: T,
  ): Promise<VolHandle>;
  storagePoolLookupByVolume(v: VolHandle, t: T): Promise<PoolHandle>;

  storageVolGetName(v: VolHandle): string;
  storageVolGetKey(v: VolHandle): string;
  storageVolFree(v: VolHandle): void;
  storageVolGetPath(v: VolHandle, t: T): Promise<string>;
  storageVolGetInfo(v: VolHandle, t: T): Promise<RawVolInfo>;
  storageVolGetXMLDesc(v: VolHandle, flags: number, t: T): Promise<string>;
  storageVolDelete(v: VolHandle, flags: number, t: T): Promise<void>;
  storageVolWipe(v: VolHandle, flags: number, t: T): Promise<void>;
  storageVolResize(v: VolHandle, capacity: U64, flags: number, t: T): Promise<void>;
  storageVolUpload(
    v: VolHandle,
    path: string,
    offset: U64,
    length: U64,
    flags: number,
    t: T,
  ): Promise<bigint>;
  storageVolDownload(
    v: VolHandle,
    path: string,
    offset: U64,
    length: U64,
    flags: number,
    t: T,
  ): Promise<bigint>;

  connectNewStream(c: ConnHandle, flags: number): StreamHandle;
  domainOpenConsole(
    d: DomainHandle,
    devName: string | null,
    s: StreamHandle,
    flags: number,
    t: T,
  ): Promise<void>;
  streamStart(
    s: StreamHandle,
    listener: (kind: StreamMessage, arg: Buffer | Error | number | undefined) => void,
    t: T,
  ): Promise<void>;
  streamSetReading(s: StreamHandle, reading: boolean): void;
  streamSend(s: StreamHandle, data: Uint8Array): boolean;
  streamFinish(s: StreamHandle, t: T): Promise<void>;
  streamAbort(s: StreamHandle, t: T): Promise<void>;
  streamFree(s: StreamHandle): void;
}

// src/libvirt/addon.ts and dist/libvirt/addon.js are both two levels below the package root.
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const addonPath = path.join(packageRoot, 'build', 'Release', 'libvirt_native.node');

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  let binding: NativeBinding;
  try {
    binding = require(addonPath) as NativeBinding;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'MODULE_NOT_FOUND') {
      throw new Error(
        `libvirt native addon not built (${addonPath} is missing): run \`npm run build:native\` ` +
          '(needs libvirt-dev, pkg-config, python3, make and g++)',
        { cause: err },
      );
    }
    throw new Error(
      `libvirt native addon at ${addonPath} failed to load (${e.message}); ` +
        'rebuild it with `npm run build:native` against the installed libvirt-dev',
      { cause: err },
    );
  }
  binding.setErrorConstructor(LibvirtError);
  return binding;
}

export const native: NativeBinding = load();

/**
 * What a facade object holds after free(): handles whose every use rejects as freed. Several
 * facade objects may share one native handle (the addon hands out one per libvirt object),
 * so free() gives back this object's share and swaps in the stand-in.
 */
export const FREED = native.freedHandles();

/** Where the facade classes keep their native handle; not part of the public API. */
export const HANDLE: unique symbol = Symbol('libvirt.handle');

/** Per-call options accepted as the last argument of every asynchronous method. */
export interface CallOptions {
  /**
   * Reject with a LibvirtError (VIR_ERR_OPERATION_TIMEOUT) if the call has not finished
   * after this many milliseconds. The libvirt call itself cannot be cancelled: its worker
   * thread stays busy until libvirt returns (keepalive bounds that for remote connections).
   * Defaults to the connection's `callTimeoutMs`; 0 means no timeout.
   */
  timeoutMs?: number;
}

/** Live/config selector used by the option-object variants of the Set… calls. */
export interface Impact {
  /** Change the running domain (VIR_DOMAIN_AFFECT_LIVE). */
  live?: boolean;
  /** Change the persistent definition (VIR_DOMAIN_AFFECT_CONFIG). */
  config?: boolean;
}

export function impactFlags(impact: Impact | undefined): number {
  return (impact?.live ? 1 : 0) | (impact?.config ? 2 : 0);
}
