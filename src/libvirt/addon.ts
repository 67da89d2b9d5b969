// Loads the compiled addon and describes its tables of calls, one per object kind. Everything
// here is internal: the typed classes in connection.ts, domain.ts, network.ts and storage.ts
// (sharing object.ts) are the public surface. Handles are opaque tagged externals owned by those classes.
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
/** virDomainInfo as [state, maxMem, memory, nrVirtCpu, cpuTime] (named by domain.ts). */
export type RawDomainInfo = [
  state: number,
  maxMem: bigint,
  memory: bigint,
  nrVirtCpu: number,
  cpuTime: bigint,
];
export interface RawDomainState {
  state: number;
  reason: number;
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
  DomainDeviceRemoved: 6,
} as const;
export type EventKind = (typeof EventKind)[keyof typeof EventKind];

export type EventDispatcher = (
  kind: EventKind,
  key: number,
  handle: DomainHandle | NetworkHandle | PoolHandle | undefined,
  event: number,
  detail: number,
  /** A DomainDeviceRemoved event's device alias; undefined for the other kinds. */
  text: string | undefined,
) => void;

/** A call on handle H with only the timeout, or with flags; both resolve with R. */
type Call0<H, R> = (h: H, t: T) => Promise<R>;
type FlagsCall<H, R> = (h: H, flags: number, t: T) => Promise<R>;
/** A call on H taking one string (an XML document, a name, a key) and flags. */
type StringFlagsCall<H, R> = (h: H, s: string, flags: number, t: T) => Promise<R>;
/** A lookup on the connection by one string (a name, a UUID, a key, a path). */
type Lookup<R> = (c: ConnHandle, key: string, t: T) => Promise<R>;

/** The calls every kind of libvirt object answers: its name, its XML, free(). */
export interface ObjectCalls<H> {
  getName(h: H): string;
  free(h: H): void;
  getXMLDesc: FlagsCall<H, string>;
}

/**
 * What domains, networks and storage pools have in common: a UUID, a persistent or transient
 * definition, autostart, and the connection's calls that count, list, look up, define and
 * create them and register for their lifecycle events.
 */
export interface DefinedCalls<H>
  extends
    ObjectCalls<H>,
    Record<'isActive' | 'isPersistent' | 'getAutostart', Call0<H, boolean>>,
    Record<'numOf' | 'numOfDefined', Call0<ConnHandle, number>>,
    Record<'lookupByName' | 'lookupByUUIDString', Lookup<H>>,
    Record<'defineXML' | 'createXML', StringFlagsCall<ConnHandle, H>> {
  getUUIDString(h: H): string;
  getUUID(h: H): Buffer;
  setAutostart(h: H, autostart: boolean, t: T): Promise<void>;
  listAll: FlagsCall<ConnHandle, H[]>;
  lookupByUUID(c: ConnHandle, uuid: Uint8Array, t: T): Promise<H>;
  eventRegisterAny(c: ConnHandle, h: H | null, eventID: number, key: number, t: T): Promise<number>;
  eventDeregisterAny(c: ConnHandle, callbackID: number, t: T): Promise<void>;
}

