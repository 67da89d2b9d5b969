// The agent: one per node. It wires the generic runtime (watches, caches, queues, lease,
// status writer, events, health) to the four controllers and to libvirt's lifecycle events.
// Everything here is plumbing; the decisions live in src/controllers/<kind>/.
import { mkdirSync } from 'node:fs';
import type { KubeAccess } from '../runtime/kube-config.js';
import type { VirtKind } from '../api/generated/crds.js';
import { createHostState } from '../controllers/host-state.js';
import {
  keyOf,
  type Action,
  type ControllerContext,
  type KubeObject,
} from '../controllers/context.js';
import {
  clusterIndexes,
  INDEX_NETWORK,
  INDEX_POOL,
  INDEX_SNAPSHOT,
  INDEX_SOURCE_VOLUME,
  INDEX_UUID,
  INDEX_VM,
  INDEX_VOLUME,
  restoreIndexes,
  snapshotIndexes,
  snapshotVolumes,
  vmIndexes,
  vmVolumes,
  volumeIndexes,
  volumeSources,
} from '../controllers/indexes.js';
import { reconcileStoragePool } from '../controllers/storage-pool/index.js';
import { reconcileVirtualMachine } from '../controllers/virtual-machine/index.js';
import { reconcileVirtualMachineRestore } from '../controllers/virtual-machine-restore/index.js';
import { reconcileVirtualMachineSnapshot } from '../controllers/virtual-machine-snapshot/index.js';
import { reconcileVirtualNetwork } from '../controllers/virtual-network/index.js';
import { reconcileVolume } from '../controllers/volume/index.js';
import { ReconnectingConnection, type Connect } from '../libvirt/index.js';
import {
  startHealthServer,
  startRuntime,
  type Controller,
  type Informer,
  type Logger,
  type ResourceDescription,
  type Runtime,
} from '../runtime/index.js';
import { FinalizerConflict } from '../runtime/finalizer.js';
import { isConflict } from '../runtime/kube-client.js';
import type { HostPort } from './config.js';
import { registerGuestMetrics, type GuestMetrics } from './guest-metrics.js';
import { kubeWrites, resourceOf } from './kube-writes.js';

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
  health?: HostPort;
  metrics?: HostPort;
  log?: Logger | { level?: string; name?: string };
  /** Every key is reconciled again this often as a safety net. Default 10 min. */
  resyncMs?: number;
  /** Per-controller concurrency. Default 16: most of a reconcile is waiting on the API server. */
  concurrency?: number;
  /** Watch tuning, passed to the runtime (tests shorten the watchdog). */
  watch?: { inactivityTimeoutMs?: number };
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

const KINDS: VirtKind[] = [
  'VirtualMachine',
  'Volume',
  'VirtualNetwork',
  'StoragePool',
  'VirtualMachineSnapshot',
  'VirtualMachineRestore',
];

const NODES: ResourceDescription = {
  group: '',
  version: 'v1',
  plural: 'nodes',
  kind: 'Node',
  namespaced: false,
};

const RECONCILERS: Record<VirtKind, (key: string, ctx: ControllerContext) => Promise<Action>> = {
  VirtualMachine: reconcileVirtualMachine,
  Volume: reconcileVolume,
  VirtualNetwork: reconcileVirtualNetwork,
  StoragePool: reconcileStoragePool,
  VirtualMachineSnapshot: reconcileVirtualMachineSnapshot,
  VirtualMachineRestore: reconcileVirtualMachineRestore,
};

const INDEXES: Record<VirtKind, Record<string, (o: KubeObject) => string[]>> = {
  VirtualMachine: vmIndexes,
  Volume: volumeIndexes,
  VirtualNetwork: clusterIndexes,
  StoragePool: clusterIndexes,
  VirtualMachineSnapshot: snapshotIndexes,
  VirtualMachineRestore: restoreIndexes,
};

