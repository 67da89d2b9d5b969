// The agent's writes to the API server: status by server-side apply (one field manager for
// namespaced objects, one per node for the shared status.nodes[] of cluster-scoped ones),
// finalizers by JSON patch that tests the list it changes, and Events. The agent's cached context
// and the snapshot context the controller tests use both write through this, so the tests
// exercise exactly what runs in production.
import { customResources, type VirtKind } from '../api/generated/crds.js';
import type { Condition } from '../api/conditions.js';
import { afterStatusWritten } from '../controllers/shared/after-write.js';
import { keyOf, type ControllerContext, type KubeObject } from '../controllers/context.js';
import {
  aggregateStatus,
  entriesHoldingBack,
  entriesWith,
  lookupKey,
  nodesToLookUp,
  pruneLookups,
  summaryEvent,
  withoutGoneNodes,
  type NodeEntryLike,
  type NodeLookups,
} from '../controllers/node-aggregate.js';
import {
  createStatusWriter,
  type StatusWriter,
  type StatusWriterOptions,
} from '../runtime/status-writer.js';
import type { EventRecorder } from '../runtime/events.js';
import {
  addFinalizerPatch,
  FinalizerConflict,
  patchFinalizers,
  removeFinalizerPatch,
} from '../runtime/finalizer.js';
import { isNotFound, ownWriteUnseen, type KubeClient } from '../runtime/kube-client.js';
import type { Logger } from '../runtime/log.js';
import { createCrdSkew, type CrdSkew } from './crd-skew.js';
import { keyPath, referenceTo, type ResourceDescription } from '../runtime/resource.js';

export const FIELD_MANAGER = 'libvirt-operator';
export const nodeFieldManager = (nodeName: string): string => `${FIELD_MANAGER}/${nodeName}`;
/** The top-level status of VirtualNetwork and StoragePool, shared by every agent. */
const SUMMARY_FIELD_MANAGER = `${FIELD_MANAGER}-summary`;
/** How many Nodes of entries holding a summary back one write looks up (each a GET). */
const NODES_LOOKED_UP = 10;

export type KubeWrites = Pick<
  ControllerContext,
  | 'applyStatus'
  | 'applyNodeStatus'
  | 'applySummary'
  | 'ensureFinalizer'
  | 'removeFinalizer'
  | 'deleteObject'
  | 'event'
>;

export interface KubeWritesOptions {
  client: KubeClient;
  events: EventRecorder;
  nodeName: string;
  log: Logger;
  /**
   * The Nodes looked up for summaries, kept between passes (HostState.nodesLookedUp).
   * Default: kept by this writer only.
   */
  nodesLookedUp?: NodeLookups;
  /** How status writers are made; the runtime's adds its metrics. Default: plain. */
  statusWriter?: (opts: StatusWriterOptions) => StatusWriter;
  /** Where refusals by an outdated CRD are told (the agent's readiness reads it). */
  crdSkew?: CrdSkew;
}

type NodeAggregated = KubeObject & {
  status?: { conditions?: Condition[]; nodes?: NodeEntryLike[] };
};

export function resourceOf(kind: VirtKind): ResourceDescription {
  const info = customResources[kind];
  return {
    group: info.group,
    version: info.version,
    plural: info.plural,
    kind,
    namespaced: info.scope === 'Namespaced',
  };
}

