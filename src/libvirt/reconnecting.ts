import { EventEmitter } from 'node:events';
import type { CallOptions } from './addon.js';
import {
  Connect,
  type DomainDeviceRemovedEvent,
  type DomainLifecycleEvent,
  type NetworkLifecycleEvent,
  type OpenOptions,
  type StoragePoolLifecycleEvent,
} from './connection.js';
import { isConnectionError, isUnsupported } from './errors.js';
import { backoffDelay, defaultBackoff, type Backoff } from './backoff.js';
import { closeReasonName } from './names.js';

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Failed attempts since the connection was last open. */
  attempt: number;
  /** Why the last attempt failed, or why the connection was dropped. */
  error?: unknown;
  /** ConnectCloseReason name when libvirt closed the connection ('keepalive', 'eof', …). */
  closeReason?: string;
}

export interface ReconnectOptions extends Omit<OpenOptions, 'timeoutMs'> {
  /** Bound on each open attempt; an open to a stopped daemon otherwise never returns. */
  openTimeoutMs?: number;
  /** virConnectSetKeepAlive after each open; false to leave libvirt's default (off). */
  keepAlive?: { interval: number; count: number } | false;
  backoff?: Partial<Backoff>;
}

// Closing a connection to a daemon that stopped answering can block until keepalive gives
// up; the wrapper does not wait that long to start reconnecting.
const CLOSE_TIMEOUT_MS = 5_000;

type Family = 'domain' | 'network' | 'storagePool';

interface Subscription {
  family: Family;
  attach: (conn: Connect) => Promise<number>;
  conn?: Connect;
  callbackID?: number;
}

interface Events {
  state: [StateChange];
}

/**
 * A connection that reopens itself. After libvirt reports the connection closed (daemon
 * restarted, keepalive timeout) or a caller reports a connection error, it closes the dead
 * connection, reopens with exponential backoff, re-applies keepalive and re-registers every
 * event subscription made through it. Listen to 'state' for the transitions; use ready() to
 * get the current open Connect.
 */
export class ReconnectingConnection extends EventEmitter<Events> {
  readonly uri: string | null;
  #opts: ReconnectOptions;
  #backoff: Backoff;
  #state: ConnectionState = 'connecting';
  #conn: Connect | undefined;
  #attempt = 0;
  /** Why the last attempt to open failed, until one succeeds: what a caller that gave up is told. */
  #lastError: unknown;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #waiters: { resolve: (c: Connect) => void; reject: (e: unknown) => void }[] = [];
  #dropCurrent: ((reason: { error?: unknown; closeReason?: string }) => void) | undefined;
  #wakeSleep: (() => void) | undefined;
  #subs = new Map<number, Subscription>();
  #nextSub = 1;

  constructor(uri: string | null, opts: ReconnectOptions = {}) {
    super();
    this.uri = uri;
    this.#opts = opts;
    this.#backoff = { ...defaultBackoff, ...opts.backoff };
  }

