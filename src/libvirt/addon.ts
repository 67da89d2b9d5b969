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

/** The calls every kind of libvirt object answers: its name, its XML, free(). */
export interface ObjectCalls<H> {
  getName(h: H): string;
  free(h: H): void;
  getXMLDesc(h: H, flags: number, t: T): Promise<string>;
}

/**
 * What domains, networks and storage pools have in common: a UUID, a persistent or transient
 * definition, autostart, and the connection's calls that count, list, look up, define and
 * create them and register for their lifecycle events.
 */
export interface DefinedCalls<H> extends ObjectCalls<H> {
  getUUIDString(h: H): string;
  getUUID(h: H): Buffer;
  isActive(h: H, t: T): Promise<boolean>;
  isPersistent(h: H, t: T): Promise<boolean>;
  getAutostart(h: H, t: T): Promise<boolean>;
  setAutostart(h: H, autostart: boolean, t: T): Promise<void>;

  numOf(c: ConnHandle, t: T): Promise<number>;
  numOfDefined(c: ConnHandle, t: T): Promise<number>;
  listAll(c: ConnHandle, flags: number, t: T): Promise<H[]>;
  lookupByName(c: ConnHandle, name: string, t: T): Promise<H>;
  lookupByUUIDString(c: ConnHandle, uuid: string, t: T): Promise<H>;
  lookupByUUID(c: ConnHandle, uuid: Uint8Array, t: T): Promise<H>;
  defineXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<H>;
  createXML(c: ConnHandle, xml: string, flags: number, t: T): Promise<H>;
  eventRegisterAny(c: ConnHandle, h: H | null, eventID: number, key: number, t: T): Promise<number>;
  eventDeregisterAny(c: ConnHandle, callbackID: number, t: T): Promise<void>;
}

