// The top-level status of a VirtualNetwork or StoragePool that no selected node reports on.
// Each selected agent writes the summary after its own entry (node-aggregate.ts); when the
// selector selects no Node at all, no agent has an entry to write, so the object had no status
// (kstatus: Current) or, once every node had left, kept "no selected node has reported yet"
// (InProgress) for ever. An agent whose own Node is not selected cannot tell "selects nothing"
// from "the selected nodes have not reported yet" from its cache (it watches only its own
// Node): it asks the API server which Nodes match, and says NoMatchingNodes (Stalled) when none.
import type { LabelSelector } from '../../api/generated/types.js';
import { findCondition, type Condition } from '../../api/conditions.js';
import type { VirtKind } from '../../api/generated/crds.js';
import type { ControllerContext, KubeObject } from '../context.js';
import {
  entriesWith,
  hasSelectedEntry,
  NO_MATCHING_NODES,
  type NodeEntryLike,
  type NodeMatch,
} from '../node-aggregate.js';

/** How many matching Nodes the summary names. */
const NAMED_NODES = 10;

/**
 * How long a judged summary holds while the object does not change. The object does not
 * change when a Node without an agent (one that never writes an entry) is deleted, labelled
 * or unlabelled, and this agent watches only its own Node: such a change reaches the summary
 * only when it is judged again. Ten minutes: a Node list per object per agent that often is
 * cheap, where every one-minute resync was not.
 */
export const JUDGED_TTL_MS = 10 * 60_000;

/** The judgement of one object's summary (HostState.summariesJudged, by `kind/name`). */
export interface Judged {
  resourceVersion: string | undefined;
  /** When (ms, the agent's clock). */
  at: number;
}
export type JudgedSummaries = Map<string, Judged>;

/**
 * Whether the summary judged as `judged` still holds for the object at `resourceVersion`:
 * the same version of it, judged less than JUDGED_TTL_MS ago. Pure.
 */
export function judgedStill(
  judged: Judged | undefined,
  resourceVersion: string | undefined,
  now: number,
): boolean {
  return (
    judged !== undefined &&
    judged.resourceVersion === resourceVersion &&
    now - judged.at < JUDGED_TTL_MS
  );
}

/** Forgets the judgement of a deleted object (its kind's reconcile found it gone). */
export function forgetJudged(ctx: ControllerContext, kind: VirtKind, name: string): void {
  ctx.host.summariesJudged.delete(`${kind}/${name}`);
}

type Selecting = KubeObject & {
  spec: { nodeSelector?: LabelSelector };
  status?: { conditions?: Condition[]; nodes?: NodeEntryLike[] };
};

/**
 * Whether an agent whose Node is not selected should judge the summary: nothing is being
 * deleted and no selected node has an entry (a selected node's agent keeps the summary then).
 * Pure; the list of Nodes is asked for only when this says so.
 */
export function summaryNeedsJudging(obj: Selecting): boolean {
  return !obj.metadata.deletionTimestamp && !hasSelectedEntry(obj.status?.nodes);
}

/**
 * Whether the summary should be written from `matching`: always when no Node matches (a
 * no-op write when it already says so); when some do, only to replace a NoMatchingNodes that
 * is no longer true. Otherwise the matching nodes' own agents report, and writing "not
 * reported yet" here would race their first entry for nothing.
 */
export function summaryToWrite(obj: Selecting, matching: readonly string[]): boolean {
  if (matching.length === 0) return true;
  return findCondition(obj.status?.conditions, 'Ready')?.reason === NO_MATCHING_NODES;
}

/** The pass of an agent whose Node the object's selector does not select. */
export async function reportUnselected(
  ctx: ControllerContext,
  kind: VirtKind,
  obj: Selecting,
): Promise<void> {
  const judged = `${kind}/${obj.metadata.name}`;
  if (!summaryNeedsJudging(obj)) {
    ctx.host.summariesJudged.delete(judged);
    return;
  }
  // Judged already from this very object, lately: only a Node's change could change the
  // answer. A Node that starts matching and has an agent reports (its entry ends this
  // judging); one without an agent, or a matching Node deleted or unlabelled, changes nothing
  // this agent sees, so the judgement expires (JUDGED_TTL_MS). Asking again at every resync
  // listed Nodes each minute, per object, on every such agent.
  const now = ctx.now().getTime();
  if (judgedStill(ctx.host.summariesJudged.get(judged), obj.metadata.resourceVersion, now)) return;
  const matching = await ctx.matchingNodes(obj.spec.nodeSelector, NAMED_NODES);
  if (summaryToWrite(obj, matching)) await ctx.applySummary(kind, obj, { matchingNodes: matching });
  // After a write, the watch brings a new resourceVersion: judged once more, a no-op.
  ctx.host.summariesJudged.set(judged, { resourceVersion: obj.metadata.resourceVersion, at: now });
}

/**
 * The NodeMatch to write with `entry`, an entry of this node saying the selector dropped it
 * (a network leaving, a pool kept by its Volumes): asked for when no selected entry would
 * remain, so that this agent's summary is the one reportUnselected writes. Without it, the two
 * disagreed ("not reported yet" against NoMatchingNodes) and the agents rewrote the summary in
 * turn, at every retry of a pool that Volumes keep on its node.
 */
export async function matchAfter(
  ctx: ControllerContext,
  obj: Selecting,
  entry: NodeEntryLike,
): Promise<NodeMatch | undefined> {
  if (obj.metadata.deletionTimestamp) return undefined;
  if (hasSelectedEntry(entriesWith(obj.status?.nodes, entry))) return undefined;
  return { matchingNodes: await ctx.matchingNodes(obj.spec.nodeSelector, NAMED_NODES) };
}
