import {
  EventKind,
  HANDLE,
  native,
  type CallOptions,
  type ConnHandle,
  type DefinedCalls,
  type DomainHandle,
  type NetworkHandle,
  type PoolHandle,
  type RawNodeInfo,
} from './addon.js';
import {
  ConnectFlags,
  DomainEventID,
  NetworkEventID,
  StoragePoolEventID,
  StreamFlags,
} from './constants.js';
import { Domain } from './domain.js';
import { closeRoute, openRoute, type EventHandle } from './events.js';
import {
  closeReasonName,
  domainEventDetailName,
  domainEventName,
  networkEventName,
  storagePoolEventName,
} from './names.js';
import { Network } from './network.js';
import { parseDomainStats, type DomainStatsRecord } from './stats.js';
import { StoragePool, StorageVol } from './storage.js';
import { Stream } from './stream.js';

export interface OpenOptions {
  /** Open read-only (VIR_CONNECT_RO). */
  readOnly?: boolean;
  /** Bound on the open itself. */
  timeoutMs?: number;
  /** Default `timeoutMs` of every call made through this connection and its objects. */
  callTimeoutMs?: number;
}

export type NodeInfo = RawNodeInfo;

export interface ConnectionClosedEvent {
  /** ConnectCloseReason: ERROR, EOF, KEEPALIVE or CLIENT. */
  reason: number;
  reasonName: string;
}

export interface DomainLifecycleEvent {
  domain: Domain;
  /** DomainEventType */
  event: number;
  detail: number;
  /** 'defined', 'started', 'stopped', … */
  eventName: string;
  /** 'booted', 'destroyed', … (depends on the event) */
  detailName: string;
}

export interface DomainRebootEvent {
  domain: Domain;
}

export interface DomainDeviceRemovedEvent {
  domain: Domain;
  /** The alias of the device that is gone, e.g. 'virtio-disk1' or 'scsi0-0-0-1'. */
  devAlias: string;
}

export interface NetworkLifecycleEvent {
  network: Network;
  /** NetworkEventLifecycleType */
  event: number;
  detail: number;
  eventName: string;
}

export interface StoragePoolLifecycleEvent {
  pool: StoragePool;
  /** StoragePoolEventLifecycleType */
  event: number;
  detail: number;
  eventName: string;
}

export interface StoragePoolRefreshEvent {
  pool: StoragePool;
}

const collectedConnections = new FinalizationRegistry<number>(closeRoute);

/**
 * A connection to a hypervisor (virConnectPtr). Every method that talks to libvirt runs on
 * the binding's own worker threads and returns a promise; every one accepts `{ timeoutMs }`.
 * Release it with close(); an unreachable, unclosed connection is closed by the garbage
 * collector.
 */
export class Connect {
  readonly [HANDLE]: ConnHandle;
  readonly callTimeoutMs: number | undefined;
  #closeKey: number;
  #closed = false;
  #closeReason: number | undefined;
  #closeListeners = new Set<(event: ConnectionClosedEvent) => void>();
  // libvirt callback ID -> route key, per event family (IDs are per family and connection).
  #domainRoutes = new Map<number, number>();
  #networkRoutes = new Map<number, number>();
  #poolRoutes = new Map<number, number>();
  #testDriver: Promise<boolean> | undefined;

  private constructor(handle: ConnHandle, closeKey: number, callTimeoutMs: number | undefined) {
    this[HANDLE] = handle;
    this.#closeKey = closeKey;
    this.callTimeoutMs = callTimeoutMs;
  }

