// Namespaces the agent needs before it can work: on a local control plane nobody else
// creates them (no installer, no kubectl apply -k manifests/).
import { isAlreadyExists, isNotFound, type KubeClient } from '../runtime/index.js';

/** Creates the namespace unless it exists; safe to repeat and to race with another creator. */
export async function ensureNamespace(client: KubeClient, name: string): Promise<void> {
  try {
    await client.request({ method: 'GET', path: `/api/v1/namespaces/${encodeURIComponent(name)}` });
    return;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  try {
    await client.request({
      method: 'POST',
      path: '/api/v1/namespaces',
      body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } },
    });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
}
