// This node's entry in status.nodes[], rebuilt each pass from what was observed. Pure.
//
// The top-level summary (status.conditions Ready over the selected nodes, observedGeneration)
// is written with the entry by kube-writes, computed from the stored object alone
// (controllers/node-aggregate.ts), so every agent writes the same value.
import { findCondition, setCondition, type Condition } from '../../api/conditions.js';
import type { VirtualNetwork, VirtualNetworkStatusNode } from '../../api/generated/types.js';
import { done, requeueAfter, type Action } from '../context.js';
import type { ObservedNetwork } from './observe.js';
import { failingForDelay, turnedBad, type Problem } from '../kit.js';
import type { NetworkStep } from './plan.js';

export function nodeEntryOf(
  vnet: VirtualNetwork,
  nodeName: string,
): VirtualNetworkStatusNode | undefined {
  return vnet.status?.nodes?.find((n) => n.nodeName === nodeName);
}

export interface NodeStatusInput {
  vnet: VirtualNetwork;
  nodeName: string;
  observed: ObservedNetwork;
  /** Restart-time fields the running network does not reflect yet. */
  restartFields: readonly string[];
  problem?: Problem;
  now: Date;
}

export function nodeStatus(input: NodeStatusInput): VirtualNetworkStatusNode {
  const { vnet, nodeName, observed, problem, now } = input;
  const previous = nodeEntryOf(vnet, nodeName)?.conditions;
  const entry: VirtualNetworkStatusNode = { nodeName, active: false };
  if (observed.state === 'ours') {
    entry.active = observed.active;
    const bridge = observed.current.bridge?.name;
    if (bridge !== undefined) entry.bridge = bridge;
    entry.uuid = observed.uuid;
  }
  if (vnet.metadata.generation !== undefined) entry.observedGeneration = vnet.metadata.generation;

  let conditions: Condition[] = setCondition(previous, ready(observed, problem), now);
  if (observed.state === 'ours') {
    conditions = setCondition(
      conditions,
      restartRequired(input.restartFields, problem, observed.active),
      now,
    );
  }
  entry.conditions = conditions.filter(
    (c) => c.type === 'Ready' || (c.type === 'RestartRequired' && observed.state === 'ours'),
  );
  return entry;
}

function ready(observed: ObservedNetwork, problem: Problem | undefined) {
  if (problem) {
    return {
      type: 'Ready',
      status: 'False' as const,
      reason: problem.reason,
      message: problem.message,
    };
  }
  if (observed.state === 'ours' && observed.active) {
    const bridge = observed.current.bridge?.name ?? 'an unnamed bridge';
    return {
      type: 'Ready',
      status: 'True' as const,
      reason: 'Active',
      message: `libvirt network '${observed.current.name}' is active on bridge ${bridge}`,
    };
  }
  return {
    type: 'Ready',
    status: 'False' as const,
    reason: 'Inactive',
    message: 'the libvirt network is not running on this node',
  };
}

function restartRequired(fields: readonly string[], problem: Problem | undefined, active: boolean) {
  if (fields.length === 0) {
    return {
      type: 'RestartRequired',
      status: 'False' as const,
      reason: 'UpToDate',
      // Nothing waits for a restart, but a stopped network (a refused start) has no running
      // definition that could match the spec.
      message: active
        ? 'the running network matches the spec'
        : 'the network is not running on this node; it starts as the spec says',
    };
  }
  // A problem (a refused or unjudgeable spec, a failed define) may have kept the new
  // definition from being saved: then say what stands in the way instead.
  if (problem) {
    return {
      type: 'RestartRequired',
      status: 'True' as const,
      reason: 'PendingRestart',
      message:
        `the running network does not reflect ${fields.join(', ')}; the change waits for ` +
        `Ready's ${problem.reason} to be resolved, and then applies when the network restarts ` +
        `on this node, which disconnects its guests`,
    };
  }
  return {
    type: 'RestartRequired',
    status: 'True' as const,
    reason: 'PendingRestart',
    message:
      `the running network does not reflect ${fields.join(', ')}; the new definition is saved ` +
      `and applies when the network restarts on this node, which disconnects its guests ` +
      `(virsh net-destroy; the agent starts it again)`,
  };
}

