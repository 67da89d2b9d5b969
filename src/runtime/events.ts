// Kubernetes Events (events.k8s.io/v1) that a retry loop cannot turn into a flood. The first
// occurrence of an event (same object, type, reason, action and note) is created; repeats
// within `seriesWindowMs` only raise an in-process count, written as the Event's `series` at
// most once per `seriesFlushMs`. New Events about one object share that object's token bucket
// (as client-go's spam filter does); over it they are dropped (counted in metrics and logged at
// debug), never queued without bound. Per object, because a bucket shared by all objects let
// the first objects of a burst (say 30 Volumes created at once) use it up, and the Warnings of
// the objects that failed next were lost for good: conditions only warn on a transition.
import { tokenBucket, type TokenBucket } from './backoff.js';
import { microTime, systemClock, type Clock, type TimerHandle } from './clock.js';
import { CONTENT_TYPE, isNotFound, type KubeClient } from './kube-client.js';
import { errorFields, type Logger } from './log.js';
import type { RuntimeMetrics } from './metrics.js';
import type { ObjectReference } from './resource.js';

export interface EventRecorderOptions {
  /** The controller's name, e.g. 'virt.dev/libvirt-operator'. */
  reportingController: string;
  /** This instance, e.g. '<controller>-<node>'. At most 128 characters. */
  reportingInstance: string;
  /** Repeats within this window join a series. Default 10 min. */
  seriesWindowMs?: number;
  /** A series' count is written at most this often. Default 30 s. */
  seriesFlushMs?: number;
  /** New Events per second (burst), per object. Default 1/s, burst 25. */
  rateLimit?: { perSecond: number; burst: number };
  /** Namespace for Events about cluster-scoped objects. Default 'default'. */
  clusterScopedNamespace?: string;
  clock?: Clock;
  log: Logger;
  metrics?: RuntimeMetrics;
}

export interface EventNote {
  type: 'Normal' | 'Warning';
  /** CamelCase, machine-readable: 'Created', 'ImageMissing'. */
  reason: string;
  /** What was done or failed: 'Define', 'Start', 'Reconcile'. */
  action: string;
  /** For people; at most 1 kB. */
  note: string;
  related?: ObjectReference;
}

export interface EventRecorder {
  /** Never rejects: an event that cannot be written is logged, not thrown into a reconcile. */
  publish(regarding: ObjectReference, event: EventNote): Promise<void>;
  /** Writes pending series counts now (at shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface Series {
  name: string;
  namespace: string;
  count: number;
  written: number;
  lastObserved: number;
  lastWrite: number;
  timer?: TimerHandle;
  /** Set while the create is in flight; repeats wait for it before patching. */
  created: Promise<boolean>;
}

/** The identity of "the same event again". */
export function eventIdentity(regarding: ObjectReference, e: EventNote): string {
  return JSON.stringify([objectIdentity(regarding), e.type, e.reason, e.action, e.note]);
}

function objectIdentity(regarding: ObjectReference): string {
  return regarding.uid ?? `${regarding.kind}/${regarding.namespace ?? ''}/${regarding.name}`;
}

const truncate = (s: string, max: number) =>
  Buffer.byteLength(s) <= max
    ? s
    : Buffer.from(s)
        .subarray(0, max - 3)
        .toString() + '...';

