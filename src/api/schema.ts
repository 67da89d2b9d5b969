// The structural schemas from crds/ (via the generated table) applied the way the API server
// applies them: unknown-field detection, null pruning and defaulting, OpenAPI validation (ajv),
// list-map/set uniqueness, and the CEL rules through their TypeScript twins.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { customResources, type VirtKind } from './generated/crds.js';
import { ruleTwins } from './rules.js';

/** The subset of an OpenAPI v3 structural schema that our CRDs use. */
export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  default?: unknown;
  nullable?: boolean;
  enum?: unknown[];
  anyOf?: Schema[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-validations'?: ValidationRule[];
}

export interface ValidationRule {
  rule: string;
  message?: string;
  fieldPath?: string;
  reason?:
    'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** The API server's field error types (k8s.io/apimachinery field.ErrorType), plus unknown fields. */
export type ProblemType =
  | 'Required'
  | 'Invalid'
  | 'NotSupported'
  | 'TooLong'
  | 'TooMany'
  | 'TypeInvalid'
  | 'Duplicate'
  | 'Forbidden'
  | 'UnknownField';

/** One thing wrong with a manifest: the field path as the API server names it, and why. */
export interface Problem {
  field: string;
  type: ProblemType;
  message: string;
}

/** A path into an object, one segment per step; rendered like the API server renders it. */
export type Path = readonly (string | number | { key: string })[];

function formatPath(path: Path): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string') out += out === '' ? seg : `.${seg}`;
    else out += `.${seg.key}`; // map keys: the API server's OpenAPI validator writes them as fields
  }
  return out;
}

/** Appends a CEL rule's fieldPath (".a.b", "['a']" or "[0]" steps) to a path. */
function appendFieldPath(path: Path, fieldPath: string | undefined): Path {
  if (!fieldPath) return path;
  const steps: Path[number][] = [];
  for (const m of fieldPath.matchAll(/\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\['([^']*)'\]/g)) {
    if (m[1] !== undefined) steps.push(m[1]);
    else if (m[2] !== undefined) steps.push(Number(m[2]));
    else if (m[3] !== undefined) steps.push(m[3]);
  }
  return [...path, ...steps];
}

export function kindSchema(kind: VirtKind): Schema {
  return customResources[kind].openAPIV3Schema as Schema;
}

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// Unknown fields. kubectl asks for strict field validation, and the API server then refuses an
// object with unknown fields before looking at anything else ("strict decoding error").

