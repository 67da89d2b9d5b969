// This node's entry in StoragePool.status.nodes[], rebuilt each pass from what was observed.
// It must be deterministic, or a converged pool would write its status on every pass: the
// conditions keep their lastTransitionTime while their status holds, and the byte figures are
// rounded down to whole MiB and refreshed at most once a minute (figures.ts), so the free
// space of a busy disk does not make every pass a write.
import {
  removeCondition,
  setCondition,
  type Condition,
  type ConditionUpdate,
} from '../../api/conditions.js';
import type { StoragePool, StoragePoolStatusNode } from '../../api/generated/types.js';
import { bytesQuantity, floorMiB } from '../../api/quantity.js';
import { listed, type Problem } from '../kit.js';
import type { PoolRemoval } from './act.js';
import type { ObservedPool } from './observe.js';
import type { PathOverlap } from './plan.js';

export const READY = 'Ready';
export const DELETION_BLOCKED = 'DeletionBlocked';
const OWN_TYPES = [READY, DELETION_BLOCKED];

export function nodeEntry(pool: StoragePool, nodeName: string): StoragePoolStatusNode | undefined {
  return pool.status?.nodes?.find((n) => n.nodeName === nodeName);
}

export interface PoolNodeFacts {
  observed: ObservedPool;
  problem?: Problem;
  /** Volumes (namespace/name) on this node that keep the pool from being removed. */
  blockedBy?: string[];
}

export function poolNodeStatus(
  pool: StoragePool,
  nodeName: string,
  facts: PoolNodeFacts,
  now: Date,
): StoragePoolStatusNode {
  const { observed } = facts;
  const entry: StoragePoolStatusNode = {
    nodeName,
    observedGeneration: pool.metadata.generation ?? 0,
    conditions: conditionsFor(pool, nodeName, readyCondition(pool, nodeName, facts), facts, now),
  };
  if (observed.found === 'ours') {
    const f = observed.figures;
    entry.state = f.state as StoragePoolStatusNode['state'];
    // libvirt measures a pool only while it runs: a stopped one keeps the figures of its last
    // refresh (of a directory that may be gone), shown as current for as long as it is down.
    if (!observed.active) return entry;
    entry.capacity = bytesQuantity(floorMiB(f.capacity));
    entry.allocation = bytesQuantity(floorMiB(f.allocation));
    entry.available = bytesQuantity(floorMiB(f.available));
  }
  return entry;
}

/** The entry of a node that spec.nodeSelector no longer selects (kept to say so). */
export function notSelectedStatus(
  pool: StoragePool,
  nodeName: string,
  blockedBy: string[],
  now: Date,
): StoragePoolStatusNode {
  const message =
    blockedBy.length > 0
      ? `node ${nodeName} no longer matches spec.nodeSelector; the pool stays on it while Volumes remain`
      : `node ${nodeName} does not match spec.nodeSelector; the pool is not on this node`;
  const ready = { type: READY, status: 'False' as const, reason: 'NodeNotSelected', message };
  return {
    nodeName,
    observedGeneration: pool.metadata.generation ?? 0,
    conditions: conditionsFor(pool, nodeName, ready, { blockedBy }, now),
  };
}

function readyCondition(
  pool: StoragePool,
  nodeName: string,
  facts: PoolNodeFacts,
): ConditionUpdate {
  const { observed, problem } = facts;
  const name = String(pool.metadata.name);
  if (problem) return { type: READY, status: 'False', ...problem };
  switch (observed.found) {
    case 'clash':
      return {
        type: READY,
        status: 'False',
        reason: 'NameConflict',
        message:
          `libvirt on node ${nodeName} already has a pool named ${name} with UUID ${observed.uuid}, ` +
          `which is not this StoragePool's uid; it is never adopted or changed: rename or remove it`,
      };
    case 'none':
      return {
        type: READY,
        status: 'False',
        reason: 'NotCreated',
        message: `pool ${name} is not defined on node ${nodeName}`,
      };
    case 'ours':
      return observed.active
        ? {
            type: READY,
            status: 'True',
            reason: 'Running',
            message: `pool ${name} is running at ${observed.doc.target.path}`,
          }
        : {
            type: READY,
            status: 'False',
            reason: 'Inactive',
            message: `pool ${name} is ${observed.figures.state} on node ${nodeName}`,
          };
  }
}

