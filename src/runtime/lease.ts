// A coordination.k8s.io/v1 Lease that keeps two processes with the same identity scope (two
// agents started for the same node: a rolling update, a mistake) from reconciling at once.
// The algorithm is client-go's leader election:
//  - a candidate reads the Lease every retryPeriod; it takes it when it is free, released, or
//    unchanged for leaseDuration by the candidate's own clock (the holder's renewTime is never
//    compared with our clock, so clock skew between hosts does not matter);
//  - the holder renews every retryPeriod with the resourceVersion it read (a conflict means
//    someone else wrote it) and gives up when no renewal succeeded for renewDeadline, measured
//    from when the last successful renewal was *sent*;
//  - renewDeadline < leaseDuration: the old holder stops before anyone may take over, and the
//    difference is the bound for draining its in-flight work.
import { microTime, sleep } from './clock.js';
import {
  isAlreadyExists,
  isConflict,
  isNotFound,
  KubeApiError,
  type KubeClient,
} from './kube-client.js';
import { errorFields, type Logger } from './log.js';
import type { RuntimeMetrics } from './metrics.js';

export interface LeaseOptions {
  namespace: string;
  /** e.g. 'libvirt-operator-<node>'. */
  name: string;
  /** Unique per process: host, pid and a random part. */
  identity: string;
  /** Written into the Lease; how long others wait after the last renewal. Default 15 s. */
  leaseDurationSeconds?: number;
  /** Default 10 s; must be less than the lease duration. */
  renewDeadlineMs?: number;
  /** Default 2 s. */
  retryPeriodMs?: number;
}

export interface LeaseHooks {
  onAcquired(): void;
  /** Called when renewal failed for renewDeadline or someone else took the Lease. */
  onLost(): void;
}

export interface LeaseHandle {
  isHeld(): boolean;
  /**
   * Why the Lease is not held (for /readyz and logs): the API's refusal (a missing namespace,
   * RBAC), or the other holder. undefined while held.
   */
  whyNotHeld(): string | undefined;
  /** Stops renewing; with release, hands the Lease back so a successor need not wait. */
  stop(opts?: { release?: boolean }): Promise<void>;
  /** The time (ms) a successor may have to wait after we lose it, the drain bound. */
  drainBoundMs: number;
}

export interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface LeaseObject {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

export type LeaseDecision = 'renew' | 'acquire' | 'wait';

/**
 * Whether we may write ourselves into the Lease. `observedAt` is when we (by our clock) first
 * saw its current resourceVersion.
 */
export function leaseDecision(
  spec: LeaseSpec,
  identity: string,
  observedAt: number,
  now: number,
): LeaseDecision {
  if (spec.holderIdentity === identity) return 'renew';
  if (!spec.holderIdentity) return 'acquire';
  const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
  return observedAt + durationMs <= now ? 'acquire' : 'wait';
}

/** What keeps us from taking the Lease, in words a person can act on. Pure. */
export function acquisitionProblem(err: unknown, namespace: string): string {
  if (err instanceof KubeApiError) {
    if (err.status === 404 && /\bnamespaces? "?[^"\s]*"? ?not found/.test(err.message))
      return `namespace ${namespace} not found: create it (kubectl create namespace ${namespace}) or pass --lease-namespace`;
    if (err.status === 403)
      return `forbidden to read or write Leases in namespace ${namespace}: grant get/create/update on coordination.k8s.io leases (${err.message})`;
  }
  return `the API server refused or did not answer: ${err instanceof Error ? err.message : String(err)}`;
}

export function startLease(
  client: KubeClient,
  opts: LeaseOptions,
  hooks: LeaseHooks,
  deps: { log: Logger; metrics?: RuntimeMetrics },
): LeaseHandle {
  const durationSeconds = opts.leaseDurationSeconds ?? 15;
  const renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
  const retryPeriodMs = opts.retryPeriodMs ?? 2_000;
  if (!Number.isInteger(durationSeconds) || durationSeconds < 1) {
    throw new Error(`leaseDurationSeconds must be a whole number >= 1, got ${durationSeconds}`);
  }
  if (renewDeadlineMs >= durationSeconds * 1000) {
    throw new Error(
      `renewDeadlineMs (${renewDeadlineMs}) must be less than the lease duration (${durationSeconds} s)`,
    );
  }
  if (retryPeriodMs >= renewDeadlineMs) {
    throw new Error(
      `retryPeriodMs (${retryPeriodMs}) must be less than renewDeadlineMs (${renewDeadlineMs})`,
    );
  }
  const path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(opts.namespace)}/leases`;
  const log = deps.log.child({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
  const labels = { lease: `${opts.namespace}/${opts.name}` };
  const abort = new AbortController();
  let held = false;
  let notHeld = 'not acquired yet: the first attempt is under way';
  let lostTimer: ReturnType<typeof setTimeout> | undefined;
  let observed: { resourceVersion?: string; at: number; lease?: LeaseObject } = { at: 0 };
  /** Whether we ever sent our identity to the server: only then can there be a Lease to hand back. */
  let sentWrite = false;
  deps.metrics?.leaseHeld.set(labels, 0);

  const lose = (why: string) => {
    if (!held) return;
    clearTimeout(lostTimer);
    held = false;
    notHeld = `lost: ${why}`;
    deps.metrics?.leaseHeld.set(labels, 0);
    log.warn({ why }, 'lease lost');
    hooks.onLost();
  };

  const body = (spec: LeaseSpec, resourceVersion?: string): LeaseObject => ({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: opts.name,
      namespace: opts.namespace,
      ...(resourceVersion ? { resourceVersion } : {}),
    },
    spec,
  });

  // A renewal must not outlive the time we have left, or a hung server would keep us "holding".
  const requestTimeout = () => Math.max(500, Math.min(renewDeadlineMs / 2, retryPeriodMs * 2));

  /** Creates or replaces the Lease; true when written, false when `lostRace` says another writer won. */
  const write = async (
    now: number,
    method: 'POST' | 'PUT',
    at: string,
    lease: LeaseObject,
    lostRace: (err: unknown) => boolean,
  ): Promise<boolean> => {
    sentWrite = true;
    try {
      const written = await client.request<LeaseObject>({
        method,
        path: at,
        body: lease,
        timeoutMs: requestTimeout(),
        signal: abort.signal,
      });
      observed = { resourceVersion: written.metadata.resourceVersion, at: now, lease: written };
      return true;
    } catch (err) {
      if (lostRace(err)) return false;
      throw err;
    }
  };

  /** One attempt; true when we hold the Lease afterwards. */
  const acquireOrRenew = async (now: number): Promise<boolean> => {
    let lease: LeaseObject;
    try {
      lease = await client.request<LeaseObject>({
        method: 'GET',
        path: `${path}/${encodeURIComponent(opts.name)}`,
        timeoutMs: requestTimeout(),
        signal: abort.signal,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const spec: LeaseSpec = {
        holderIdentity: opts.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };
      // Someone else created it first: not ours this round.
      return write(now, 'POST', path, body(spec), isAlreadyExists);
    }
    if (lease.metadata.resourceVersion !== observed.resourceVersion) {
      observed = { resourceVersion: lease.metadata.resourceVersion, at: now, lease };
    }
    const decision = leaseDecision(lease.spec ?? {}, opts.identity, observed.at, now);
    if (decision === 'wait') {
      if (held) lose(`taken by ${lease.spec.holderIdentity}`);
      const holder = lease.spec.holderIdentity ?? '';
      const why = `held by ${holder} (renewed ${lease.spec.renewTime ?? 'never'}); taken over when not renewed for ${lease.spec.leaseDurationSeconds ?? 0} s`;
      if (!notHeld.startsWith(`held by ${holder} `))
        log.warn({ holder }, `lease ${opts.namespace}/${opts.name} ${why}`);
      notHeld = why;
      return false;
    }
    const spec: LeaseSpec = {
      ...lease.spec,
      holderIdentity: opts.identity,
      leaseDurationSeconds: durationSeconds,
      renewTime: microTime(now),
    };
    if (decision === 'acquire') {
      spec.acquireTime = microTime(now);
      spec.leaseTransitions = (lease.spec?.leaseTransitions ?? 0) + 1;
    }
    // Someone else wrote it since our read: not ours this round.
    const at = `${path}/${encodeURIComponent(opts.name)}`;
    return write(now, 'PUT', at, body(spec, lease.metadata.resourceVersion), isConflict);
  };

  // Candidates spread their polls a little, as client-go's JitterUntil does, but look again
  // right when the holder's lease would expire instead of up to a whole period later.
  const candidateWait = (now: number): number => {
    const jittered = retryPeriodMs * (1 + Math.random() * 0.2);
    const spec = observed.lease?.spec;
    if (!spec?.holderIdentity || spec.holderIdentity === opts.identity) return jittered;
    const expiresIn = observed.at + (spec.leaseDurationSeconds ?? 0) * 1000 - now;
    return Math.max(10, Math.min(jittered, expiresIn + 10));
  };

  const loop = async () => {
    while (!abort.signal.aborted) {
      const sentAt = Date.now();
      let ok = false;
      try {
        ok = await acquireOrRenew(sentAt);
      } catch (err) {
        if (abort.signal.aborted) break;
        if (held) log.warn(errorFields(err), 'lease renewal failed');
        else {
          // One error line per cause, not one per retry: the cause (a missing namespace,
          // missing RBAC) needs a person, and /readyz shows it for as long as it lasts.
          const why = acquisitionProblem(err, opts.namespace);
          if (why !== notHeld) log.error(errorFields(err), `cannot take the lease: ${why}`);
          notHeld = why;
        }
      }
      if (abort.signal.aborted) break;
      if (ok) {
        clearTimeout(lostTimer);
        lostTimer = setTimeout(
          () => lose(`not renewed for ${renewDeadlineMs} ms`),
          sentAt + renewDeadlineMs - Date.now(),
        );
        lostTimer.unref();
        if (!held) {
          held = true;
          deps.metrics?.leaseHeld.set(labels, 1);
          deps.metrics?.leaseTransitions.inc(labels);
          log.info('lease acquired');
          hooks.onAcquired();
        }
      }
      await sleep(held ? retryPeriodMs : candidateWait(Date.now()), abort.signal);
    }
  };
  const running = loop();

  return {
    isHeld: () => held,
    whyNotHeld: () => (held ? undefined : notHeld),
    drainBoundMs: durationSeconds * 1000 - renewDeadlineMs,
    async stop(stopOpts = {}) {
      abort.abort();
      await running;
      clearTimeout(lostTimer);
      held = false;
      deps.metrics?.leaseHeld.set(labels, 0);
      // Not only when we believe we hold it: a starved process may have given it up by its
      // own clock while the server still names us, or our last write may have landed unseen.
      if (!stopOpts.release || !sentWrite) return;
      try {
        if (await release()) log.info('lease released');
      } catch (err) {
        log.warn(errorFields(err), 'could not release the lease');
      }
    },
  };

  /**
   * client-go's release: an empty holder and a 1 s duration. Written on a fresh read, not on
   * the version we last saw: a renewal the server applied while we aborted it, or anyone's
   * edit, would make that one a conflict and leave successors waiting out the lease. The read
   * also keeps us from overwriting a successor that took over meanwhile. True when released.
   */
  async function release(): Promise<boolean> {
    const at = `${path}/${encodeURIComponent(opts.name)}`;
    for (let attempt = 1; ; attempt++) {
      let lease: LeaseObject;
      try {
        lease = await client.request<LeaseObject>({ method: 'GET', path: at, timeoutMs: 5_000 });
      } catch (err) {
        // Deleted meanwhile (forget-node, a removed namespace): nothing left to hand back.
        if (isNotFound(err)) return false;
        throw err;
      }
      if (lease.spec?.holderIdentity !== opts.identity) return false;
      const spec = { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1 };
      try {
        await client.request({
          method: 'PUT',
          path: at,
          body: body({ ...spec, renewTime: microTime(Date.now()) }, lease.metadata.resourceVersion),
          timeoutMs: 5_000,
        });
        return true;
      } catch (err) {
        if (!isConflict(err) || attempt === 3) throw err;
      }
    }
  }
}