export function unknownFields(schema: Schema, value: Json, path: Path = []): Problem[] {
  if (Array.isArray(value)) {
    return schema.items
      ? value.flatMap((item, i) => unknownFields(schema.items as Schema, item, [...path, i]))
      : [];
  }
  if (!isObject(value) || schema['x-kubernetes-preserve-unknown-fields']) return [];
  const problems: Problem[] = [];
  for (const [key, child] of Object.entries(value)) {
    const sub = schema.properties?.[key];
    if (sub) problems.push(...unknownFields(sub, child, [...path, key]));
    else if (typeof schema.additionalProperties === 'object') {
      problems.push(...unknownFields(schema.additionalProperties, child, [...path, { key }]));
    } else if (schema.properties || schema.additionalProperties === false) {
      const field = formatPath([...path, key]);
      problems.push({ field, type: 'UnknownField', message: `unknown field "${field}"` });
    }
    // An object schema without properties (the root's metadata) takes anything.
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Defaulting. As the API server does: a null in a non-nullable field is dropped, then every
// missing field with a default gets it, at every level that is present. Returns a new value.

export function withSchemaDefaults(schema: Schema, value: Json): Json {
  if (Array.isArray(value)) {
    return schema.items
      ? value.map((item) => withSchemaDefaults(schema.items as Schema, item))
      : value;
  }
  if (!isObject(value)) return value;
  const out: Record<string, Json> = {};
  const additional =
    typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
  for (const [key, child] of Object.entries(value)) {
    const sub = schema.properties?.[key] ?? additional;
    if (child === null && !sub?.nullable) continue;
    out[key] = sub ? withSchemaDefaults(sub, child) : child;
  }
  for (const [key, sub] of Object.entries(schema.properties ?? {})) {
    if (out[key] === undefined && sub.default !== undefined)
      out[key] = structuredClone(sub.default);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// OpenAPI validation with ajv. The x-kubernetes-* keywords are declared (so strict mode checks
// their shape); their meaning is applied by listTypeProblems and ruleProblems below, in the order
// the API server applies them.

const K8S_KEYWORDS: Record<string, object> = {
  'x-kubernetes-int-or-string': { type: 'boolean' },
  'x-kubernetes-preserve-unknown-fields': { type: 'boolean' },
  'x-kubernetes-embedded-resource': { type: 'boolean' },
  'x-kubernetes-map-type': { enum: ['atomic', 'granular'] },
  'x-kubernetes-list-type': { enum: ['atomic', 'set', 'map'] },
  'x-kubernetes-list-map-keys': { type: 'array', items: { type: 'string' } },
  'x-kubernetes-validations': {
    type: 'array',
    items: {
      type: 'object',
      required: ['rule'],
      properties: {
        rule: { type: 'string' },
        message: { type: 'string' },
        messageExpression: { type: 'string' },
        fieldPath: { type: 'string' },
        reason: { type: 'string' },
        optionalOldSelf: { type: 'boolean' },
      },
    },
  },
};

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule })
  .default ?? addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

let ajv: Ajv | undefined;
const compiled = new Map<VirtKind, ValidateFunction>();

function schemaValidator(kind: VirtKind): ValidateFunction {
  let validate = compiled.get(kind);
  if (!validate) {
    if (!ajv) {
      // strictTypes off: int-or-string quantities carry maxLength/pattern beside anyOf, as
      // Kubernetes requires, which ajv would otherwise flag.
      ajv = new Ajv({ allErrors: true, verbose: true, strict: true, strictTypes: false });
      addFormats(ajv);
      for (const [keyword, metaSchema] of Object.entries(K8S_KEYWORDS))
        ajv.addKeyword({ keyword, metaSchema });
    }
    assertEveryRuleHasATwin(kind, kindSchema(kind));
    validate = ajv.compile(kindSchema(kind));
    compiled.set(kind, validate);
  }
  return validate;
}

/** Every CEL rule in the schema, with the schema path it sits at. */
export function* schemaRules(
  schema: Schema,
  path = '',
): Generator<{ path: string; rule: ValidationRule }> {
  for (const rule of schema['x-kubernetes-validations'] ?? []) yield { path, rule };
  for (const [key, sub] of Object.entries(schema.properties ?? {}))
    yield* schemaRules(sub, `${path}.${key}`);
  if (schema.items) yield* schemaRules(schema.items, `${path}[]`);
  if (typeof schema.additionalProperties === 'object')
    yield* schemaRules(schema.additionalProperties, `${path}{}`);
}

function assertEveryRuleHasATwin(kind: VirtKind, schema: Schema): void {
  for (const { path, rule } of schemaRules(schema)) {
    if (!ruleTwins.has(rule.rule)) {
      throw new Error(
        `${kind} schema${path}: CEL rule has no TypeScript twin in src/api/rules.ts: ${rule.rule}`,
      );
    }
  }
}

/** Turns ajv's JSON pointer into our path, using the schema to tell map keys from fields. */
function pathOfPointer(schema: Schema, pointer: string): Path {
  const path: Path[number][] = [];
  let node: Schema | undefined = schema;
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node?.type === 'array' || (node === undefined && /^\d+$/.test(seg))) {
      path.push(Number(seg));
      node = node?.items;
    } else if (node?.properties?.[seg] || !node || typeof node.additionalProperties !== 'object') {
      path.push(seg);
      node = node?.properties?.[seg];
    } else {
      path.push({ key: seg });
      node = node.additionalProperties;
    }
  }
  return path;
}

const quote = (v: unknown): string => JSON.stringify(v) ?? String(v);

function problemOfAjvError(schema: Schema, err: ErrorObject): Problem | undefined {
  const path = pathOfPointer(schema, err.instancePath);
  const field = formatPath(path);
  const p = err.params as Record<string, unknown>;
  switch (err.keyword) {
    case 'required': {
      const missing = formatPath([...path, String(p.missingProperty)]);
      return { field: missing, type: 'Required', message: 'Required value' };
    }
    case 'type':
      // The branches of an int-or-string anyOf are reported once, by the anyOf error.
      if (err.schemaPath.includes('/anyOf/')) return undefined;
      return {
        field,
        type: 'TypeInvalid',
        message: `Invalid value: ${quote(err.data)}: must be of type ${String(p.type)}`,
      };
    case 'anyOf':
      return {
        field,
        type: 'TypeInvalid',
        message: `Invalid value: ${quote(err.data)}: must be an integer or a string (a quantity such as 2Gi)`,
      };
    case 'enum':
      return {
        field,
        type: 'NotSupported',
        message: `Unsupported value: ${quote(err.data)}: supported values: ${(p.allowedValues as unknown[]).map(quote).join(', ')}`,
      };
    case 'maxLength':
      return {
        field,
        type: 'TooLong',
        message: `Too long: may not be more than ${String(p.limit)} bytes`,
      };
    case 'maxItems':
    case 'maxProperties':
      return {
        field,
        type: 'TooMany',
        message: `Too many: must have at most ${String(p.limit)} ${err.keyword === 'maxItems' ? 'items' : 'properties'}`,
      };
    case 'pattern':
      return {
        field,
        type: 'Invalid',
        message: `Invalid value: ${quote(err.data)}: should match '${String(p.pattern)}'`,
      };
    case 'minLength':
      return {
        field,
        type: 'Invalid',
        message: `Invalid value: ${quote(err.data)}: should be at least ${String(p.limit)} chars long`,
      };
    case 'minItems':
    case 'minProperties':
      return {
        field,
        type: 'Invalid',
        message: `Invalid value: should have at least ${String(p.limit)} ${err.keyword === 'minItems' ? 'items' : 'properties'}`,
      };
    case 'minimum':
    case 'maximum':
      return {
        field,
        type: 'Invalid',
        message: `Invalid value: ${quote(err.data)}: should be ${err.keyword === 'minimum' ? 'greater' : 'less'} than or equal to ${String(p.limit)}`,
      };
    default:
      return {
        field,
        type: 'Invalid',
        message: `Invalid value: ${quote(err.data)}: ${err.message ?? err.keyword}`,
      };
  }
}

