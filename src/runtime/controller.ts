// A controller: changes of watched objects become keys in a work queue; workers hand each key
// to `reconcile`, which reads the current state and acts (level-triggered: it never sees the
// event that woke it). The Action it returns, or the error it throws, decides when the key
// comes back.
import type { CacheChange } from './cache.js';
import type { Informer } from './informer.js';
import { errorFields, type Logger } from './log.js';
import type { RuntimeMetrics } from './metrics.js';
import { objectKey, type KubeObject } from './resource.js';
import { createWorkQueue, type WorkQueue, type WorkQueueOptions } from './work-queue.js';
import { systemClock } from './clock.js';

export type Action = { kind: 'done' } | { kind: 'requeueAfter'; ms: number };

export const done = (): Action => ({ kind: 'done' });
export const requeueAfter = (ms: number): Action => ({ kind: 'requeueAfter', ms });

/**
 * Thrown by a reconcile when retrying cannot help until someone changes the object (bad
 * input only the host can judge). The reconcile is expected to have recorded why in a
 * condition first. The key is parked: no backoff retry, and neither resyncs nor updates that
 * keep metadata.generation trigger it again; a spec change (new generation), deletion, or an
 * explicit `enqueue` (an outside trigger: the world changed) does.
 */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

export interface ReconcileContext {
  key: string;
  /** A child logger with `controller` and `key` on every line. */
  log: Logger;
  /** Aborted when the runtime stops or loses its lease and the drain bound passed. */
  signal: AbortSignal;
  /** Failed attempts since the last success (0 on a first try). */
  retries: number;
}

export type Reconcile = (key: string, ctx: ReconcileContext) => Promise<Action>;

/** Decides whether an update of a watched object should wake its keys. */
export type UpdatePredicate<T extends KubeObject = KubeObject> = (old: T, obj: T) => boolean;

/**
 * Passes updates that can matter to a reconcile of the object itself: a new generation (spec
 * change, or deletion which also bumps it for custom resources), or a change of labels,
 * annotations, finalizers, owner references or deletionTimestamp. It drops status-only
 * updates, such as the ones our own status writes cause. Objects without a generation
 * (ConfigMaps) always pass. Like controller-runtime's GenerationChangedPredicate combined with
 * label/annotation predicates; not the default, because a reconcile that reads its own status
 * would then miss changes others made to it.
 */
export const specOrMetadataChanged: UpdatePredicate = (old, obj) => {
  const a = old.metadata;
  const b = obj.metadata;
  if (a.generation === undefined || b.generation === undefined) return true;
  if (a.generation !== b.generation) return true;
  return (
    a.deletionTimestamp !== b.deletionTimestamp ||
    !sameJson(a.labels, b.labels) ||
    !sameJson(a.annotations, b.annotations) ||
    !sameJson(a.finalizers, b.finalizers) ||
    !sameJson(a.ownerReferences, b.ownerReferences)
  );
};

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

export interface ControllerOptions<T extends KubeObject = KubeObject> {
  /** Used in metrics, logs and as the queue's name. */
  name: string;
  /** The primary kind: each object's key is reconciled. */
  for: Informer<T>;
  reconcile: Reconcile;
  /** Keys reconciled at the same time (never the same key twice). Default 1. */
  concurrency?: number;
  /** Filter for updates of the primary object. Default: every update. */
  updatePredicate?: UpdatePredicate<T>;
  /** Every cached key is queued this often, as a safety net. Default 10 min (±10%). 0 = never. */
  resyncMs?: number;
  queue?: Omit<WorkQueueOptions, 'name' | 'metrics'>;
  /**
   * Informers of other kinds whose caches the reconcile reads: processing waits for their
   * first list too. Before it, a pass would take an object that is not listed yet for one
   * that does not exist (the snapshot controller deleted snapshots of a machine it could not
   * see yet at agent start; test/soak/README.md).
   */
  readsFrom?: ReadonlyArray<Pick<Informer, 'synced'>>;
}

export interface ControllerDeps {
  log: Logger;
  metrics?: RuntimeMetrics;
}

