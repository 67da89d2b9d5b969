// The top-level status of a cluster-scoped object that every selected node materialises
// (VirtualNetwork, StoragePool): Ready over the nodes' entries in status.nodes[], the kstatus
// conditions that go with it, and observedGeneration. Pure.
//
// Every agent writes it after its own entry (agent/kube-writes.ts), under one field manager
// that all agents share, so ownership of these fields is never split between node managers.
// It is computed only from the object as stored (plus the writer's fresh entry), never from
// the writer's own view of the host, and each write carries the resourceVersion it was
// computed from: a write computed from an object another agent changed meanwhile is refused
// (409) and recomputed. So every agent that computes it from the same object computes the
// same value, the value stored is always the one that follows from the entries stored with
// it, and once the entries are stable every agent finds it already there and writes nothing.
import {
  findCondition,
  isStalledReason,
  progressConditions,
  setCondition,
  type Condition,
  type ConditionUpdate,
} from '../api/conditions.js';

export interface NodeEntryLike {
  nodeName: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface AggregateStatus {
  observedGeneration: number;
  conditions: Condition[];
  /** "R/S": R of the S selected nodes that reported are Ready (the Nodes printer column). */
  readyNodes: string;
}

/** Ready reasons of an entry kept by a node the selector no longer selects. */
const NOT_SELECTED = new Set(['NotSelected', 'NodeNotSelected']);
const MAX_NAMED = 10;
/** Ready's reason when spec.nodeSelector selects none of the cluster's Nodes (Stalled). */
export const NO_MATCHING_NODES = 'NoMatchingNodes';

/**
 * The Nodes the selector matches, as the API server answered an agent that asked (at most a
 * few names). Only an agent whose own Node is not selected asks, and only while no selected
 * node has an entry: then the entries alone cannot tell "selects nothing" from "not reported
 * yet", and every agent that asks gets the same answer from the same Nodes.
 */
export interface NodeMatch {
  matchingNodes: readonly string[];
}

/** Whether an entry of a node the selector (still) selects is stored. */
export function hasSelectedEntry(entries: readonly NodeEntryLike[] | undefined): boolean {
  return (entries ?? []).some(
    (e) => !NOT_SELECTED.has(findCondition(e.conditions, 'Ready')?.reason ?? ''),
  );
}

/**
 * The other nodes whose entries hold the summary back (not Ready, or behind the object's
 * generation): the only ones worth asking the API server about, since an entry of a Node that
 * was deleted stays until `forget-node` and would keep Ready False or observedGeneration behind
 * for ever. A converged object names none, so a converged pass asks nothing. At most `limit`.
 */
export function entriesHoldingBack(
  generation: number,
  entries: readonly NodeEntryLike[],
  self: string,
  limit: number,
): string[] {
  return entries
    .filter((e) => e.nodeName !== self)
    .filter((e) => !NOT_SELECTED.has(findCondition(e.conditions, 'Ready')?.reason ?? ''))
    .filter(
      (e) =>
        findCondition(e.conditions, 'Ready')?.status !== 'True' ||
        (e.observedGeneration ?? 0) < generation,
    )
    .map((e) => e.nodeName)
    .slice(0, limit);
}

/** What an agent found when it looked up the Node of an entry holding a summary back. */
export interface NodeLookup {
  exists: boolean;
  /** When it was asked (ms, the agent's clock). */
  at: number;
}

/**
 * The answers an agent keeps, by `lookupKey`: one per object, its generation and the node,
 * so that an entry stuck on a lasting state (BridgeNotFound) costs one GET per answer's life,
 * not one at every pass of every agent (each VirtualNetwork and StoragePool pass ends with a
 * summary), while a spec change asks again at once (a deleted Node's entry is then behind).
 */
export type NodeLookups = Map<string, NodeLookup>;

/**
 * How long an answer holds. A Node deleted (or re-created) while its entry holds the summary
 * back counts as such within this long: the entry of a dead host keeps Ready False until then.
 */
export const NODE_LOOKUP_TTL_MS = 5 * 60_000;

export function lookupKey(uid: string, generation: number, nodeName: string): string {
  return `${uid}@${generation}/${nodeName}`;
}

/**
 * Which of `suspects` to look up now, and which are known gone, from the answers kept for
 * this object at this generation (`key` of a node name). Pure.
 */
export function nodesToLookUp(
  suspects: readonly string[],
  known: ReadonlyMap<string, NodeLookup>,
  key: (nodeName: string) => string,
  now: number,
): { ask: string[]; gone: string[] } {
  const ask: string[] = [];
  const gone: string[] = [];
  for (const name of suspects) {
    const answer = known.get(key(name));
    if (!answer || now - answer.at >= NODE_LOOKUP_TTL_MS) ask.push(name);
    else if (!answer.exists) gone.push(name);
  }
  return { ask, gone };
}

/** The answers still current at `now`: older ones are dropped, so the map cannot grow. */
export function pruneLookups(known: NodeLookups, now: number): void {
  for (const [key, answer] of known) {
    if (now - answer.at >= NODE_LOOKUP_TTL_MS) known.delete(key);
  }
}

/**
 * The entries the summary counts: all but those of Nodes the API server says no longer exist.
 * A deleted Node's agent can no longer report, so its entry says nothing about the object;
 * the entry itself (and the node's finalizer) stays for `forget-node`, since only the
 * node's own agent may change it (the admission policy) and its host may still hold the object.
 */
export function withoutGoneNodes(
  entries: readonly NodeEntryLike[],
  gone: readonly string[],
): NodeEntryLike[] {
  return entries.filter((e) => !gone.includes(e.nodeName));
}

/** The stored entries with `entry` in place of (or added to) this node's. */
export function entriesWith(
  stored: readonly NodeEntryLike[] | undefined,
  entry: NodeEntryLike,
): NodeEntryLike[] {
  const others = (stored ?? []).filter((e) => e.nodeName !== entry.nodeName);
  return [...others, entry];
}

/**
 * Ready is True when every selected node that reported says Ready=True; False names the nodes
 * that do not, with their reasons. Nodes are the entries in status.nodes[] except those of
 * nodes the selector dropped; a selected node whose agent has not written its entry yet is not
 * known here (agents see only their own Node).
 */
export function aggregateReady(
  entries: readonly NodeEntryLike[],
  match?: NodeMatch,
): Pick<ConditionUpdate, 'type' | 'status' | 'reason' | 'message'> {
  const selected = [...entries]
    .filter((e) => !NOT_SELECTED.has(findCondition(e.conditions, 'Ready')?.reason ?? ''))
    .sort((a, b) => (a.nodeName < b.nodeName ? -1 : a.nodeName > b.nodeName ? 1 : 0));
  if (selected.length === 0 && match?.matchingNodes.length === 0) {
    // No agent will ever report: only a user (a Node label, the selector) can change that.
    return {
      type: 'Ready',
      status: 'False',
      reason: NO_MATCHING_NODES,
      message: 'spec.nodeSelector selects no Node: label a node or change the selector',
    };
  }
  if (selected.length === 0 && match) {
    return {
      type: 'Ready',
      status: 'False',
      reason: 'NoNodes',
      message: `no selected node has reported yet (spec.nodeSelector selects ${match.matchingNodes.join(', ')})`,
    };
  }
  if (selected.length === 0) {
    return {
      type: 'Ready',
      status: 'False',
      reason: 'NoNodes',
      message: 'no selected node has reported yet',
    };
  }
  const failing = selected
    .map((e) => ({ node: e.nodeName, ready: findCondition(e.conditions, 'Ready') }))
    .filter((f) => f.ready?.status !== 'True');
  if (failing.length === 0) {
    return {
      type: 'Ready',
      status: 'True',
      reason: 'AllNodesReady',
      message: `ready on ${named(selected.map((e) => e.nodeName))}`,
    };
  }
  const reasons = [...new Set(failing.map((f) => f.ready?.reason ?? 'NotReported'))];
  // One reason everywhere: keep it, so the cause (and its kstatus class) shows at the top.
  // Several: the first user-fixable one wins over waiting, since waiting cannot clear it.
  const stalled = reasons.find(isStalledReason);
  const reason = reasons.length === 1 ? (reasons[0] as string) : (stalled ?? 'NodesNotReady');
  const details = failing
    .slice(0, MAX_NAMED)
    .map(
      (f) =>
        `${f.node} (${f.ready ? `${f.ready.reason}: ${f.ready.message}` : 'no Ready condition'})`,
    );
  const more = failing.length > MAX_NAMED ? `; and ${failing.length - MAX_NAMED} more` : '';
  return {
    type: 'Ready',
    status: 'False',
    reason,
    message: `not ready on ${failing.length} of ${selected.length} node(s): ${details.join('; ')}${more}`,
  };
}

function named(nodes: string[]): string {
  const shown = nodes.slice(0, MAX_NAMED).join(', ');
  const more = nodes.length > MAX_NAMED ? ` and ${nodes.length - MAX_NAMED} more` : '';
  return `${nodes.length} node(s): ${shown}${more}`;
}

/**
 * The top-level fields: readyNodes counts the selected nodes' entries that say Ready=True, of
 * all of them; observedGeneration is the oldest generation any selected node has
 * acted on (kstatus reads InProgress until every node caught up), the object's generation when
 * no node is selected; conditions Ready, Reconciling and Stalled, each keeping its
 * lastTransitionTime from `previous` while its status holds. `match` is given only by an agent
 * that asked which Nodes the selector matches (NodeMatch).
 */
export function aggregateStatus(
  generation: number,
  previous: readonly Condition[] | undefined,
  entries: readonly NodeEntryLike[],
  now: Date,
  match?: NodeMatch,
): AggregateStatus {
  const selected = entries.filter(
    (e) => !NOT_SELECTED.has(findCondition(e.conditions, 'Ready')?.reason ?? ''),
  );
  const observedGeneration =
    selected.length === 0
      ? generation
      : Math.min(...selected.map((e) => e.observedGeneration ?? 0));
  const ready = { ...aggregateReady(entries, match), observedGeneration };
  let conditions = (previous ?? []).filter((c) =>
    ['Ready', 'Reconciling', 'Stalled'].includes(c.type),
  );
  conditions = setCondition(conditions, ready, now);
  for (const u of progressConditions(ready)) conditions = setCondition(conditions, u, now);
  // A count, not names: a printer column shows one value of a list (the first node only).
  const readyCount = selected.filter(
    (e) => findCondition(e.conditions, 'Ready')?.status === 'True',
  ).length;
  return { observedGeneration, conditions, readyNodes: `${readyCount}/${selected.length}` };
}

/**
 * The Warning Event for a summary that turned to NoMatchingNodes: no node's entry says it (no
 * agent acts on the object), so the writer of the summary does. Only the agent whose write
 * changed the summary asks, so one Event is recorded, not one per agent. Pure.
 */
export function summaryEvent(
  previous: readonly Condition[] | undefined,
  next: readonly Condition[],
): { reason: string; message: string } | undefined {
  const ready = findCondition(next, 'Ready');
  if (ready?.reason !== NO_MATCHING_NODES) return undefined;
  if (findCondition(previous, 'Ready')?.reason === NO_MATCHING_NODES) return undefined;
  return { reason: ready.reason, message: ready.message ?? '' };
}
