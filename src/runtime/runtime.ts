// One runtime per process: the shared pieces (API client, logger, metrics, events, health
// endpoints, lease) and the informers and controllers created on it. No manager object with
// runnables: a function that returns handles.
//
// Order of things: informers start listing as soon as they are created; controllers start
// working when their informers have synced AND (if a lease is configured) the lease is held;
// on lease loss they stop intake and drain for at most the lease's drain bound; stop() does
// the same for shutdown and then releases the lease.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { KubeAccess } from './kube-config.js';
import { createController, type Controller, type ControllerOptions } from './controller.js';
import { createEventRecorder, type EventRecorder, type EventRecorderOptions } from './events.js';
import {
  createReadinessChecks,
  startHealthServer,
  type HealthServer,
  type ReadinessCheck,
} from './health.js';
import { startInformer, type Informer } from './informer.js';
import { createKubeClient, type KubeClient } from './kube-client.js';
import { startLease, type LeaseHandle, type LeaseOptions } from './lease.js';
import { createLogger, errorFields, type Logger, type LogOptions } from './log.js';
import { createRuntimeMetrics, type RuntimeMetrics } from './metrics.js';
import type { ReflectorOptions } from './reflector.js';
import type { KubeObject, ResourceDescription } from './resource.js';
import {
  createStatusWriter,
  type StatusWriter,
  type StatusWriterOptions,
} from './status-writer.js';

export interface RuntimeOptions {
  kubeConfig: KubeAccess;
  /** A logger to use, or options for a new one. */
  log?: Logger | LogOptions;
  /** The lease that must be held to reconcile; false = always reconcile (tests, single runs). */
  lease?: false | (Omit<LeaseOptions, 'identity'> & { identity?: string });
  /** Where to serve /healthz, /readyz and /metrics; false = not at all. */
  health?: false | { host?: string; port: number; anyPortIfTaken?: boolean };
  events: Omit<EventRecorderOptions, 'log' | 'metrics' | 'clock'>;
  /** Defaults for every informer's watch (timeouts, backoff, watchdog). */
  watch?: Omit<ReflectorOptions, 'resource' | 'namespace' | 'labelSelector' | 'fieldSelector'>;
  /** How long stop() waits for in-flight reconciles before aborting them. Default 30 s. */
  shutdownDrainMs?: number;
  userAgent?: string;
}

export interface InformerSelection {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface Runtime {
  client: KubeClient;
  log: Logger;
  metrics: RuntimeMetrics;
  events: EventRecorder;
  health?: HealthServer;
  /** One informer per (resource, namespace, selectors), shared by whoever asks. */
  informer<T extends KubeObject = KubeObject>(
    resource: ResourceDescription,
    selection?: InformerSelection,
  ): Informer<T>;
  controller<T extends KubeObject>(opts: ControllerOptions<T>): Controller;
  statusWriter(opts: Omit<StatusWriterOptions, 'metrics'>): StatusWriter;
  /** Adds a /readyz check, e.g. 'libvirt' -> is the connection alive. */
  addReadinessCheck(name: string, check: ReadinessCheck): void;
  ready(): Promise<{ ready: boolean; lines: string[] }>;
  /** Whether this process may reconcile now (lease held, or no lease configured). */
  isLeader(): boolean;
  /** Begins lease election (or processing, without a lease). Call after creating controllers. */
  start(): void;
  /**
   * Graceful stop: stop intake, finish in-flight reconciles within drainMs, flush event
   * series, release the lease (unless releaseLease is false, which tests use to act out a
   * crash), stop watches and the health server. Idempotent.
   */
  stop(opts?: { drainMs?: number; releaseLease?: boolean }): Promise<void>;
  stopped: Promise<void>;
}

export async function startRuntime(opts: RuntimeOptions): Promise<Runtime> {
  const log = isLogger(opts.log) ? opts.log : createLogger(opts.log);
  const metrics = createRuntimeMetrics();
  const client = createKubeClient(opts.kubeConfig, { userAgent: opts.userAgent });
  const readiness = createReadinessChecks();
  const events = createEventRecorder(client, { ...opts.events, log, metrics });
  const informers = new Map<string, Informer<KubeObject>>();
  const controllers: Controller[] = [];
  const drainMs = opts.shutdownDrainMs ?? 30_000;
  let lease: LeaseHandle | undefined;
  let started = false;
  let stopping: Promise<void> | undefined;
  let markStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (markStopped = resolve));

