// The controller integration tests' view of objects in the real API server: plain create, read,
// patch and delete of the virt.dev kinds, plus the Namespaces and Nodes they live on.
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { customResources, type VirtKind } from '../../src/api/generated/crds.js';
import type { KubeObject } from '../../src/controllers/context.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Kube {
  create<T = KubeObject>(
    kind: VirtKind,
    obj: { metadata: KubeObject['metadata'] & { name: string }; spec: object },
  ): Promise<T>;
  get<T = KubeObject>(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined>;
  remove(kind: VirtKind, namespace: string | undefined, name: string): Promise<void>;
  /** JSON merge patch of spec (null removes a field). */
  patchSpec(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
    spec: object,
  ): Promise<void>;
  /** A merge patch of the status subresource, as another kind's controller would write it. */
  patchStatus(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
    status: object,
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
  const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
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
    async patchSpec(kind, namespace, name, spec) {
      const body = { spec };
      await (namespace
        ? custom.patchNamespacedCustomObject({ ...at(kind), namespace, name, body }, merge)
        : custom.patchClusterCustomObject({ ...at(kind), name, body }, merge));
    },
    async patchStatus(kind, namespace, name, status) {
      const body = { status };
      await (namespace
        ? custom.patchNamespacedCustomObjectStatus({ ...at(kind), namespace, name, body }, merge)
        : custom.patchClusterCustomObjectStatus({ ...at(kind), name, body }, merge));
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
