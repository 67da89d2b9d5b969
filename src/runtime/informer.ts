// A watched collection: the reflector keeping a cache current, and subscribers told about
// every change after the cache holds it (so a handler that reads the cache sees the change).
import { createObjectCache, type CacheChange, type ObjectCacheReader } from './cache.js';
import type { KubeClient } from './kube-client.js';
import { errorFields, type Logger } from './log.js';
import { resourceLabel, type RuntimeMetrics } from './metrics.js';
import { runReflector, type ReflectorOptions } from './reflector.js';
import type { KubeObject, ResourceDescription } from './resource.js';

/** What to check when an error will not go away by retrying alone. */
function hintFor(err: unknown): { hint?: string } {
  const status = (err as { status?: unknown } | undefined)?.status;
  if (status === 404)
    return { hint: 'the resource type is unknown to the API server: is its CRD installed?' };
  if (status === 401)
    return { hint: 'the API server rejected our credentials: check the kubeconfig or token' };
  if (status === 403)
    return { hint: 'RBAC forbids this: the service account needs list and watch on it' };
  return {};
}

export type ChangeHandler<T extends KubeObject = KubeObject> = (change: CacheChange<T>) => void;

export interface Informer<T extends KubeObject = KubeObject> {
  resource: ResourceDescription;
  cache: ObjectCacheReader<T>;
  subscribe(handler: ChangeHandler<T>): () => void;
  hasSynced(): boolean;
  /** Resolves after the first complete list reached the cache. */
  synced: Promise<void>;
  stop(): Promise<void>;
}

export interface InformerDeps {
  client: KubeClient;
  log: Logger;
  metrics?: RuntimeMetrics;
}

export function startInformer<T extends KubeObject = KubeObject>(
  opts: ReflectorOptions,
  deps: InformerDeps,
): Informer<T> {
  const cache = createObjectCache<T>();
  const handlers = new Set<ChangeHandler<T>>();
  const label = resourceLabel(opts.resource);
  const log = deps.log.child({
    resource: label,
    labelSelector: opts.labelSelector,
    fieldSelector: opts.fieldSelector,
  });
  const abort = new AbortController();
  let synced = false;
  let markSynced!: () => void;
  const syncedPromise = new Promise<void>((resolve) => (markSynced = resolve));

  const deliver = (changes: (CacheChange<T> | undefined)[]) => {
    deps.metrics?.cacheObjects.set({ resource: label }, cache.size());
    for (const change of changes) {
      if (!change) continue;
      for (const handler of handlers) {
        try {
          handler(change);
        } catch (err) {
          // A broken handler must not stop the watch or starve the other handlers.
          log.error({ ...errorFields(err), change: change.type }, 'change handler threw');
        }
      }
    }
  };

  const running = runReflector(
    deps.client,
    opts,
    {
      replace: (objs) => deliver(cache.replace(objs as T[])),
      upsert: (obj) => deliver([cache.upsert(obj as T)]),
      remove: (obj) => deliver([cache.remove(obj as T)]),
    },
    {
      relisted(reason, count) {
        deps.metrics?.watchRelists.inc({ resource: label, reason });
        log.info({ reason, count }, 'listed');
      },
      watchRestarted(reason, err, delayMs) {
        deps.metrics?.watchRestarts.inc({ resource: label, reason });
        if (reason === 'expired') log.debug('watch expired; re-watching');
        else
          log.warn(
            {
              reason,
              delayMs: Math.round(delayMs ?? 0),
              ...(err ? errorFields(err) : {}),
              ...hintFor(err),
            },
            'watch restarting',
          );
      },
      watchEvent(type) {
        deps.metrics?.watchEvents.inc({ resource: label, type });
      },
    },
    abort.signal,
    () => {
      synced = true;
      markSynced();
    },
  );

  return {
    resource: opts.resource,
    cache,
    subscribe(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    hasSynced: () => synced,
    synced: syncedPromise,
    async stop() {
      abort.abort();
      await running;
    },
  };
}
