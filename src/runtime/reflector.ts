// List-then-watch that never silently stops. The only ways out of the loop are the caller's
// abort signal; every error (transport, HTTP status, malformed line, a watch that goes quiet)
// leads to a new watch after a jittered backoff, and 410 Gone leads to a fresh list.
import { backoffDelay, type BackoffPolicy } from './backoff.js';
import { sleep } from './clock.js';
import { isGone, KubeApiError, type KubeClient } from './kube-client.js';
import {
  apiVersionOf,
  resourcePath,
  type KubeObject,
  type ManagedFieldsEntry,
  type ResourceDescription,
} from './resource.js';

export interface ReflectorOptions {
  resource: ResourceDescription;
  /** Watch only this namespace; default all namespaces (or the cluster scope). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Objects per list page. Default 500. */
  pageSize?: number;
  /**
   * The server ends each watch after a random time in this range (seconds), so that the
   * watches of many agents do not all reconnect together. Default [300, 600].
   */
  watchTimeoutSeconds?: [number, number];
  /**
   * A watch that delivers nothing (no event, no bookmark) for this long is presumed dead: a
   * hung server keeps the TCP connection open and silent. Must exceed the server's bookmark
   * interval (measured ~120 s on kube-apiserver 1.36). Default 180 s.
   */
  inactivityTimeoutMs?: number;
  /** Deadline for a list page or for a watch's response headers. Default 30 s. */
  requestTimeoutMs?: number;
  /** Delay between failed attempts. Default 0.8 s doubling to 30 s, jitter 0.5. */
  backoff?: BackoffPolicy;
}

/** Where the reflector delivers what it learns; the informer's cache. */
export interface ReflectorSink {
  replace(objs: KubeObject[]): void;
  upsert(obj: KubeObject): void;
  remove(obj: KubeObject): void;
}

export type RestartReason = 'expired' | 'gone' | 'inactivity' | 'error';
export type RelistReason = 'initial' | 'gone';

/** Hooks for metrics and logs; the reflector itself does not know either. */
export interface ReflectorObserver {
  relisted?(reason: RelistReason, count: number): void;
  watchRestarted?(reason: RestartReason, err?: unknown, delayMs?: number): void;
  watchEvent?(type: string): void;
}

export const DEFAULT_WATCH_BACKOFF: BackoffPolicy = { initialMs: 800, maxMs: 30_000, jitter: 0.5 };

interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KubeObject & { code?: number; reason?: string; message?: string };
}

class WatchInactive extends Error {
  override name = 'WatchInactive';
}

/**
 * Runs until `signal` aborts. Resolves then; never rejects. `synced` is called once, after the
 * first complete list reached the sink.
 */