export interface NodeEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * Warning Events for conditions that turned bad since the entry last written: Ready turning
 * False (or False for a new reason), RestartRequired turning True or naming other fields. Tied
 * to transitions, so a node that stays in one state does not repeat itself each pass.
 */
export function conditionEvents(
  before: VirtualNetworkStatusNode | undefined,
  after: VirtualNetworkStatusNode,
): NodeEvent[] {
  const events: NodeEvent[] = [];
  for (const type of ['Ready', 'RestartRequired']) {
    const now = turnedBad(
      before?.conditions,
      after.conditions,
      type,
      type === 'Ready' ? 'False' : 'True',
    );
    if (!now) continue;
    events.push({
      type: 'Warning',
      reason: type === 'Ready' ? now.reason : type,
      message: now.message,
    });
  }
  return events;
}

/** Normal Events for what a pass changed on the host. */
export function stepEvents(
  before: ObservedNetwork,
  executed: readonly NetworkStep[],
  nodeName: string,
): NodeEvent[] {
  const ops = new Set(executed.map((s) => s.op));
  const hostChanges = executed.filter((s) => s.op === 'dhcpHost' || s.op === 'dnsHost').length;
  const events: NodeEvent[] = [];
  const normal = (reason: string, message: string) =>
    events.push({ type: 'Normal', reason, message });
  if (before.state === 'absent' && ops.has('define')) {
    normal(
      'Created',
      `defined the libvirt network on node ${nodeName}${ops.has('start') ? ' and started it' : ''}`,
    );
  } else if (before.state === 'ours' && !before.active && ops.has('start')) {
    // Drift: someone (or a host reboot without autostart) stopped it.
    normal('Started', `the libvirt network was not running on node ${nodeName}; started it`);
  }
  if (ops.has('destroy') || ops.has('undefine')) {
    normal('Removed', `removed the libvirt network from node ${nodeName}`);
  }
  if (hostChanges > 0) {
    normal(
      'HostsUpdated',
      `applied ${hostChanges} DHCP/DNS host change(s) to the running network on node ${nodeName} without a restart`,
    );
  }
  return events;
}

/**
 * The entry a node keeps once the selector dropped it and the network is gone from it, so the
 * object does not go on showing it "active" there; undefined when the object is being deleted
 * or the node never had an entry.
 */
export function leavingEntry(
  vnet: VirtualNetwork,
  nodeName: string,
  now: Date,
): VirtualNetworkStatusNode | undefined {
  if (vnet.metadata.deletionTimestamp || !nodeEntryOf(vnet, nodeName)) return undefined;
  const problem = {
    reason: 'NotSelected',
    message: `spec.nodeSelector no longer selects node ${nodeName}; the network was removed from it`,
  };
  return nodeStatus({
    vnet,
    nodeName,
    observed: { state: 'absent' },
    restartFields: [],
    problem,
    now,
  });
}

const MIN_RETRY_MS = 5_000;
const MAX_RETRY_MS = 300_000;

/**
 * The retry delay for a node that is not Ready: as long as it has been failing, between
 * `minMs` (5 s unless the agent was told otherwise) and 5 min. The condition's
 * lastTransitionTime is the memory, so the backoff survives agent restarts and needs no
 * per-key state.
 */
export function retryDelayMs(
  entry: VirtualNetworkStatusNode,
  now: Date,
  minMs = MIN_RETRY_MS,
): number {
  const since = findCondition(entry.conditions, 'Ready')?.lastTransitionTime;
  return failingForDelay(since, now, minMs, MAX_RETRY_MS);
}

/**
 * What the queue does next. Ready: nothing until something changes. A spec libvirt cannot
 * express: nothing until the spec changes (that enqueues the key). Anything else the host
 * judged (a name clash, a refusal, guests still attached): look again with backoff.
 */
export function nextAction(
  entry: VirtualNetworkStatusNode,
  problem: Problem | undefined,
  now: Date,
  retryMinMs?: number,
): Action {
  if (problem?.reason === 'Unsupported') return done;
  if (!problem && findCondition(entry.conditions, 'Ready')?.status === 'True') return done;
  return requeueAfter(retryDelayMs(entry, now, retryMinMs));
}