export function kubeWrites(opts: KubeWritesOptions): KubeWrites {
  const { client, log } = opts;
  const makeWriter = opts.statusWriter ?? ((o) => createStatusWriter(client, o));
  const writers = new Map<string, StatusWriter>();
  const skew =
    opts.crdSkew ??
    createCrdSkew({
      log,
      event: (kind, obj, reason, note) => publish(kind, obj, 'Warning', reason, note),
    });
  const writer = (kind: VirtKind, fieldManager: string) => {
    const id = `${kind}/${fieldManager}`;
    let w = writers.get(id);
    if (!w) {
      const made = makeWriter({
        resource: resourceOf(kind),
        fieldManager,
        listMapKeys: { nodes: ['nodeName'], 'nodes.conditions': ['type'], interfaces: ['name'] },
        // Status carries values derived from the previous status (restartCount, startedAt,
        // when a shutdown began): never apply one computed from a stale cache.
        optimisticConcurrency: true,
      });
      w = {
        plan: made.plan,
        async apply(current, status) {
          try {
            const written = await made.apply(current, status);
            // Undefined is "unchanged": the status already says what this writer would write
            // (another agent wrote the shared summary once the CRDs were applied), so nothing
            // of it is held back either; waiting for a write that will not come kept
            // readiness failing until the lapse.
            skew.written(current, id);
            return written;
          } catch (err) {
            throw skew.failed(kind, current, id, err);
          }
        },
      };
      writers.set(id, w);
    }
    return w;
  };
  const nodeManager = nodeFieldManager(opts.nodeName);
  // The resourceVersion each object had when we added our finalizer to it, until the cache
  // shows the finalizer. A pass whose cache still has that version (the watch has not brought
  // our patch back yet) would send the same patch again, and its `test` op would certainly
  // fail (422, a FinalizerConflict): refused here instead, without the round trip. Under load
  // a third of the VMs of a 1,000-VM burst did that (bench/README.md, "Convergence").
  const finalizerAddedAt = new Map<string, string | undefined>();
  const FINALIZERS_REMEMBERED = 4096;
  const writeSummary = async (
    kind: VirtKind,
    current: NodeAggregated,
    top: { conditions: Condition[] },
  ) => {
    const written = await writer(kind, SUMMARY_FIELD_MANAGER).apply(current, { ...top });
    const turned = written && summaryEvent(current.status?.conditions, top.conditions);
    if (turned) publish(kind, current, 'Warning', turned.reason, turned.message);
  };
  const nodesLookedUp = opts.nodesLookedUp ?? new Map();
  const LOOKUPS_KEPT = 1024;
  // The entries the summary counts: those holding it back are looked up (a consistent GET of
  // each Node, so every agent asking gets the same answer) and a deleted Node's are left out.
  // Answers are kept (NodeLookups): without that, one node stuck on a lasting state cost a GET
  // by every other agent at every pass of the object, each ending with a summary.
  const counted = async (current: NodeAggregated, entries: NodeEntryLike[]) => {
    const generation = current.metadata.generation ?? 0;
    const suspects = entriesHoldingBack(generation, entries, opts.nodeName, NODES_LOOKED_UP);
    const now = Date.now();
    if (nodesLookedUp.size > LOOKUPS_KEPT) pruneLookups(nodesLookedUp, now);
    const key = (name: string) => lookupKey(String(current.metadata.uid), generation, name);
    const { ask, gone } = nodesToLookUp(suspects, nodesLookedUp, key, now);
    for (const name of ask) {
      let exists = true;
      try {
        await client.request({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(name)}` });
      } catch (err) {
        if (!isNotFound(err)) throw err;
        exists = false;
        gone.push(name);
      }
      nodesLookedUp.set(key(name), { exists, at: now });
    }
    return withoutGoneNodes(entries, gone);
  };
  const publish: KubeWrites['event'] = (kind, obj, type, reason, message) => {
    void opts.events
      .publish(referenceTo(resourceOf(kind), obj), { type, reason, action: reason, note: message })
      .catch((err: unknown) => log.warn({ err: String(err), reason }, 'could not record event'));
  };
  return {
    async applyStatus(kind, obj, status) {
      return writer(kind, FIELD_MANAGER).apply(obj, status as Record<string, unknown>);
    },
    async applyNodeStatus(kind, obj, entry, match) {
      const written = await writer(kind, nodeManager).apply(obj, { nodes: [entry] });
      // The top-level summary, computed from the object as it now stands (see
      // node-aggregate.ts) and applied under one field manager that every agent shares, so
      // whichever agent writes it owns all of it: no per-field mix of node managers that one
      // node's later apply could tear apart. Written only when it changed.
      const current = (written ?? obj) as NodeAggregated;
      try {
        const top = aggregateStatus(
          current.metadata.generation ?? 0,
          current.status?.conditions,
          await counted(current, entriesWith(current.status?.nodes, entry as NodeEntryLike)),
          new Date(),
          match,
        );
        await writeSummary(kind, current, top);
      } catch (err) {
        // The entry is stored: the Events that follow its write are owed (after-write.ts).
        throw written ? afterStatusWritten(err) : err;
      }
    },
    async applySummary(kind, obj, match) {
      const current = obj as NodeAggregated;
      const top = aggregateStatus(
        current.metadata.generation ?? 0,
        current.status?.conditions,
        await counted(current, current.status?.nodes ?? []),
        new Date(),
        match,
      );
      await writeSummary(kind, current, top);
    },
    async ensureFinalizer(kind, obj, finalizer) {
      const id = `${kind}/${String(obj.metadata.uid)}/${finalizer}`;
      if (obj.metadata.finalizers?.includes(finalizer)) {
        finalizerAddedAt.delete(id);
        return obj;
      }
      if (finalizerAddedAt.has(id) && finalizerAddedAt.get(id) === obj.metadata.resourceVersion) {
        throw ownWriteUnseen(
          new FinalizerConflict(
            `${kind} ${keyOf(obj)}: our finalizer was added to resourceVersion ${obj.metadata.resourceVersion}, which the cache still shows; not sent again`,
          ),
        );
      }
      const body = addFinalizerPatch(obj, finalizer);
      const patched = await patchFinalizers(client, resourceOf(kind), obj, body, 'add');
      // Gone meanwhile: nothing may be created on the host for it without its finalizer.
      if (!patched)
        throw new Error(`${kind} ${keyOf(obj)} was deleted before its finalizer was added`);
      finalizerAddedAt.delete(id);
      finalizerAddedAt.set(id, obj.metadata.resourceVersion);
      if (finalizerAddedAt.size > FINALIZERS_REMEMBERED) {
        finalizerAddedAt.delete(finalizerAddedAt.keys().next().value as string);
      }
      return patched as typeof obj;
    },
    async removeFinalizer(kind, obj, finalizer) {
      if (!obj.metadata.finalizers?.includes(finalizer)) return;
      // A 404 (already gone: the cache has not seen the deletion yet) is what this wanted.
      const body = removeFinalizerPatch(obj, finalizer);
      await patchFinalizers(client, resourceOf(kind), obj, body, 'remove');
    },
    async deleteObject(kind, obj) {
      try {
        await client.request({
          method: 'DELETE',
          path: keyPath(resourceOf(kind), keyOf(obj)),
          // The uid precondition: a newer object with the same name is not ours to delete.
          body: {
            kind: 'DeleteOptions',
            apiVersion: 'v1',
            preconditions: { uid: obj.metadata.uid },
          },
        });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    },
    event: publish,
  };
}
