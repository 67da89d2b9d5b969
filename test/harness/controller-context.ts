// A ControllerContext over a real API server without the runtime's watch cache: `refresh()`
// lists our kinds and this node into a snapshot, lookups read the snapshot, writes go to
// the API server. Reconcile tests call reconcile(key, ctx) directly and `converge()` them.
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { expect } from 'vitest';
import { customResources, type VirtKind } from '../../src/api/generated/crds.js';
import { kubeReads } from '../../src/agent/kube-reads.js';
import { kubeWrites } from '../../src/agent/kube-writes.js';
import { createHostState, type HostState } from '../../src/controllers/host-state.js';
import { CONTROLLER_MODULES } from '../../src/controllers/kinds.js';
import {
  keyOf,
  type Action,
  type ControllerContext,
  type KubeObject,
} from '../../src/controllers/context.js';
import type { Connect } from '../../src/libvirt/connection.js';
import { createEventRecorder } from '../../src/runtime/events.js';
import { createLogger } from '../../src/runtime/log.js';
import {
  createKubeClient,
  KubeApiError,
  type KubeClient,
  type KubeRequest,
} from '../../src/runtime/kube-client.js';

const MODULES = new Map(CONTROLLER_MODULES.map((m) => [m.kind, m]));

export interface RecordedEvent {
  kind: VirtKind;
  key: string;
  type: string;
  reason: string;
  message: string;
}

export interface SnapshotContext extends ControllerContext {
  refresh(): Promise<void>;
  /** Events recorded by controllers (they are also written to the API server). */
  events: RecordedEvent[];
  /** Count of write requests this context sent to the API server. */
  writes: number;
  /** Count of reads past the cache (getFromServer) this context sent to the API server. */
  reads: number;
  /**
   * When set, each request is first shown to it; an error it returns fails the request
   * without sending it (a refusal the real server could give, injected at a chosen request).
   */
  failRequest?: (req: KubeRequest) => Error | undefined;
}

export function snapshotContext(opts: {
  kubeConfig: KubeConfig;
  conn: Connect;
  nodeName: string;
  stateDir: string;
  /** The agent's host state; another context of the same agent shares it. Default: new. */
  host?: HostState;
}): SnapshotContext {
  const custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  const silentLog = createLogger({ level: 'silent' });
  // Every write request counts; Events are counted when a controller records one (their
  // requests go out later, batched into series), so they are left out here.
  const raw = createKubeClient(opts.kubeConfig);
  const client: KubeClient = {
    server: raw.server,
    stream: (req) => raw.stream(req),
    request: (req) => {
      const injected = ctx.failRequest?.(req);
      if (injected) return Promise.reject(injected);
      if (req.method === 'GET') ctx.reads++;
      else if (!req.path.startsWith('/apis/events.k8s.io/')) ctx.writes++;
      return raw.request(req);
    },
  };
  const host = opts.host ?? createHostState();
  const writes = kubeWrites({
    client,
    nodesLookedUp: host.nodesLookedUp,
    events: createEventRecorder(client, {
      reportingController: 'virt.dev/libvirt-operator',
      reportingInstance: `libvirt-operator-${opts.nodeName}`,
      log: silentLog,
    }),
    nodeName: opts.nodeName,
    log: silentLog,
  });
  let objects = new Map<VirtKind, Map<string, KubeObject>>();
  let node: KubeObject | undefined;

  const ctx: SnapshotContext = {
    nodeName: opts.nodeName,
    stateDir: opts.stateDir,
    host,
    libvirt: () => opts.conn,
    now: () => new Date(),
    log: process.env.LVO_TEST_LOG ? (console.log.bind(console) as never) : silentLog,
    events: [],
    writes: 0,
    reads: 0,
    async refresh() {
      const next = new Map<VirtKind, Map<string, KubeObject>>();
      for (const { kind } of CONTROLLER_MODULES) {
        const info = customResources[kind];
        const list = (await custom.listClusterCustomObject({
          group: info.group,
          version: info.version,
          plural: info.plural,
        })) as {
          items: KubeObject[];
        };
        next.set(kind, new Map(list.items.map((o) => [keyOf(o), o])));
      }
      objects = next;
      node = await raw
        .request<KubeObject>({ method: 'GET', path: `/api/v1/nodes/${opts.nodeName}` })
        .catch(() => undefined);
    },
    get<T extends KubeObject>(kind: VirtKind, namespace: string | undefined, name: string) {
      return objects.get(kind)?.get(namespace ? `${namespace}/${name}` : name) as T | undefined;
    },
    list<T extends KubeObject>(kind: VirtKind) {
      return [...(objects.get(kind)?.values() ?? [])] as T[];
    },
    byIndex<T extends KubeObject>(kind: VirtKind, index: string, value: string) {
      const fn = MODULES.get(kind)?.indexes[index];
      if (!fn) throw new Error(`no index ${index} on ${kind}`);
      return ctx.list<T>(kind).filter((o) => fn(o).includes(value));
    },
    node: () => node,
    ...kubeReads(client),
    ...writes,
    event(kind, obj, type, reason, message) {
      ctx.events.push({ kind, key: keyOf(obj), type, reason, message });
      ctx.writes++;
      writes.event(kind, obj, type, reason, message);
    },
  };
  return ctx;
}