export interface ConnectCalls {
  open(uri: string | null, flags: number, closeKey: number, t: T): Promise<ConnHandle>;
  close(c: ConnHandle, t: T): Promise<number>;
  getType(c: ConnHandle, t: T): Promise<string>;
  getVersion(c: ConnHandle, t: T): Promise<number>;
  getLibVersion(c: ConnHandle, t: T): Promise<number>;
  getHostname(c: ConnHandle, t: T): Promise<string>;
  getURI(c: ConnHandle, t: T): Promise<string>;
  getCapabilities(c: ConnHandle, t: T): Promise<string>;
  getSysinfo(c: ConnHandle, flags: number, t: T): Promise<string>;
  getMaxVcpus(c: ConnHandle, type: string | null, t: T): Promise<number>;
  isAlive(c: ConnHandle, t: T): Promise<boolean>;
  setKeepAlive(c: ConnHandle, interval: number, count: number, t: T): Promise<number>;
  nodeGetInfo(c: ConnHandle, t: T): Promise<RawNodeInfo>;
  nodeGetFreeMemory(c: ConnHandle, t: T): Promise<bigint>;
  getAllDomainStats(
    c: ConnHandle,
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;
  newStream(c: ConnHandle, flags: number): StreamHandle;
}

export interface DomainCalls extends DefinedCalls<DomainHandle> {
  lookupByID(c: ConnHandle, id: number, t: T): Promise<DomainHandle>;
  listGetStats(
    d: DomainHandle[],
    stats: number,
    flags: number,
    t: T,
  ): Promise<RawDomainStatsRecord[]>;
  getID(d: DomainHandle): number;
  getInfo(d: DomainHandle, t: T): Promise<RawDomainInfo>;
  getState(d: DomainHandle, flags: number, t: T): Promise<{ state: number; reason: number }>;
  getOSType(d: DomainHandle, t: T): Promise<string>;
  isUpdated(d: DomainHandle, t: T): Promise<boolean>;
  create(d: DomainHandle, flags: number, t: T): Promise<void>;
  shutdown(d: DomainHandle, flags: number, t: T): Promise<void>;
  reboot(d: DomainHandle, flags: number, t: T): Promise<void>;
  reset(d: DomainHandle, flags: number, t: T): Promise<void>;
  destroy(d: DomainHandle, flags: number, t: T): Promise<void>;
  undefine(d: DomainHandle, flags: number, t: T): Promise<void>;
  suspend(d: DomainHandle, t: T): Promise<void>;
  resume(d: DomainHandle, t: T): Promise<void>;
  setMemoryFlags(d: DomainHandle, kib: U64, flags: number, t: T): Promise<void>;
  getMaxMemory(d: DomainHandle, t: T): Promise<bigint>;
  setVcpusFlags(d: DomainHandle, n: number, flags: number, t: T): Promise<void>;
  getVcpusFlags(d: DomainHandle, flags: number, t: T): Promise<number>;
  getVcpus(d: DomainHandle, t: T): Promise<RawVcpuInfo[]>;
  memoryStats(d: DomainHandle, flags: number, t: T): Promise<Record<string, bigint>>;
  interfaceAddresses(d: DomainHandle, source: number, flags: number, t: T): Promise<RawInterface[]>;
  attachDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
  detachDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
  updateDeviceFlags(d: DomainHandle, xml: string, flags: number, t: T): Promise<void>;
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
  fsFreeze(d: DomainHandle, mountpoints: string[] | null, flags: number, t: T): Promise<number>;
  fsThaw(d: DomainHandle, mountpoints: string[] | null, flags: number, t: T): Promise<number>;
}

export interface SnapshotCalls extends ObjectCalls<SnapshotHandle> {
  freedHandle(): SnapshotHandle;
  createXML(d: DomainHandle, xml: string, flags: number, t: T): Promise<SnapshotHandle>;
  lookupByName(d: DomainHandle, name: string, flags: number, t: T): Promise<SnapshotHandle>;
  listAll(d: DomainHandle, flags: number, t: T): Promise<SnapshotHandle[]>;
  num(d: DomainHandle, flags: number, t: T): Promise<number>;
  hasCurrent(d: DomainHandle, flags: number, t: T): Promise<boolean>;
  current(d: DomainHandle, flags: number, t: T): Promise<SnapshotHandle>;
  getParent(s: SnapshotHandle, flags: number, t: T): Promise<SnapshotHandle>;
  isCurrent(s: SnapshotHandle, flags: number, t: T): Promise<boolean>;
  hasMetadata(s: SnapshotHandle, flags: number, t: T): Promise<boolean>;
  revert(s: SnapshotHandle, flags: number, t: T): Promise<void>;
  delete(s: SnapshotHandle, flags: number, t: T): Promise<void>;
}

export interface NetworkCalls extends DefinedCalls<NetworkHandle> {
  getBridgeName(n: NetworkHandle, t: T): Promise<string>;
  create(n: NetworkHandle, t: T): Promise<void>;
  destroy(n: NetworkHandle, t: T): Promise<void>;
  undefine(n: NetworkHandle, t: T): Promise<void>;
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
}

export interface PoolCalls extends DefinedCalls<PoolHandle> {
  lookupByTargetPath(c: ConnHandle, path: string, t: T): Promise<PoolHandle>;
  lookupByVolume(v: VolHandle, t: T): Promise<PoolHandle>;
  build(p: PoolHandle, flags: number, t: T): Promise<void>;
  create(p: PoolHandle, flags: number, t: T): Promise<void>;
  delete(p: PoolHandle, flags: number, t: T): Promise<void>;
  refresh(p: PoolHandle, flags: number, t: T): Promise<void>;
  destroy(p: PoolHandle, t: T): Promise<void>;
  undefine(p: PoolHandle, t: T): Promise<void>;
  numOfVolumes(p: PoolHandle, t: T): Promise<number>;
  getInfo(p: PoolHandle, t: T): Promise<RawPoolInfo>;
  listAllVolumes(p: PoolHandle, flags: number, t: T): Promise<VolHandle[]>;
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

export interface VolCalls extends ObjectCalls<VolHandle> {
  lookupByKey(c: ConnHandle, key: string, t: T): Promise<VolHandle>;
  lookupByPath(c: ConnHandle, path: string, t: T): Promise<VolHandle>;
  lookupByName(p: PoolHandle, name: string, t: T): Promise<VolHandle>;
  createXML(p: PoolHandle, xml: string, flags: number, t: T): Promise<VolHandle>;
  createXMLFrom(
    p: PoolHandle,
    xml: string,
    clone: VolHandle,
    flags: number,
    t: T,
  ): Promise<VolHandle>;
  getKey(v: VolHandle): string;
  getPath(v: VolHandle, t: T): Promise<string>;
  getInfo(v: VolHandle, t: T): Promise<RawVolInfo>;
  delete(v: VolHandle, flags: number, t: T): Promise<void>;
  wipe(v: VolHandle, flags: number, t: T): Promise<void>;
  resize(v: VolHandle, capacity: U64, flags: number, t: T): Promise<void>;
  upload: VolTransfer;
  download: VolTransfer;
}

export interface StreamCalls {
  start(
    s: StreamHandle,
    listener: (kind: StreamMessage, arg: Buffer | Error | number | undefined) => void,
    t: T,
  ): Promise<void>;
  setReading(s: StreamHandle, reading: boolean): void;
  send(s: StreamHandle, data: Uint8Array): boolean;
  finish(s: StreamHandle, t: T): Promise<void>;
  abort(s: StreamHandle, t: T): Promise<void>;
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
