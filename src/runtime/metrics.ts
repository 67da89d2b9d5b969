// Prometheus metrics of one runtime, in its own Registry (never prom-client's global one, so
// two runtimes in one process, as in tests, do not collide). Names follow controller-runtime
// and client-go's workqueue where the meaning is the same, so existing dashboards apply.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface RuntimeMetrics {
  registry: Registry;
  reconcileTotal: Counter<'controller' | 'result'>;
  reconcileErrors: Counter<'controller'>;
  reconcileTime: Histogram<'controller'>;
  activeWorkers: Gauge<'controller'>;
  queueDepth: Gauge<'name'>;
  queueAdds: Counter<'name'>;
  queueRetries: Counter<'name'>;
  queueLatency: Histogram<'name'>;
  queueWorkDuration: Histogram<'name'>;
  watchRestarts: Counter<'resource' | 'reason'>;
  watchRelists: Counter<'resource' | 'reason'>;
  watchEvents: Counter<'resource' | 'type'>;
  cacheObjects: Gauge<'resource'>;
  statusWrites: Counter<'resource' | 'result'>;
  eventsEmitted: Counter<'result'>;
  leaseHeld: Gauge<'lease'>;
  leaseTransitions: Counter<'lease'>;
  /**
   * Records the duration of a call into an outside system under
   * `<system>_call_duration_seconds{method}`, e.g. observeCall('libvirt', 'virDomainCreate', s)
   * gives libvirt_call_duration_seconds. The histogram is created on first use.
   */
  observeCall(system: string, method: string, seconds: number): void;
  /** Times `fn` with observeCall, whether it resolves or rejects. */
  timeCall<T>(system: string, method: string, fn: () => Promise<T>): Promise<T>;
}

// From 1 ms to ~1 min: reconciles and libvirt calls span both ends.
const DURATION_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export function createRuntimeMetrics(opts: { processMetrics?: boolean } = {}): RuntimeMetrics {
  const registry = new Registry();
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const r = [registry];
  const callHistograms = new Map<string, Histogram<'method'>>();

  const metrics: RuntimeMetrics = {
    registry,
    reconcileTotal: new Counter({
      name: 'controller_runtime_reconcile_total',
      help: 'Reconciles per controller and result (success, requeue_after, error, permanent_error).',
      labelNames: ['controller', 'result'],
      registers: r,
    }),
    reconcileErrors: new Counter({
      name: 'controller_runtime_reconcile_errors_total',
      help: 'Reconciles that threw, per controller.',
      labelNames: ['controller'],
      registers: r,
    }),
    reconcileTime: new Histogram({
      name: 'controller_runtime_reconcile_time_seconds',
      help: 'Time per reconcile, per controller.',
      labelNames: ['controller'],
      buckets: DURATION_BUCKETS,
      registers: r,
    }),
    activeWorkers: new Gauge({
      name: 'controller_runtime_active_workers',
      help: 'Reconciles running now, per controller.',
      labelNames: ['controller'],
      registers: r,
    }),
    queueDepth: new Gauge({
      name: 'workqueue_depth',
      help: 'Keys waiting to be reconciled (not counting delayed ones).',
      labelNames: ['name'],
      registers: r,
    }),
    queueAdds: new Counter({
      name: 'workqueue_adds_total',
      help: 'Keys added to the queue (before de-duplication).',
      labelNames: ['name'],
      registers: r,
    }),
    queueRetries: new Counter({
      name: 'workqueue_retries_total',
      help: 'Keys requeued with backoff after an error.',
      labelNames: ['name'],
      registers: r,
    }),
    queueLatency: new Histogram({
      name: 'workqueue_queue_duration_seconds',
      help: 'Time a key waits in the queue before a worker takes it.',
      labelNames: ['name'],
      buckets: DURATION_BUCKETS,
      registers: r,
    }),
    queueWorkDuration: new Histogram({
      name: 'workqueue_work_duration_seconds',
      help: 'Time a worker holds a key.',
      labelNames: ['name'],
      buckets: DURATION_BUCKETS,
      registers: r,
    }),
    watchRestarts: new Counter({
      name: 'runtime_watch_restarts_total',
      help: 'Watch connections re-opened, by reason (expired = server timeout, gone = 410, inactivity = watchdog, error).',
      labelNames: ['resource', 'reason'],
      registers: r,
    }),
    watchRelists: new Counter({
      name: 'runtime_watch_relists_total',
      help: 'Full lists, by reason (initial, gone).',
      labelNames: ['resource', 'reason'],
      registers: r,
    }),
    watchEvents: new Counter({
      name: 'runtime_watch_events_total',
      help: 'Watch events received, by type.',
      labelNames: ['resource', 'type'],
      registers: r,
    }),
    cacheObjects: new Gauge({
      name: 'runtime_cache_objects',
      help: 'Objects in the local cache, per watched resource.',
      labelNames: ['resource'],
      registers: r,
    }),
    statusWrites: new Counter({
      name: 'runtime_status_writes_total',
      help: 'Status applies, by result (written, unchanged = skipped because equal, error).',
      labelNames: ['resource', 'result'],
      registers: r,
    }),
    eventsEmitted: new Counter({
      name: 'runtime_events_total',
      help: 'Kubernetes Events, by result (created, series_updated, suppressed, dropped, error).',
      labelNames: ['result'],
      registers: r,
    }),
    leaseHeld: new Gauge({
      name: 'runtime_lease_held',
      help: '1 while this process holds the lease.',
      labelNames: ['lease'],
      registers: r,
    }),
    leaseTransitions: new Counter({
      name: 'runtime_lease_acquisitions_total',
      help: 'Times this process acquired the lease.',
      labelNames: ['lease'],
      registers: r,
    }),
    observeCall(system, method, seconds) {
      let h = callHistograms.get(system);
      if (!h) {
        if (!/^[a-z_][a-z0-9_]*$/.test(system)) {
          throw new Error(`metric system name '${system}' must be lower_snake_case`);
        }
        h = new Histogram({
          name: `${system}_call_duration_seconds`,
          help: `Duration of ${system} calls, by method.`,
          labelNames: ['method'],
          buckets: DURATION_BUCKETS,
          registers: r,
        });
        callHistograms.set(system, h);
      }
      h.observe({ method }, seconds);
    },
    async timeCall(system, method, fn) {
      const start = process.hrtime.bigint();
      try {
        return await fn();
      } finally {
        metrics.observeCall(system, method, Number(process.hrtime.bigint() - start) / 1e9);
      }
    },
  };
  return metrics;
}

/** A resource's label value in metrics: plural.group, as kubectl names it. */
export function resourceLabel(resource: { group: string; plural: string }): string {
  return resource.group ? `${resource.plural}.${resource.group}` : resource.plural;
}