/** OpenAPI schema validation of an already defaulted object. */
export function schemaProblems(kind: VirtKind, value: Json): Problem[] {
  const validate = schemaValidator(kind);
  if (validate(value)) return [];
  const schema = kindSchema(kind);
  return (validate.errors ?? []).flatMap((err) => problemOfAjvError(schema, err) ?? []);
}

// ---------------------------------------------------------------------------------------------
// x-kubernetes-list-type: map keys and set items must be unique.

function listKey(item: Json, keys: string[]): string {
  return JSON.stringify(keys.map((k) => (isObject(item) ? item[k] : undefined)));
}

export function listTypeProblems(schema: Schema, value: Json, path: Path = []): Problem[] {
  const problems: Problem[] = [];
  if (Array.isArray(value)) {
    const listType = schema['x-kubernetes-list-type'];
    if (listType === 'map' || listType === 'set') {
      const keys = schema['x-kubernetes-list-map-keys'] ?? [];
      const seen = new Set<string>();
      value.forEach((item, i) => {
        const id = listType === 'map' ? listKey(item, keys) : JSON.stringify(item);
        if (seen.has(id)) {
          const shown =
            listType === 'map'
              ? JSON.stringify(
                  Object.fromEntries(keys.map((k) => [k, isObject(item) ? item[k] : undefined])),
                )
              : JSON.stringify(item);
          problems.push({
            field: formatPath([...path, i]),
            type: 'Duplicate',
            message: `Duplicate value: ${shown}`,
          });
        }
        seen.add(id);
      });
    }
    if (schema.items)
      value.forEach((item, i) =>
        problems.push(...listTypeProblems(schema.items as Schema, item, [...path, i])),
      );
  } else if (isObject(value)) {
    for (const [key, child] of Object.entries(value)) {
      const sub = schema.properties?.[key];
      if (sub) problems.push(...listTypeProblems(sub, child, [...path, key]));
      else if (typeof schema.additionalProperties === 'object') {
        problems.push(...listTypeProblems(schema.additionalProperties, child, [...path, { key }]));
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// CEL rules, through their twins. A transition rule (one that reads oldSelf) runs only on an
// update and only where the old object has a value at the same place; items of map lists are
// matched to their old selves by key, items of other lists have none (as in the API server).

const REASON_TYPE: Record<string, ProblemType> = {
  FieldValueInvalid: 'Invalid',
  FieldValueForbidden: 'Forbidden',
  FieldValueRequired: 'Required',
  FieldValueDuplicate: 'Duplicate',
};

export function ruleProblems(schema: Schema, value: Json, old: Json, path: Path = []): Problem[] {
  const problems: Problem[] = [];
  for (const rule of schema['x-kubernetes-validations'] ?? []) {
    const twin = ruleTwins.get(rule.rule);
    const transition = /\boldSelf\b/.test(rule.rule);
    if (!twin || (transition && old === undefined)) continue;
    let ok: boolean;
    let detail = rule.message ?? `failed rule: ${rule.rule}`;
    try {
      ok = twin(value, old);
    } catch (err) {
      ok = false;
      detail = `rule could not be evaluated (${err instanceof Error ? err.message : String(err)}): ${rule.rule}`;
    }
    if (!ok) {
      problems.push({
        field: formatPath(appendFieldPath(path, rule.fieldPath)),
        type: REASON_TYPE[rule.reason ?? 'FieldValueInvalid'] ?? 'Invalid',
        message: detail,
      });
    }
  }
  if (Array.isArray(value) && schema.items) {
    const items = schema.items;
    const keys =
      schema['x-kubernetes-list-type'] === 'map'
        ? (schema['x-kubernetes-list-map-keys'] ?? [])
        : undefined;
    const oldByKey = new Map<string, Json>();
    if (keys && Array.isArray(old)) for (const o of old) oldByKey.set(listKey(o, keys), o);
    value.forEach((item, i) => {
      const oldItem = keys ? oldByKey.get(listKey(item, keys)) : undefined;
      problems.push(...ruleProblems(items, item, oldItem, [...path, i]));
    });
  } else if (isObject(value)) {
    const oldObject = isObject(old) ? old : undefined;
    for (const [key, child] of Object.entries(value)) {
      const sub = schema.properties?.[key];
      if (sub) problems.push(...ruleProblems(sub, child, oldObject?.[key], [...path, key]));
      else if (typeof schema.additionalProperties === 'object') {
        problems.push(
          ...ruleProblems(schema.additionalProperties, child, oldObject?.[key], [...path, { key }]),
        );
      }
    }
  }
  return problems;
}
