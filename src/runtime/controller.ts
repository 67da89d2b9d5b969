// A controller: changes of watched objects become keys in a work queue; workers hand each key
// to `reconcile`, which reads the current state and acts (level-triggered: it never sees the
// event that woke it). The Action it returns, or the error it throws, decides when the key
// comes back.
import type { CacheChange } from './cache.js';
import type { Informer } from './informer.js';
import { errorFields, type Logger } from './log.js';
import { isAlreadyReported } from './kube-client.js';
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
  /**
   * Records a write this pass made to its own object (its status, its finalizers): `from` is
   * the resourceVersion it was made against, `to` the one the server answered. The watch event
   * of exactly that write then wakes no one, as long as no later pass of the key has started:
   * the pass that wrote it knew everything in it. (A later pass may have read the cache before
   * the write came back, so for it the event still counts.)
   */
  wrote(from: string | undefined, to: string | undefined): void;
  /**
   * This pass looked at the outside world (the host) at `at`, a performance.now() reading taken
   * before the look began, and the look showed nothing left to do. Changes reported with
   * Controller.hostChanged during the pass and before `at` then do not run the key again, nor
   * do those named in `own` (as hostChanged names them) whenever they come before the key's
   * next pass: the changes the pass's own calls made, which the look already showed.
   */
  sawHostAt(at: number, own?: readonly string[]): void;
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
  /**
   * Queue a key for a change seen on the host at `at` (performance.now()), named by `what`
   * (e.g. a libvirt event). During a pass of the key the change is kept for the pass's end: it
   * runs the key again unless the pass reported (ReconcileContext.sawHostAt) a look at the host
   * that began after it, or named it as its own. libvirt's events for a pass's own calls arrive
   * during that pass or just after it, and its last look already showed their effect.
   */
  hostChanged(key: string, at: number, what?: string): void;
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
   * The passes running now, by key. Per run: a pass of a run that outlived its drain bound
   * must not clear what the next run's pass of the key recorded.
   */
  passes: Map<string, Pass>;
}

interface Pass {
  /**
   * Updates of the object that arrived while the pass ran. Judged when it ends, because the
   * watch event of the pass's own write can come in before the server's answer to the write:
   * its own writes wake nothing, a status-only update wakes the key only if the pass
   * returned done (see statusOnlyWaits), any other update wakes it.
   */
  updates: Array<{ from?: string; to?: string; statusOnly: boolean }>;
  /** Host changes reported while the pass ran (hostChanged). */
  hostChanges: Array<{ at: number; what: string | undefined }>;
  /** The latest look at the host that showed nothing left to do (sawHostAt). */
  sawHostAt?: number;
}

/** What the key's latest pass did itself, until its next pass starts or the object goes. */
interface OwnChanges {
  /** Its writes: resourceVersion written -> the one it was written against. */
  writes: Map<string, string | undefined>;
  /** Host changes its calls made (sawHostAt's `own`) that have not come in yet, and until when. */
  hostChanges: Array<{ what: string; until: number }>;
}

/**
 * How long a pass's own host change is expected. libvirt sends its events at once; one that
 * never comes (a connection lost meanwhile) must not hide someone else's change of the same
 * kind for longer than this.
 */
const OWN_CHANGE_WINDOW_MS = 10_000;

/**
 * How long a pass waits for the cache to show the key's own last write before it reads it. The
 * watch brings it back in milliseconds; an API server slow to send it must not stall the key.
 */
const OWN_WRITE_WAIT_MS = 2_000;