/**
 * Runs reconcile for `key` with a fresh snapshot each pass until it returns done with no
 * requeue and `until()` holds, or fails after `maxPasses`. Errors thrown by reconcile are
 * retried, as the queue would; the last one is reported on failure.
 */
export async function converge(
  ctx: SnapshotContext,
  reconcile: (key: string, ctx: ControllerContext) => Promise<Action>,
  key: string,
  opts: { until?: () => boolean | Promise<boolean>; maxPasses?: number; delayMs?: number } = {},
): Promise<number> {
  let lastError: unknown;
  const max = opts.maxPasses ?? 20;
  for (let pass = 1; pass <= max; pass++) {
    await ctx.refresh();
    try {
      const action = await reconcile(key, ctx);
      lastError = undefined;
      if (action.kind === 'done' && (!opts.until || (await opts.until()))) return pass;
      await new Promise((r) =>
        setTimeout(r, Math.min(requeueMs(action) ?? opts.delayMs ?? 50, opts.delayMs ?? 250)),
      );
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 50));
    }
  }
  throw new Error(
    `${key} did not converge in ${max} passes${lastError ? `; last error: ${String(lastError)}` : ''}`,
  );
}

/** The delay a reconcile asked for, or undefined when it returned done. */
export function requeueMs(action: Action): number | undefined {
  return action.kind === 'requeueAfter' ? action.ms : undefined;
}

/**
 * Runs `run` with every status write of `ctx` (applyStatus, applyNodeStatus) refused, as a
 * conflict with another writer refuses it (409), then lets them through again. Events a pass
 * sends before its write are sent again by each retry of a refused one.
 */
export async function withStatusRefused<T>(
  ctx: SnapshotContext,
  run: () => Promise<T>,
): Promise<T> {
  const { applyStatus, applyNodeStatus } = ctx;
  const refuse = () =>
    Promise.reject(new KubeApiError(409, 'Conflict', 'injected', 'PATCH', '/status'));
  ctx.applyStatus = refuse;
  ctx.applyNodeStatus = refuse;
  try {
    return await run();
  } finally {
    ctx.applyStatus = applyStatus;
    ctx.applyNodeStatus = applyNodeStatus;
  }
}

/**
 * Runs reconcile for `key` `passes` times with a fresh snapshot before each, every status write
 * refused (withStatusRefused); each pass must fail with the refusal.
 */
export async function refusedPasses(
  ctx: SnapshotContext,
  reconcile: (key: string, ctx: ControllerContext) => Promise<Action>,
  key: string,
  passes = 2,
): Promise<void> {
  await withStatusRefused(ctx, async () => {
    for (let i = 0; i < passes; i++) {
      await ctx.refresh();
      const err = await reconcile(key, ctx).then(
        () => undefined,
        (e: unknown) => e,
      );
      // A pass that did not reach its status write would prove nothing about its Events.
      if (!(err instanceof KubeApiError && err.status === 409))
        throw new Error(
          `${key}: refused pass ${i + 1} did not fail with the refusal: ${String(err)}`,
        );
    }
  });
}

/**
 * Runs `run` with every finalizer removal of `ctx` refused, as a conflict with another writer
 * refuses it (409), then lets them through again: what a deletion tells before the removal is
 * told again by each retry.
 */
export async function withFinalizerRemovalRefused<T>(
  ctx: SnapshotContext,
  run: () => Promise<T>,
): Promise<T> {
  const { removeFinalizer } = ctx;
  ctx.removeFinalizer = () =>
    Promise.reject(new KubeApiError(409, 'Conflict', 'injected', 'PATCH', '/finalizers'));
  try {
    return await run();
  } finally {
    ctx.removeFinalizer = removeFinalizer;
  }
}

/**
 * Runs `run` with every status write of `ctx` (applyStatus, applyNodeStatus) applied by the API
 * server but its answer lost, as when no response comes in time: each write is made, then fails
 * as the client's timeout fails it. Then lets them through again.
 */
export async function withStatusUnanswered<T>(
  ctx: SnapshotContext,
  run: () => Promise<T>,
): Promise<T> {
  const { applyStatus, applyNodeStatus } = ctx;
  const lost = () => new Error('PATCH /status: no response within 30000 ms');
  ctx.applyStatus = async (...args) => {
    await applyStatus(...args);
    throw lost();
  };
  ctx.applyNodeStatus = async (...args) => {
    await applyNodeStatus(...args);
    throw lost();
  };
  try {
    return await run();
  } finally {
    ctx.applyStatus = applyStatus;
    ctx.applyNodeStatus = applyNodeStatus;
  }
}

/**
 * The check every "said once, not with every retry of a refused write" test makes: `passes`
 * refused passes (refusedPasses) tell nothing, then of two passes let through (each after a
 * fresh snapshot) the one whose write goes through tells once and the next nothing. `told`
 * counts what is told. Returns the actions of the two passes let through.
 */
export async function toldOnceDespiteRefusals(
  ctx: SnapshotContext,
  reconcile: (key: string, ctx: ControllerContext) => Promise<Action>,
  key: string,
  told: () => number,
): Promise<Action[]> {
  await refusedPasses(ctx, reconcile, key);
  await ctx.refresh();
  expect(told(), 'told while its status write was refused').toBe(0);
  const actions: Action[] = [];
  for (let i = 0; i < 2; i++) {
    actions.push(await reconcile(key, ctx));
    await ctx.refresh();
  }
  expect(told(), 'told once its write went through, and not again').toBe(1);
  return actions;
}