function conditionsFor(
  pool: StoragePool,
  nodeName: string,
  ready: ConditionUpdate,
  facts: { blockedBy?: string[] },
  now: Date,
): Condition[] {
  const generation = pool.metadata.generation ?? 0;
  const previous = (nodeEntry(pool, nodeName)?.conditions ?? []).filter((c) =>
    OWN_TYPES.includes(c.type),
  );
  let conditions = setCondition(previous, { ...ready, observedGeneration: generation }, now);
  const blockedBy = facts.blockedBy ?? [];
  conditions =
    blockedBy.length > 0
      ? setCondition(
          conditions,
          {
            type: DELETION_BLOCKED,
            status: 'True',
            reason: 'VolumesRemain',
            message: `${blockedBy.length} Volume(s) on this node are in the pool: ${listed(blockedBy)}; delete them first`,
            observedGeneration: generation,
          },
          now,
        )
      : removeCondition(conditions, DELETION_BLOCKED);
  return conditions;
}

/** At most ten names, so a message stays readable for a pool holding thousands of volumes. */

/** The PoolRemoved Event: what became of spec.path and of the parents the build made. */
export function removedMessage(
  nodeName: string,
  path: string,
  removal: PoolRemoval | undefined,
  parentsRemoved: readonly string[],
): string {
  const parents = parentsRemoved.length
    ? `; removed the parent directories its build had made: ${parentsRemoved.join(', ')}`
    : '';
  const directory = (() => {
    switch (removal?.directory) {
      case undefined:
        return '';
      case 'removed':
        return `; directory ${path} removed`;
      case 'kept':
        return `; directory ${path} kept: ${removal.detail ?? 'libvirt could not remove it'}`;
      case 'preexisting':
        return `; directory ${path} kept: it existed before the pool`;
      case 'absent':
        return `; there was no directory ${path} to remove`;
      case 'notDirectory':
        return `; ${path} is not a directory (a file stands there or at a parent): left untouched`;
    }
  })();
  return `pool removed from node ${nodeName}${directory}${parents}`;
}

/**
 * What a pool kept stopped because its file system is not mounted says, and how the user gets
 * out: mount it (and where this agent's view of the host's mounts is frozen, restart its pod),
 * or give the file system up, which means the Volumes first (a Delete Volume waits for a
 * running pool to delete its file in, so Retain lets it go). Pure.
 */
export function notMounted(
  path: string,
  mountPoint: string,
  nodeName: string,
  viewFrozen: boolean,
): Problem {
  return {
    reason: 'NotMounted',
    message:
      `spec.path ${path} was on the file system mounted at ${mountPoint} on node ${nodeName}, ` +
      'which is not mounted now: the pool is kept stopped, so no Volume makes its file on the ' +
      'file system underneath; mount it again' +
      (viewFrozen
        ? " (if it is mounted on the host already, restart this node's agent pod: its host " +
          'paths have no mountPropagation, so it sees only what was mounted when it started)'
        : '') +
      "; to give that file system up, set the pool's Volumes to deletionPolicy Retain, delete " +
      'them and re-create the StoragePool',
  };
}

/** The refusal of a spec.path that is, or lies inside or around, another pool's directory. */
export function overlapProblem(
  specPath: string,
  resolved: string,
  nodeName: string,
  overlap: PathOverlap,
): Problem {
  const other = `libvirt pool ${overlap.pool.name} (directory ${overlap.pool.path})`;
  const via = resolved === specPath ? '' : ` (which leads to ${resolved})`;
  const fix = 'choose a path outside it: re-create the StoragePool (spec.path is immutable)';
  switch (overlap.relation) {
    case 'same':
      return {
        reason: 'PathConflict',
        message:
          `spec.path ${specPath}${via} on node ${nodeName} is the directory of ${other}: ` +
          `two pools would list and delete each other's volumes; ${fix}`,
      };
    case 'inside':
      return {
        reason: 'PathNested',
        message:
          `spec.path ${specPath}${via} on node ${nodeName} is inside the directory of ` +
          `${other}, which would list this pool's directory as one of its volumes; ${fix}`,
      };
    case 'around':
      return {
        reason: 'PathNested',
        message:
          `spec.path ${specPath}${via} on node ${nodeName} holds the directory of ${other}, ` +
          `which this pool would list as one of its volumes; ${fix}`,
      };
  }
}
