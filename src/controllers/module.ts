// What a kind's folder hands the agent: everything the agent needs to run the kind, so the
// agent loops over one list (./kinds.ts) and knows no kind by name. A kind says which of its
// keys a change elsewhere wakes; the agent only routes changes to those functions.
import type { VirtKind } from '../api/generated/crds.js';
import type { CacheChange, IndexFunction } from '../runtime/cache.js';
import type { KindReconcile, KubeObject } from './context.js';

/** Read-only lookups over the agent's caches, for mapping a change to keys. */
export interface KeyLookup {
  /** Keys of `kind` objects whose index `index` lists `value` (indexes in ./indexes.ts). */
  keysByIndex(kind: VirtKind, index: string, value: string): string[];
  /** Every cached key of `kind`. */
  keys(kind: VirtKind): string[];
}

/** Keys of the module's kind to reconcile because an object of `from` changed. */
export interface Trigger {
  /** The kind whose changes matter; 'Node' is this agent's own Node object. */
  from: VirtKind | 'Node';
  keys(change: CacheChange<KubeObject>, lookup: KeyLookup): string[];
}

export interface ControllerModule {
  kind: VirtKind;
  /**
   * Which objects this agent watches: 'node' = those whose spec.nodeName is this node (a CRD
   * selectable field), 'cluster' = all of them.
   */
  watch: 'node' | 'cluster';
  reconcile: KindReconcile;
  /** Cache indexes on this kind, queried with ctx.byIndex and KeyLookup.keysByIndex. */
  indexes: Record<string, IndexFunction<KubeObject>>;
  triggers: Trigger[];
  /**
   * libvirt's lifecycle events about this kind's host objects, if it has any; each names its
   * object by UUID, which the kind's INDEX_UUID maps to the owner's key.
   */
  hostEvents?: 'domain' | 'network' | 'storagePool';
  /**
   * Keys of this kind to look at when libvirt reports a change of a host object that no
   * object owns (its UUID maps to no key of the kind whose hostEvents it is: a domain defined
   * with virsh, say), for what such an object holds up here.
   */
  unownedHostEvents?: {
    source: NonNullable<ControllerModule['hostEvents']>;
    keys(lookup: KeyLookup): string[];
  };
  /** Passes run at once for this kind, unless the agent is told otherwise. Default 16. */
  concurrency?: number;
  /**
   * How often every key of this kind is looked at again when nothing wakes it, if more often
   * than the agent's resync: for what the host changes without an event.
   */
  resyncMs?: number;
}

/** The resync period of a kind: the agent's (0 = off), or the kind's own when shorter. Pure. */
export function kindResyncMs(module: Pick<ControllerModule, 'resyncMs'>, agentMs: number): number {
  if (agentMs <= 0 || module.resyncMs === undefined) return agentMs;
  return Math.min(agentMs, module.resyncMs);
}

/** The objects of a change: the new one, and on an update the old one too. */
export function changed<T extends KubeObject>(change: CacheChange<T>): T[] {
  return change.type === 'updated' ? [change.obj, change.old] : [change.obj];
}