export async function runReflector(
  client: KubeClient,
  opts: ReflectorOptions,
  sink: ReflectorSink,
  observer: ReflectorObserver,
  signal: AbortSignal,
  synced: () => void = () => undefined,
): Promise<void> {
  const backoff = opts.backoff ?? DEFAULT_WATCH_BACKOFF;
  const [minTimeout, maxTimeout] = opts.watchTimeoutSeconds ?? [300, 600];
  const inactivityMs = opts.inactivityTimeoutMs ?? 180_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  const path = resourcePath(opts.resource, { namespace: opts.namespace });
  const apiVersion = apiVersionOf(opts.resource);
  const selectors = { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector };
  const complete = (obj: KubeObject): KubeObject =>
    slim({
      apiVersion,
      kind: opts.resource.kind,
      ...obj,
    });

  let resourceVersion: string | undefined;
  let relistReason: RelistReason = 'initial';
  let failures = 0;
  let hasSynced = false;

  const list = async (): Promise<string> => {
    const items: KubeObject[] = [];
    let continueToken: string | undefined;
    do {
      // No resourceVersion: a consistent read from etcd, so a relist never goes back in time.
      const page = await client.request<{
        metadata: { resourceVersion: string; continue?: string };
        items: KubeObject[];
      }>({
        method: 'GET',
        path,
        query: { ...selectors, limit: opts.pageSize ?? 500, continue: continueToken },
        timeoutMs: requestTimeoutMs,
        signal,
      });
      for (const item of page.items) items.push(complete(item));
      continueToken = page.metadata.continue || undefined;
      if (!continueToken) {
        sink.replace(items);
        observer.relisted?.(relistReason, items.length);
        return page.metadata.resourceVersion;
      }
    } while (!signal.aborted);
    throw new Error('aborted');
  };

  /**
   * One watch connection. Returns the last resourceVersion seen; `attempt.delivered` tells
   * whether any event or bookmark arrived.
   */
  const watch = async (fromVersion: string, attempt: { delivered: boolean }): Promise<string> => {
    const inner = new AbortController();
    const onOuterAbort = () => inner.abort();
    signal.addEventListener('abort', onOuterAbort, { once: true });
    let inactive = false;
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        inactive = true;
        inner.abort();
      }, inactivityMs);
    };
    let version = fromVersion;
    try {
      arm();
      const timeoutSeconds = Math.floor(minTimeout + Math.random() * (maxTimeout - minTimeout + 1));
      const lines = await client.stream({
        path,
        query: {
          ...selectors,
          watch: 1,
          resourceVersion: fromVersion,
          allowWatchBookmarks: true,
          timeoutSeconds,
        },
        timeoutMs: Math.min(requestTimeoutMs, inactivityMs),
        signal: inner.signal,
      });
      for await (const line of lines) {
        arm();
        const event = line as WatchEvent;
        observer.watchEvent?.(event.type);
        if (event.type === 'ERROR') {
          const status = event.object;
          throw new KubeApiError(
            status.code ?? 500,
            status.reason ?? 'Error',
            status.message ?? '',
            'WATCH',
            path,
          );
        }
        // Only real progress counts: an ERROR first thing must not reset the backoff.
        attempt.delivered = true;
        const rv = event.object?.metadata?.resourceVersion;
        if (event.type === 'ADDED' || event.type === 'MODIFIED')
          sink.upsert(complete(event.object));
        else if (event.type === 'DELETED') sink.remove(complete(event.object));
        if (rv) version = rv;
      }
      if (inactive) throw new WatchInactive(`no watch event or bookmark for ${inactivityMs} ms`);
      return version;
    } catch (err) {
      if (inactive) throw new WatchInactive(`no watch event or bookmark for ${inactivityMs} ms`);
      throw err;
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener('abort', onOuterAbort);
      inner.abort();
    }
  };

  let consecutiveGone = 0;
  while (!signal.aborted) {
    const attempt = { delivered: false };
    try {
      if (resourceVersion === undefined) {
        resourceVersion = await list();
        if (!hasSynced) {
          hasSynced = true;
          synced();
        }
      }
      const started = Date.now();
      resourceVersion = await watch(resourceVersion, attempt);
      if (signal.aborted) break;
      // A normal end is the server's timeoutSeconds: reconnect at once. A server that closes
      // at once without a word is treated as failing, or this would spin.
      if (attempt.delivered || Date.now() - started >= 1000) {
        failures = 0;
        consecutiveGone = 0;
        observer.watchRestarted?.('expired', undefined, 0);
        continue;
      }
      throw new Error('the watch ended at once without an event');
    } catch (err) {
      if (signal.aborted) break;
      if (attempt.delivered) {
        failures = 0;
        consecutiveGone = 0;
      }
      if (isGone(err)) {
        // Our resourceVersion is older than etcd's compaction (or a continue token expired):
        // only a fresh list can tell what happened meanwhile. Relist at once, unless the
        // server keeps answering 410 to the version it just listed at.
        resourceVersion = undefined;
        relistReason = 'gone';
        const delay = consecutiveGone === 0 ? 0 : backoffDelay(backoff, consecutiveGone - 1);
        consecutiveGone++;
        observer.watchRestarted?.('gone', err, delay);
        if (delay > 0) await sleep(delay, signal);
        continue;
      }
      const reason: RestartReason = err instanceof WatchInactive ? 'inactivity' : 'error';
      const delay = backoffDelay(backoff, failures++);
      observer.watchRestarted?.(reason, err, delay);
      await sleep(delay, signal);
    }
  }
}

/**
 * One frozen copy of each distinct fieldsV1 tree, shared by every cached object that has it.
 * The agent's status applies own the same fields on every object of a kind in the same state
 * (a running VM's: some 70 nested objects, most of them `{}`), so 1,000 VMs share a handful
 * of trees instead of holding 70,000 objects. Bounded: when full it starts again (objects
 * keep the trees they have).
 */
const fieldTrees = new Map<string, Record<string, unknown>>();
const FIELD_TREES_MAX = 1024;

function sharedFields(entry: ManagedFieldsEntry): ManagedFieldsEntry {
  if (entry.fieldsV1 === undefined) return entry;
  const json = JSON.stringify(entry.fieldsV1);
  let tree = fieldTrees.get(json);
  if (!tree) {
    if (fieldTrees.size >= FIELD_TREES_MAX) fieldTrees.clear();
    tree = deepFreeze(entry.fieldsV1);
    fieldTrees.set(json, tree);
  }
  return { ...entry, fieldsV1: tree };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** kubectl's client-side apply keeps a full copy of the applied manifest here. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * What a cached object keeps of its metadata: of managedFields only the entries of status
 * applies, which the status writer reads to know which fields it owns (ownedStatusFields),
 * their trees shared between objects (sharedFields); no `kubectl apply` copy of the manifest.
 * Nothing in the runtime or the controllers reads the rest, and it is most of a small object:
 * a VirtualMachine created, patched for its finalizer and given a status carries three entries
 * that together outweigh its spec. With 1,000 objects
 * in an agent's caches that is memory held for nothing (issue 17, bench/README.md).
 */
export function slim(obj: KubeObject): KubeObject {
  const meta = obj.metadata;
  const fields = meta.managedFields;
  const annotations = meta.annotations;
  const pruneFields = fields !== undefined && fields.length > 0;
  const pruneAnnotations = annotations !== undefined && LAST_APPLIED in annotations;
  if (!pruneFields && !pruneAnnotations) return obj;
  const metadata = { ...meta };
  if (pruneFields) {
    const kept = fields
      .filter((e) => e.operation === 'Apply' && e.subresource === 'status')
      .map(sharedFields);
    if (kept.length > 0) metadata.managedFields = kept;
    else delete metadata.managedFields;
  }
  if (pruneAnnotations) {
    const { [LAST_APPLIED]: _copy, ...rest } = annotations;
    metadata.annotations = rest;
  }
  return { ...obj, metadata };
}
