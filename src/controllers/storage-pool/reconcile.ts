// StoragePool: every agent whose Node the selector matches keeps a running libvirt dir pool
// named like the object with the object's uid as UUID, and reports it in its own
// status.nodes[] entry. The per-node finalizer lets each agent remove its copy on deletion,
// which waits while Volumes on that node are still in the pool.
import { findCondition } from '../../api/conditions.js';
import type { StoragePool, Volume } from '../../api/generated/types.js';
import {
  done,
  keyOf,
  nodeFinalizer,
  requeueAfter,
  type Action,
  type ControllerContext,
} from '../context.js';
import { INDEX_POOL } from '../indexes.js';
import { withPoolLock } from '../shared/pool-lock.js';
import { resolvedPath } from '../shared/pool.js';
import { selectsNode } from '../node-selector.js';
import { applyPoolSteps, removePool, type PoolActOutcome } from './act.js';
import { desiredPool } from './desired.js';
import { forgetFigures, steadyFigure } from '../shared/figures.js';
import { forgetJudged, matchAfter, reportUnselected } from '../shared/unselected.js';
import { listed, newProblem, retryDelay, withFinalizer } from '../kit.js';
import {
  forgetMadeDirectories,
  madeDirectories,
  noteBuild,
  removeMadeParents,
  unmadeTarget,
} from './directories.js';
import {
  forbiddenTarget,
  observePool,
  otherPoolDirs,
  refreshPool,
  resolvedPoolTargets,
} from './observe.js';
import {
  forgetMountPoint,
  lostMountPoint,
  missesLaterMounts,
  noteMountPoint,
} from '../shared/pool-mounts.js';
import { pathOverlap, planPool, type PoolStep } from './plan.js';
import { isConnectionError, isLibvirtError } from '../../libvirt/errors.js';
import {
  DELETION_BLOCKED,
  READY,
  nodeEntry,
  notSelectedStatus,
  notMounted,
  overlapProblem,
  poolNodeStatus,
  removedMessage,
  type PoolNodeFacts,
} from './status.js';
import { tellAfterWrite } from '../shared/after-write.js';

const KIND = 'StoragePool';
/**
 * How often a running pool is refreshed to see whether its directory is still there; the
 * kind's resync (index.ts) brings a pass at least this often.
 */
export const POOL_REFRESH_MS = 30_000;
/** The pool-lock key under which a pool's path is checked and the pool started: no pool name. */
const PATHS_LOCK = ' paths';

export async function reconcileStoragePool(key: string, ctx: ControllerContext): Promise<Action> {
  const cached = ctx.get<StoragePool>(KIND, undefined, key);
  if (!cached) {
    forgetJudged(ctx, KIND, key);
    return done;
  }
  const selected = nodeSelected(cached, ctx);
  if (selected === undefined)
    return report(cached, { observed: { found: 'none' }, problem: nodeUnknown(ctx) }, ctx);
  // The pool is looked up by the object's uid, so removal runs even without our finalizer.
  return withFinalizer(ctx, KIND, cached, nodeFinalizer(ctx.nodeName), {
    wanted: !cached.metadata.deletionTimestamp && selected,
    cleanupUnheld: true,
    apply: (pool) => converge(pool, ctx),
    cleanup: (pool) => removeFromNode(pool, selected, ctx),
  });
}