  readiness.add('informers-synced', () => {
    const waiting = [...informers.values()]
      .filter((i) => !i.hasSynced())
      .map((i) => i.resource.plural);
    return waiting.length === 0 || `not synced yet: ${waiting.join(', ')}`;
  });
  if (opts.lease) {
    readiness.add(
      'lease',
      () => lease?.isHeld() === true || (lease?.whyNotHeld() ?? 'the lease is not acquired yet'),
    );
  }

  const health = opts.health
    ? await startHealthServer({ ...opts.health, registry: metrics.registry, readiness })
    : undefined;
  if (health) log.info({ url: health.url }, 'serving /healthz, /readyz and /metrics');

  const mayProcess = () => started && !stopping && (!opts.lease || lease?.isHeld() === true);

  const startProcessing = (c: Controller) =>
    void c
      .startProcessing()
      .catch((err: unknown) =>
        log.error({ ...errorFields(err), controller: c.name }, 'could not start'),
      );

  const runtime: Runtime = {
    client,
    log,
    metrics,
    events,
    health,
    informer<T extends KubeObject>(
      resource: ResourceDescription,
      selection: InformerSelection = {},
    ) {
      const id = JSON.stringify([
        resource.group,
        resource.version,
        resource.plural,
        selection.namespace,
        selection.labelSelector,
        selection.fieldSelector,
      ]);
      let informer = informers.get(id);
      if (!informer) {
        if (stopping) throw new Error('the runtime is stopping; no new informers');
        informer = startInformer(
          { ...opts.watch, resource, ...selection },
          { client, log, metrics },
        );
        informers.set(id, informer);
      }
      // One informer per selection, shared by every caller; T only names what the caller
      // knows of the objects it lists.
      return informer as Informer<T>;
    },
    controller(copts) {
      const c = createController(copts, { log, metrics });
      controllers.push(c);
      if (mayProcess()) startProcessing(c);
      return c;
    },
    statusWriter: (sopts) => createStatusWriter(client, { ...sopts, metrics }),
    addReadinessCheck: (name, check) => readiness.add(name, check),
    ready: () => readiness.run(),
    isLeader: () => !opts.lease || lease?.isHeld() === true,
    start() {
      if (started) return;
      started = true;
      if (!opts.lease) {
        controllers.forEach(startProcessing);
        return;
      }
      const leaseOpts = opts.lease;
      lease = startLease(
        client,
        {
          ...leaseOpts,
          identity:
            leaseOpts.identity ?? `${hostname()}_${process.pid}_${randomBytes(4).toString('hex')}`,
        },
        {
          onAcquired: () => {
            if (!stopping) controllers.forEach(startProcessing);
          },
          onLost: () => {
            // Someone else may start after the lease duration: be done before then.
            const bound = lease?.drainBoundMs ?? drainMs;
            void Promise.all(controllers.map((c) => c.stopProcessing(bound)));
          },
        },
        { log, metrics },
      );
    },
    stop(sopts = {}) {
      stopping ??= (async () => {
        const bound = sopts.drainMs ?? drainMs;
        log.info({ drainMs: bound }, 'stopping: no new work, draining running reconciles');
        const drained = await Promise.all(controllers.map((c) => c.close(bound)));
        await events.close();
        // A reconcile that outlived the drain bound was only asked to abort: keep the lease
        // (unreleased, it expires) so that a successor waits out the lease duration too.
        const allDrained = drained.every(Boolean);
        if (lease && !allDrained)
          log.warn('not releasing the lease: some reconciles did not finish');
        await lease?.stop({ release: (sopts.releaseLease ?? true) && allDrained });
        await Promise.all([...informers.values()].map((i) => i.stop()));
        await health?.close();
        log.info({ drained: drained.every(Boolean) }, 'stopped');
        markStopped();
      })();
      return stopping;
    },
    stopped,
  };
  return runtime;
}

function isLogger(v: unknown): v is Logger {
  return typeof v === 'object' && v !== null && typeof (v as Logger).child === 'function';
}

/**
 * SIGTERM/SIGINT stop the runtime gracefully; a second signal exits at once. Returns a
 * function that removes the handlers.
 */
export function stopOnSignals(
  runtime: Runtime,
  signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'],
): () => void {
  let received = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) {
      runtime.log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(130);
    }
    received = true;
    runtime.log.info({ signal }, 'signal received; shutting down');
    void runtime.stop();
  };
  for (const s of signals) process.on(s, onSignal);
  return () => {
    for (const s of signals) process.off(s, onSignal);
  };
}
