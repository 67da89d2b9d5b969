// The agent's own kubeconfig reader (src/runtime/kube-config.ts) against a real API server:
// the control plane's kubeconfig file (CA and token), read without @kubernetes/client-node,
// serves requests and a watch.
import { describe, expect, it } from 'vitest';
import { loadKubeAccessFromFile } from '../../../src/runtime/kube-config.js';
import { createKubeClient } from '../../../src/runtime/kube-client.js';
import { useControlPlane } from '../../harness/control-plane.js';

const cp = useControlPlane();

describe('a kubeconfig read by the runtime itself', () => {
  it('reaches the API server with the CA and the token of the file', async () => {
    const access = await loadKubeAccessFromFile(cp().kubeconfigPath);
    expect(access.constructor.name).not.toBe('KubeConfig');
    const client = createKubeClient(access);
    const list = await client.request<{ items: { metadata: { name: string } }[] }>({
      method: 'GET',
      path: '/api/v1/namespaces',
    });
    expect(list.items.map((n) => n.metadata.name)).toContain('default');
    const abort = new AbortController();
    const events = await client.stream({
      path: '/api/v1/namespaces',
      query: { watch: 1, timeoutSeconds: 5 },
      signal: abort.signal,
    });
    for await (const ev of events) {
      expect((ev as { type: string }).type).toBe('ADDED');
      break;
    }
    abort.abort();
  });
});