/** One pass towards a running pool as the spec describes it, our finalizer on. */
async function converge(pool: StoragePool, ctx: ControllerContext): Promise<Action> {
  const desired = desiredPool(pool);
  let observed = await observePool(ctx.libvirt(), desired);
  const uid = String(pool.metadata.uid);
  // Before the refresh: a directory below the mount point is gone with it, and DirectoryLost
  // would build it again on the file system underneath.
  const unmounted = await lostMountPoint(ctx.stateDir, uid, pool.spec.path);
  if (unmounted !== undefined) {
    // Stopped, so its Volumes wait (PoolNotReady) instead of making their files again, blank,
    // on the file system underneath; started again once the file system is back.
    if (observed.found === 'ours' && observed.active) {
      await observed.handle.destroy().catch((err: unknown) => {
        if (!isLibvirtError(err) || isConnectionError(err)) throw err;
      });
      observed = await observePool(ctx.libvirt(), desired);
    }
    const problem = notMounted(
      pool.spec.path,
      unmounted,
      ctx.nodeName,
      await missesLaterMounts(pool.spec.path),
    );
    return report(pool, { observed, problem }, ctx);
  }
  const due = observed.found === 'ours' && observed.active && refreshDue(pool, ctx);
  if (due && observed.found === 'ours') {
    observed = await refreshPool(observed, ctx.host.poolLocks, String(pool.metadata.name));
    // Said first, in status, before the next pass builds and starts the pool again: the
    // status change wakes the pool's Volumes, whose files went with the directory.
    if (observed.lost) {
      const problem = {
        reason: 'DirectoryLost',
        message:
          `pool ${String(pool.metadata.name)} on node ${ctx.nodeName} could not be read ` +
          `(${observed.lost}), so libvirt stopped it; it is built and started again, empty: ` +
          `the files that were in it are gone`,
      };
      return report(pool, { observed, problem }, ctx);
    }
  }
  // Judged before the directory is built or the pool started; a running pool is left alone.
  const starting = observed.found === 'none' || (observed.found === 'ours' && !observed.active);
  const target = starting ? await forbiddenTarget(pool.spec.path) : undefined;
  if (target) {
    const problem = {
      reason: 'PathForbidden',
      message:
        `spec.path ${pool.spec.path} leads to ${target} on node ${ctx.nodeName} through a ` +
        `symbolic link, inside a system directory pools must stay out of`,
    };
    return report(pool, { observed, problem }, ctx);
  }
  const steps = planPool(desired, observed, pool.spec.autostart ?? true);
  const apply = () =>
    applyPoolSteps(
      ctx.libvirt(),
      observed.found === 'ours' ? observed.handle : undefined,
      steps,
      () => noteBuild(ctx.stateDir, String(pool.metadata.uid), pool.spec.path),
    );
  // A pool about to start is compared with the host's other pools, links followed, under one
  // lock for every pool of this agent: two passes in parallel could each find the other's
  // directory not yet defined.
  const started = starting
    ? await withPoolLock(ctx.host.poolLocks, PATHS_LOCK, async () => {
        const resolved = await resolvedPath(pool.spec.path);
        const others = await resolvedPoolTargets(ctx.libvirt(), desired.uuid);
        const overlap = pathOverlap(resolved, others);
        if (overlap) {
          return { problem: overlapProblem(pool.spec.path, resolved, ctx.nodeName, overlap) };
        }
        return { outcome: await apply() };
      })
    : { outcome: await apply() };
  if (started.problem) return report(pool, { observed, problem: started.problem }, ctx);
  const { outcome } = started;
  if (steps.length > 0) {
    observed = await observePool(ctx.libvirt(), desired);
    recordCorrection(pool, steps, outcome, ctx);
  }
  // Noted when the pool was just started or refreshed (not on every pass): the file system it
  // runs on now is the one it must find mounted later.
  if (observed.found === 'ours' && observed.active && (due || steps.length > 0))
    await noteMountPoint(ctx.stateDir, uid, pool.spec.path);
  return report(pool, { observed, ...(outcome.problem ? { problem: outcome.problem } : {}) }, ctx);
}

/**
 * Whether the pool was last refreshed long enough ago; if so, notes this one. Not while this
 * agent has a storage call queued in the pool: an upload or a copy holds the pool lock for
 * minutes, the pass would wait that long, and a pool in use is looked at in a later pass.
 */
function refreshDue(pool: StoragePool, ctx: ControllerContext): boolean {
  if (ctx.host.poolLocks.has(String(pool.metadata.name))) return false;
  const uid = String(pool.metadata.uid);
  const now = ctx.now().getTime();
  const last = ctx.host.poolRefreshes.get(uid);
  // A clock that went backwards counts as due, so a refresh is never put off for good.
  if (last !== undefined && now >= last && now - last < POOL_REFRESH_MS) return false;
  ctx.host.poolRefreshes.set(uid, now);
  return true;
}

/**
 * Whether the selector matches this node; undefined when it cannot be told because the Node
 * is not (yet) known: a pool is never removed on a missing Node's account.
 */
function nodeSelected(pool: StoragePool, ctx: ControllerContext): boolean | undefined {
  const selector = pool.spec.nodeSelector;
  const empty =
    !selector ||
    (!Object.keys(selector.matchLabels ?? {}).length && !selector.matchExpressions?.length);
  if (empty) return true;
  const node = ctx.node();
  return node ? selectsNode(selector, node.metadata?.labels ?? {}) : undefined;
}

function nodeUnknown(ctx: ControllerContext) {
  return {
    reason: 'NodeUnknown',
    message: `Node ${ctx.nodeName} is not known to the API server, so spec.nodeSelector cannot be evaluated`,
  };
}

