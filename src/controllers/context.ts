// The ports every controller is handed: a plain object, no framework. The agent (src/agent/)
// builds it from the generic runtime (src/runtime/) and the libvirt connection; unit tests
// build it from state-based fakes. Controllers never import the runtime directly, so they
// stay small functions of (key, context) -> Action.
import { createHash } from 'node:crypto';
import type { VirtKind } from '../api/generated/crds.js';
import type { Connect } from '../libvirt/connection.js';
import { done as runtimeDone, type Action } from '../runtime/controller.js';
import type { KubeObject } from '../runtime/resource.js';
import type { Logger } from '../runtime/log.js';
import type { LabelSelector } from '../api/generated/types.js';
import type { HostState } from './host-state.js';
import type { NodeMatch } from './node-aggregate.js';
import type { ImageLayers } from './volume/observe.js';

// The runtime's vocabulary, so a reconcile's answer goes to the queue as it is.
export { requeueAfter, type Action } from '../runtime/controller.js';
export { objectKey as keyOf, parseKey as splitKey, type KubeObject } from '../runtime/resource.js';
export type { Logger } from '../runtime/log.js';
/** Nothing more to do for this key until something changes. */
export const done: Action = runtimeDone();

/** One pass for one key of a kind: the whole of a controller's logic. */
export type KindReconcile = (key: string, ctx: ControllerContext) => Promise<Action>;

export interface ControllerContext {
  /** This agent's node (its --node-name). */
  nodeName: string;
  /** The current libvirt connection; the reconnecting wrapper may swap it between calls. */
  libvirt(): Connect;
  /**
   * Runs a call that waits long inside the daemon (a destroy waits for QEMU's process to be
   * gone) on a connection of its own (src/libvirt/lanes.ts), so it neither waits for nor
   * holds one of the main connection's few request slots. Absent (libvirt's in-process test
   * driver, unit tests): such calls go through libvirt() like any other.
   */
  onLane?<T>(fn: (conn: Connect) => Promise<T>): Promise<T>;
  now(): Date;
  log: Logger;
  /**
   * A directory the agent owns on this host for files that are not libvirt objects (e.g.
   * cloud-init NoCloud ISOs), default /var/lib/libvirt-operator; tests use a temp dir.
   */
  stateDir: string;
  /**
   * The first wait of the backoff a problem only the host can fix retries with (a
   * VirtualNetwork's node entry that is not Ready, a StoragePool, Volume or
   * VirtualMachineSnapshot condition; it doubles up to 5 min); absent: 5 s. An agent option,
   * so a test that must wait past a few retries (to tell a wake-up from a retry) waits
   * seconds, not half a minute.
   */
  retryMinMs?: number;
  /** What this agent keeps about its host between passes (pool locks, imports, ...). */
  host: HostState;
  /**
   * Reads the layers a qcow2 file's header names: the one read of a pool's file the agent
   * makes itself rather than through libvirt (volume/header-check.ts). Absent: the file's own
   * reader (volume/observe.ts readImageLayers); tests put one here to count or hold reads.
   */
  readImageLayers?(path: string): Promise<ImageLayers | undefined>;
  /**
   * How long a pass waits for that read before it goes on without it (a hung file system).
   * Absent: HEADER_READ_TIMEOUT_MS (volume/header-check.ts, 5 s); a test of the hung read
   * sets less, to wait for it in a fraction of the time.
   */
  headerReadTimeoutMs?: number;

