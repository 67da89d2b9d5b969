// For the VirtualNetwork reconcile tests: objects in the real API server, and a view of the
// libvirt test driver's networks that tells whether a pass changed anything there.
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { customResources, type VirtKind } from '../../../../src/api/generated/crds.js';
import type { Connect } from '../../../../src/libvirt/connection.js';

export interface Kube {
  create<T>(
    kind: VirtKind,
    obj: { metadata: { name: string; namespace?: string }; spec: object },
  ): Promise<T>;
  get<T>(kind: VirtKind, namespace: string | undefined, name: string): Promise<T | undefined>;
  remove(kind: VirtKind, namespace: string | undefined, name: string): Promise<void>;
  /** JSON merge patch of spec (null removes a field). */
  patchSpec(kind: VirtKind, name: string, spec: object): Promise<void>;
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
      return (await (
        namespace
          ? custom.getNamespacedCustomObject({ ...at(kind), namespace, name })
          : custom.getClusterCustomObject({ ...at(kind), name })
      ).catch(notFound)) as never;
    },
    async remove(kind, namespace, name) {
      await (
        namespace
          ? custom.deleteNamespacedCustomObject({ ...at(kind), namespace, name })
          : custom.deleteClusterCustomObject({ ...at(kind), name })
      ).catch(notFound);
    },
    async patchSpec(kind, name, spec) {
      const options = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
      await custom.patchClusterCustomObject({ ...at(kind), name, body: { spec } }, options);
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
 * Every network the test driver holds, as text (name, UUID, state, autostart, XML): equal
 * before and after a pass means the pass changed nothing there.
 */
export async function networksSnapshot(conn: Connect): Promise<string[]> {
  const lines: string[] = [];
  for (const n of await conn.listAllNetworks()) {
    const persistent = await n.isPersistent();
    lines.push(
      `${n.getName()} ${n.getUUIDString()} active=${await n.isActive()} persistent=${persistent} ` +
        `autostart=${persistent ? await n.getAutostart() : false}`,
      await n.getXMLDesc(),
    );
  }
  return lines.sort();
}

/** Network lifecycle events (defined, started, stopped, undefined) as "name eventName". */
export async function recordNetworkEvents(
  conn: Connect,
): Promise<{ events: string[]; stop(): Promise<void> }> {
  const events: string[] = [];
  const id = await conn.networkEventLifecycleRegister((e) =>
    events.push(`${e.network.getName()} ${e.eventName}`),
  );
  return { events, stop: () => conn.networkEventDeregister(id) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