export async function startAgent(opts: AgentOptions): Promise<Agent> {
  mkdirSync(opts.stateDir, { recursive: true });
  const libvirt = new ReconnectingConnection(opts.libvirtUri, {
    openTimeoutMs: 10_000,
    // The test driver has no keepalive; the wrapper tolerates NO_SUPPORT.
    keepAlive: opts.libvirtUri.startsWith('test:') ? false : { interval: 5, count: 3 },
  });
  libvirt.start();

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
    health: opts.health ? { host: opts.health.host, port: opts.health.port } : false,
    events: {
      reportingController: 'virt.dev/libvirt-operator',
      reportingInstance: `libvirt-operator-${opts.nodeName}`,
    },
    watch: opts.watch,
    userAgent: `libvirt-operator/${opts.nodeName}`,
  });
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
          registry: runtime.metrics.registry,
          readiness: { run: () => runtime.ready() },
        })
      : undefined;
  runtime.addReadinessCheck(
    'libvirt',
    () => libvirt.state === 'open' || `libvirt connection is ${libvirt.state}`,
  );

  // Namespaced kinds: only this node's objects (CRD selectableFields on spec.nodeName).
  const byNode = { fieldSelector: `spec.nodeName=${opts.nodeName}` };
  type Obj = KubeObject;
  const informers: Record<VirtKind, Informer<Obj>> = {
    VirtualMachine: runtime.informer<Obj>(resourceOf('VirtualMachine'), byNode),
    Volume: runtime.informer<Obj>(resourceOf('Volume'), byNode),
    VirtualNetwork: runtime.informer<Obj>(resourceOf('VirtualNetwork')),
    StoragePool: runtime.informer<Obj>(resourceOf('StoragePool')),
    // Snapshots and restores name only their machine (spec.vmName), not a node: every agent
    // watches them all (they are few) and acts on those whose machine is in its VM cache.
    VirtualMachineSnapshot: runtime.informer<Obj>(resourceOf('VirtualMachineSnapshot')),
    VirtualMachineRestore: runtime.informer<Obj>(resourceOf('VirtualMachineRestore')),
  };
  const nodeInformer = runtime.informer(NODES, { fieldSelector: `metadata.name=${opts.nodeName}` });
  for (const kind of KINDS) {
    for (const [name, fn] of Object.entries(INDEXES[kind]))
      informers[kind].cache.addIndex(name, fn);
  }

  const guestMetrics = registerGuestMetrics({
    registry: runtime.metrics.registry,
    nodeName: opts.nodeName,
    connection: () => libvirt.connection,
    vmUid: (namespace, name) =>
      informers.VirtualMachine.cache.get(`${namespace}/${name}`)?.metadata.uid,
    onError: (err) => log.warn({ err: String(err) }, 'guest metrics: libvirt stats failed'),
  });

  const ctx = controllerContext(opts, runtime, libvirt, informers, nodeInformer, log);
  const controllers = {} as Record<VirtKind, Controller>;
  for (const kind of KINDS) {
    const reconcile = RECONCILERS[kind];
    controllers[kind] = runtime.controller({
      name: kind,
      for: informers[kind],
      concurrency: opts.concurrency ?? 16,
      resyncMs: opts.resyncMs ?? 10 * 60_000,
      reconcile: async (key) => {
        // No libvirt, no reconcile: the error makes the queue back off instead of every
        // controller deciding on its own what a closed connection means.
        await libvirt.ready({ timeoutMs: 5_000 });
        try {
          return await reconcile(key, ctx);
        } catch (err) {
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
  wireTriggers(informers, nodeInformer, controllers);
  await wireLibvirtEvents(libvirt, informers, controllers, log);
  wireLibvirtReconnects(libvirt, informers, controllers, log);

  runtime.start();
  const synced = Promise.all([
    ...Object.values(informers).map((i) => i.synced),
    nodeInformer.synced,
    libvirt.ready(),
  ]).then(() => undefined);
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
      await libvirt.close();
    },
  };
}

/** A change of one object wakes the objects that refer to it. */
function wireTriggers(
  informers: Record<VirtKind, Informer<KubeObject>>,
  nodeInformer: Informer,
  controllers: Record<VirtKind, Controller>,
): void {
  const enqueueAll = (c: Controller, keys: string[]) => keys.forEach((k) => c.enqueue(k));
  // A VM's status names its Volumes' paths; a Volume's status names the VMs using it.
  informers.Volume.subscribe((change) => {
    const key = keyOf(change.obj);
    enqueueAll(
      controllers.VirtualMachine,
      informers.VirtualMachine.cache.keysByIndex(INDEX_VOLUME, key),
    );
    enqueueAll(controllers.Volume, informers.Volume.cache.keysByIndex(INDEX_SOURCE_VOLUME, key));
    for (const src of volumeSources(change.obj)) controllers.Volume.enqueue(src);
  });
  informers.VirtualMachine.subscribe((change) => {
    const volumes = new Set([
      ...vmVolumes(change.obj),
      ...(change.type === 'updated' ? vmVolumes(change.old) : []),
    ]);
    enqueueAll(controllers.Volume, [...volumes]);
  });
  informers.VirtualNetwork.subscribe((change) => {
    enqueueAll(
      controllers.VirtualMachine,
      informers.VirtualMachine.cache.keysByIndex(INDEX_NETWORK, keyOf(change.obj)),
    );
  });
  informers.StoragePool.subscribe((change) => {
    enqueueAll(
      controllers.Volume,
      informers.Volume.cache.keysByIndex(INDEX_POOL, keyOf(change.obj)),
    );
  });
  informers.Volume.subscribe((change) => {
    for (const pool of [change.obj, change.type === 'updated' ? change.old : undefined]) {
      const name = (pool as { spec?: { pool?: string } } | undefined)?.spec?.pool;
      if (name) controllers.StoragePool.enqueue(name);
    }
  });
  informers.VirtualMachine.subscribe((change) => {
    for (const net of new Set(
      [change.obj, change.type === 'updated' ? change.old : undefined].flatMap(
        (o) =>
          (
            o as { spec?: { interfaces?: Array<{ network: string }> } } | undefined
          )?.spec?.interfaces?.map((i) => i.network) ?? [],
      ),
    )) {
      controllers.VirtualNetwork.enqueue(net);
    }
  });
  // A machine's snapshots and restores follow it (its deletion deletes its snapshots); a
  // restore waits for its snapshot; a running restore holds its machine back; a snapshot
  // protects the Volumes its disks are in.
  informers.VirtualMachine.subscribe((change) => {
    const key = keyOf(change.obj);
    enqueueAll(
      controllers.VirtualMachineSnapshot,
      informers.VirtualMachineSnapshot.cache.keysByIndex(INDEX_VM, key),
    );
    enqueueAll(
      controllers.VirtualMachineRestore,
      informers.VirtualMachineRestore.cache.keysByIndex(INDEX_VM, key),
    );
  });
  informers.VirtualMachineSnapshot.subscribe((change) => {
    enqueueAll(
      controllers.VirtualMachineRestore,
      informers.VirtualMachineRestore.cache.keysByIndex(INDEX_SNAPSHOT, keyOf(change.obj)),
    );
    const volumes = new Set([
      ...snapshotVolumes(change.obj),
      ...(change.type === 'updated' ? snapshotVolumes(change.old) : []),
    ]);
    enqueueAll(controllers.Volume, [...volumes]);
  });
  informers.VirtualMachineRestore.subscribe((change) => {
    const vm = (change.obj as { spec?: { vmName?: string } }).spec?.vmName;
    if (vm) controllers.VirtualMachine.enqueue(`${change.obj.metadata.namespace}/${vm}`);
  });
  // Node labels decide which networks and pools this host should have.
  nodeInformer.subscribe(() => {
    enqueueAll(controllers.VirtualNetwork, informers.VirtualNetwork.cache.keys());
    enqueueAll(controllers.StoragePool, informers.StoragePool.cache.keys());
  });
}

/**
 * libvirt tells us at once when something changes behind our back (virsh destroy, a guest
 * shutdown, a network stopped); the owner's key is found by UUID, which every object we create
 * carries. Objects we do not own map to no key and are ignored.
 */
async function wireLibvirtEvents(
  libvirt: ReconnectingConnection,
  informers: Record<VirtKind, Informer<KubeObject>>,
  controllers: Record<VirtKind, Controller>,
  log: Logger,
): Promise<void> {
  const route = (kind: VirtKind, uuid: string) => {
    for (const key of informers[kind].cache.keysByIndex(INDEX_UUID, uuid))
      controllers[kind].enqueue(key);
  };
  const register = async (what: string, fn: () => Promise<number>) => {
    try {
      await fn();
    } catch (err) {
      // The periodic resync still catches drift; say that events are missing.
      log.warn({ err: String(err) }, `libvirt ${what} events unavailable; relying on resync`);
    }
  };
  await register('domain', () =>
    libvirt.domainEventLifecycleRegister((e) => route('VirtualMachine', e.domain.getUUIDString())),
  );
  await register('network', () =>
    libvirt.networkEventLifecycleRegister((e) =>
      route('VirtualNetwork', e.network.getUUIDString()),
    ),
  );
  await register('storage pool', () =>
    libvirt.storagePoolEventLifecycleRegister((e) => route('StoragePool', e.pool.getUUIDString())),
  );
}

/**
 * Events are lost while the connection is down, and a daemon that starts again settles what
 * changed meanwhile (a guest that died with it) before we have subscribed anew: once the
 * connection is back, every object is looked at again, like after a relist.
 */
function wireLibvirtReconnects(
  libvirt: ReconnectingConnection,
  informers: Record<VirtKind, Informer<KubeObject>>,
  controllers: Record<VirtKind, Controller>,
  log: Logger,
): void {
  libvirt.on('state', ({ state, previous, closeReason, error }) => {
    if (state === 'reconnecting' && previous === 'open') {
      log.warn(
        { closeReason, err: error && String(error) },
        'libvirt connection lost; reconnecting',
      );
    }
    // The first open needs nothing: processing starts with every cached key queued.
    if (state !== 'open' || previous === 'connecting') return;
    log.info('libvirt connection open again; reconciling every object');
    for (const kind of KINDS) {
      for (const key of informers[kind].cache.keys()) controllers[kind].enqueue(key);
    }
  });
}

function controllerContext(
  opts: AgentOptions,
  runtime: Runtime,
  libvirt: ReconnectingConnection,
  informers: Record<VirtKind, Informer<KubeObject>>,
  nodeInformer: Informer,
  log: Logger,
): ControllerContext {
  const writes = kubeWrites({
    client: runtime.client,
    events: runtime.events,
    nodeName: opts.nodeName,
    log,
    statusWriter: (o) => runtime.statusWriter(o),
  });
  return {
    nodeName: opts.nodeName,
    stateDir: opts.stateDir,
    host: createHostState(),
    libvirt(): Connect {
      const conn = libvirt.connection;
      if (!conn) throw new Error(`libvirt connection to ${opts.libvirtUri} is ${libvirt.state}`);
      return conn;
    },
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
    ...writes,
  };
}