  /** Read-only cache lookups (never an API call). Cluster-scoped kinds take namespace undefined. */
  get<T extends KubeObject>(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
  ): T | undefined;
  list<T extends KubeObject>(kind: VirtKind): T[];
  /** Objects whose index `index` lists `value`; the indexes are declared in ./indexes.ts. */
  byIndex<T extends KubeObject>(kind: VirtKind, index: string, value: string): T[];
  /** This agent's Node object (labels for nodeSelector matching); undefined if not found. */
  node(): KubeObject | undefined;
  /**
   * One object read from the API server itself, not a cache; undefined when it does not exist
   * (404). For what the caches cannot tell: whether a VirtualMachine that is not in this
   * node's cache exists on another node or nowhere. A request each time: not for hot paths.
   */
  getFromServer<T extends KubeObject>(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined>;

  /**
   * Names of up to `limit` Nodes `selector` matches, read from the API server (a consistent
   * list, not a cache: an agent caches only its own Node). For the one question no agent's
   * cache can answer: does a VirtualNetwork's or StoragePool's selector match any Node at all?
   */
  matchingNodes(selector: LabelSelector | undefined, limit: number): Promise<string[]>;

  /**
   * Server-side apply of `status` to obj's status subresource with the agent's field manager.
   * Does nothing when it equals what the cache holds, so a converged object costs no write.
   * Returns the object as the API server answered (undefined when nothing was written): a pass
   * that writes status twice must make the second write against the first one's answer.
   */
  applyStatus(kind: VirtKind, obj: KubeObject, status: object): Promise<KubeObject | undefined>;
  /**
   * Server-side apply of this node's entry in a cluster-scoped object's status.nodes[] (a
   * list-map keyed by nodeName) under a per-node field manager: agents never overwrite each other.
   * Then the summary; `match` as applySummary takes it, for an entry of a node the selector
   * dropped (shared/unselected.ts, matchAfter).
   */
  applyNodeStatus(
    kind: VirtKind,
    obj: KubeObject,
    entry: { nodeName: string } & object,
    match?: NodeMatch,
  ): Promise<void>;
  /**
   * Server-side apply of a cluster-scoped object's top-level summary alone (no entry of this
   * node), computed from the stored object and `match` (node-aggregate.ts), by an agent whose
   * Node the selector does not select. Does nothing when it equals what is stored.
   */
  applySummary(kind: VirtKind, obj: KubeObject, match: NodeMatch): Promise<void>;
  /**
   * Adds the finalizer if missing (the JSON patch tests the list it extends). Returns the
   * object as the API server answered the patch (`obj` itself when nothing was written): a
   * pass that goes on to write status must carry the new resourceVersion, or that write is
   * refused as a conflict and the object waits one more pass for its status.
   */
  ensureFinalizer<T extends KubeObject>(kind: VirtKind, obj: T, finalizer: string): Promise<T>;
  /** Removes the finalizer if present (the JSON patch tests the entry it removes). */
  removeFinalizer(kind: VirtKind, obj: KubeObject, finalizer: string): Promise<void>;
  /**
   * Deletes the object (precondition: its uid), for objects whose owner is gone: local control
   * planes have no garbage collector to follow owner references. A 404 counts as done.
   */
  deleteObject(kind: VirtKind, obj: KubeObject): Promise<void>;
  /**
   * Marks the start of a look at the host; call what it returns once the look showed nothing
   * left to do, naming the lifecycle changes (lifecycleChange) the pass's own calls made. Then
   * neither libvirt's events received before the look began nor those named (whenever they
   * come) run the pass again: the look already showed their effect. Absent outside an agent.
   */
  lookAtHost?(): (own?: readonly string[]) => void;
  /** A Kubernetes Event (events.k8s.io/v1), de-duplicated by the runtime. */
  event(
    kind: VirtKind,
    obj: KubeObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): void;
}

/** The finalizer namespaced objects (VirtualMachine, Volume) carry while they exist on a host. */
export const HOST_FINALIZER = 'virt.dev/host-cleanup';
/** Keeps a Volume while a VirtualMachine uses it or another Volume is backed by it. */
export const VOLUME_PROTECTION_FINALIZER = 'virt.dev/volume-protection';

/** What every node's finalizer (nodeFinalizer) begins with. */
export const NODE_FINALIZER_PREFIX = 'node.virt.dev/';

/**
 * Cluster-scoped objects (VirtualNetwork, StoragePool) exist on many hosts; each agent holds its
 * own finalizer and removes it once its host is clean. A finalizer's name part is at most 63
 * characters, so long node names are shortened with a hash that keeps them distinct.
 */
export function nodeFinalizer(nodeName: string): string {
  const prefix = NODE_FINALIZER_PREFIX;
  if (nodeName.length <= 63) return prefix + nodeName;
  const hash = createHash('sha256').update(nodeName).digest('hex').slice(0, 10);
  return `${prefix}${nodeName.slice(0, 52)}-${hash}`;
}
