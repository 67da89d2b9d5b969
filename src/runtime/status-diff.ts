// Pure decisions of the status writer: is the status we want already there, and which
// lastTransitionTime should each condition carry. "There" means: every field we set has the
// value we want in the cached object, and no field our field manager owns (per managedFields)
// has been dropped from what we want, because server-side apply would remove such a field.

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

/**
 * The keys of list-maps (x-kubernetes-list-type: map) inside status, by dotted path without
 * indexes: { nodes: ['nodeName'], 'nodes.conditions': ['type'] }. A list named `conditions`
 * is keyed by `type` unless the map says otherwise; every other list is atomic.
 */
export type ListMapKeys = Record<string, string[]>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function keysAt(path: string, listMapKeys: ListMapKeys): string[] | undefined {
  if (listMapKeys[path]) return listMapKeys[path];
  const last = path.slice(path.lastIndexOf('.') + 1);
  return last === 'conditions' ? ['type'] : undefined;
}

function child(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

function findEntry(list: unknown, keys: string[], like: unknown): JsonObject | undefined {
  if (!Array.isArray(list) || !isObject(like)) return undefined;
  return list.find(
    (e): e is JsonObject => isObject(e) && keys.every((k) => deepEqual(e[k], like[k])),
  );
}

/** Whether `current` already holds every field of `desired` with the same value. */
export function covers(
  current: unknown,
  desired: unknown,
  listMapKeys: ListMapKeys = {},
  path = '',
): boolean {
  if (Array.isArray(desired)) {
    const keys = keysAt(path, listMapKeys);
    if (keys && desired.every(isObject)) {
      return desired.every((d) => {
        const c = findEntry(current, keys, d);
        return c !== undefined && covers(c, d, listMapKeys, path);
      });
    }
    return deepEqual(current, desired);
  }
  if (isObject(desired)) {
    if (!isObject(current)) return false;
    return Object.entries(desired).every(([k, v]) =>
      covers(current[k], v, listMapKeys, child(path, k)),
    );
  }
  return deepEqual(current, desired);
}

/**
 * Whether our manager's fieldsV1 (the part under `f:status`) names a field that `desired`
 * no longer has: an apply would then remove it, so it must be written.
 */
export function ownsFieldsBeyond(fields: unknown, desired: unknown): boolean {
  if (!isObject(fields)) return false;
  for (const [k, sub] of Object.entries(fields)) {
    if (k.startsWith('f:')) {
      const name = k.slice(2);
      if (!isObject(desired) || !(name in desired)) return true;
      if (ownsFieldsBeyond(sub, desired[name])) return true;
    } else if (k.startsWith('k:')) {
      const key = parsedSuffix(k);
      if (key === undefined) continue;
      const entry = findEntry(desired, Object.keys(key as object), key);
      if (!entry || ownsFieldsBeyond(sub, entry)) return true;
    } else if (k.startsWith('v:')) {
      const value = parsedSuffix(k);
      if (value === undefined) continue;
      if (!Array.isArray(desired) || !desired.some((e) => deepEqual(e, value))) return true;
    }
    // '.' (the field itself) and 'i:' (positions in atomic lists) need no check.
  }
  return false;
}

/** The JSON after a fieldsV1 key's 'k:' or 'v:' prefix; undefined when it does not parse. */
function parsedSuffix(k: string): unknown {
  try {
    return JSON.parse(k.slice(2)) as unknown;
  } catch {
    return undefined;
  }
}

export interface Condition {
  type: string;
  status: string;
  lastTransitionTime?: string;
  [field: string]: unknown;
}

/**
 * Returns `desired` with every condition's lastTransitionTime settled: the current one when
 * the condition's status did not change (so an unchanged status compares equal and is not
 * written), `now` when it changed or is new. Walks nested list-maps, so per-node conditions
 * in status.nodes[] are matched to the same node's current conditions.
 */
export function settleTransitionTimes<T>(
  desired: T,
  current: unknown,
  now: string,
  listMapKeys: ListMapKeys = {},
): T {
  const walk = (d: unknown, c: unknown, path: string): unknown => {
    if (Array.isArray(d)) {
      const keys = keysAt(path, listMapKeys);
      if (!keys || !d.every(isObject)) return d;
      const isConditions = path === 'conditions' || path.endsWith('.conditions');
      return d.map((entry) => {
        const match = findEntry(c, keys, entry);
        if (isConditions && typeof entry.status === 'string') {
          const settled =
            match && match.status === entry.status && typeof match.lastTransitionTime === 'string'
              ? match.lastTransitionTime
              : now;
          return { ...(walk(entry, match, path) as JsonObject), lastTransitionTime: settled };
        }
        return walk(entry, match, path);
      });
    }
    if (isObject(d)) {
      const out: JsonObject = {};
      for (const [k, v] of Object.entries(d)) {
        out[k] = walk(v, isObject(c) ? c[k] : undefined, child(path, k)) as Json;
      }
      return out;
    }
    return d;
  };
  return walk(desired, current, '') as T;
}

/** Drops undefined fields, as JSON does, so comparisons see what would be sent. */
export function asJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