export interface Controller {
  name: string;
  /** Queue a key now. From outside triggers (libvirt events, timers); ignored while stopped. */
  enqueue(key: string): void;
  enqueueAfter(key: string, ms: number): void;
  /** Maps changes of another watched kind to keys of this controller (e.g. via an index). */
  watch<U extends KubeObject>(informer: Informer<U>, keysFor: (obj: U) => string[]): void;
  /** Starts workers (after every watched informer has synced) and queues every cached key. */
  startProcessing(): Promise<void>;
  /**
   * Stops intake and waits up to `drainMs` for running reconciles, then aborts their signal.
   * Resolves true if they all finished in time.
   */
  stopProcessing(drainMs: number): Promise<boolean>;
  isProcessing(): boolean;
  /** The queue of the current processing run (for tests and diagnostics). */
  queue(): WorkQueue | undefined;
  /** Unsubscribes from informers and stops processing. */
  close(drainMs: number): Promise<boolean>;
}

interface Run {
  queue: WorkQueue;
  abort: AbortController;
  workers: Promise<void>[];
  resync?: ReturnType<typeof setTimeout>;
  /**
   * Keys whose pass was running when a status-only update of them arrived: woken after the
   * pass only if it scheduled nothing itself (statusOnlyWaits). Per run: a pass of a run that
   * outlived its drain bound must not clear what the next run's pass of the key recorded.
   */
  statusWhileBusy: Set<string>;
}

