// One pass for one VirtualNetwork on this node: cache -> finalizer table -> observe ->
// desired -> plan -> act -> status -> Action.
import type { VirtualNetwork } from '../../api/generated/types.js';
import {
  done,
  nodeFinalizer,
  requeueAfter,
  type Action,
  type ControllerContext,
} from '../context.js';
import { actNetwork } from './act.js';
import { desiredNetwork, placementOn, unsupportedSpec } from './desired.js';
import { observeNetwork, runningUsers } from './observe.js';
import { planCreate, planRemoval, planUpdate, restartFields } from './plan.js';
import {
  conditionEvents,
  inUse,
  nameConflict,
  nodeEntryOf,
  nodeStatus,
  notSelected,
  retryDelayMs,
  stepEvents,
  type Problem,
} from './status.js';
import type { VirtualNetworkStatusNode } from '../../api/generated/types.js';

const KIND = 'VirtualNetwork';
/** How soon to look again when the selector needs this node's labels and the Node is unknown. */
const NODE_UNKNOWN_RETRY_MS = 30_000;

export async function reconcileVirtualNetwork(
  key: string,
  ctx: ControllerContext,
): Promise<Action> {
  const vnet = ctx.get<VirtualNetwork>(KIND, undefined, key);
  if (!vnet) return done;
  const finalizer = nodeFinalizer(ctx.nodeName);
  const held = vnet.metadata.finalizers?.includes(finalizer) ?? false;
  // The finalizer table. Deleting: clean this host if we hold our finalizer, else nothing is
  // ours to do. No longer selected: the same cleanup, the object itself stays.
  if (vnet.metadata.deletionTimestamp) return held ? removeFromNode(vnet, ctx, finalizer) : done;
  const placement = placementOn(vnet, ctx.node());
  if (placement === 'unknown') {
    ctx.log.warn({ key, node: ctx.nodeName }, 'node not in the cache; nodeSelector undecidable');
    return requeueAfter(NODE_UNKNOWN_RETRY_MS);
  }
  if (placement === 'notSelected') return held ? removeFromNode(vnet, ctx, finalizer) : done;
  // The finalizer goes on before anything exists on the host, so nothing is ever orphaned.
  if (!held) await ctx.ensureFinalizer(KIND, vnet, finalizer);
  return materialise(vnet, ctx);
}

async function materialise(vnet: VirtualNetwork, ctx: ControllerContext): Promise<Action> {
  const conn = ctx.libvirt();
  const before = await observeNetwork(conn, vnet);
  const desired = desiredNetwork(vnet);
  const unsupported = unsupportedSpec(vnet);
  let problem: Problem | undefined = unsupported
    ? { reason: 'Unsupported', message: unsupported }
    : nameConflict(before, ctx.nodeName);
  let observed = before;
  if (!problem && before.state !== 'foreign') {
    const autostart = vnet.spec.autostart ?? true;
    const { steps } =
      before.state === 'absent'
        ? planCreate(desired, autostart)
        : planUpdate(desired, autostart, before);
    if (steps.length > 0) {
      const failure = await actNetwork(
        conn,
        before.state === 'ours' ? before.network : undefined,
        steps,
      );
      const executed = failure ? steps.slice(0, steps.indexOf(failure.step)) : steps;
      for (const e of stepEvents(before, executed, ctx.nodeName))
        ctx.event(KIND, vnet, e.type, e.reason, e.message);
      problem = failure && { reason: failure.reason, message: failure.message };
      observed = await observeNetwork(conn, vnet);
    }
  }
  const pending =
    !unsupported && observed.state === 'ours' && observed.active
      ? restartFields(desired, observed.current)
      : [];
  const entry = nodeStatus({
    vnet,
    nodeName: ctx.nodeName,
    observed,
    restartFields: pending,
    problem,
    now: ctx.now(),
  });
  await report(ctx, vnet, entry);
  if (problem?.reason === 'Unsupported') return done; // waits for a spec change
  const ready = entry.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  return ready ? done : requeueAfter(retryDelayMs(entry, ctx.now()));
}

async function removeFromNode(
  vnet: VirtualNetwork,
  ctx: ControllerContext,
  finalizer: string,
): Promise<Action> {
  const conn = ctx.libvirt();
  const observed = await observeNetwork(conn, vnet);
  // A foreign network with our name is never touched: only our own is removed.
  if (observed.state === 'ours') {
    const users = await runningUsers(ctx, vnet);
    const failure =
      users.length > 0
        ? undefined
        : await actNetwork(conn, observed.network, planRemoval(observed).steps);
    const problem =
      users.length > 0
        ? inUse(users, ctx.nodeName)
        : failure && { reason: failure.reason, message: failure.message };
    if (problem) {
      const entry = nodeStatus({
        vnet,
        nodeName: ctx.nodeName,
        observed,
        restartFields: [],
        problem,
        now: ctx.now(),
      });
      await report(ctx, vnet, entry);
      return requeueAfter(retryDelayMs(entry, ctx.now()));
    }
    ctx.event(
      KIND,
      vnet,
      'Normal',
      'Removed',
      `removed libvirt network '${vnet.metadata.name}' from node ${ctx.nodeName}`,
    );
  }
  // A node the selector dropped keeps an entry saying so rather than a stale "active".
  if (!vnet.metadata.deletionTimestamp && nodeEntryOf(vnet, ctx.nodeName)) {
    const entry = nodeStatus({
      vnet,
      nodeName: ctx.nodeName,
      observed: { state: 'absent' },
      restartFields: [],
      problem: notSelected(ctx.nodeName),
      now: ctx.now(),
    });
    await ctx.applyNodeStatus(KIND, vnet, entry);
  }
  await ctx.removeFinalizer(KIND, vnet, finalizer);
  return done;
}

/** Writes this node's entry (a no-op when unchanged) with the Events its transitions call for. */
async function report(
  ctx: ControllerContext,
  vnet: VirtualNetwork,
  entry: VirtualNetworkStatusNode,
): Promise<void> {
  for (const e of conditionEvents(nodeEntryOf(vnet, ctx.nodeName), entry))
    ctx.event(KIND, vnet, e.type, e.reason, e.message);
  await ctx.applyNodeStatus(KIND, vnet, entry);
}
