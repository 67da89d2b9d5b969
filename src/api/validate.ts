// validateManifest: the API server's verdict on a virt.dev object, offline. It runs the same
// steps in the same order as kube-apiserver does for a custom resource created or updated with
// kubectl (strict field validation): unknown fields stop everything; then defaulting; then
// metadata, OpenAPI schema and list-map checks; then, unless one of those found a "blocking"
// error (wrong type, missing, unsupported value, too long, too many), the CEL rules.
import { API_VERSION, customResources, type VirtKind } from './generated/crds.js';
import type {
  StoragePool,
  StoragePoolManifest,
  VirtManifest,
  VirtObject,
  VirtualMachine,
  VirtualMachineManifest,
  VirtualNetwork,
  VirtualNetworkManifest,
  Volume,
  VolumeManifest,
} from './generated/types.js';
import { defaultMacAddress } from './names.js';
import {
  kindSchema,
  listTypeProblems,
  ruleProblems,
  schemaProblems,
  unknownFields,
  withSchemaDefaults,
  type Problem,
  type ProblemType,
} from './schema.js';

export type { Problem, ProblemType } from './schema.js';

// The error types after which the API server does not evaluate CEL rules
// (apiextensions-apiserver customresource strategy, hasBlockingErr).
const BLOCKING: ReadonlySet<ProblemType> = new Set([
  'NotSupported',
  'Required',
  'TooLong',
  'TooMany',
  'TypeInvalid',
]);

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The kind of a virt.dev/v1alpha1 object, or undefined for anything else. */
export function virtKindOf(obj: Json): VirtKind | undefined {
  if (!isObject(obj) || obj.apiVersion !== API_VERSION || typeof obj.kind !== 'string')
    return undefined;
  return Object.hasOwn(customResources, obj.kind) ? (obj.kind as VirtKind) : undefined;
}

/** Whether an object claims our API group at all (any version, any kind). */
export function isVirtGroup(obj: Json): boolean {
  return (
    isObject(obj) &&
    typeof obj.apiVersion === 'string' &&
    obj.apiVersion.split('/')[0] === 'virt.dev'
  );
}

function envelopeProblems(obj: Json): Problem[] {
  if (!isObject(obj)) {
    return [
      {
        field: '',
        type: 'TypeInvalid',
        message: 'a manifest must be a mapping with apiVersion, kind, metadata and spec',
      },
    ];
  }
  if (obj.apiVersion !== API_VERSION) {
    return [
      {
        field: 'apiVersion',
        type: 'NotSupported',
        message: `Unsupported value: ${JSON.stringify(obj.apiVersion)}: supported values: "${API_VERSION}"`,
      },
    ];
  }
  if (virtKindOf(obj) === undefined) {
    const kinds = Object.keys(customResources).map((k) => `"${k}"`);
    return [
      {
        field: 'kind',
        type: 'NotSupported',
        message: `Unsupported value: ${JSON.stringify(obj.kind)}: supported values: ${kinds.join(', ')}`,
      },
    ];
  }
  return [];
}

// ObjectMeta as the API server decodes it (k8s.io/apimachinery metav1.ObjectMeta): the fields
// every kind accepts, whatever the CRD's metadata schema lists (a CRD may only narrow name and
// generateName), with the JSON type each must have.
type MetaType = 'string' | 'integer' | 'stringMap' | 'stringList' | 'list' | 'time';
const OBJECT_META: Record<string, MetaType> = {
  name: 'string',
  generateName: 'string',
  namespace: 'string',
  selfLink: 'string',
  uid: 'string',
  resourceVersion: 'string',
  generation: 'integer',
  creationTimestamp: 'time',
  deletionTimestamp: 'time',
  deletionGracePeriodSeconds: 'integer',
  labels: 'stringMap',
  annotations: 'stringMap',
  ownerReferences: 'list',
  finalizers: 'stringList',
  managedFields: 'list',
};
const OWNER_REFERENCE: Record<string, 'string' | 'boolean'> = {
  apiVersion: 'string',
  kind: 'string',
  name: 'string',
  uid: 'string',
  controller: 'boolean',
  blockOwnerDeletion: 'boolean',
};