export function createEventRecorder(client: KubeClient, opts: EventRecorderOptions): EventRecorder {
  const clock = opts.clock ?? systemClock;
  const windowMs = opts.seriesWindowMs ?? 10 * 60_000;
  const flushMs = opts.seriesFlushMs ?? 30_000;
  const limit = opts.rateLimit ?? { perSecond: 1, burst: 25 };
  const buckets = new Map<string, { bucket: TokenBucket; lastUsed: number }>();
  /** After this long unused a bucket is full again, so it can be forgotten. */
  const refillMs = (limit.burst / limit.perSecond) * 1000;
  const bucketOf = (who: string, now: number) => {
    const entry = buckets.get(who) ?? { bucket: tokenBucket(limit.perSecond, limit.burst) };
    buckets.set(who, { ...entry, lastUsed: now });
    return entry.bucket;
  };
  const series = new Map<string, Series>();
  const inFlight = new Set<Promise<unknown>>();
  const log = opts.log.child({ component: 'events' });
  let closed = false;
  let sequence = 0;

  const track = <T>(p: Promise<T>): Promise<T> => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    return p;
  };

  const sweep = () => {
    const now = clock.now();
    for (const [id, s] of series) {
      if (now - s.lastObserved > windowMs && !s.timer) series.delete(id);
    }
    for (const [who, b] of buckets) if (now - b.lastUsed > refillMs) buckets.delete(who);
  };

  const writeSeries = async (id: string, s: Series) => {
    s.timer = undefined;
    if (s.count <= s.written || !(await s.created)) return;
    const count = s.count;
    s.lastWrite = clock.now();
    try {
      await client.request({
        method: 'PATCH',
        path: `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(s.namespace)}/events/${encodeURIComponent(s.name)}`,
        contentType: CONTENT_TYPE.mergePatch,
        body: { series: { count, lastObservedTime: microTime(s.lastObserved) } },
      });
      s.written = Math.max(s.written, count);
      opts.metrics?.eventsEmitted.inc({ result: 'series_updated' });
    } catch (err) {
      opts.metrics?.eventsEmitted.inc({ result: 'error' });
      // An Event expires (1 h by default) or is deleted: start a new one next time.
      if (isNotFound(err)) series.delete(id);
      else log.warn(errorFields(err), 'could not update event series');
    }
  };

  const schedule = (id: string, s: Series) => {
    if (s.timer || closed) return;
    const wait = Math.max(0, s.lastWrite + flushMs - clock.now());
    s.timer = clock.setTimer(() => void track(writeSeries(id, s)), wait);
  };

  let sweeperHandle: TimerHandle = clock.setTimer(function again() {
    sweep();
    sweeperHandle = clock.setTimer(again, windowMs);
  }, windowMs);

  return {
    async publish(regarding, e) {
      if (closed) return;
      const now = clock.now();
      const id = eventIdentity(regarding, e);
      const existing = series.get(id);
      if (existing && now - existing.lastObserved <= windowMs) {
        existing.count++;
        existing.lastObserved = now;
        opts.metrics?.eventsEmitted.inc({ result: 'suppressed' });
        schedule(id, existing);
        return;
      }
      if (!bucketOf(objectIdentity(regarding), now).tryTake(now)) {
        opts.metrics?.eventsEmitted.inc({ result: 'dropped' });
        log.debug({ reason: e.reason, object: regarding.name }, 'event dropped by rate limit');
        return;
      }
      const namespace = regarding.namespace ?? opts.clusterScopedNamespace ?? 'default';
      const name = `${regarding.name}.${now.toString(16)}${(sequence++ % 4096).toString(16).padStart(3, '0')}`;
      const body = {
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        metadata: { name, namespace },
        eventTime: microTime(now),
        reportingController: opts.reportingController,
        reportingInstance: opts.reportingInstance,
        type: e.type,
        reason: truncate(e.reason, 128),
        action: truncate(e.action, 128),
        note: truncate(e.note, 1024),
        regarding,
        ...(e.related ? { related: e.related } : {}),
      };
      const s: Series = {
        name,
        namespace,
        count: 1,
        written: 1,
        lastObserved: now,
        lastWrite: now,
        created: Promise.resolve(false),
      };
      const create = track(
        client
          .request({
            method: 'POST',
            path: `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`,
            body,
          })
          .then(
            () => {
              opts.metrics?.eventsEmitted.inc({ result: 'created' });
              return true;
            },
            (err: unknown) => {
              opts.metrics?.eventsEmitted.inc({ result: 'error' });
              log.warn(
                { ...errorFields(err), reason: e.reason, object: regarding.name },
                'could not create event',
              );
              series.delete(id);
              return false;
            },
          ),
      );
      s.created = create;
      series.set(id, s);
      await create;
    },
    async flush() {
      const writes: Promise<void>[] = [];
      for (const [id, s] of series) {
        if (s.timer) clock.clearTimer(s.timer);
        s.timer = undefined;
        if (s.count > s.written) writes.push(track(writeSeries(id, s)));
      }
      await Promise.all([...writes, ...inFlight]);
    },
    async close() {
      if (closed) return;
      clock.clearTimer(sweeperHandle);
      await this.flush();
      closed = true;
    },
  };
}
