// The API server answers 404 both for an object that does not exist and for a resource it
// does not serve at all (the CRDs were never installed on that cluster). A user told that
// "VirtualMachine default/web is not found" looks for a typo in the name; the group's
// discovery document, asked only on that error path, tells the two apart.
import { API_VERSION, customResources, type VirtKind } from '../api/generated/crds.js';
import { isNotFound, type KubeClient } from '../runtime/kube-client.js';

interface ResourceList {
  resources?: Array<{ name?: string }>;
}

/** Whether the group version's discovery answer (undefined: 404) lists `plural`. Pure. */
export function servesResource(discovery: ResourceList | undefined, plural: string): boolean {
  return discovery?.resources?.some((r) => r.name === plural) ?? false;
}

/** The error to report instead of "not found" when the cluster lacks `kind`'s CRD, else undefined. */
export async function missingCrd(client: KubeClient, kind: VirtKind): Promise<Error | undefined> {
  const { plural, group } = customResources[kind];
  let discovery: ResourceList | undefined;
  try {
    discovery = await client.request<ResourceList>({ method: 'GET', path: `/apis/${API_VERSION}` });
  } catch (err) {
    if (!isNotFound(err)) return undefined; // cannot tell: the object's own 404 stands
  }
  if (servesResource(discovery, plural)) return undefined;
  return new Error(
    `the cluster has no ${plural}.${group} (${API_VERSION}): its CRDs are not installed (kubectl apply -k manifests/, docs/deploy.md)`,
  );
}

/**
 * The error for a 404 on `what`, an object of `kind` in `namespace`: the missing CRD when that
 * is the cause, and a namespace that does not exist named (a typo in -n reads like one in the
 * name otherwise).
 */
export async function notFoundError(
  client: KubeClient,
  kind: VirtKind,
  what: string,
  cause: unknown,
  namespace?: string,
): Promise<Error> {
  const crd = await missingCrd(client, kind);
  if (crd) return crd;
  const noNamespace = namespace !== undefined && !(await namespaceExists(client, namespace));
  return new Error(
    `${what} not found${noNamespace ? `: namespace ${namespace} does not exist` : ''}`,
    { cause },
  );
}

/** False only when the API server says the namespace is not there (no right to look: true). */
async function namespaceExists(client: KubeClient, namespace: string): Promise<boolean> {
  try {
    await client.request({
      method: 'GET',
      path: `/api/v1/namespaces/${encodeURIComponent(namespace)}`,
    });
    return true;
  } catch (err) {
    return !isNotFound(err);
  }
}
