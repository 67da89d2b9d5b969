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

// ObjectMeta checks the API server makes for every custom resource.
function metadataProblems(kind: VirtKind, metadata: Json): Problem[] {
  const meta = isObject(metadata) ? metadata : {};
  const problems: Problem[] = [];
  const { name, namespace, generateName } = meta;
  if (name === undefined || name === '') {
    if (typeof generateName !== 'string' || generateName === '') {
      problems.push({
        field: 'metadata.name',
        type: 'Required',
        message: 'Required value: name or generateName is required',
      });
    }
  } else if (typeof name !== 'string') {
    problems.push({
      field: 'metadata.name',
      type: 'TypeInvalid',
      message: 'Invalid value: must be a string',
    });
  } else {
    const why: string[] = [];
    if (name.length > 253) why.push('must be no more than 253 characters');
    if (!DNS1123_SUBDOMAIN.test(name)) {
      why.push(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')",
      );
    }
    if (why.length > 0) {
      problems.push({
        field: 'metadata.name',
        type: 'Invalid',
        message: `Invalid value: ${JSON.stringify(name)}: ${why.join(', ')}`,
      });
    }
  }
  if (customResources[kind].scope === 'Namespaced' && namespace !== undefined && namespace !== '') {
    if (typeof namespace !== 'string' || namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
      problems.push({
        field: 'metadata.namespace',
        type: 'Invalid',
        message: `Invalid value: ${JSON.stringify(namespace)}: a lowercase RFC 1123 label of at most 63 characters is required`,
      });
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

  const unknown = unknownFields(schema, obj);
  if (unknown.length > 0) return unknown;

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
