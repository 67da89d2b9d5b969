// One pass for one VirtualNetwork on this node: cache -> finalizer table -> observe -> plan
// (desired inside) -> act -> status -> Action.
import type { VirtualNetwork } from '../../api/generated/types.js';
import {
  done,
  nodeFinalizer,
  requeueAfter,
  type Action,
  type ControllerContext,
  type KindReconcile,
} from '../context.js';
import { withFinalizer } from '../kit.js';
import { forgetJudged, matchAfter, reportUnselected } from '../shared/unselected.js';
import { actNetwork } from './act.js';
import { bridgeName, modeOf, networkUuid, wantedOn } from './desired.js';
import {
  bridgeOwnerNetwork,
  hostBridgeExists,
  hostDeviceExists,
  hostRoutes,
  observeNetwork,
  runningUsers,
} from './observe.js';
import {
  createsBridge,
  ownNetworkChanges,
  pendingRestart,
  planAbsent,
  planPresent,
} from './plan.js';
import {
  conditionEvents,
  leavingEntry,
  nextAction,
  nodeEntryOf,
  nodeStatus,
  stepEvents,
} from './status.js';
import { tellAfterWrite } from '../shared/after-write.js';

const KIND = 'VirtualNetwork';
/** How soon to look again when the selector needs this node's labels and the Node is unknown. */
const NODE_UNKNOWN_RETRY_MS = 30_000;

export const reconcileVirtualNetwork: KindReconcile = async (key, ctx) => {
  // 1. The object, from the cache; gone means every agent's finalizer has let it go.
  const vnet = ctx.get<VirtualNetwork>(KIND, undefined, key);
  if (!vnet) {
    forgetJudged(ctx, KIND, key);
    return done;
  }
  const nodeName = ctx.nodeName;
  // 2. The finalizer table. Our finalizer goes on before anything exists on the host and comes
  //    off only once the host is clean: nothing is orphaned, and deletion waits for this node.
  const want = wantedOn(vnet, ctx.node());
  if (want === 'unknown') {
    ctx.log.warn(
      { key, nodeName },
      'Node not in the cache: spec.nodeSelector cannot be judged yet',
    );
    return requeueAfter(NODE_UNKNOWN_RETRY_MS);
  }
  const finalizer = nodeFinalizer(nodeName);
  // Not selected here and nothing of ours left to clean: the summary may be ours to judge.
  if (want === 'absent' && !vnet.metadata.finalizers?.includes(finalizer)) {
    await reportUnselected(ctx, KIND, vnet);
    return done;
  }
  return withFinalizer(ctx, KIND, vnet, finalizer, {
    wanted: want === 'present',
    apply: (vnet) => converge(vnet, 'present', finalizer, ctx),
    cleanup: (vnet) => converge(vnet, 'absent', finalizer, ctx),
  });
};

/** One pass towards `want` on this host, once the finalizer table said to act. */
async function converge(
  vnet: VirtualNetwork,
  want: 'present' | 'absent',
  finalizer: string,
  ctx: ControllerContext,
): Promise<Action> {
  const nodeName = ctx.nodeName;
  // 3. Observe, plan, act.
  const conn = ctx.libvirt();
  const before = await observeNetwork(conn, vnet);
  const users = want === 'absent' && before.state === 'ours' ? await runningUsers(ctx, vnet) : [];
  // Routes are read for a network about to start, and for a running one whose spec moves it
  // to another subnet (judged before that change is saved); a converged one reads nothing.
  const starting = before.state === 'absent' || (before.state === 'ours' && !before.active);
  // Likewise the bridge libvirt is to create is looked for among the host's devices: a new
  // spec.bridge of a running network, and the bridge of one about to start (libvirt's define
  // checks only its own networks' bridges, so the start would fail on a device it did not make
  // and leave a network defined, marked for autostart, that cannot run).
  const pending = pendingRestart(vnet, before);
  const moving = pending.some((f) => f.endsWith('.cidr'));
  const renaming = createsBridge(vnet, before) || (starting && modeOf(vnet) !== 'bridge');
  const host =
    want !== 'present'
      ? {}
      : modeOf(vnet) === 'bridge'
        ? {
            bridgeExists: await hostBridgeExists(conn, bridgeName(vnet)),
            bridgeOwner: await bridgeOwnerNetwork(conn, bridgeName(vnet), networkUuid(vnet)),
          }
        : {
            ...(starting || moving ? { routes: await hostRoutes(conn) } : {}),
            ...(renaming ? { bridgeTaken: await hostDeviceExists(conn, bridgeName(vnet)) } : {}),
          };
  const plan =
    want === 'present'
      ? planPresent(vnet, before, nodeName, host)
      : planAbsent(before, users, nodeName);
  const failure = await actNetwork(
    conn,
    before.state === 'ours' ? before.network : undefined,
    plan.steps,
    { bridgeFromSpec: vnet.spec.bridge !== undefined },
  );
  const executed = failure ? plan.steps.slice(0, plan.steps.indexOf(failure.step)) : plan.steps;
  for (const e of stepEvents(before, executed, nodeName))
    ctx.event(KIND, vnet, e.type, e.reason, e.message);
  const problem = plan.problem ?? failure?.problem;
  // Status describes the host after this pass, so look again when the pass changed it. That
  // look shows what the pass's own calls did: their libvirt events need not run it again.
  const look = executed.length > 0 ? ctx.lookAtHost?.() : undefined;
  const observed = executed.length > 0 ? await observeNetwork(conn, vnet) : before;
  if (look && !failure) look(ownNetworkChanges(executed));

  // 4. The host is clean of a network it should not have: let go of the object.
  if (want === 'absent' && !problem) {
    const leaving = leavingEntry(vnet, nodeName, ctx.now());
    if (leaving)
      await ctx.applyNodeStatus(KIND, vnet, leaving, await matchAfter(ctx, vnet, leaving));
    await ctx.removeFinalizer(KIND, vnet, finalizer);
    return done;
  }
  // 5. Status (a no-op write when unchanged), then Events for the conditions that turned: after
  // the write, as one that fails is retried and would send them again each time.
  const restartFields = pendingRestart(vnet, observed);
  const entry = nodeStatus({ vnet, nodeName, observed, restartFields, problem, now: ctx.now() });
  const turned = conditionEvents(nodeEntryOf(vnet, nodeName), entry);
  await tellAfterWrite(
    () => ctx.applyNodeStatus(KIND, vnet, entry),
    () => {
      for (const e of turned) ctx.event(KIND, vnet, e.type, e.reason, e.message);
    },
  );
  return nextAction(entry, problem, ctx.now(), ctx.retryMinMs);
}
