// The agent's reads that bypass its caches, for the few questions a node-scoped cache cannot
// answer: a GET of one object (is a machine missing, or on another node?), a list of the Nodes
// a selector matches (does a network or pool belong anywhere?). The agent's
// context and the snapshot context the controller tests use both read through this.
import type { VirtKind } from '../api/generated/crds.js';
import type { ControllerContext, KubeObject } from '../controllers/context.js';
import { selectorQuery } from '../controllers/node-selector.js';
import { isNotFound, type KubeClient } from '../runtime/kube-client.js';
import { resourcePath } from '../runtime/resource.js';
import { resourceOf } from './kube-writes.js';

export type KubeReads = Pick<ControllerContext, 'getFromServer' | 'matchingNodes'>;

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
    async matchingNodes(selector, limit) {
      const labelSelector = selectorQuery(selector);
      if (labelSelector === undefined) return [];
      // Consistent (no resourceVersion) for the same reason as above: the last agent to leave
      // a network must not read a cache that still shows the label it just saw removed.
      const list = await client.request<{ items?: KubeObject[] }>({
        method: 'GET',
        path: '/api/v1/nodes',
        query: { labelSelector, limit },
      });
      return (list.items ?? []).map((n) => String(n.metadata.name)).slice(0, limit);
    },
  };
}