/** Deleting, or this node is no longer selected: remove our pool unless Volumes remain in it. */
async function removeFromNode(
  pool: StoragePool,
  selected: boolean,
  ctx: ControllerContext,
): Promise<Action> {
  const uid = String(pool.metadata.uid);
  const observed = await observePool(ctx.libvirt(), desiredPool(pool));
  const made = await madeDirectories(ctx.stateDir, uid);
  // Every Volume naming the pool holds it, even one with no file yet: the pool never goes
  // from under a Volume object (one made after the deletion began gets no file: the Volume
  // controller's PoolDeleting). The removal waits for this agent's storage calls in the pool.
  const outcome = await withPoolLock(ctx.host.poolLocks, String(pool.metadata.name), async () => {
    if (observed.found !== 'ours') return {};
    const blockedBy = ctx
      .byIndex<Volume>('Volume', INDEX_POOL, String(pool.metadata.name))
      .filter((v) => v.spec.nodeName === ctx.nodeName)
      .map(keyOf);
    if (blockedBy.length > 0) return { blockedBy };
    // Pools built before the record was kept: their directory goes as it always did.
    const unmade = made && !made.target ? await unmadeTarget(pool.spec.path) : undefined;
    return { removal: await removePool(observed.handle, unmade) };
  });
  if (outcome.blockedBy && observed.found === 'ours') {
    const { blockedBy } = outcome;
    const entry = selected
      ? poolNodeStatus(pool, ctx.nodeName, { observed, blockedBy }, ctx.now())
      : notSelectedStatus(pool, ctx.nodeName, blockedBy, ctx.now());
    const match = await matchAfter(ctx, pool, entry);
    const told = !!findCondition(nodeEntry(pool, ctx.nodeName)?.conditions, DELETION_BLOCKED);
    // After the write: one refused is retried, and would send the Warning again each time.
    await tellAfterWrite(
      () => ctx.applyNodeStatus(KIND, pool, entry, match),
      () => {
        if (told) return;
        ctx.event(
          KIND,
          pool,
          'Warning',
          'VolumesRemain',
          `pool stays on node ${ctx.nodeName} while Volumes are in it: ${listed(blockedBy)}`,
        );
      },
    );
    return requeueAfter(retryDelay(undefined, ctx.now(), ctx.retryMinMs));
  }
  // rmdir: a parent still holding spec.path or anything else stays.
  const parents = made
    ? await removeMadeParents(made, await otherPoolDirs(ctx.libvirt(), uid))
    : [];
  if (outcome.removal || parents.length > 0) {
    ctx.event(
      KIND,
      pool,
      'Normal',
      'PoolRemoved',
      removedMessage(ctx.nodeName, pool.spec.path, outcome.removal, parents),
    );
  }
  await forgetMadeDirectories(ctx.stateDir, uid);
  await forgetMountPoint(ctx.stateDir, uid);
  // A node that drops out of the selector says so in its entry. Removing the entry needs an
  // apply without it under this node's field manager, which the context does not offer.
  if (!pool.metadata.deletionTimestamp && nodeEntry(pool, ctx.nodeName)) {
    const entry = notSelectedStatus(pool, ctx.nodeName, [], ctx.now());
    await ctx.applyNodeStatus(KIND, pool, entry, await matchAfter(ctx, pool, entry));
  }
  forgetFigures(ctx.host.figures, `${KIND}/${uid}`);
  ctx.host.poolRefreshes.delete(uid);
  if (pool.metadata.finalizers?.includes(nodeFinalizer(ctx.nodeName))) {
    // Its removal brings the object back through the watch, for the pass below.
    await ctx.removeFinalizer(KIND, pool, nodeFinalizer(ctx.nodeName));
    return done;
  }
  // Not selected here and nothing of ours left: the summary may be ours to judge.
  await reportUnselected(ctx, KIND, pool);
  return done;
}

/** A Normal Event for each change made to the host, so drift corrections are visible. */
function recordCorrection(
  pool: StoragePool,
  steps: PoolStep[],
  outcome: PoolActOutcome,
  ctx: ControllerContext,
): void {
  const name = String(pool.metadata.name);
  const define = steps.find((s) => s.op === 'define');
  if (define && outcome.done.includes('define')) {
    const what = define.changed.length
      ? `redefined (${define.changed.join(', ')} changed)`
      : 'defined';
    ctx.event(KIND, pool, 'Normal', 'PoolDefined', `pool ${name} ${what} on node ${ctx.nodeName}`);
  } else if (outcome.done.includes('start')) {
    ctx.event(
      KIND,
      pool,
      'Normal',
      'PoolStarted',
      `pool ${name} was not running on node ${ctx.nodeName}; started it`,
    );
  }
}

async function report(
  pool: StoragePool,
  facts: PoolNodeFacts,
  ctx: ControllerContext,
): Promise<Action> {
  const before = nodeEntry(pool, ctx.nodeName)?.conditions;
  const entry = poolNodeStatus(pool, ctx.nodeName, steady(pool, facts, ctx), ctx.now());
  const problem = newProblem(before, entry.conditions, READY);
  // After the write: one refused is retried, and would send the Warning again each time.
  await tellAfterWrite(
    () => ctx.applyNodeStatus(KIND, pool, entry),
    () => {
      if (problem) ctx.event(KIND, pool, 'Warning', problem.reason, problem.message);
    },
  );
  const ready = findCondition(entry.conditions, READY);
  return ready?.status === 'True'
    ? done
    : requeueAfter(retryDelay(ready, ctx.now(), ctx.retryMinMs));
}

/** The observed figures as last shown, unless a minute has passed (figures.ts). */
function steady(pool: StoragePool, facts: PoolNodeFacts, ctx: ControllerContext): PoolNodeFacts {
  const { observed } = facts;
  if (observed.found !== 'ours') return facts;
  const { state, ...bytes } = observed.figures;
  const shown = steadyFigure(
    ctx.host.figures,
    `${KIND}/${pool.metadata.uid}`,
    bytes,
    ctx.now().getTime(),
  );
  return { ...facts, observed: { ...observed, figures: { state, ...shown } } };
}