/** Takes the change `what` seen at `at` off the list of expected ones, if it is expected. */
function consume(
  list: Array<{ what: string; until: number }>,
  what: string | undefined,
  at: number,
): boolean {
  const i = list.findIndex((c) => c.what === what && at <= c.until);
  if (i >= 0) list.splice(i, 1);
  return i >= 0;
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
  // Ends the wait of a start still waiting for its informers' first list (see stopProcessing).
  let cancelStart: (() => void) | undefined;
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

  const ownChanges = new Map<string, OwnChanges>();
  /** Whether [from, to] is exactly one of the writes in `own`. */
  const wrote = (own: OwnChanges | undefined, from: string | undefined, to: string | undefined) =>
    to !== undefined && own !== undefined && own.writes.has(to) && own.writes.get(to) === from;
  /**
   * Whether the cache still shows the copy the key's latest pass wrote over. A pass reading it
   * would decide from status older than its own last write, and its status write would be
   * refused as stale, losing what only that pass knew (a restart it made, for restartCount).
   */
  const cacheBehind = (key: string): boolean => {
    const own = ownChanges.get(key);
    const rv = opts.for.cache.get(key)?.metadata.resourceVersion;
    // A version one of the writes was made against (a finalizer patch's result is the copy the
    // status write that followed it was made against).
    return own !== undefined && rv !== undefined && [...own.writes.values()].includes(rv);
  };
  // key -> ends the wait of the key's next pass for its cache to move (cacheMoved).
  const cacheWaiters = new Map<string, () => void>();
  const cacheMoved = (key: string, ms: number): Promise<void> =>
    new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        cacheWaiters.delete(key);
        resolve();
      };
      const timer = setTimeout(end, ms);
      cacheWaiters.set(key, end);
    });
  /** The watch event of exactly a write of the key's latest pass, and nothing else. */
  const isOwnWrite = (key: string, change: { old: KubeObject; obj: KubeObject }): boolean =>
    wrote(
      ownChanges.get(key),
      change.old.metadata.resourceVersion,
      change.obj.metadata.resourceVersion,
    );

  /**
   * A status-only update (most often the watch event of the pass's own status write) does not
   * cut short a wait the key's last pass chose: its requeueAfter or its failure backoff. A
   * failing pass whose message changed each time (QEMU's timestamps) otherwise ran again at
   * once, every half second, past its backoff. One that arrives during a pass (Pass.updates)
   * still wakes the key if that pass returned done: that is how a pass that found the cache
   * behind our own write gets its turn.
   */
  const statusOnlyWaits = (key: string, r: Run): boolean => r.queue.dueAt(key) !== undefined;

  unsubscribes.push(
    opts.for.subscribe((change: CacheChange<T>) => {
      const key = objectKey(change.obj);
      cacheWaiters.get(key)?.();
      if (change.type === 'updated') {
        if (opts.updatePredicate && !opts.updatePredicate(change.old, change.obj)) return;
        if (isParked(key)) return;
        if (isOwnWrite(key, change)) return;
        const statusOnly = !specOrMetadataChanged(change.old, change.obj);
        const pass = run?.passes.get(key);
        if (pass) {
          pass.updates.push({
            from: change.old.metadata.resourceVersion,
            to: change.obj.metadata.resourceVersion,
            statusOnly,
          });
          return;
        }
        if (run && statusOnly && statusOnlyWaits(key, run)) return;
      }
      if (change.type === 'deleted') ownChanges.delete(key);
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
        r.queue.done(key);
        continue;
      }
      const pass: Pass = { updates: [], hostChanges: [] };
      r.passes.set(key, pass);
      // Not from a copy the key's own last writes replaced: they are on their way back (a
      // finalizer patch and a status write come back one after the other).
      for (const until = Date.now() + OWN_WRITE_WAIT_MS; cacheBehind(key) && Date.now() < until;)
        await cacheMoved(key, until - Date.now());
      const seen = version(opts.for.cache.get(key));
      const retries = r.queue.failures(key);
      const keyLog = log.child({ key });
      const started = process.hrtime.bigint();
      m?.activeWorkers.inc({ controller: name });
      const own: OwnChanges = { writes: new Map(), hostChanges: [] };
      ownChanges.set(key, own);
      let succeeded = false;
      let returnedDone = false;
      let result: string;
      try {
        const action = await reconcile(key, {
          key,
          log: keyLog,
          signal: r.abort.signal,
          retries,
          wrote: (from, to) => {
            if (to !== undefined) own.writes.set(to, from);
          },
          sawHostAt: (at, ownHost = []) => {
            pass.sawHostAt = Math.max(pass.sawHostAt ?? at, at);
            for (const what of ownHost)
              own.hostChanges.push({ what, until: at + OWN_CHANGE_WINDOW_MS });
          },
        });
        succeeded = true;
        r.queue.forget(key);
        parked.delete(key);
        if (action.kind === 'requeueAfter') {
          r.queue.addAfter(key, action.ms);
          result = 'requeue_after';
        } else {
          returnedDone = true;
          result = 'success';
        }
      } catch (err) {
        if (err instanceof PermanentError) {
          r.queue.forget(key);
          // The generation this pass saw: a spec change that arrived during it unparks at once.
          parked.set(key, seen);
          keyLog.warn(errorFields(err), 'reconcile failed permanently; waiting for a change');
          result = 'permanent_error';
        } else {
          const delayMs = r.queue.addRateLimited(key);
          m?.reconcileErrors.inc({ controller: name });
          // An error already logged with its remedy (isAlreadyReported) is a lasting cause:
          // repeating it at every retry would bury it, so its retries go to debug.
          keyLog[isAlreadyReported(err) ? 'debug' : 'error'](
            { ...errorFields(err), retries, delayMs: Math.round(delayMs) },
            'reconcile failed; retrying',
          );
          result = 'error';
        }
      } finally {
        m?.activeWorkers.dec({ controller: name });
        r.passes.delete(key);
        if (!succeeded) own.hostChanges = [];
        // Every change must be consumed (even one the look covered), so that a leftover never
        // hides someone else's change of the same kind.
        const missed = pass.hostChanges.filter(
          (c) => !consume(own.hostChanges, c.what, c.at) && !(c.at < (pass.sawHostAt ?? -Infinity)),
        );
        const news = pass.updates.filter((u) => !wrote(own, u.from, u.to));
        const woken =
          missed.length > 0 ||
          (!succeeded && pass.hostChanges.length > 0) ||
          news.some((u) => !u.statusOnly || returnedDone);
        // Queued once more when this pass is done (the queue marks it dirty).
        if (woken) r.queue.add(key);
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
    hostChanged(key, at, what) {
      const pass = run?.passes.get(key);
      if (pass) {
        pass.hostChanges.push({ at, what });
        return;
      }
      if (consume(ownChanges.get(key)?.hostChanges ?? [], what, at)) return;
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
      let cancelled = false;
      const cancel = new Promise<void>((resolve) => {
        cancelStart = () => {
          cancelled = true;
          resolve();
        };
      });
      starting = (async () => {
        await Promise.race([Promise.all(watched.map((i) => i.synced)), cancel]);
        await draining;
        if (cancelled) return;
        const r: Run = {
          queue: createWorkQueue({
            ...opts.queue,
            name,
            metrics: m,
            clock: opts.queue?.clock ?? systemClock,
          }),
          abort: new AbortController(),
          workers: [],
          passes: new Map(),
        };
        run = r;
        // Everything is new to this run: events seen while stopped were not queued.
        for (const key of opts.for.cache.keys()) r.queue.add(key);
        for (let i = 0; i < concurrency; i++) r.workers.push(work(r));
        scheduleResync(r);
        log.info({ concurrency, keys: opts.for.cache.size() }, 'processing started');
      })().finally(() => {
        starting = undefined;
        cancelStart = undefined;
      });
      return starting;
    },
    async stopProcessing(drainMs) {
      // A start still waiting for a list that may never come (a CRD not installed) is called
      // off: awaiting it made every stop, even a SIGTERM's, wait forever.
      cancelStart?.();
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
