// Shared by the StoragePool and Volume reconcile tests: objects in the real API server, and a
// view of the libvirt host that tells whether a pass changed anything there.
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { customResources, type VirtKind } from '../../../../src/api/generated/crds.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import type { KubeObject } from '../../../../src/controllers/context.js';

export interface Kube {
  create<T extends KubeObject>(
    kind: VirtKind,
    obj: { metadata: { name: string; namespace?: string }; spec: object },
  ): Promise<T>;
  get<T extends KubeObject>(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined>;
  remove(kind: VirtKind, namespace: string | undefined, name: string): Promise<void>;
  patchSpec(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
    spec: object,
  ): Promise<void>;
  namespace(name: string): Promise<void>;
  node(name: string, labels: Record<string, string>): Promise<void>;
}

export function kube(kubeConfig: KubeConfig): Kube {
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const at = (kind: VirtKind) => {
    const { group, version, plural } = customResources[kind];
    return { group, version, plural };
  };
  const notFound = (err: unknown) => {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  };
  return {
    async create(kind, obj) {
      const body = { apiVersion: customResources[kind].apiVersion, kind, ...obj };
      const ns = obj.metadata.namespace;
      return (
        ns
          ? await custom.createNamespacedCustomObject({ ...at(kind), namespace: ns, body })
          : await custom.createClusterCustomObject({ ...at(kind), body })
      ) as never;
    },
    async get(kind, namespace, name) {
      return (
        namespace
          ? custom.getNamespacedCustomObject({ ...at(kind), namespace, name })
          : custom.getClusterCustomObject({ ...at(kind), name })
      ).catch(notFound) as never;
    },
    async remove(kind, namespace, name) {
      await (
        namespace
          ? custom.deleteNamespacedCustomObject({ ...at(kind), namespace, name })
          : custom.deleteClusterCustomObject({ ...at(kind), name })
      ).catch(notFound);
    },
    async patchSpec(kind, namespace, name, spec) {
      const options = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
      const body = { spec };
      await (namespace
        ? custom.patchNamespacedCustomObject({ ...at(kind), namespace, name, body }, options)
        : custom.patchClusterCustomObject({ ...at(kind), name, body }, options));
    },
    async namespace(name) {
      await core
        .createNamespace({ body: { metadata: { name } } })
        .catch((err: { code?: number }) => {
          if (err.code !== 409) throw err;
        });
    },
    async node(name, labels) {
      const existing = await core.readNode({ name }).catch(notFound);
      if (existing) {
        await core.replaceNode({
          name,
          body: { ...existing, metadata: { ...existing.metadata, labels } },
        });
      } else {
        await core.createNode({ body: { metadata: { name, labels } } });
      }
    },
  };
}

/**
 * Everything the test driver holds for pools and volumes, as text: equal before and after a
 * pass means the pass changed nothing on the host (no define, start, autostart, volume create,
 * delete or resize took effect).
 */
export async function hostSnapshot(conn: Connect): Promise<string[]> {
  const lines: string[] = [];
  for (const pool of await conn.listAllStoragePools()) {
    const active = await pool.isActive();
    lines.push(
      `pool ${pool.getName()} ${pool.getUUIDString()} active=${active} persistent=${await pool.isPersistent()} autostart=${await pool.getAutostart()}`,
      await pool.getXMLDesc(0),
    );
    if (!active) continue;
    for (const vol of await pool.listAllVolumes()) lines.push(await vol.getXMLDesc(0));
  }
  return lines.sort();
}

/** Pool lifecycle events (defined, started, stopped, undefined, ...) as "name eventName". */
export async function recordPoolEvents(
  conn: Connect,
): Promise<{ events: string[]; stop(): Promise<void> }> {
  const events: string[] = [];
  const id = await conn.storagePoolEventLifecycleRegister((e) =>
    events.push(`${e.pool.getName()} ${e.eventName}`),
  );
  return { events, stop: () => conn.storagePoolEventDeregister(id) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Right after the CRDs are established the API server answers lists of the new kinds with
 * 429 "storage is (re)initializing" for a moment; wait until a snapshot can be taken.
 */
export async function untilListable(
  ctx: { refresh(): Promise<void> },
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await ctx.refresh();
    } catch (err) {
      if (Date.now() > deadline || (err as { code?: number }).code !== 429) throw err;
      await sleep(200);
    }
  }
}

/**
 * Reconciles `key` with a fresh snapshot until `until()` holds, whatever the passes return:
 * for states that requeue by design (a problem retried with backoff), where converge() would
 * wait for a final `done`.
 */
export async function reconcileUntil(
  ctx: { refresh(): Promise<void> },
  reconcile: (key: string, ctx: never) => Promise<unknown>,
  key: string,
  until: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    await ctx.refresh();
    try {
      await reconcile(key, ctx as never);
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (await until()) return;
    await sleep(50);
  }
  throw new Error(
    `${key}: condition not reached in ${timeoutMs} ms${lastError ? `; last error: ${String(lastError)}` : ''}`,
  );
}