  /**
   * virConnectOpenAuth with the default authentication callbacks. `uri` null picks libvirt's
   * default URI. Rejects with a LibvirtError (VIR_ERR_NO_CONNECT, …) when it cannot connect.
   */
  static async open(uri: string | null, opts: OpenOptions = {}): Promise<Connect> {
    if (uri !== null && typeof uri !== 'string') {
      throw new TypeError('uri must be a string or null');
    }
    // Weak, so an unclosed connection nobody references can still be collected (and closed
    // by the addon's finalizer); its route goes with it.
    let ref: WeakRef<Connect> | undefined;
    const closeKey = openRoute((kind, _handle, reason) => {
      const conn = ref?.deref();
      if (kind === EventKind.ConnectionClosed && conn) conn.#onClosed(reason);
    });
    try {
      const flags = opts.readOnly ? ConnectFlags.RO : 0;
      const handle = await native.connect.open(uri, flags, closeKey, opts.timeoutMs);
      const conn = new Connect(handle, closeKey, opts.callTimeoutMs);
      ref = new WeakRef(conn);
      collectedConnections.register(conn, closeKey, conn);
      return conn;
    } catch (err) {
      closeRoute(closeKey);
      throw err;
    }
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.callTimeoutMs;
  }

  /** Closed by close() (not by the remote side: see closeReason). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Set once libvirt reported the connection closed (ConnectCloseReason); it is dead then. */
  get closeReason(): number | undefined {
    return this.#closeReason;
  }

