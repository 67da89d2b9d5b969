// Writes status with server-side apply on the /status subresource, and only when it would
// change something: a converged controller makes no writes at all. Each writer has its own
// field manager; for cluster-scoped kinds whose status.nodes[] is a list-map keyed by
// nodeName, each agent applies only its own entry under a per-node manager
// (nodeFieldManager), so agents never remove or overwrite each other's entries.
import { createHash } from 'node:crypto';
import { CONTENT_TYPE, KubeApiError, ownWriteUnseen, type KubeClient } from './kube-client.js';
import type { RuntimeMetrics } from './metrics.js';
import { resourceLabel } from './metrics.js';
import {
  apiVersionOf,
  keyPath,
  objectKey,
  type KubeObject,
  type ResourceDescription,
} from './resource.js';
import {
  asJson,
  covers,
  ownsFieldsBeyond,
  settleTransitionTimes,
  type ListMapKeys,
} from './status-diff.js';

export interface StatusWriterOptions {
  resource: ResourceDescription;
  /** The server-side apply field manager, e.g. 'libvirt-operator' or nodeFieldManager(...). */
  fieldManager: string;
  /** List-maps inside status (see ListMapKeys); `conditions` lists are keyed by type. */
  listMapKeys?: ListMapKeys;
  now?: () => Date;
  metrics?: RuntimeMetrics;
  /**
   * Send the cached object's resourceVersion with the apply, so that a status computed from a
   * stale cache (our own previous write not yet seen by the watch) fails with 409 Conflict and
   * is retried, instead of overwriting newer status. Needed when status carries values derived
   * from the previous status (counters, first-seen times). Default false.
   */
  optimisticConcurrency?: boolean;
}

export interface StatusWriter {
  /**
   * Makes `status` (the fields this manager owns, complete: a field left out is released
   * and, if no one else owns it, removed) the object's status. `current` is the cached
   * object. Returns the updated object, or undefined when nothing needed writing.
   */
  apply(current: WithStatus, status: Record<string, unknown>): Promise<WithStatus | undefined>;
  /** The status that would be applied, with lastTransitionTimes settled; undefined if equal. */
  plan(current: WithStatus, status: Record<string, unknown>): Record<string, unknown> | undefined;
}

/** The field manager of one node's agent: `<base>/<node>`. */
export function nodeFieldManager(base: string, nodeName: string): string {
  const name = `${base}/${nodeName}`;
  // The API server limits manager names to 128 characters.
  if (name.length > 128) throw new Error(`field manager '${name}' is longer than 128 characters`);
  return name;
}

/** An object with the status this writer compares against. */
export type WithStatus = KubeObject & { status?: unknown };

/** Our manager's owned fields under status, from the object's managedFields. */
export function ownedStatusFields(obj: KubeObject, fieldManager: string): unknown {
  const entry = obj.metadata.managedFields?.find(
    (e) => e.manager === fieldManager && e.operation === 'Apply' && e.subresource === 'status',
  );
  return (entry?.fieldsV1 as Record<string, unknown> | undefined)?.['f:status'];
}

const LAST_APPLIED_LIMIT = 4096;

/**
 * What a status says, for telling a pass that computes it again from the same cached copy.
 * Without lastTransitionTimes: a condition that turns in this pass is stamped with the pass's
 * clock, so two passes a second apart would differ only there, and the second (which has
 * nothing to add) would count as a different status, refused as a certain conflict. A digest,
 * not the JSON: one is kept per object, for 1,000s of objects.
 */
export function inputDigest(status: Record<string, unknown>): string {
  const json = JSON.stringify(status, (key, value: unknown) =>
    key === 'lastTransitionTime' ? undefined : value,
  );
  return createHash('sha1').update(json).digest('base64');
}

export function createStatusWriter(client: KubeClient, opts: StatusWriterOptions): StatusWriter {
  const { resource, fieldManager } = opts;
  const listMapKeys = opts.listMapKeys ?? {};
  const now = opts.now ?? (() => new Date());
  const label = { resource: resourceLabel(resource) };

  // The last apply per object: the resourceVersion it was made against and its input. A pass
  // whose cache has not yet seen that write (the same resourceVersion) computing the same
  // status again has nothing to add: sending it anyway costs a request, and with optimistic
  // concurrency a certain 409. Bounded: the oldest entries go first.
  const lastApplied = new Map<string, { from: string | undefined; input: string }>();
  const remember = (key: string, entry: { from: string | undefined; input: string }) => {
    lastApplied.delete(key);
    lastApplied.set(key, entry);
    if (lastApplied.size > LAST_APPLIED_LIMIT) {
      lastApplied.delete(lastApplied.keys().next().value as string);
    }
  };

  const writer: StatusWriter = {
    plan(current, status) {
      const currentStatus = current.status;
      // RFC 3339 with seconds, as metav1.Time serialises; milliseconds would never compare equal.
      const stamp = now()
        .toISOString()
        .replace(/\.\d{3}Z$/, 'Z');
      const desired = settleTransitionTimes(asJson(status), currentStatus, stamp, listMapKeys);
      const unchanged =
        covers(currentStatus, desired, listMapKeys) &&
        !ownsFieldsBeyond(ownedStatusFields(current, fieldManager), desired);
      return unchanged ? undefined : desired;
    },
    async apply(current, status) {
      const key = `${current.metadata.uid ?? ''}/${objectKey(current)}`;
      const input = inputDigest(status);
      const from = current.metadata.resourceVersion;
      const last = lastApplied.get(key);
      const desired =
        last && last.from === from && last.input === input
          ? undefined
          : writer.plan(current, status);
      if (!desired) {
        opts.metrics?.statusWrites.inc({ ...label, result: 'unchanged' });
        return undefined;
      }
      const path = keyPath(resource, objectKey(current), 'status');
      if (opts.optimisticConcurrency && last && last.from === from) {
        // A different status computed from the copy our own last write was made against: that
        // write changed the resourceVersion, so the server would refuse this one with 409 for
        // certain. Refused here instead, as the same Conflict, without the round trip (in a
        // burst of new VMs a fifth of them made one: bench/README.md, "Convergence").
        opts.metrics?.statusWrites.inc({ ...label, result: 'stale' });
        throw ownWriteUnseen(
          new KubeApiError(
            409,
            'Conflict',
            `status computed from resourceVersion ${from}, which our own last status write already replaced; not sent`,
            'PATCH',
            path,
          ),
        );
      }
      const { name, namespace } = current.metadata;
      try {
        const updated = await client.request<WithStatus>({
          method: 'PATCH',
          path,
          query: { fieldManager, force: true },
          contentType: CONTENT_TYPE.apply,
          // JSON is YAML: the apply content type takes it as is. No resourceVersion: an apply
          // states the fields we own, which is right whatever else changed meanwhile.
          body: {
            apiVersion: apiVersionOf(resource),
            kind: resource.kind,
            metadata: {
              name,
              ...(namespace ? { namespace } : {}),
              ...(opts.optimisticConcurrency
                ? { resourceVersion: current.metadata.resourceVersion }
                : {}),
            },
            status: desired,
          },
        });
        opts.metrics?.statusWrites.inc({ ...label, result: 'written' });
        remember(key, { from, input });
        return updated;
      } catch (err) {
        opts.metrics?.statusWrites.inc({ ...label, result: 'error' });
        throw err;
      }
    },
  };
  return writer;
}
