// What the runtime needs to know about a kind: where it lives in the API. No generated
// clients: every kind is handled as plain JSON with this description beside it.

export interface ResourceDescription {
  /** '' for the core group (ConfigMap, Event in v1). */
  group: string;
  version: string;
  /** The URL segment, e.g. 'virtualmachines'. */
  plural: string;
  kind: string;
  namespaced: boolean;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: unknown[];
  managedFields?: ManagedFieldsEntry[];
  [field: string]: unknown;
}

export interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  subresource?: string;
  fieldsType?: string;
  fieldsV1?: Record<string, unknown>;
  apiVersion?: string;
}

/** Any Kubernetes object, as the API server sends it. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export function apiVersionOf(resource: ResourceDescription): string {
  return resource.group === '' ? resource.version : `${resource.group}/${resource.version}`;
}

/** The cache and queue key: `namespace/name` for namespaced objects, `name` otherwise. */
export function objectKey(obj: KubeObject): string {
  const { name, namespace } = obj.metadata;
  if (!name) throw new Error('object has no metadata.name, so it has no key');
  return namespace ? `${namespace}/${name}` : name;
}

export function parseKey(key: string): { namespace?: string; name: string } {
  const slash = key.indexOf('/');
  return slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/**
 * The REST path of a collection (no name) or of one object. Namespaced kinds without a
 * namespace get the all-namespaces collection, which is what a cluster-wide watch wants.
 */
export function resourcePath(
  resource: ResourceDescription,
  where: { namespace?: string; name?: string; subresource?: string } = {},
): string {
  const root =
    resource.group === ''
      ? `/api/${resource.version}`
      : `/apis/${resource.group}/${resource.version}`;
  if (resource.namespaced && !where.namespace && where.name) {
    throw new Error(
      `${resource.kind} is namespaced: a namespace is needed to address '${where.name}'`,
    );
  }
  const ns =
    resource.namespaced && where.namespace
      ? `/namespaces/${encodeURIComponent(where.namespace)}`
      : '';
  const name = where.name ? `/${encodeURIComponent(where.name)}` : '';
  const sub = where.name && where.subresource ? `/${where.subresource}` : '';
  return `${root}${ns}/${resource.plural}${name}${sub}`;
}

/** The path of the object a key names. */
export function keyPath(resource: ResourceDescription, key: string, subresource?: string): string {
  const { namespace, name } = parseKey(key);
  return resourcePath(resource, { namespace, name, subresource });
}

/** A reference to an object as Events' `regarding` and owner references want it. */
export interface ObjectReference {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
}

export function referenceTo(resource: ResourceDescription, obj: KubeObject): ObjectReference {
  const { name, namespace, uid, resourceVersion } = obj.metadata;
  if (!name) throw new Error(`a ${resource.kind} without metadata.name cannot be referenced`);
  return {
    apiVersion: apiVersionOf(resource),
    kind: resource.kind,
    name,
    ...(namespace ? { namespace } : {}),
    ...(uid ? { uid } : {}),
    ...(resourceVersion ? { resourceVersion } : {}),
  };
}
