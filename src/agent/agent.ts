// The agent: one per node. It wires the generic runtime (watches, caches, queues, lease,
// status writer, events, health) to the controller modules of src/controllers/kinds.ts and to
// libvirt's lifecycle events. Everything here is plumbing, and no kind is named: the decisions,
// including which change wakes which key, live in src/controllers/<kind>/.
import { mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { KubeAccess } from '../runtime/kube-config.js';
import type { VirtKind } from '../api/generated/crds.js';
import { libvirtUuid } from '../api/names.js';
import { createHostState } from '../controllers/host-state.js';
import { keyOf, type ControllerContext, type KubeObject } from '../controllers/context.js';
import { INDEX_NETWORK, INDEX_UUID } from '../controllers/indexes.js';
import { lifecycleChange } from '../controllers/kit.js';
import { CONTROLLER_MODULES } from '../controllers/kinds.js';
import { kindResyncMs, type ControllerModule, type KeyLookup } from '../controllers/module.js';
import { NetworkEventLifecycleType } from '../libvirt/constants.js';
import { ReconnectingConnection, type Connect } from '../libvirt/index.js';
import { CallLanes } from '../libvirt/lanes.js';
import {
  startHealthServer,
  startRuntime,
  type Controller,
  type HealthServer,
  type Informer,
  type Logger,
  type ReconcileContext,
  type ResourceDescription,
  type Runtime,
} from '../runtime/index.js';
import { FinalizerConflict } from '../runtime/finalizer.js';
import { isConflict, isOwnWriteUnseen } from '../runtime/kube-client.js';
import { referenceTo } from '../runtime/resource.js';
import type { HostPort } from './config.js';
import { registerGuestMetrics, type GuestMetrics } from './guest-metrics.js';
import { kubeReads } from './kube-reads.js';
import { kubeWrites, resourceOf } from './kube-writes.js';
import { reconnectLooks } from './reconnect-looks.js';
import { createCrdSkew, type CrdSkew } from './crd-skew.js';

export interface AgentOptions {
  nodeName: string;
  libvirtUri: string;
  kubeConfig: KubeAccess;
  stateDir: string;
  /** Lease namespace; false runs without a lease (tests, simulations of many agents). */
  lease:
    | false
    | {
        namespace: string;
        leaseDurationSeconds?: number;
        renewDeadlineMs?: number;
        retryPeriodMs?: number;
        identity?: string;
      };
  /** anyPortIfTaken: serve on another free port when this one is taken (up's default). */
  health?: HostPort & { anyPortIfTaken?: boolean };
  metrics?: HostPort;
  log?: Logger | { level?: string; name?: string };
  /** Every key is reconciled again this often as a safety net. Default 10 min. */
  resyncMs?: number;
  /**
   * Passes run at once per controller, for every kind. Default: the kind's own
   * (ControllerModule.concurrency), else 32: most of a reconcile is waiting on the API server;
   * with 16, new VMs of a 1,000-VM burst waited 10-15 s in the queue (bench/README.md).
   */
  concurrency?: number;
  /** Watch tuning, passed to the runtime (tests shorten the watchdog). */
  watch?: { inactivityTimeoutMs?: number };
  /**
   * The first wait of the host-problem retry backoff (ControllerContext.retryMinMs).
   * Default 5 s; tests that wait past a few retries shorten it.
   */
  retryMinMs?: number;
}

export interface Agent {
  runtime: Runtime;
  libvirt: ReconnectingConnection;
  controllers: Record<VirtKind, Controller>;
  informers: Record<VirtKind, Informer<KubeObject>>;
  /** The guest series on /metrics (one bulk libvirt call per scrape). */
  guestMetrics: GuestMetrics;
  /** Resolves once every informer listed and the libvirt connection is open. */
  synced: Promise<void>;
  stop(opts?: { releaseLease?: boolean; drainMs?: number }): Promise<void>;
}

const NODES: ResourceDescription = {
  group: '',
  version: 'v1',
  plural: 'nodes',
  kind: 'Node',
  namespaced: false,
};

export async function startAgent(opts: AgentOptions): Promise<Agent> {
  mkdirSync(opts.stateDir, { recursive: true });
  const libvirt = new ReconnectingConnection(opts.libvirtUri, {
    openTimeoutMs: 10_000,
    // The test driver has no keepalive; the wrapper tolerates NO_SUPPORT.
    keepAlive: opts.libvirtUri.startsWith('test:') ? false : { interval: 5, count: 3 },
  });
  libvirt.start();
  // Calls that wait long inside a remote daemon get connections of their own (lanes.ts):
  // 5 of them take 20 such calls at once, as many as libvirtd has workers (max_workers).
  // The in-process test driver has no request slots to protect.
  const lanes = opts.libvirtUri.startsWith('test:')
    ? undefined
    : new CallLanes(opts.libvirtUri, { lanes: 5, openTimeoutMs: 10_000 });
  lanes?.start();

  // A start that fails part-way (the metrics port taken, say) closes what it had started:
  // the runtime's health listener alone kept `run` alive for ever after it printed its error.
  const started: { runtime?: Runtime; metricsServer?: HealthServer } = {};
  try {
    return await wireAgent(opts, libvirt, lanes, started);
  } catch (err) {
    await started.runtime?.stop({ drainMs: 0 }).catch(() => undefined);
    await started.metricsServer?.close();
    await lanes?.close().catch(() => undefined);
    await libvirt.close().catch(() => undefined);
    throw err;
  }
}

/** startAgent's part after libvirt: the runtime, the controllers and their wiring. */
async function wireAgent(
  opts: AgentOptions,
  libvirt: ReconnectingConnection,
  lanes: CallLanes | undefined,
  started: { runtime?: Runtime; metricsServer?: HealthServer },
): Promise<Agent> {
  const leaseSeconds = opts.lease ? (opts.lease.leaseDurationSeconds ?? 40) : 40;
  const runtime = await startRuntime({
    kubeConfig: opts.kubeConfig,
    log: opts.log ?? { name: 'libvirt-operator' },
    // Per-node leases follow the kubelet's node lease (40 s, renewed every 10 s) rather than
    // client-go's leader-election defaults (15 s, every 2 s): a cluster has one per node, so
    // renewals are the agent's steady-state write load (0.1/s per node). A crashed agent's
    // successor waits at most the lease duration.
    lease: opts.lease
      ? {
          namespace: opts.lease.namespace,
          name: `libvirt-operator-${opts.nodeName}`,
          leaseDurationSeconds: leaseSeconds,
          // 25 s and 10 s for the 40 s default; a shorter lease scales them down with it.
          renewDeadlineMs: opts.lease.renewDeadlineMs ?? leaseSeconds * 625,
          retryPeriodMs: opts.lease.retryPeriodMs ?? leaseSeconds * 250,
          identity: opts.lease.identity,
        }
      : false,
    health: opts.health ?? false,
    events: {
      reportingController: 'virt.dev/libvirt-operator',
      reportingInstance: `libvirt-operator-${opts.nodeName}`,
    },
    watch: opts.watch,
    userAgent: `libvirt-operator/${opts.nodeName}`,
  });
  started.runtime = runtime;
  const log = runtime.log.child({ node: opts.nodeName });
  // /metrics is also served on the health address; a separate metrics address gets its own
  // listener with the same registry (and the same health endpoints, which cost nothing).
  const metricsServer =
    opts.metrics &&
    (!opts.health ||
      opts.metrics.port !== opts.health.port ||
      opts.metrics.host !== opts.health.host)
      ? await startHealthServer({
          host: opts.metrics.host,
          port: opts.metrics.port,
          name: 'metrics',
          registry: runtime.metrics.registry,
          readiness: { run: () => runtime.ready() },
        })
      : undefined;
  started.metricsServer = metricsServer;
  runtime.addReadinessCheck('libvirt', () => libvirt.state === 'open' || libvirt.describe());

  // Namespaced kinds: only this node's objects (CRD selectableFields on spec.nodeName).
  // Snapshots and restores name only their machine (spec.vmName), not a node: every agent
  // watches them all (they are few) and acts on those whose machine is in its VM cache.
  const byNode = { fieldSelector: `spec.nodeName=${opts.nodeName}` };
  const informers = {} as Record<VirtKind, Informer<KubeObject>>;
  for (const m of CONTROLLER_MODULES) {
    const informer = runtime.informer(resourceOf(m.kind), m.watch === 'node' ? byNode : {});
    for (const [name, fn] of Object.entries(m.indexes)) informer.cache.addIndex(name, fn);
    informers[m.kind] = informer;
  }
  const nodeInformer = runtime.informer(NODES, { fieldSelector: `metadata.name=${opts.nodeName}` });

  const guestMetrics = registerGuestMetrics({
    registry: runtime.metrics.registry,
    nodeName: opts.nodeName,
    connection: () => libvirt.connection,
    vm: (namespace, name) => {
      const vm = informers.VirtualMachine.cache.get(`${namespace}/${name}`);
      const uid = vm?.metadata.uid;
      return uid ? { uid, uuid: libvirtUuid(vm) } : undefined;
    },
    onError: (err) => log.warn({ err: String(err) }, 'guest metrics: libvirt stats failed'),
  });

  // Status refused by CRDs older than this agent: said once, with the fix, and kept in the
  // readiness answer until the writes go through (crd-skew.ts says why there).
  const crdSkew = createCrdSkew({
    log,
    event: (kind, obj, reason, note) =>
      void runtime.events
        .publish(referenceTo(resourceOf(kind), obj), {
          type: 'Warning',
          reason,
          action: reason,
          note,
        })
        .catch((err: unknown) => log.warn({ err: String(err), reason }, 'could not record event')),
  });
  runtime.addReadinessCheck('crds', () => crdSkew.readiness());
  // A deleted object's refused writes will never be made: they must not hold readiness.
  for (const informer of Object.values(informers))
    informer.subscribe((change) => {
      if (change.type === 'deleted') crdSkew.forget(change.obj);
    });
  const ctx = controllerContext(
    opts,
    runtime,
    libvirt,
    lanes,
    informers,
    nodeInformer,
    log,
    crdSkew,
  );
  const controllers = {} as Record<VirtKind, Controller>;
  for (const module of CONTROLLER_MODULES) {
    const { kind, reconcile, concurrency } = module;
    controllers[kind] = runtime.controller({
      name: kind,
      for: informers[kind],
      concurrency: opts.concurrency ?? concurrency ?? 32,
      resyncMs: kindResyncMs(module, opts.resyncMs ?? 10 * 60_000),
      // Every pass may read any kind's cache (the machine's Volumes, a snapshot's machine…).
      readsFrom: [...Object.values(informers), nodeInformer],
      reconcile: async (key, pass) => {
        // No libvirt, no reconcile: the error makes the queue back off instead of every
        // controller deciding on its own what a closed connection means.
        await libvirt.ready({ timeoutMs: 5_000 });
        try {
          return await reconcile(key, passContext(ctx, kind, key, pass));
        } catch (err) {
          // A write refused before it was sent because the cache has not yet seen our own
          // last write to the object: that write's watch event wakes the key again. A retry
          // timer as well only made passes that found the same stale copy (1,389 of them in
          // a 1,000-VM burst under load: bench/README.md, "Convergence").
          if (isOwnWriteUnseen(err)) {
            log.debug({ kind, key }, 'cache behind our own write; its watch event wakes us');
            return { kind: 'done' };
          }
          // A conflict means our cached copy was stale (usually our own write not yet back
          // through the watch): look again shortly, without counting it as a failure.
          if (isConflict(err) || err instanceof FinalizerConflict) {
            log.debug({ kind, key }, 'stale cache; reconciling again');
            return { kind: 'requeueAfter', ms: 100 };
          }
          libvirt.reportError(err);
          throw err;
        }
      },
    });
  }
  wireTriggers(CONTROLLER_MODULES, informers, nodeInformer, controllers);
  await wireLibvirtEvents(CONTROLLER_MODULES, libvirt, informers, controllers, log);
  wireLibvirtReconnects(libvirt, informers, controllers, log);

  runtime.start();
  const synced = Promise.all([
    ...Object.values(informers).map((i) => i.synced),
    nodeInformer.synced,
    libvirt.ready(),
  ]).then(() => undefined);
  // Only up awaits it; stopped before libvirt ever answered, the agent rejects it (close
  // rejects libvirt.ready()), which under `run` was an unhandled rejection: a stack trace and
  // exit code 1 for a plain SIGTERM. A caller that awaits it still sees the rejection.
  synced.catch(() => undefined);
  return {
    runtime,
    libvirt,
    controllers,
    informers,
    guestMetrics,
    synced,
    async stop(sopts = {}) {
      await runtime.stop(sopts);
      await metricsServer?.close();
      await lanes?.close();
      await libvirt.close();
    },
  };
}

/** A change of one object wakes the keys each module's triggers name for it. */
function wireTriggers(
  modules: readonly ControllerModule[],
  informers: Record<VirtKind, Informer<KubeObject>>,
  nodeInformer: Informer,
  controllers: Record<VirtKind, Controller>,
): void {
  const cache = keyLookup(informers);
  for (const m of modules) {
    for (const trigger of m.triggers) {
      const source = trigger.from === 'Node' ? nodeInformer : informers[trigger.from];
      source.subscribe((change) => {
        for (const key of new Set(trigger.keys(change, cache))) controllers[m.kind].enqueue(key);
      });
    }
  }
}

function keyLookup(informers: Record<VirtKind, Informer<KubeObject>>): KeyLookup {
  return {
    keysByIndex: (kind, index, value) => informers[kind].cache.keysByIndex(index, value),
    keys: (kind) => informers[kind].cache.keys(),
  };
}

/**
 * libvirt tells us at once when something changes behind our back (virsh destroy, a guest
 * shutdown, a network stopped); the owner's key is found by UUID, which every object we create
 * carries. Objects we do not own map to no key and are ignored.
 */
async function wireLibvirtEvents(
  modules: readonly ControllerModule[],
  libvirt: ReconnectingConnection,
  informers: Record<VirtKind, Informer<KubeObject>>,
  controllers: Record<VirtKind, Controller>,
  log: Logger,
): Promise<void> {
  // libvirt's UUID strings are lower-case, as our INDEX_UUID values are; lower-casing keeps a
  // stray upper-case one from missing its owner.
  const cache = keyLookup(informers);
  const route = (
    kind: VirtKind,
    source: NonNullable<ControllerModule['hostEvents']>,
    uuid: string,
    what?: string,
  ) => {
    const at = performance.now();
    const keys = informers[kind].cache.keysByIndex(INDEX_UUID, uuid.toLowerCase());
    for (const key of keys) controllers[kind].hostChanged(key, at, what);
    if (keys.length > 0) return;
    // Nobody's: a foreign domain's stop can still be what a network's deletion waits for
    // (InUse), and no status write of ours follows it to wake that network.
    for (const m of modules) {
      if (m.unownedHostEvents?.source !== source) continue;
      for (const key of new Set(m.unownedHostEvents.keys(cache)))
        controllers[m.kind].hostChanged(key, at);
    }
  };
  // A network that starts again has none of its earlier guests plugged in (libvirt deleted
  // their ports when it stopped, and plugs nobody back): the machines on it look at once and
  // report it (RestartRequired), instead of at the next resync.
  const wakeMachinesOn = (uuid: string) => {
    const at = performance.now();
    const networks = informers.VirtualNetwork.cache.keysByIndex(INDEX_UUID, uuid.toLowerCase());
    for (const network of networks) {
      for (const key of informers.VirtualMachine.cache.keysByIndex(INDEX_NETWORK, network))
        controllers.VirtualMachine.hostChanged(key, at);
    }
  };
  type Source = {
    what: string;
    register: (on: (uuid: string, what?: string) => void) => Promise<number>;
  };
  const sources: Record<NonNullable<ControllerModule['hostEvents']>, Source[]> = {
    domain: [
      {
        what: 'domain lifecycle',
        register: (on) =>
          libvirt.domainEventLifecycleRegister((e) =>
            on(e.domain.getUUIDString(), lifecycleChange(e.eventName, e.detailName)),
          ),
      },
      // A device the guest releases after a live detach changes no lifecycle state, yet it is
      // what a DetachPending machine waits for: without it that wait lasts the retry backoff.
      {
        what: 'domain device-removed',
        register: (on) =>
          libvirt.domainEventDeviceRemovedRegister((e) => on(e.domain.getUUIDString())),
      },
    ],
    network: [
      {
        what: 'network',
        // Named by the event alone ('defined', 'started', …): network events have no detail.
        // The name lets a pass say which events its own calls caused (ownNetworkChanges).
        register: (on) =>
          libvirt.networkEventLifecycleRegister((e) => {
            on(e.network.getUUIDString(), e.eventName);
            if (e.event === NetworkEventLifecycleType.STARTED)
              wakeMachinesOn(e.network.getUUIDString());
          }),
      },
    ],
    storagePool: [
      {
        what: 'storage pool',
        register: (on) =>
          libvirt.storagePoolEventLifecycleRegister((e) => on(e.pool.getUUIDString())),
      },
    ],
  };
  for (const { kind, hostEvents } of modules) {
    if (!hostEvents) continue;
    for (const source of sources[hostEvents]) {
      try {
        await source.register((uuid, what) => route(kind, hostEvents, uuid, what));
      } catch (err) {
        // The periodic resync still catches drift; say that events are missing.
        log.warn(
          { err: String(err) },
          `libvirt ${source.what} events unavailable; relying on resync`,
        );
      }
    }
  }
}

/**
 * Events are lost while the connection is down, and a daemon that starts again settles what
 * changed meanwhile (a guest that died with it) before we have subscribed anew, or while our
 * first look is under way: once the connection is back, every object is looked at again, like
 * after a relist, and again once the daemon has settled (reconnect-looks.ts).
 */
function wireLibvirtReconnects(
  libvirt: ReconnectingConnection,
  informers: Record<VirtKind, Informer<KubeObject>>,
  controllers: Record<VirtKind, Controller>,
  log: Logger,
): void {
  const looks = reconnectLooks(() => {
    for (const [kind, informer] of Object.entries(informers) as [VirtKind, Informer][]) {
      for (const key of informer.cache.keys()) controllers[kind].enqueue(key);
    }
  });
  libvirt.on('state', ({ state, previous, closeReason, error }) => {
    if (state === 'reconnecting' && previous === 'open') {
      log.warn(
        { closeReason, err: error && String(error) },
        'libvirt connection lost; reconnecting',
      );
    }
    if (state !== 'open') {
      looks.dropped();
      return;
    }
    // The first open needs nothing: processing starts with every cached key queued.
    if (previous === 'connecting') return;
    log.info('libvirt connection open again; reconciling every object');
    looks.opened();
  });
}

const version = (obj: KubeObject) => obj.metadata.resourceVersion;

/**
 * One pass's view of the agent's context: it tells the pass's controller about the writes the
 * pass makes to its own object (status, finalizer) and about its looks at the host, so that
 * neither the watch event of such a write nor libvirt's events for the pass's own calls run it
 * again for nothing (a second pass per new machine was a fifth of the agent's CPU in a burst:
 * bench/README.md, "Convergence of one agent").
 */
function passContext(
  ctx: ControllerContext,
  kind: VirtKind,
  key: string,
  pass: ReconcileContext,
): ControllerContext {
  return {
    ...ctx,
    async applyStatus(k, obj, status) {
      const written = await ctx.applyStatus(k, obj, status);
      if (written && k === kind && keyOf(obj) === key) pass.wrote(version(obj), version(written));
      return written;
    },
    async ensureFinalizer(k, obj, finalizer) {
      const patched = await ctx.ensureFinalizer(k, obj, finalizer);
      if (patched !== obj && k === kind && keyOf(obj) === key)
        pass.wrote(version(obj), version(patched));
      return patched;
    },
    lookAtHost() {
      const at = performance.now();
      return (own) => pass.sawHostAt(at, own);
    },
  };
}

function controllerContext(
  opts: AgentOptions,
  runtime: Runtime,
  libvirt: ReconnectingConnection,
  lanes: CallLanes | undefined,
  informers: Record<VirtKind, Informer<KubeObject>>,
  nodeInformer: Informer,
  log: Logger,
  crdSkew: CrdSkew,
): ControllerContext {
  const host = createHostState();
  const writes = kubeWrites({
    client: runtime.client,
    events: runtime.events,
    nodeName: opts.nodeName,
    log,
    nodesLookedUp: host.nodesLookedUp,
    statusWriter: (o) => runtime.statusWriter(o),
    crdSkew,
  });
  return {
    nodeName: opts.nodeName,
    stateDir: opts.stateDir,
    retryMinMs: opts.retryMinMs,
    host,
    libvirt(): Connect {
      const conn = libvirt.connection;
      if (!conn) throw new Error(`libvirt connection to ${opts.libvirtUri} is ${libvirt.state}`);
      return conn;
    },
    ...(lanes ? { onLane: <T>(fn: (conn: Connect) => Promise<T>) => lanes.run(fn) } : {}),
    now: () => new Date(),
    log,
    get<T extends KubeObject>(kind: VirtKind, namespace: string | undefined, name: string) {
      return informers[kind].cache.get(namespace ? `${namespace}/${name}` : name) as T | undefined;
    },
    list<T extends KubeObject>(kind: VirtKind) {
      return informers[kind].cache.list() as T[];
    },
    byIndex<T extends KubeObject>(kind: VirtKind, index: string, value: string) {
      return informers[kind].cache.byIndex(index, value) as T[];
    },
    node: () => nodeInformer.cache.get(opts.nodeName),
    ...kubeReads(runtime.client),
    ...writes,
  };
}