  /** Opens a wrapper and waits for its first connection. */
  static async open(
    uri: string | null,
    opts: ReconnectOptions = {},
  ): Promise<ReconnectingConnection> {
    const rc = new ReconnectingConnection(uri, opts);
    rc.start();
    try {
      await rc.ready();
    } catch (err) {
      await rc.close();
      throw err;
    }
    return rc;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /**
   * The state as a person reads it, with the URI and, until a connection opens, libvirt's
   * reason for the last failed attempt (a readiness check that fails says why).
   */
  describe(): string {
    const uri = this.uri ?? 'the default URI';
    return `libvirt connection to ${uri} is ${this.#state}${lastAttempt(this.#lastError)}`;
  }

  /** The open connection, if any. Do not close it: close the wrapper. */
  get connection(): Connect | undefined {
    return this.#state === 'open' ? this.#conn : undefined;
  }

  /** Starts connecting in the background; idempotent. */
  start(): void {
    if (this.#loop || this.#stopped) return;
    this.#loop = this.#run();
  }

  /** Resolves with the open connection, waiting for the next (re)connect if needed. */
  ready(opts: { timeoutMs?: number } = {}): Promise<Connect> {
    if (this.#stopped) return Promise.reject(new Error('the reconnecting connection is closed'));
    this.start();
    if (this.#state === 'open' && this.#conn) return Promise.resolve(this.#conn);
    return new Promise<Connect>((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#waiters.push(waiter);
      if (opts.timeoutMs !== undefined) {
        const timer = setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          reject(
            new Error(
              `libvirt connection to ${this.uri ?? 'the default URI'} not open after ${opts.timeoutMs} ms (state ${this.#state}${lastAttempt(this.#lastError)})`,
            ),
          );
        }, opts.timeoutMs);
        const settle =
          <A>(fn: (a: A) => void) =>
          (a: A) => {
            clearTimeout(timer);
            fn(a);
          };
        waiter.resolve = settle(resolve);
        waiter.reject = settle(reject);
      }
    });
  }

  /**
   * Tells the wrapper a call failed. A connection error (see isConnectionError) on the current
   * connection makes it reconnect now rather than wait for libvirt's close callback.
   */
  reportError(err: unknown): void {
    if (isConnectionError(err)) this.#dropCurrent?.({ error: err });
  }

  async close(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#wakeSleep?.();
    this.#dropCurrent?.({});
    await this.#loop;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(new Error('the reconnecting connection was closed'));
    this.#setState('closed', {});
  }

  #setState(
    state: ConnectionState,
    extra: Omit<StateChange, 'state' | 'previous' | 'attempt'>,
  ): void {
    const previous = this.#state;
    this.#state = state;
    this.emit('state', { state, previous, attempt: this.#attempt, ...extra });
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let conn: Connect;
      try {
        conn = await this.#openOnce();
      } catch (error) {
        if (this.#stopped) break;
        this.#lastError = error;
        this.#attempt++;
        this.#setState(this.#state === 'connecting' ? 'connecting' : 'reconnecting', { error });
        await this.#sleep(backoffDelay(this.#backoff, this.#attempt - 1, Math.random()));
        continue;
      }
      if (this.#stopped) {
        await conn.close({ timeoutMs: CLOSE_TIMEOUT_MS }).catch(() => undefined);
        break;
      }
      this.#conn = conn;
      this.#attempt = 0;
      this.#lastError = undefined;
      const dropped = new Promise<{ error?: unknown; closeReason?: string }>((resolve) => {
        this.#dropCurrent = resolve;
        conn.registerCloseCallback(({ reason }) =>
          resolve({ closeReason: closeReasonName(reason) }),
        );
      });
      this.#setState('open', {});
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const w of waiters) w.resolve(conn);

      const why = await dropped;
      this.#dropCurrent = undefined;
      this.#conn = undefined;
      for (const sub of this.#subs.values()) {
        sub.conn = undefined;
        sub.callbackID = undefined;
      }
      if (!this.#stopped) this.#setState('reconnecting', why);
      // A dead remote connection closes locally without waiting for the daemon.
      await conn.close({ timeoutMs: CLOSE_TIMEOUT_MS }).catch(() => undefined);
    }
  }

  async #openOnce(): Promise<Connect> {
    const conn = await Connect.open(this.uri, {
      readOnly: this.#opts.readOnly,
      callTimeoutMs: this.#opts.callTimeoutMs,
      timeoutMs: this.#opts.openTimeoutMs ?? 15_000,
    });
    try {
      const keepAlive = this.#opts.keepAlive ?? { interval: 5, count: 3 };
      if (keepAlive) {
        await conn.setKeepAlive(keepAlive.interval, keepAlive.count).catch((err: unknown) => {
          // Drivers without a remote side (test:///) have nothing to keep alive.
          if (!isUnsupported(err)) throw err;
        });
      }
      for (const sub of this.#subs.values()) await this.#attach(sub, conn);
      return conn;
    } catch (err) {
      await conn.close({ timeoutMs: CLOSE_TIMEOUT_MS }).catch(() => undefined);
      throw err;
    }
  }

  async #attach(sub: Subscription, conn: Connect): Promise<void> {
    sub.callbackID = await sub.attach(conn);
    sub.conn = conn;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeSleep = done;
    });
  }

  async #subscribe(family: Family, attach: (conn: Connect) => Promise<number>): Promise<number> {
    if (this.#stopped) throw new Error('the reconnecting connection is closed');
    const id = this.#nextSub++;
    const sub: Subscription = { family, attach };
    this.#subs.set(id, sub);
    const conn = this.connection;
    if (conn) {
      try {
        await this.#attach(sub, conn);
      } catch (err) {
        // On a connection error the reconnect re-attaches it; anything else is the caller's.
        if (!isConnectionError(err)) {
          this.#subs.delete(id);
          throw err;
        }
        this.reportError(err);
      }
    }
    return id;
  }

  /** Domain lifecycle events on every domain, kept across reconnects. Resolves with a subscription ID. */
  domainEventLifecycleRegister(
    listener: (event: DomainLifecycleEvent) => void,
    opts?: CallOptions,
  ): Promise<number> {
    return this.#subscribe('domain', (c) => c.domainEventLifecycleRegister(listener, opts));
  }

  /** Devices guests released after a live detach, kept across reconnects. */
  domainEventDeviceRemovedRegister(
    listener: (event: DomainDeviceRemovedEvent) => void,
    opts?: CallOptions,
  ): Promise<number> {
    return this.#subscribe('domain', (c) => c.domainEventDeviceRemovedRegister(listener, opts));
  }

  networkEventLifecycleRegister(
    listener: (event: NetworkLifecycleEvent) => void,
    opts?: CallOptions,
  ): Promise<number> {
    return this.#subscribe('network', (c) => c.networkEventLifecycleRegister(listener, opts));
  }

  storagePoolEventLifecycleRegister(
    listener: (event: StoragePoolLifecycleEvent) => void,
    opts?: CallOptions,
  ): Promise<number> {
    return this.#subscribe('storagePool', (c) =>
      c.storagePoolEventLifecycleRegister(listener, opts),
    );
  }

  /** Ends a subscription made through this wrapper. */
  async deregister(subscriptionID: number, opts?: CallOptions): Promise<void> {
    const sub = this.#subs.get(subscriptionID);
    if (!sub) return;
    this.#subs.delete(subscriptionID);
    const { conn, callbackID } = sub;
    if (!conn || callbackID === undefined || conn.isClosed) return;
    const deregister =
      sub.family === 'domain'
        ? conn.domainEventDeregister(callbackID, opts)
        : sub.family === 'network'
          ? conn.networkEventDeregister(callbackID, opts)
          : conn.storagePoolEventDeregister(callbackID, opts);
    await deregister.catch((err: unknown) => {
      if (!isConnectionError(err)) throw err;
    });
  }
}

/** "; last attempt: <libvirt's reason>" for a timeout message, or nothing before any failure. */
function lastAttempt(error: unknown): string {
  if (error === undefined) return '';
  const message = error instanceof Error ? error.message : String(error);
  return `; last attempt: ${message.split('\n')[0]}`;
}
