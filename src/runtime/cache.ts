// The local copy of one watched collection: objects by key plus named secondary indexes.
// Readers get a read-only view; only the informer that owns the cache mutates it, and every
// mutation returns the changes it made so the informer can tell its subscribers.
import { objectKey, type KubeObject } from './resource.js';

/** Maps an object to the index values it is found under (e.g. the Volumes a VM uses). */
export type IndexFunction<T extends KubeObject = KubeObject> = (obj: T) => string[];

export type CacheChange<T extends KubeObject = KubeObject> =
  { type: 'added'; obj: T } | { type: 'updated'; obj: T; old: T } | { type: 'deleted'; obj: T };

export interface ObjectCacheReader<T extends KubeObject = KubeObject> {
  get(key: string): T | undefined;
  list(): T[];
  keys(): string[];
  size(): number;
  /** Objects whose index function returned `value` under index `name`. */
  byIndex(name: string, value: string): T[];
  /** Keys of those objects, for mapping a change of a referenced object to work. */
  keysByIndex(name: string, value: string): string[];
  addIndex(name: string, fn: IndexFunction<T>): void;
}

export interface ObjectCache<T extends KubeObject = KubeObject> extends ObjectCacheReader<T> {
  /** Applies one watch event. Returns nothing when it changed nothing. */
  upsert(obj: T): CacheChange<T> | undefined;
  remove(obj: T): CacheChange<T> | undefined;
  /**
   * Makes the cache equal to a fresh list. Objects whose resourceVersion is unchanged produce
   * no change at all: after a relist, subscribers hear only about what really moved,
   * including deletions that happened while the watch was down.
   */
  replace(objs: T[]): CacheChange<T>[];
}

/**
 * Cached objects are shared by every reader, so they are frozen: a reconcile that edits one in
 * place (instead of building its desired state) fails loudly rather than corrupting what
 * every other controller and the status writer's comparison see.
 */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    // for-in, not for-of over Object.values: no array and no iterator results per object
    // (deepFreeze runs on every object a watch delivers, often before V8 optimises it).
    for (const k in value) deepFreeze(value[k]);
  }
  return value;
}

export function createObjectCache<T extends KubeObject = KubeObject>(): ObjectCache<T> {
  const objects = new Map<string, T>();
  const indexFns = new Map<string, IndexFunction<T>>();
  // index name -> index value -> keys
  const indexes = new Map<string, Map<string, Set<string>>>();

  const indexValues = (fn: IndexFunction<T>, obj: T): string[] => {
    try {
      return fn(obj);
    } catch {
      // An index function that cannot read a malformed object must not break the watch.
      return [];
    }
  };

  const unindex = (key: string, obj: T) => {
    for (const [name, fn] of indexFns) {
      const idx = indexes.get(name)!;
      for (const v of indexValues(fn, obj)) {
        const keys = idx.get(v);
        keys?.delete(key);
        if (keys?.size === 0) idx.delete(v);
      }
    }
  };

  const index = (key: string, obj: T) => {
    for (const [name, fn] of indexFns) {
      const idx = indexes.get(name)!;
      for (const v of indexValues(fn, obj)) {
        let keys = idx.get(v);
        if (!keys) idx.set(v, (keys = new Set()));
        keys.add(key);
      }
    }
  };

  const store = (key: string, obj: T) => {
    const old = objects.get(key);
    if (old) unindex(key, old);
    objects.set(key, obj);
    index(key, obj);
  };

  const cache: ObjectCache<T> = {
    get: (key) => objects.get(key),
    list: () => [...objects.values()],
    keys: () => [...objects.keys()],
    size: () => objects.size,
    byIndex: (name, value) => cache.keysByIndex(name, value).map((k) => objects.get(k)!),
    keysByIndex(name, value) {
      const idx = indexes.get(name);
      if (!idx)
        throw new Error(`no index named '${name}' on this cache (add it with addIndex first)`);
      return [...(idx.get(value) ?? [])];
    },
    addIndex(name, fn) {
      if (indexFns.has(name)) throw new Error(`index '${name}' is already defined on this cache`);
      indexFns.set(name, fn);
      const idx = new Map<string, Set<string>>();
      indexes.set(name, idx);
      for (const [key, obj] of objects) {
        for (const v of indexValues(fn, obj)) {
          let keys = idx.get(v);
          if (!keys) idx.set(v, (keys = new Set()));
          keys.add(key);
        }
      }
    },
    upsert(obj) {
      deepFreeze(obj);
      const key = objectKey(obj);
      const old = objects.get(key);
      if (old && old.metadata.resourceVersion === obj.metadata.resourceVersion) return undefined;
      store(key, obj);
      return old ? { type: 'updated', obj, old } : { type: 'added', obj };
    },
    remove(obj) {
      deepFreeze(obj);
      const key = objectKey(obj);
      const old = objects.get(key);
      if (!old) return undefined;
      unindex(key, old);
      objects.delete(key);
      // The delete event carries the object's final state; prefer it over our older copy.
      return { type: 'deleted', obj };
    },
    replace(objs) {
      const changes: CacheChange<T>[] = [];
      const seen = new Set<string>();
      for (const obj of objs) {
        seen.add(objectKey(obj));
        const change = cache.upsert(obj);
        if (change) changes.push(change);
      }
      for (const [key, old] of objects) {
        if (seen.has(key)) continue;
        unindex(key, old);
        objects.delete(key);
        changes.push({ type: 'deleted', obj: old });
      }
      return changes;
    },
  };
  return cache;
}
