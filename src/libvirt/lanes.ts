// Extra connections for calls that wait a long time inside the daemon.
//
// libvirtd serves at most `max_client_requests` (default 5) calls of one client connection at
// a time, and the binding lets at most 4 of one remote connection's calls in (one slot stays
// free for keepalive). A virDomainDestroy holds its slot until libvirt has seen the QEMU
// process gone: libvirt polls every 200 ms for the process to disappear, which waits for
// the host's init to reap it (0.2-0.8 s each with 20 at once under a prompt reaper, 1.2-2 s
// under a slow one such as this sandbox's PID 1). On the agent's one connection 20 destroys
// take 5 rounds of that, and every other call of the agent waits behind them. Lanes are more
// client connections to the same daemon, so such calls run side by side without taking the
// main connection's slots.
//
// Each lane is a ReconnectingConnection (reopened after a failure); a call is given the lane
// with the fewest calls in flight.
import { bindingStats, setThreadPoolSize } from './binding.js';
import type { Connect } from './connection.js';
import { ReconnectingConnection, type ReconnectOptions } from './reconnecting.js';

/**
 * Calls one remote connection has inside the daemon at once: the binding's limit
 * (LIBVIRT_NATIVE_REMOTE_CALLS, default 4), or libvirtd's max_client_requests (5) without it.
 */
function callsPerConnection(): number {
  const limit = Number(process.env.LIBVIRT_NATIVE_REMOTE_CALLS ?? 4);
  return Number.isInteger(limit) && limit > 0 ? limit : 5;
}

export interface LaneOptions extends ReconnectOptions {
  /** How many connections. */
  lanes: number;
  /** Bound on waiting for a lane to open. Default 10 s. */
  readyTimeoutMs?: number;
}

export class CallLanes {
  readonly #uri: string;
  readonly #readyTimeoutMs: number;
  readonly #lanes: Array<{ conn: ReconnectingConnection; inFlight: number }>;
  #started = false;
  #closed = false;

  constructor(uri: string, opts: LaneOptions) {
    if (!Number.isInteger(opts.lanes) || opts.lanes < 1) {
      throw new RangeError(`lanes must be a positive integer, got ${opts.lanes}`);
    }
    const { lanes, readyTimeoutMs, ...reconnect } = opts;
    this.#uri = uri;
    this.#readyTimeoutMs = readyTimeoutMs ?? 10_000;
    this.#lanes = Array.from({ length: lanes }, () => ({
      conn: new ReconnectingConnection(uri, reconnect),
      inFlight: 0,
    }));
  }

  /**
   * Opens every lane in the background. Opening them when the calls are already due would
   * put several connection set-ups (each a round of authentication with the daemon) in front
   * of the calls that need them; the first run() starts them if this was not called.
   */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    // Every call waiting in the daemon holds one of the binding's worker threads (8 by
    // default, one more only after all have been stuck for a while): without threads for
    // the lanes' calls, 8 destroys would hold up every other call of the process.
    setThreadPoolSize(bindingStats().workerThreads + this.#lanes.length * callsPerConnection());
    for (const l of this.#lanes) l.conn.start();
  }

  /** Lanes open now. */
  get open(): number {
    return this.#lanes.filter((l) => l.conn.state === 'open').length;
  }

  /** Runs `fn` on the lane with the fewest calls in flight. */
  async run<T>(fn: (conn: Connect) => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error(`lanes to ${this.#uri} are closed`);
    this.start();
    let lane = this.#lanes[0]!;
    for (const l of this.#lanes) if (l.inFlight < lane.inFlight) lane = l;
    lane.inFlight++;
    try {
      const conn = await lane.conn.ready({ timeoutMs: this.#readyTimeoutMs });
      try {
        return await fn(conn);
      } catch (err) {
        // A transport error makes the wrapper reconnect now instead of waiting for keepalive.
        lane.conn.reportError(err);
        throw err;
      }
    } finally {
      lane.inFlight--;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#lanes.map((l) => l.conn.close()));
  }
}