export interface ConnectCalls
  extends
    Record<'getType' | 'getHostname' | 'getURI' | 'getCapabilities', Call0<ConnHandle, string>>,
    Record<'getVersion' | 'getLibVersion', Call0<ConnHandle, number>> {
  open(uri: string | null, flags: number, closeKey: number, t: T): Promise<ConnHandle>;
  close: Call0<ConnHandle, number>;
  getSysinfo: FlagsCall<ConnHandle, string>;
  getMaxVcpus(c: ConnHandle, type: string | null, t: T): Promise<number>;
  getDomainCapabilities(
    c: ConnHandle,
    emulatorbin: string | null,
    arch: string | null,
    machine: string | null,
    virttype: string | null,
    flags: number,
    t: T,
  ): Promise<string>;
  isAlive: Call0<ConnHandle, boolean>;
  setKeepAlive(c: ConnHandle, interval: number, count: number, t: T): Promise<number>;
  nodeGetInfo: Call0<ConnHandle, RawNodeInfo>;
  nodeGetFreeMemory: Call0<ConnHandle, bigint>;
  getAllDomainStats(
    c: ConnHandle,
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;
  newStream(c: ConnHandle, flags: number): StreamHandle;
}

export interface DomainCalls
  extends
    DefinedCalls<DomainHandle>,
    Record<
      'create' | 'shutdown' | 'reboot' | 'reset' | 'destroy' | 'undefine' | 'pmWakeup',
      FlagsCall<DomainHandle, void>
    >,
    Record<'suspend' | 'resume', Call0<DomainHandle, void>>,
    Record<
      'attachDeviceFlags' | 'detachDeviceFlags' | 'updateDeviceFlags',
      StringFlagsCall<DomainHandle, void>
    >,
    Record<
      'fsFreeze' | 'fsThaw',
      (d: DomainHandle, mountpoints: string[] | null, flags: number, t: T) => Promise<number>
    > {
  lookupByID(c: ConnHandle, id: number, t: T): Promise<DomainHandle>;
  listGetStats(
    d: DomainHandle[],
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;
  getID(d: DomainHandle): number;
  getInfo: Call0<DomainHandle, RawDomainInfo>;
  getState: FlagsCall<DomainHandle, RawDomainState>;
  getOSType: Call0<DomainHandle, string>;
  isUpdated: Call0<DomainHandle, boolean>;
  setMemoryFlags(d: DomainHandle, kib: U64, flags: number, t: T): Promise<void>;
  getMaxMemory: Call0<DomainHandle, bigint>;
  setVcpusFlags(d: DomainHandle, n: number, flags: number, t: T): Promise<void>;
  getVcpusFlags: FlagsCall<DomainHandle, number>;
  getVcpus: Call0<DomainHandle, RawVcpuInfo[]>;
  memoryStats: FlagsCall<DomainHandle, Record<string, bigint>>;
  interfaceAddresses(d: DomainHandle, source: number, flags: number, t: T): Promise<RawInterface[]>;
  getMetadata(
    d: DomainHandle,
    type: number,
    uri: string | null,
    flags: number,
    t: T,
  ): Promise<string>;
  setMetadata(
    d: DomainHandle,
    type: number,
    metadata: string | null,
    key: string | null,
    uri: string | null,
    flags: number,
    t: T,
  ): Promise<void>;
  blockResize(d: DomainHandle, disk: string, size: U64, flags: number, t: T): Promise<void>;
  openConsole(
    d: DomainHandle,
    devName: string | null,
    s: StreamHandle,
    flags: number,
    t: T,
  ): Promise<void>;
}

export interface SnapshotCalls
  extends
    ObjectCalls<SnapshotHandle>,
    Record<'createXML' | 'lookupByName', StringFlagsCall<DomainHandle, SnapshotHandle>>,
    Record<'isCurrent' | 'hasMetadata', FlagsCall<SnapshotHandle, boolean>>,
    Record<'revert' | 'delete', FlagsCall<SnapshotHandle, void>> {
  freedHandle(): SnapshotHandle;
  listAll: FlagsCall<DomainHandle, SnapshotHandle[]>;
  num: FlagsCall<DomainHandle, number>;
  hasCurrent: FlagsCall<DomainHandle, boolean>;
  current: FlagsCall<DomainHandle, SnapshotHandle>;
  getParent: FlagsCall<SnapshotHandle, SnapshotHandle>;
}

export interface NetworkCalls
  extends
    DefinedCalls<NetworkHandle>,
    Record<'create' | 'destroy' | 'undefine', Call0<NetworkHandle, void>> {
  getBridgeName: Call0<NetworkHandle, string>;
  update(
    n: NetworkHandle,
    command: number,
    section: number,
    parentIndex: number,
    xml: string,
    flags: number,
    t: T,
  ): Promise<void>;
  getDHCPLeases(n: NetworkHandle, mac: string | null, flags: number, t: T): Promise<RawLease[]>;
  /** The UUIDs of the network's ports (null where libvirt could not format one). */
  listAllPorts: FlagsCall<NetworkHandle, Array<string | null>>;
}

export interface PoolCalls
  extends
    DefinedCalls<PoolHandle>,
    Record<'build' | 'create' | 'delete' | 'refresh', FlagsCall<PoolHandle, void>>,
    Record<'destroy' | 'undefine', Call0<PoolHandle, void>> {
  lookupByTargetPath: Lookup<PoolHandle>;
  lookupByVolume: Call0<VolHandle, PoolHandle>;
  numOfVolumes: Call0<PoolHandle, number>;
  getInfo: Call0<PoolHandle, RawPoolInfo>;
  listAllVolumes: FlagsCall<PoolHandle, VolHandle[]>;
}

/** Upload or download between the volume and a local file; resolves with the bytes moved. */
type VolTransfer = (
  v: VolHandle,
  path: string,
  offset: U64,
  length: U64,
  flags: number,
  t: T,
) => Promise<bigint>;

export interface VolCalls
  extends
    ObjectCalls<VolHandle>,
    Record<'lookupByKey' | 'lookupByPath', Lookup<VolHandle>>,
    Record<'delete' | 'wipe', FlagsCall<VolHandle, void>>,
    Record<'upload' | 'download', VolTransfer> {
  lookupByName(p: PoolHandle, name: string, t: T): Promise<VolHandle>;
  createXML: StringFlagsCall<PoolHandle, VolHandle>;
  createXMLFrom(
    p: PoolHandle,
    xml: string,
    clone: VolHandle,
    flags: number,
    t: T,
  ): Promise<VolHandle>;
  getKey(v: VolHandle): string;
  getPath: Call0<VolHandle, string>;
  getInfo: Call0<VolHandle, RawVolInfo>;
  resize(v: VolHandle, capacity: U64, flags: number, t: T): Promise<void>;
}

export interface StreamCalls extends Record<'finish' | 'abort', Call0<StreamHandle, void>> {
  start(
    s: StreamHandle,
    listener: (kind: StreamMessage, arg: Buffer | Error | number | undefined) => void,
    t: T,
  ): Promise<void>;
  setReading(s: StreamHandle, reading: boolean): void;
  send(s: StreamHandle, data: Uint8Array): boolean;
  free(s: StreamHandle): void;
}

/** The addon's exports: process-wide functions, then one table of calls per object kind. */
export interface NativeBinding {
  setErrorConstructor(ctor: new (message: string, details: LibvirtErrorDetails) => Error): void;
  setEventDispatcher(dispatcher: EventDispatcher): void;
  setThreadPoolSize(size: number): number;
  stats(): {
    pendingCalls: number;
    eventRegistrations: number;
    workerThreads: number;
    workersKeptOnCpu: number;
    openConnections: number;
    handleReferences: number;
    results: number;
    resultWakeups: number;
  };
  getVersion(): number;
  freedHandles(): {
    domain: DomainHandle;
    network: NetworkHandle;
    storagePool: PoolHandle;
    storageVol: VolHandle;
  };
  connect: ConnectCalls;
  domain: DomainCalls;
  domainSnapshot: SnapshotCalls;
  network: NetworkCalls;
  storagePool: PoolCalls;
  storageVol: VolCalls;
  stream: StreamCalls;
}

// src/libvirt/addon.ts and dist/libvirt/addon.js are both two levels below the package root.
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const addonPath = path.join(packageRoot, 'build', 'Release', 'libvirt_native.node');

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
