// The agent's reads that bypass its caches: a GET of one object, for the few questions a
// node-scoped cache cannot answer (is a machine missing, or on another node?). The agent's
// context and the snapshot context the controller tests use both read through this.
import type { VirtKind } from '../api/generated/crds.js';
import type { ControllerContext, KubeObject } from '../controllers/context.js';
import { isNotFound, type KubeClient } from '../runtime/kube-client.js';
import { resourcePath } from '../runtime/resource.js';
import { resourceOf } from './kube-writes.js';

export type KubeReads = Pick<ControllerContext, 'getFromServer'>;

export function kubeReads(client: KubeClient): KubeReads {
  return {
    async getFromServer<T extends KubeObject>(
      kind: VirtKind,
      namespace: string | undefined,
      name: string,
    ): Promise<T | undefined> {
      try {
        // No resourceVersion: a consistent read of the latest state. resourceVersion=0 may be
        // answered from a cache that is behind, and a stale "not found" is what this read
        // exists to rule out.
        return await client.request<T>({
          method: 'GET',
          path: resourcePath(resourceOf(kind), { namespace, name }),
        });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
  };
}