/** Unknown metadata fields (strict decoding refuses them before anything else). */
function metadataUnknownFields(metadata: Json): Problem[] {
  if (!isObject(metadata)) return [];
  const unknown = (field: string): Problem => ({
    field,
    type: 'UnknownField',
    message: `unknown field "${field}"`,
  });
  const problems = Object.keys(metadata)
    .filter((k) => !Object.hasOwn(OBJECT_META, k))
    .map((k) => unknown(`metadata.${k}`));
  const refs = metadata.ownerReferences;
  if (Array.isArray(refs)) {
    refs.forEach((ref, i) => {
      if (!isObject(ref)) return;
      for (const k of Object.keys(ref))
        if (!Object.hasOwn(OWNER_REFERENCE, k))
          problems.push(unknown(`metadata.ownerReferences[${i}].${k}`));
    });
  }
  return problems;
}

/** Values the API server cannot decode into ObjectMeta at all. */
function metadataTypeProblems(metadata: Json): Problem[] {
  if (metadata === undefined || metadata === null) return [];
  if (!isObject(metadata))
    return [
      { field: 'metadata', type: 'TypeInvalid', message: 'Invalid value: must be an object' },
    ];
  const problems: Problem[] = [];
  const bad = (field: string, want: string): void =>
    void problems.push({
      field,
      type: 'TypeInvalid',
      message: `Invalid value: ${JSON.stringify(field.split('.').reduce<Json>((o, k) => (isObject(o) ? o[k] : undefined), { metadata }))}: must be ${want}`,
    });
  for (const [key, value] of Object.entries(metadata)) {
    const type = OBJECT_META[key];
    if (type === undefined || value === null) continue;
    const field = `metadata.${key}`;
    switch (type) {
      case 'string':
        if (typeof value !== 'string') bad(field, 'a string');
        break;
      case 'integer':
        if (!Number.isInteger(value)) bad(field, 'an integer');
        break;
      case 'time':
        if (typeof value !== 'string' || Number.isNaN(Date.parse(value)))
          bad(field, 'an RFC 3339 time');
        break;
      case 'stringMap':
        if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string'))
          bad(field, 'a map of strings to strings');
        break;
      case 'stringList':
        if (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))
          bad(field, 'a list of strings');
        break;
      case 'list':
        if (!Array.isArray(value) || value.some((v) => !isObject(v)))
          bad(field, 'a list of objects');
        break;
    }
  }
  const refs = metadata.ownerReferences;
  if (Array.isArray(refs)) {
    refs.forEach((ref, i) => {
      if (!isObject(ref)) return;
      for (const [k, v] of Object.entries(ref)) {
        const want = OWNER_REFERENCE[k];
        if (want && v !== null && typeof v !== want)
          bad(`metadata.ownerReferences[${i}].${k}`, `a ${want}`);
      }
    });
  }
  return problems;
}

// apimachinery's validation.IsQualifiedName: [prefix/]name, the prefix a DNS subdomain.
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const ANNOTATIONS_MAX_BYTES = 256 * 1024;

function qualifiedNameProblem(key: string): string | undefined {
  const parts = key.split('/');
  let name = key;
  if (parts.length === 2) {
    const [prefix, rest] = parts as [string, string];
    if (prefix.length === 0) return 'prefix part must be non-empty';
    if (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))
      return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
    name = rest;
  } else if (parts.length > 2) {
    return "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'";
  }
  if (name.length === 0) return 'name part must be non-empty';
  if (name.length > 63) return 'name part must be no more than 63 characters';
  if (!QUALIFIED_NAME.test(name))
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
  return undefined;
}