export function createController<T extends KubeObject>(
  opts: ControllerOptions<T>,
  deps: ControllerDeps,
): Controller {
  const { name, reconcile } = opts;
  const log = deps.log.child({ controller: name });
  const m = deps.metrics;
  const concurrency = opts.concurrency ?? 1;
  const resyncMs = opts.resyncMs ?? 10 * 60_000;
  // Only their `synced` is needed: processing waits for every watched kind's first list.
  const watched: Pick<Informer, 'synced'>[] = [opts.for, ...(opts.readsFrom ?? [])];
  const unsubscribes: (() => void)[] = [];
  // key -> the version (generation, or resourceVersion for kinds without one such as
  // ConfigMaps) that the pass which threw PermanentError saw.
  const parked = new Map<string, string>();
  const version = (obj: KubeObject | undefined): string =>
    obj?.metadata.generation !== undefined
      ? `g${obj.metadata.generation}`
      : `rv${obj?.metadata.resourceVersion}`;
  let run: Run | undefined;
  let starting: Promise<void> | undefined;
  // A new run must not begin while the previous one is draining: that would put the same
  // key in two workers.
  let draining: Promise<boolean> | undefined;
  m?.activeWorkers.set({ controller: name }, 0);

  const isParked = (key: string): boolean => {
    if (!parked.has(key)) return false;
    const obj = opts.for.cache.get(key);
    return obj !== undefined && version(obj) === parked.get(key);
  };

  const add = (key: string) => run?.queue.add(key);

  /**
   * A status-only update (most often the watch event of the pass's own status write) does not
   * cut short a wait the key's last pass chose: its requeueAfter or its failure backoff. A
   * failing pass whose message changed each time (QEMU's timestamps) otherwise ran again at
   * once, every half second, past its backoff. A pass that returned done is still woken by
   * it: that is how a pass that found the cache behind our own write gets its turn.
   */
  const statusOnlyWaits = (key: string, r: Run): boolean => {
    if (r.queue.dueAt(key) !== undefined) return true;
    if (!r.queue.isProcessing(key)) return false;
    r.statusWhileBusy.add(key);
    return true;
  };

  unsubscribes.push(
    opts.for.subscribe((change: CacheChange<T>) => {
      const key = objectKey(change.obj);
      if (change.type === 'updated') {
        if (opts.updatePredicate && !opts.updatePredicate(change.old, change.obj)) return;
        if (isParked(key)) return;
        if (run && !specOrMetadataChanged(change.old, change.obj) && statusOnlyWaits(key, run))
          return;
      }
      parked.delete(key);
      add(key);
    }),
  );

  const work = async (r: Run) => {
    while (true) {
      const key = await r.queue.next();
      if (key === undefined) return;
      // An update that arrived while the key's last pass was failing permanently (often that
      // pass's own status write) queued it again; it is still parked if the generation held.
      if (isParked(key)) {
        r.statusWhileBusy.delete(key);
        r.queue.done(key);
        continue;
      }
      const seen = version(opts.for.cache.get(key));
      const retries = r.queue.failures(key);
      const keyLog = log.child({ key });
      const started = process.hrtime.bigint();
      m?.activeWorkers.inc({ controller: name });
      let result: string;
      try {
        const action = await reconcile(key, { key, log: keyLog, signal: r.abort.signal, retries });
        r.queue.forget(key);
        parked.delete(key);
        const woken = r.statusWhileBusy.delete(key);
        if (action.kind === 'requeueAfter') {
          r.queue.addAfter(key, action.ms);
          result = 'requeue_after';
        } else {
          // Queued once more when this pass is done (the queue marks it dirty).
          if (woken) r.queue.add(key);
          result = 'success';
        }
      } catch (err) {
        r.statusWhileBusy.delete(key);
        if (err instanceof PermanentError) {
          r.queue.forget(key);
          // The generation this pass saw: a spec change that arrived during it unparks at once.
          parked.set(key, seen);
          keyLog.warn(errorFields(err), 'reconcile failed permanently; waiting for a change');
          result = 'permanent_error';
        } else {
          const delayMs = r.queue.addRateLimited(key);
          m?.reconcileErrors.inc({ controller: name });
          keyLog.error(
            { ...errorFields(err), retries, delayMs: Math.round(delayMs) },
            'reconcile failed; retrying',
          );
          result = 'error';
        }
      } finally {
        m?.activeWorkers.dec({ controller: name });
        r.queue.done(key);
      }
      m?.reconcileTotal.inc({ controller: name, result });
      m?.reconcileTime.observe(
        { controller: name },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
    }
  };

  const scheduleResync = (r: Run) => {
    if (resyncMs <= 0) return;
    const jittered = resyncMs * (0.9 + Math.random() * 0.2);
    r.resync = setTimeout(() => {
      for (const key of opts.for.cache.keys()) if (!isParked(key)) r.queue.add(key);
      scheduleResync(r);
    }, jittered);
    r.resync.unref();
  };

  const controller: Controller = {
    name,
    enqueue(key) {
      parked.delete(key);
      add(key);
    },
    enqueueAfter(key, ms) {
      run?.queue.addAfter(key, ms);
    },
    watch(informer, keysFor) {
      watched.push(informer);
      unsubscribes.push(
        informer.subscribe((change) => {
          const keys = new Set(keysFor(change.obj));
          if (change.type === 'updated') for (const k of keysFor(change.old)) keys.add(k);
          for (const key of keys) controller.enqueue(key);
        }),
      );
    },
    startProcessing() {
      if (run || starting) return starting ?? Promise.resolve();
      starting = (async () => {
        await Promise.all(watched.map((i) => i.synced));
        await draining;
        const r: Run = {
          queue: createWorkQueue({
            ...opts.queue,
            name,
            metrics: m,
            clock: opts.queue?.clock ?? systemClock,
          }),
          abort: new AbortController(),
          workers: [],
          statusWhileBusy: new Set(),
        };
        run = r;
        // Everything is new to this run: events seen while stopped were not queued.
        for (const key of opts.for.cache.keys()) r.queue.add(key);
        for (let i = 0; i < concurrency; i++) r.workers.push(work(r));
        scheduleResync(r);
        log.info({ concurrency, keys: opts.for.cache.size() }, 'processing started');
      })().finally(() => (starting = undefined));
      return starting;
    },
    async stopProcessing(drainMs) {
      await starting;
      const r = run;
      if (!r) return (await draining) ?? true;
      run = undefined;
      draining = stopRun(r, drainMs);
      return draining;
    },
    isProcessing: () => run !== undefined,
    queue: () => run?.queue,
    async close(drainMs) {
      for (const u of unsubscribes.splice(0)) u();
      return controller.stopProcessing(drainMs);
    },
  };

  const stopRun = async (r: Run, drainMs: number): Promise<boolean> => {
    clearTimeout(r.resync);
    r.queue.shutDown();
    const inFlight = r.queue.processing();
    const drained = await r.queue.drained(drainMs);
    if (!drained) {
      log.warn(
        { drainMs, keys: r.queue.processing() },
        'reconciles still running after the drain bound; aborting them',
      );
    }
    r.abort.abort();
    // A reconcile that ignores its signal would hold shutdown forever: do not wait for it.
    if (drained) await Promise.all(r.workers);
    log.info({ drained, inFlight: inFlight.length }, 'processing stopped');
    return drained;
  };
  return controller;
}
