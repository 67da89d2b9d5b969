import { native } from './addon.js';
import { openRoutes } from './events.js';

/** The version of the libvirt library this process loaded (major * 1e6 + minor * 1e3 + release). */
export function getLibVersion(): number {
  return native.getVersion();
}

/**
 * Ensures the binding's worker pool has at least `size` threads (default 8, or the
 * LIBVIRT_NATIVE_THREADS environment variable). The pool also grows by itself when every
 * thread has been stuck in a call for a while. Returns the new size.
 */
export function setThreadPoolSize(size: number): number {
  return native.setThreadPoolSize(size);
}

export interface BindingStats {
  /** Calls whose promise has not settled yet. */
  pendingCalls: number;
  /** Event registrations alive in libvirt; they keep the Node process running. */
  eventRegistrations: number;
  /** Event routes (listeners and connection close callbacks) held in JS. */
  eventRoutes: number;
  workerThreads: number;
  /**
   * The CPU the worker threads are kept on while two or more calls to a daemon are in flight
   * (the JS thread's), or -1; LIBVIRT_NATIVE_COLOCATE=0 turns it off (README.md).
   */
  workersKeptOnCpu: number;
  /** Connections opened and not yet closed in libvirt (close() finishes off the JS thread). */
  openConnections: number;
  /**
   * libvirt references held by live Domain/Network/StoragePool/StorageVol/snapshot handles,
   * and by calls still in flight on a freed one: returns to its baseline once handles are
   * freed or collected and their calls have ended (a leak check).
   */
  handleReferences: number;
  /**
   * Calls completed on the worker threads, and how many times one of them woke the JS thread
   * for its result: with more quick calls to a daemon queued than the workers take, finished
   * ones wait for each other, up to LIBVIRT_NATIVE_BATCH (README.md).
   */
  results: number;
  resultWakeups: number;
}

/** Counters for diagnostics and leak checks. */
export function bindingStats(): BindingStats {
  return { ...native.stats(), eventRoutes: openRoutes() };
}
