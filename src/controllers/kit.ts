// What every kind's reconcile shares: the step-failure type, the backoff that needs no
// per-key state, the "a condition turned bad" test that ties Warning Events to transitions,
// and the finalizer table. Pure, except withFinalizer, which writes through the context.
import type { VirtKind } from '../api/generated/crds.js';
import { findCondition, type Condition } from '../api/conditions.js';
import { done, splitKey, type Action, type ControllerContext, type KubeObject } from './context.js';

/** Why a step (or a whole pass) could not reach what the spec asks: a condition's reason. */
export interface Problem {
  reason: string;
  message: string;
}

// QEMU stamps each line it prints (libvirt's `-msg timestamp=on`); libvirt passes those lines
// on in the errors of a failed start. e.g. 2026-12-04T22:09:54.361404Z
const QEMU_TIMESTAMP = /\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z? ?/g;
// libvirt words a QEMU that exits during start-up one of two ways, depending on whether it
// went before or after libvirt reached its monitor: a race, not two different failures.
const QEMU_EXITED =
  /\b(?:process exited while connecting to monitor|qemu unexpectedly closed the monitor): /g;

/**
 * A host error as a condition's message says it: the same failure in the same words on every
 * retry. A message that changed each pass (QEMU's timestamps) made every failed start a status
 * write, whose watch event woke the key at once, past its backoff, and a new Warning Event:
 * one machine that could not start retried every half second and used up its Event budget.
 */
export function stableMessage(message: string): string {
  return message.replace(QEMU_TIMESTAMP, '').replace(QEMU_EXITED, 'QEMU exited while starting: ');
}

/**
 * A backoff whose only memory is a condition's lastTransitionTime: as long as the object has
 * been failing (`since`), between `minMs` and `maxMs`. It doubles the wait on each retry, a
 * fresh problem is retried quickly, and it survives agent restarts.
 */
export function failingForDelay(
  since: string | undefined,
  now: Date,
  minMs: number,
  maxMs: number,
): number {
  const failingFor = since ? now.getTime() - Date.parse(since) : 0;
  if (!Number.isFinite(failingFor)) return minMs;
  return Math.min(maxMs, Math.max(minMs, failingFor));
}

/**
 * The condition of `type` when it turned `bad` since `before`: not `bad` before, or `bad` for
 * another reason (or, with `sameMessage`, another message). The moment for one Event, not one
 * per pass.
 */
export function turnedBad(
  before: readonly Condition[] | undefined,
  after: readonly Condition[] | undefined,
  type: string,
  bad: 'True' | 'False',
  sameMessage = true,
): Condition | undefined {
  const now = findCondition(after, type);
  if (now?.status !== bad) return undefined;
  const was = findCondition(before, type);
  const same =
    was?.status === bad &&
    was.reason === now.reason &&
    (!sameMessage || was.message === now.message);
  return same ? undefined : now;
}

/** Up to ten names, sorted, then how many more: for messages that list objects. */
export function listed(names: readonly string[]): string {
  const shown = [...names].sort().slice(0, 10).join(', ');
  return names.length > 10 ? `${shown} and ${names.length - 10} more` : shown;
}

const RETRY_MIN_MS = 5_000;
const RETRY_MAX_MS = 300_000;

/**
 * How long to wait before retrying a problem only the host can fix (StoragePool, Volume): as
 * long as the condition has been False so far, between `minMs` (5 s unless the agent was told
 * otherwise, ControllerContext.retryMinMs) and 5 min. This doubles the wait on each retry
 * without any state besides the condition itself, and a fresh problem is retried quickly.
 */
export function retryDelay(
  condition: Condition | undefined,
  now: Date,
  minMs = RETRY_MIN_MS,
): number {
  const since = condition?.status === 'False' ? condition.lastTransitionTime : undefined;
  return failingForDelay(since, now, minMs, RETRY_MAX_MS);
}

/**
 * The condition of `type` when it newly reports a problem (False now, and before it was True,
 * absent or False for another reason): the moment to emit one Warning Event, not one per pass.
 */
export function newProblem(
  before: readonly Condition[] | undefined,
  after: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  // A new message for the same reason (free space shrinking further) is not a new problem.
  return turnedBad(before, after, type, 'False', false);
}

/**
 * One pass through the finalizer table (style habit 7):
 *
 *                    | wanted here                       | not wanted (deleting, or for a
 *                    |                                   | per-node kind: not selected here)
 *   no finalizer     | add it, then apply with the       | nothing: nothing of ours is on the
 *                    | object the patch returned         | host, so there is nothing to undo
 *   has finalizer    | apply                             | cleanup
 *
 * The finalizer goes on before anything exists on the host, so nothing is ever orphaned; apply
 * goes on with the patched object because its resourceVersion is the one a status write must
 * carry (the cached one would be a certain 409 and a lost pass). `cleanup` removes the
 * finalizer itself once the host is clean (it may instead report why it cannot be yet); it
 * must be idempotent and safe when apply never ran.
 *
 * Two variations, for the kinds that need them:
 * - several finalizers (Volume: the host one guards the file, the protection one holds the
 *   deletion while something uses it): all go on, in the order given, each patch from the
 *   object the previous one returned; "has finalizer" means any of them, so a cleanup that
 *   drops them one pass at a time is called again while one is left.
 * - `cleanupUnheld` (StoragePool): cleanup also runs without our finalizer. Its host object is
 *   found by the object's uid, so a pool left behind without the finalizer (taken off by
 *   hand, say) is still found and removed, and a node that dropped out of the selector keeps
 *   saying so in its status entry.
 */
export async function withFinalizer<T extends KubeObject>(
  ctx: ControllerContext,
  kind: VirtKind,
  obj: T,
  finalizers: string | readonly string[],
  pass: {
    /** Default: not being deleted. */
    wanted?: boolean;
    /** Run cleanup when not wanted even if none of our finalizers is on the object. */
    cleanupUnheld?: boolean;
    apply: (obj: T) => Promise<Action>;
    cleanup: (obj: T) => Promise<Action>;
  },
): Promise<Action> {
  const ours = typeof finalizers === 'string' ? [finalizers] : finalizers;
  const has = (o: T, f: string) => o.metadata.finalizers?.includes(f) ?? false;
  const wanted = pass.wanted ?? !obj.metadata.deletionTimestamp;
  if (!wanted)
    return pass.cleanupUnheld || ours.some((f) => has(obj, f)) ? pass.cleanup(obj) : done;
  let current = obj;
  for (const f of ours) if (!has(current, f)) current = await ctx.ensureFinalizer(kind, current, f);
  return pass.apply(current);
}

/** The cached object a queue key (namespace/name, or name) names. */
export function cachedByKey<T extends KubeObject>(
  ctx: ControllerContext,
  kind: VirtKind,
  key: string,
): T | undefined {
  const { namespace, name } = splitKey(key);
  return ctx.get<T>(kind, namespace, name);
}

/**
 * How a libvirt lifecycle event names a host change (Controller.hostChanged's `what`), by its
 * event and detail names: "defined/added", "started/booted".
 */
export function lifecycleChange(event: string, detail: string): string {
  return `${event}/${detail}`;
}