  #onClosed(reason: number): void {
    this.#closeReason = reason;
    const event = { reason, reasonName: closeReasonName(reason) };
    for (const listener of [...this.#closeListeners]) listener(event);
  }

  /**
   * Releases the connection. Later calls on it and on every object obtained through it
   * reject with VIR_ERR_INVALID_CONN; its event registrations end. Closing twice is harmless.
   * With `timeoutMs` the promise may reject first, but the close itself still completes.
   */
  async close(opts?: CallOptions): Promise<number> {
    if (this.#closed) return 0;
    this.#closed = true;
    const routes = [
      ...this.#domainRoutes.values(),
      ...this.#networkRoutes.values(),
      ...this.#poolRoutes.values(),
    ];
    this.#domainRoutes.clear();
    this.#networkRoutes.clear();
    this.#poolRoutes.clear();
    try {
      return await native.connect.close(this[HANDLE], this.#t(opts));
    } finally {
      for (const key of routes) closeRoute(key);
      closeRoute(this.#closeKey);
      collectedConnections.unregister(this);
      this.#closeListeners.clear();
    }
  }

  /**
   * Called when libvirt closes the connection by itself (daemon gone, keepalive timeout).
   * Several listeners may be registered; each is called once per close.
   */
  registerCloseCallback(listener: (event: ConnectionClosedEvent) => void): void {
    this.#closeListeners.add(listener);
  }

  unregisterCloseCallback(listener: (event: ConnectionClosedEvent) => void): void {
    this.#closeListeners.delete(listener);
  }

  /**
   * @internal Whether this is libvirt's in-process test driver (virConnectGetType 'TEST'), asked
   * once per connection: a few of its calls need guarding (test-driver.ts).
   */
  isTestDriver(opts?: CallOptions): Promise<boolean> {
    if (!this.#testDriver) {
      const asked = this.getType(opts).then((type) => type === 'TEST');
      // A failed question (timeout, closed) is asked again next time.
      asked.catch(() => {
        if (this.#testDriver === asked) this.#testDriver = undefined;
      });
      this.#testDriver = asked;
    }
    return this.#testDriver;
  }

  getType(opts?: CallOptions): Promise<string> {
    return native.connect.getType(this[HANDLE], this.#t(opts));
  }

  /** Hypervisor version, major * 1,000,000 + minor * 1,000 + release. */
  getVersion(opts?: CallOptions): Promise<number> {
    return native.connect.getVersion(this[HANDLE], this.#t(opts));
  }

  /** libvirt version of the daemon (or library) serving the connection. */
  getLibVersion(opts?: CallOptions): Promise<number> {
    return native.connect.getLibVersion(this[HANDLE], this.#t(opts));
  }

  getHostname(opts?: CallOptions): Promise<string> {
    return native.connect.getHostname(this[HANDLE], this.#t(opts));
  }

  getURI(opts?: CallOptions): Promise<string> {
    return native.connect.getURI(this[HANDLE], this.#t(opts));
  }

  /** The capabilities XML. */
  getCapabilities(opts?: CallOptions): Promise<string> {
    return native.connect.getCapabilities(this[HANDLE], this.#t(opts));
  }

  getSysinfo(flags = 0, opts?: CallOptions): Promise<string> {
    return native.connect.getSysinfo(this[HANDLE], flags, this.#t(opts));
  }

  /**
   * The domain capabilities XML for one virtualization type (`qemu`, `kvm`; null: the
   * driver's default), for the host's default emulator and architecture, and `machine` (null:
   * the default machine type, i440fx on x86_64).
   */
  getDomainCapabilities(
    virttype: string | null = null,
    opts?: CallOptions,
    machine: string | null = null,
  ): Promise<string> {
    return native.connect.getDomainCapabilities(
      this[HANDLE],
      null,
      null,
      machine,
      virttype,
      0,
      this.#t(opts),
    );
  }

  getMaxVcpus(type: string | null = null, opts?: CallOptions): Promise<number> {
    return native.connect.getMaxVcpus(this[HANDLE], type, this.#t(opts));
  }

  isAlive(opts?: CallOptions): Promise<boolean> {
    return native.connect.isAlive(this[HANDLE], this.#t(opts));
  }

  /**
   * virConnectSetKeepAlive: ping every `interval` seconds, close after `count` unanswered
   * pings. Resolves 0, or 1 when the server has no keepalive support. Drivers without a
   * remote side (test:///) reject with VIR_ERR_NO_SUPPORT (see isUnsupported).
   */
  setKeepAlive(interval: number, count: number, opts?: CallOptions): Promise<number> {
    return native.connect.setKeepAlive(this[HANDLE], interval, count, this.#t(opts));
  }

  nodeGetInfo(opts?: CallOptions): Promise<NodeInfo> {
    return native.connect.nodeGetInfo(this[HANDLE], this.#t(opts));
  }

  /** Bytes. */
  nodeGetFreeMemory(opts?: CallOptions): Promise<bigint> {
    return native.connect.nodeGetFreeMemory(this[HANDLE], this.#t(opts));
  }

  // ---- domains -------------------------------------------------------------------------

  numOfDomains(opts?: CallOptions): Promise<number> {
    return native.domain.numOf(this[HANDLE], this.#t(opts));
  }

  numOfDefinedDomains(opts?: CallOptions): Promise<number> {
    return native.domain.numOfDefined(this[HANDLE], this.#t(opts));
  }

  /** flags: ConnectListAllDomainsFlags (0: all). */
  async listAllDomains(flags = 0, opts?: CallOptions): Promise<Domain[]> {
    const handles = await native.domain.listAll(this[HANDLE], flags, this.#t(opts));
    return handles.map((h) => new Domain(this, h));
  }

  /**
   * virConnectGetAllDomainStats: the `stats` groups (DomainStatsTypes, 0 = all the driver
   * has) of every domain the `flags` select (ConnectGetAllDomainStatsFlags), in one call.
   */
  async getAllDomainStats(
    stats: number,
    flags = 0,
    opts?: CallOptions,
  ): Promise<DomainStatsRecord[]> {
    const raw = await native.connect.getAllDomainStats(this[HANDLE], stats, flags, this.#t(opts));
    return raw.map(parseDomainStats);
  }

  /** virDomainListGetStats: like getAllDomainStats for the given domains of this connection. */
  async domainListGetStats(
    domains: readonly Domain[],
    stats: number,
    flags = 0,
    opts?: CallOptions,
  ): Promise<DomainStatsRecord[]> {
    const raw = await native.domain.listGetStats(
      domains.map((d) => d[HANDLE]),
      stats,
      flags,
      this.#t(opts),
    );
    return raw.map(parseDomainStats);
  }

  /** A lookup by UUID in either form: a string (any form libvirt parses) or the 16 raw bytes. */
  #lookupByUUID<H>(
    calls: DefinedCalls<H>,
    uuid: string | Uint8Array,
    opts?: CallOptions,
  ): Promise<H> {
    const t = this.#t(opts);
    return typeof uuid === 'string'
      ? calls.lookupByUUIDString(this[HANDLE], uuid, t)
      : calls.lookupByUUID(this[HANDLE], uuid, t);
  }

  #domain = (h: DomainHandle): Domain => new Domain(this, h);

  lookupDomainByID(id: number, opts?: CallOptions): Promise<Domain> {
    return native.domain.lookupByID(this[HANDLE], id, this.#t(opts)).then(this.#domain);
  }

  lookupDomainByName(name: string, opts?: CallOptions): Promise<Domain> {
    return native.domain.lookupByName(this[HANDLE], name, this.#t(opts)).then(this.#domain);
  }

  /** `uuid` as a string (any form libvirt parses) or the 16 raw bytes. */
  lookupDomainByUUID(uuid: string | Uint8Array, opts?: CallOptions): Promise<Domain> {
    return this.#lookupByUUID(native.domain, uuid, opts).then(this.#domain);
  }

  lookupDomainByUUIDString(uuid: string, opts?: CallOptions): Promise<Domain> {
    return native.domain.lookupByUUIDString(this[HANDLE], uuid, this.#t(opts)).then(this.#domain);
  }

  /** Defines (or redefines) a persistent domain; flags: DomainDefineFlags. */
  defineDomainXML(xml: string, flags = 0, opts?: CallOptions): Promise<Domain> {
    return native.domain.defineXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#domain);
  }

  /** Creates and starts a transient domain; flags: DomainCreateFlags. */
  createDomainXML(xml: string, flags = 0, opts?: CallOptions): Promise<Domain> {
    return native.domain.createXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#domain);
  }

  // ---- networks ------------------------------------------------------------------------

  numOfNetworks(opts?: CallOptions): Promise<number> {
    return native.network.numOf(this[HANDLE], this.#t(opts));
  }

  numOfDefinedNetworks(opts?: CallOptions): Promise<number> {
    return native.network.numOfDefined(this[HANDLE], this.#t(opts));
  }

  async listAllNetworks(flags = 0, opts?: CallOptions): Promise<Network[]> {
    const handles = await native.network.listAll(this[HANDLE], flags, this.#t(opts));
    return handles.map((h) => new Network(this, h));
  }

  #network = (h: NetworkHandle): Network => new Network(this, h);

  lookupNetworkByName(name: string, opts?: CallOptions): Promise<Network> {
    return native.network.lookupByName(this[HANDLE], name, this.#t(opts)).then(this.#network);
  }

  lookupNetworkByUUID(uuid: string | Uint8Array, opts?: CallOptions): Promise<Network> {
    return this.#lookupByUUID(native.network, uuid, opts).then(this.#network);
  }

  lookupNetworkByUUIDString(uuid: string, opts?: CallOptions): Promise<Network> {
    return native.network.lookupByUUIDString(this[HANDLE], uuid, this.#t(opts)).then(this.#network);
  }

  /** flags: NetworkDefineFlags. */
  defineNetworkXML(xml: string, flags = 0, opts?: CallOptions): Promise<Network> {
    return native.network.defineXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#network);
  }

  /** Creates and starts a transient network; flags: NetworkCreateFlags. */
  createNetworkXML(xml: string, flags = 0, opts?: CallOptions): Promise<Network> {
    return native.network.createXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#network);
  }

  // ---- storage -------------------------------------------------------------------------

  numOfStoragePools(opts?: CallOptions): Promise<number> {
    return native.storagePool.numOf(this[HANDLE], this.#t(opts));
  }

  numOfDefinedStoragePools(opts?: CallOptions): Promise<number> {
    return native.storagePool.numOfDefined(this[HANDLE], this.#t(opts));
  }

  async listAllStoragePools(flags = 0, opts?: CallOptions): Promise<StoragePool[]> {
    const handles = await native.storagePool.listAll(this[HANDLE], flags, this.#t(opts));
    return handles.map((h) => new StoragePool(this, h));
  }

  #pool = (h: PoolHandle): StoragePool => new StoragePool(this, h);

  lookupStoragePoolByName(name: string, opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool.lookupByName(this[HANDLE], name, this.#t(opts)).then(this.#pool);
  }

  lookupStoragePoolByUUID(uuid: string | Uint8Array, opts?: CallOptions): Promise<StoragePool> {
    return this.#lookupByUUID(native.storagePool, uuid, opts).then(this.#pool);
  }

  lookupStoragePoolByUUIDString(uuid: string, opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool
      .lookupByUUIDString(this[HANDLE], uuid, this.#t(opts))
      .then(this.#pool);
  }

  lookupStoragePoolByTargetPath(path: string, opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool
      .lookupByTargetPath(this[HANDLE], path, this.#t(opts))
      .then(this.#pool);
  }

  /** flags: StoragePoolDefineFlags. */
  defineStoragePoolXML(xml: string, flags = 0, opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool.defineXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#pool);
  }

  /** Creates and starts a transient pool; flags: StoragePoolCreateFlags. */
  createStoragePoolXML(xml: string, flags = 0, opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool.createXML(this[HANDLE], xml, flags, this.#t(opts)).then(this.#pool);
  }

  lookupStorageVolByKey(key: string, opts?: CallOptions): Promise<StorageVol> {
    return native.storageVol
      .lookupByKey(this[HANDLE], key, this.#t(opts))
      .then((h) => new StorageVol(this, h));
  }

  lookupStorageVolByPath(path: string, opts?: CallOptions): Promise<StorageVol> {
    return native.storageVol
      .lookupByPath(this[HANDLE], path, this.#t(opts))
      .then((h) => new StorageVol(this, h));
  }

  // ---- streams -------------------------------------------------------------------------

  /**
   * virStreamNew: a stream for a call such as Domain.openConsole() to attach to. Synchronous
   * (libvirt only allocates it). flags: StreamFlags; NONBLOCK (the default) is what
   * receive() and send() need.
   */
  newStream(flags: number = StreamFlags.NONBLOCK): Stream {
    return new Stream(this, native.connect.newStream(this[HANDLE], flags), flags);
  }

  // ---- events --------------------------------------------------------------------------

  async #register<H extends EventHandle>(
    listener: unknown,
    routes: Map<number, number>,
    deliver: (handle: H, event: number, detail: number, text: string | undefined) => void,
    register: (key: number) => Promise<number>,
  ): Promise<number> {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    const key = openRoute((_kind, handle, event, detail, text) =>
      deliver(handle as H, event, detail, text),
    );
    try {
      const id = await register(key);
      routes.set(id, key);
      return id;
    } catch (err) {
      closeRoute(key);
      throw err;
    }
  }

  async #deregister(
    routes: Map<number, number>,
    callbackID: number,
    deregister: () => Promise<void>,
  ): Promise<void> {
    await deregister();
    const key = routes.get(callbackID);
    routes.delete(callbackID);
    if (key !== undefined) closeRoute(key);
  }

  /** One domain event ID, for every domain or only `opts.domain`. */
  #registerDomainEvent(
    eventID: number,
    listener: unknown,
    deliver: (h: DomainHandle, event: number, detail: number, text: string | undefined) => void,
    opts: CallOptions & { domain?: Domain },
  ): Promise<number> {
    return this.#register<DomainHandle>(listener, this.#domainRoutes, deliver, (key) =>
      native.domain.eventRegisterAny(
        this[HANDLE],
        opts.domain?.[HANDLE] ?? null,
        eventID,
        key,
        this.#t(opts),
      ),
    );
  }

  /**
   * Domain lifecycle events (VIR_DOMAIN_EVENT_ID_LIFECYCLE) for every domain, or only
   * `opts.domain`. Resolves with the callback ID for domainEventDeregister. While any
   * registration exists the Node process stays alive.
   */
  domainEventLifecycleRegister(
    listener: (event: DomainLifecycleEvent) => void,
    opts: CallOptions & { domain?: Domain } = {},
  ): Promise<number> {
    return this.#registerDomainEvent(
      DomainEventID.LIFECYCLE,
      listener,
      (h, event, detail) =>
        listener({
          domain: new Domain(this, h),
          event,
          detail,
          eventName: domainEventName(event),
          detailName: domainEventDetailName(event, detail),
        }),
      opts,
    );
  }

  /** VIR_DOMAIN_EVENT_ID_REBOOT: the guest rebooted. */
  domainEventRebootRegister(
    listener: (event: DomainRebootEvent) => void,
    opts: CallOptions & { domain?: Domain } = {},
  ): Promise<number> {
    return this.#registerDomainEvent(
      DomainEventID.REBOOT,
      listener,
      (h) => listener({ domain: new Domain(this, h) }),
      opts,
    );
  }

  /**
   * VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED: a live detach finished, once the guest released the
   * device (a SCSI disk needs no answer). The detach call itself may return before that.
   */
  domainEventDeviceRemovedRegister(
    listener: (event: DomainDeviceRemovedEvent) => void,
    opts: CallOptions & { domain?: Domain } = {},
  ): Promise<number> {
    return this.#registerDomainEvent(
      DomainEventID.DEVICE_REMOVED,
      listener,
      (h, _event, _detail, devAlias) =>
        listener({ domain: new Domain(this, h), devAlias: devAlias ?? '' }),
      opts,
    );
  }

  domainEventDeregister(callbackID: number, opts?: CallOptions): Promise<void> {
    return this.#deregister(this.#domainRoutes, callbackID, () =>
      native.domain.eventDeregisterAny(this[HANDLE], callbackID, this.#t(opts)),
    );
  }

  networkEventLifecycleRegister(
    listener: (event: NetworkLifecycleEvent) => void,
    opts: CallOptions & { network?: Network } = {},
  ): Promise<number> {
    return this.#register<NetworkHandle>(
      listener,
      this.#networkRoutes,
      (h, event, detail) =>
        listener({
          network: new Network(this, h),
          event,
          detail,
          eventName: networkEventName(event),
        }),
      (key) =>
        native.network.eventRegisterAny(
          this[HANDLE],
          opts.network?.[HANDLE] ?? null,
          NetworkEventID.LIFECYCLE,
          key,
          this.#t(opts),
        ),
    );
  }

  networkEventDeregister(callbackID: number, opts?: CallOptions): Promise<void> {
    return this.#deregister(this.#networkRoutes, callbackID, () =>
      native.network.eventDeregisterAny(this[HANDLE], callbackID, this.#t(opts)),
    );
  }

  storagePoolEventLifecycleRegister(
    listener: (event: StoragePoolLifecycleEvent) => void,
    opts: CallOptions & { pool?: StoragePool } = {},
  ): Promise<number> {
    return this.#register<PoolHandle>(
      listener,
      this.#poolRoutes,
      (h, event, detail) =>
        listener({
          pool: new StoragePool(this, h),
          event,
          detail,
          eventName: storagePoolEventName(event),
        }),
      (key) =>
        native.storagePool.eventRegisterAny(
          this[HANDLE],
          opts.pool?.[HANDLE] ?? null,
          StoragePoolEventID.LIFECYCLE,
          key,
          this.#t(opts),
        ),
    );
  }

  /** VIR_STORAGE_POOL_EVENT_ID_REFRESH: a pool was refreshed. */
  storagePoolEventRefreshRegister(
    listener: (event: StoragePoolRefreshEvent) => void,
    opts: CallOptions & { pool?: StoragePool } = {},
  ): Promise<number> {
    return this.#register<PoolHandle>(
      listener,
      this.#poolRoutes,
      (h) => listener({ pool: new StoragePool(this, h) }),
      (key) =>
        native.storagePool.eventRegisterAny(
          this[HANDLE],
          opts.pool?.[HANDLE] ?? null,
          StoragePoolEventID.REFRESH,
          key,
          this.#t(opts),
        ),
    );
  }

  storagePoolEventDeregister(callbackID: number, opts?: CallOptions): Promise<void> {
    return this.#deregister(this.#poolRoutes, callbackID, () =>
      native.storagePool.eventDeregisterAny(this[HANDLE], callbackID, this.#t(opts)),
    );
  }
}