// ObjectMeta checks the API server makes for every custom resource on create
// (apimachinery ValidateObjectMetaAccessor with NameIsDNSSubdomain, and the store's create).
function metadataProblems(kind: VirtKind, metadata: Json): Problem[] {
  const meta = isObject(metadata) ? metadata : {};
  const problems: Problem[] = [];
  const { name, namespace, generateName } = meta;
  const invalid = (field: string, value: Json, why: string): void =>
    void problems.push({
      field,
      type: 'Invalid',
      message: `Invalid value: ${JSON.stringify(value)}: ${why}`,
    });
  const subdomainWhy =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
  if (name === undefined || name === '') {
    if (typeof generateName !== 'string' || generateName === '') {
      problems.push({
        field: 'metadata.name',
        type: 'Required',
        message: 'Required value: name or generateName is required',
      });
    }
  } else if (typeof name === 'string') {
    const why: string[] = [];
    if (name.length > 253) why.push('must be no more than 253 characters');
    if (!DNS1123_SUBDOMAIN.test(name)) why.push(subdomainWhy);
    if (why.length > 0) invalid('metadata.name', name, why.join(', '));
  }
  // A prefix: the API server appends five random characters, so a trailing '-' is fine.
  if (typeof generateName === 'string' && generateName !== '') {
    const base = generateName.replace(/-$/, 'a');
    if (base.length > 253 || !DNS1123_SUBDOMAIN.test(base))
      invalid('metadata.generateName', generateName, subdomainWhy);
  }
  // A cluster-scoped object's namespace is cleared by the API server, not refused.
  if (
    customResources[kind].scope === 'Namespaced' &&
    typeof namespace === 'string' &&
    namespace !== ''
  ) {
    if (namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
      invalid(
        'metadata.namespace',
        namespace,
        'a lowercase RFC 1123 label of at most 63 characters is required',
      );
    }
  }
  if (typeof meta.resourceVersion === 'string' && meta.resourceVersion !== '') {
    problems.push({
      field: 'metadata.resourceVersion',
      type: 'Invalid',
      message: 'Invalid value: resourceVersion should not be set on objects to be created',
    });
  }
  if (isObject(meta.labels)) {
    for (const [key, value] of Object.entries(meta.labels)) {
      const keyWhy = qualifiedNameProblem(key);
      if (keyWhy) invalid('metadata.labels', key, keyWhy);
      if (typeof value === 'string' && (value.length > 63 || !LABEL_VALUE.test(value))) {
        invalid(
          'metadata.labels',
          value,
          value.length > 63
            ? 'must be no more than 63 characters'
            : "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
      }
    }
  }
  if (isObject(meta.annotations)) {
    let bytes = 0;
    for (const [key, value] of Object.entries(meta.annotations)) {
      const keyWhy = qualifiedNameProblem(key.toLowerCase());
      if (keyWhy) invalid('metadata.annotations', key, keyWhy);
      bytes += Buffer.byteLength(key) + Buffer.byteLength(String(value));
    }
    if (bytes > ANNOTATIONS_MAX_BYTES) {
      problems.push({
        field: 'metadata.annotations',
        type: 'TooLong',
        message: `Too long: must have at most ${ANNOTATIONS_MAX_BYTES} bytes`,
      });
    }
  }
  if (Array.isArray(meta.finalizers)) {
    meta.finalizers.forEach((f, i) => {
      if (typeof f !== 'string') return;
      const why = qualifiedNameProblem(f);
      if (why) invalid(`metadata.finalizers[${i}]`, f, why);
    });
  }
  if (Array.isArray(meta.ownerReferences)) {
    let controllers = 0;
    meta.ownerReferences.forEach((ref, i) => {
      if (!isObject(ref)) return;
      const at = `metadata.ownerReferences[${i}]`;
      for (const k of ['apiVersion', 'kind', 'name', 'uid']) {
        if (typeof ref[k] !== 'string' || ref[k] === '') {
          invalid(
            `${at}.${k}`,
            ref[k] ?? '',
            `${k === 'apiVersion' ? 'version' : k} must not be empty`,
          );
        }
      }
      if (ref.controller === true) controllers++;
    });
    if (controllers > 1) {
      invalid(
        'metadata.ownerReferences',
        meta.ownerReferences,
        'Only one reference can have Controller set to true',
      );
    }
  }
  return problems;
}

/**
 * Every problem the API server would report for this manifest (on create, or on update from
 * `old`), with the field path it would name. An empty list means it would be accepted. Pure.
 */
export function validateManifest(obj: Json, old?: Json): Problem[] {
  const envelope = envelopeProblems(obj);
  if (envelope.length > 0) return envelope;
  const kind = virtKindOf(obj) as VirtKind;
  const schema = kindSchema(kind);

  // metadata is ObjectMeta for every kind: its fields are checked here, not against the CRD's
  // metadata schema (which lists only what it narrows, such as a Volume's name length).
  const { metadata, ...rest } = obj as Record<string, Json>;
  const unknown = [...unknownFields(schema, rest), ...metadataUnknownFields(metadata)];
  if (unknown.length > 0) return unknown;
  const typeProblems = metadataTypeProblems(metadata);
  if (typeProblems.length > 0) return typeProblems;

  const value = withSchemaDefaults(schema, obj) as Record<string, Json>;
  const problems = [
    ...metadataProblems(kind, value.metadata),
    ...schemaProblems(kind, value),
    ...listTypeProblems(schema, value),
  ];
  if (problems.some((p) => BLOCKING.has(p.type))) return problems;
  const oldValue = old === undefined ? undefined : withSchemaDefaults(schema, old);
  return [...problems, ...ruleProblems(schema, value, oldValue)];
}

type StoredOf<T> = T extends { kind: 'VirtualMachine' }
  ? VirtualMachine
  : T extends { kind: 'Volume' }
    ? Volume
    : T extends { kind: 'VirtualNetwork' }
      ? VirtualNetwork
      : T extends { kind: 'StoragePool' }
        ? StoragePool
        : never;

/**
 * The object with every default filled in: the schema defaults the API server applies, plus
 * the defaults the API describes but a schema cannot express: a VirtualMachine's maxVcpus
 * (= vcpus), maxMemory (= memory) and, once the object has a metadata.uid, its uuid (= uid)
 * and each interface's macAddress (stable, derived from uid and interface name). Pure; the
 * input is not changed. Use it on objects that passed validateManifest (or came from the API).
 */
export function applyDefaults<T extends VirtManifest | VirtObject>(obj: T): StoredOf<T>;
export function applyDefaults(
  obj:
    | VirtualMachineManifest
    | VolumeManifest
    | VirtualNetworkManifest
    | StoragePoolManifest
    | VirtObject,
): VirtObject {
  const kind = virtKindOf(obj);
  if (kind === undefined)
    throw new TypeError(
      `applyDefaults: not a ${API_VERSION} object: ${JSON.stringify((obj as { kind?: unknown }).kind)}`,
    );
  const out = withSchemaDefaults(kindSchema(kind), obj) as VirtObject;
  if (out.kind === 'VirtualMachine') {
    const spec = out.spec;
    spec.maxVcpus ??= spec.vcpus;
    spec.maxMemory ??= spec.memory;
    // The bus default depends on the device (a cdrom cannot be on virtio): code, not schema.
    for (const disk of spec.disks ?? []) {
      disk.device ??= 'disk';
      disk.bus ??= disk.device === 'cdrom' ? 'sata' : 'virtio';
    }
    const uid = out.metadata?.uid;
    if (uid) {
      spec.uuid ??= uid;
      for (const nic of spec.interfaces ?? []) nic.macAddress ??= defaultMacAddress(uid, nic.name);
    }
  }
  return out;
}
