// From the desired pool and what the host has to the libvirt calls that close the gap. Only
// the fields the operator owns are compared (type, name, UUID, target path); capacity figures
// and libvirt's defaults never cause a step.
import { changedPoolFields, type PoolDocument } from '../../libvirt/xml/pool.js';
import type { ObservedPool } from './observe.js';

export type PoolStep =
  /** Define (or redefine: same UUID) the persistent pool; `changed` names the fields. */
  | { op: 'define'; doc: PoolDocument; changed: string[] }
  /** Create the directory if missing; idempotent for dir pools. */
  | { op: 'build' }
  | { op: 'start' }
  | { op: 'autostart'; value: boolean };

export function planPool(
  desired: PoolDocument,
  observed: ObservedPool,
  autostart: boolean,
): PoolStep[] {
  switch (observed.found) {
    case 'clash':
      return [];
    case 'none':
      return [
        { op: 'define', doc: desired, changed: [] },
        { op: 'build' },
        { op: 'start' },
        ...(autostart ? [{ op: 'autostart' as const, value: true }] : []),
      ];
    case 'ours': {
      const steps: PoolStep[] = [];
      const changed = changedPoolFields(desired, observed.doc);
      // A transient pool with our UUID (someone ran pool-create with our XML) is made
      // persistent, so it survives a libvirtd restart like the pools we define.
      if (changed.length > 0 || !observed.persistent) {
        steps.push({ op: 'define', doc: desired, changed });
      }
      if (!observed.active) steps.push({ op: 'build' }, { op: 'start' });
      if (observed.autostart !== autostart) steps.push({ op: 'autostart', value: autostart });
      return steps;
    }
  }
}

export interface PathOverlap {
  /** The other pool, its path resolved. */
  pool: { name: string; path: string };
  /** same: one directory; inside: ours is below the other's; around: the other is below ours. */
  relation: 'same' | 'inside' | 'around';
}

/**
 * Whether spec.path (resolved) is another pool's directory, or lies inside or around one. A
 * dir pool lists every entry of its directory as a volume, a sub-directory too: nested pools
 * would each show (and could delete) what belongs to the other, as two pools on one directory
 * would. libvirt refuses only the same path written the same way.
 */
export function pathOverlap(
  path: string,
  others: readonly { name: string; path: string }[],
): PathOverlap | undefined {
  const below = (a: string, b: string) => a.startsWith(b === '/' ? '/' : `${b}/`);
  for (const pool of others) {
    if (pool.path === path) return { pool, relation: 'same' };
    if (below(path, pool.path)) return { pool, relation: 'inside' };
    if (below(pool.path, path)) return { pool, relation: 'around' };
  }
  return undefined;
}
