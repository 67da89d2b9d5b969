// Shared by the VirtualMachine reconcile tests: objects in the real API server (including the
// statuses of the Volumes and VirtualNetworks a machine refers to, which those kinds' own
// controllers would write), and a recording view of the libvirt binding.
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import { customResources, type VirtKind } from '../../../../src/api/generated/crds.js';
import type { KubeObject } from '../../../../src/controllers/context.js';
import type { Connect } from '../../../../src/libvirt/connection.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Kube {
  create<T extends KubeObject>(
    kind: VirtKind,
    obj: { metadata: KubeObject['metadata'] & { name: string }; spec: object },
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
  /** A merge patch of the status subresource, as another kind's controller would write it. */
  patchStatus(
    kind: VirtKind,
    namespace: string | undefined,
    name: string,
    status: object,
  ): Promise<void>;
  namespace(name: string): Promise<void>;
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
  };
}

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

// Calls that only read. Anything else a controller calls through the binding counts as a write:
// an unknown method is a write until shown otherwise.
const READS = /^(get|lookup|is|list|numOf|memoryStats|interfaceAddresses|nodeGet)/;

export interface Recording {
  /** The connection to hand to the controller. */
  conn: Connect;
  /** Every binding call made through it, as "Class.method", in order. */
  calls: string[];
  /** The calls that are not reads. */
  writes(): string[];
  reset(): void;
}

/**
 * Wraps a Connect so that every method call on it and on the objects it returns (Domain,
 * Network, ...) is recorded by name, then forwarded to the real object. This observes what
 * the controller asked libvirt to do; it changes nothing about what libvirt does.
 */
export function recording(conn: Connect): Recording {
  const calls: string[] = [];
  const wrapped = new WeakMap<object, object>();
  const wrap = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(wrap);
    if (typeof value !== 'object' || value === null || value instanceof Promise) return value;
    const cls = value.constructor?.name;
    if (!['Connect', 'Domain', 'Network', 'StoragePool', 'StorageVol'].includes(cls)) return value;
    const known = wrapped.get(value);
    if (known) return known;
    const proxy = new Proxy(value, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== 'function' || prop === 'constructor') return v;
        return (...args: unknown[]) => {
          calls.push(`${cls}.${String(prop)}`);
          const result = (v as (...a: unknown[]) => unknown).apply(target, args);
          return result instanceof Promise ? result.then(wrap) : wrap(result);
        };
      },
    });
    wrapped.set(value, proxy);
    return proxy;
  };
  return {
    conn: wrap(conn) as Connect,
    calls,
    writes: () => calls.filter((c) => !READS.test(c.slice(c.indexOf('.') + 1))),
    reset: () => {
      calls.length = 0;
    },
  };
}
