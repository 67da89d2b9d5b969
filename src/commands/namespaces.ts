// Namespaces the agent needs before it can work: on a local control plane nobody else
// creates them (no installer, no kubectl apply -k manifests/).
import { isAlreadyExists, isNotFound, type KubeClient } from '../runtime/index.js';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** Creates the namespace unless it exists; safe to repeat and to race with another creator. */
export async function ensureNamespace(client: KubeClient, name: string): Promise<void> {
  try {
    await client.request({ method: 'GET', path: `/api/v1/namespaces/${encodeURIComponent(name)}` });
    return;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  // As `kubectl create --save-config` does: a later `kubectl apply -k manifests/`, which holds
  // the namespace too, then applies over it without a warning.
  const namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
  const saved = { [LAST_APPLIED]: JSON.stringify(namespace) + '\n' };
  try {
    await client.request({
      method: 'POST',
      path: '/api/v1/namespaces',
      body: { ...namespace, metadata: { name, annotations: saved } },
    });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
}
