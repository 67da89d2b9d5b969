// A ControllerContext over a real API server without the runtime's watch cache: `refresh()`
// lists the four kinds and this node into a snapshot, lookups read the snapshot, writes go to
// the API server. Reconcile tests call reconcile(key, ctx) directly and `converge()` them.
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import { isDeepStrictEqual } from 'node:util';
import { customResources, type VirtKind } from '../../src/api/generated/crds.js';
import { kubeWrites } from '../../src/agent/kube-writes.js';
import { nodeFieldManager } from '../../src/agent/kube-writes.js';
import { clusterIndexes, vmIndexes, volumeIndexes } from '../../src/controllers/indexes.js';
import {
  keyOf,
  type Action,
  type ControllerContext,
  type KubeObject,
} from '../../src/controllers/context.js';
import type { Connect } from '../../src/libvirt/connection.js';

const KINDS: VirtKind[] = ['VirtualMachine', 'Volume', 'VirtualNetwork', 'StoragePool'];
const INDEXES: Record<VirtKind, Record<string, (o: KubeObject) => string[]>> = {
  VirtualMachine: vmIndexes,
  Volume: volumeIndexes,
  VirtualNetwork: clusterIndexes,
  StoragePool: clusterIndexes,
};

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
}

export function snapshotContext(opts: {
  kubeConfig: KubeConfig;
  conn: Connect;
  nodeName: string;
  stateDir: string;
}): SnapshotContext {
  const custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  const core = opts.kubeConfig.makeApiClient(CoreV1Api);
  const writes = kubeWrites(opts.kubeConfig);
  let objects = new Map<VirtKind, Map<string, KubeObject>>();
  let node: V1Node | undefined;
  const silent = { debug() {}, info() {}, warn() {}, error() {} };

  const ctx: SnapshotContext = {
    nodeName: opts.nodeName,
    stateDir: opts.stateDir,
    libvirt: () => opts.conn,
    now: () => new Date(),
    log: process.env.LVO_TEST_LOG ? (console.log.bind(console) as never) : silent,
    events: [],
    writes: 0,
    async refresh() {
      const next = new Map<VirtKind, Map<string, KubeObject>>();
      for (const kind of KINDS) {
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
      node = await core.readNode({ name: opts.nodeName }).catch(() => undefined);
    },
    get<T extends KubeObject>(kind: VirtKind, namespace: string | undefined, name: string) {
      return objects.get(kind)?.get(namespace ? `${namespace}/${name}` : name) as T | undefined;
    },
    list<T extends KubeObject>(kind: VirtKind) {
      return [...(objects.get(kind)?.values() ?? [])] as T[];
    },
    byIndex<T extends KubeObject>(kind: VirtKind, index: string, value: string) {
      const fn = INDEXES[kind][index];
      if (!fn) throw new Error(`no index ${index} on ${kind}`);
      return ctx.list<T>(kind).filter((o) => fn(o).includes(value));
    },
    node: () => node,
    async applyStatus(kind, obj, status) {
      if (isDeepStrictEqual((obj as { status?: object }).status ?? {}, status)) return;
      ctx.writes++;
      await writes.applyStatus(kind, obj, status);
    },
    async applyNodeStatus(kind, obj, entry) {
      const current = (
        (obj as { status?: { nodes?: Array<{ nodeName: string }> } }).status?.nodes ?? []
      ).find((n) => n.nodeName === entry.nodeName);
      if (isDeepStrictEqual(current, entry)) return;
      ctx.writes++;
      await writes.applyStatus(kind, obj, { nodes: [entry] }, nodeFieldManager(opts.nodeName));
    },
    async ensureFinalizer(kind, obj, finalizer) {
      const list = obj.metadata.finalizers ?? [];
      if (list.includes(finalizer)) return obj;
      ctx.writes++;
      return (await writes.patchFinalizers(kind, obj, [...list, finalizer])) as typeof obj;
    },
    async removeFinalizer(kind, obj, finalizer) {
      const list = obj.metadata.finalizers ?? [];
      if (!list.includes(finalizer)) return;
      ctx.writes++;
      await writes.patchFinalizers(
        kind,
        obj,
        list.filter((f) => f !== finalizer),
      );
    },
    event(kind, obj, type, reason, message) {
      ctx.events.push({ kind, key: keyOf(obj), type, reason, message });
      ctx.writes++;
      void writes
        .createEvent(kind, obj, type, reason, message, {
          controller: kind,
          instance: opts.nodeName,
          now: new Date(),
        })
        .catch(() => undefined);
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
      if (action.requeueAfterMs === undefined && (!opts.until || (await opts.until()))) return pass;
      await new Promise((r) =>
        setTimeout(r, Math.min(action.requeueAfterMs ?? opts.delayMs ?? 50, opts.delayMs ?? 250)),
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
