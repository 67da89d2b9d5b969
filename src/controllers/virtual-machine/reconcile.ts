// One pass for one VirtualMachine on this node: cache -> finalizer table -> observe ->
// desired -> plan -> act -> status -> Action.
import { findCondition, isConditionTrue } from '../../api/conditions.js';
import { libvirtUuid } from '../../api/names.js';
import type { Connect } from '../../libvirt/connection.js';
import type {
  VirtualMachine,
  VirtualMachineStatus,
  VirtualNetwork,
  Volume,
} from '../../api/generated/types.js';
import {
  done,
  HOST_FINALIZER,
  requeueAfter,
  type Action,
  type ControllerContext,
  type KindReconcile,
} from '../context.js';
import { INDEX_MAC, INDEX_NETWORK, INDEX_SOURCE_VOLUME, vmVolumeNames } from '../indexes.js';
import {
  deleteRestoresOf,
  deleteSnapshotsOf,
  restoresRefusedMessage,
  restoreHold,
  stoppedByRestore,
  type RestoreHold,
} from '../shared/restores.js';
import {
  actMachine,
  rememberRecordFailures,
  rememberRestartsUnrecordable,
  type StepFailure,
} from './act.js';
import {
  consoleLogFile,
  desiredDomain,
  heldKey,
  interfaceMacs,
  machineInputs,
  nvramFile,
  tpmStateDir,
  missingFirmware,
  unknownCpuModel,
  unsupportedSpec,
} from './desired.js';
import {
  heldMacs,
  leaseKeysOf,
  observeDomain,
  observeMachine,
  type EarlierLeases,
  type ObservedDomain,
  type ObservedMachine,
  type OursDomain,
} from './observe.js';
import {
  changedOutsideSpec,
  detachRequestedSince,
  deviceDiff,
  deviceNames,
  gracePeriodMs,
  liveRefused,
  newRestartRequest,
  nextLookMs,
  ownLifecycleChanges,
  passSettled,
  planMachine,
  planRemoval,
  requestedRestart,
  restartPending,
  restoredRun,
  runRecord,
  savedPending,
  shutdownAfterSteps,
  shutdownSteps,
  STOP_POLL_MS,
  TRANSITION_MS,
  withSentShutdown,
  type MachinePlan,
  type MachineStep,
  type RestartHold,
  type ShutdownReason,
} from './plan.js';
import {
  addressesMissing,
  addressWindowOpen,
  balloonMoving,
  dhcpPools,
  conditionEvents,
  HOST_LACK_MAX_AGE_MS,
  hostLackRecheckMs,
  machineStatus,
  restartCountOf,
  restartHoldOf,
  type StatusInput,
  type Detaching,
  nameConflict,
  removedStatus,
  RESTORE_CLAIMED_ELSEWHERE,
  restoreNamed,
  restoreHoldProblem,
  retryDelayMs,
  standingAsideStatus,
  withRestoreHold,
  saysDeletion,
  stepEvents,
} from './status.js';
import { cachedByKey, withFinalizer, type Problem } from '../kit.js';
import {
  customCpuModels,
  hostFirmware,
  XmlDocumentError,
  type HostFirmware,
} from '../../libvirt/xml/index.js';
import type { DomainDocument } from '../../libvirt/xml/domain.js';
import { isConnectionError, isLibvirtError, isTimeout } from '../../libvirt/errors.js';
import { tellAfterWrite } from '../shared/after-write.js';

const KIND = 'VirtualMachine';
/** While a fresh guest has no address yet, look for DHCP leases this often (status.ts). */
const ADDRESS_POLL_MS = 5_000;
/** How soon to look at a balloon that is still moving towards its target. */
const BALLOON_POLL_MS = 2_000;
/**
 * How soon to look again at a machine that a restore is reverting. Only a backstop: every
 * change of a restore of it (the status write that ends the revert, its deletion) wakes the
 * machine (index.ts triggers). It covers a restore pass that ended without a write (one that
 * threw, a restore deleted during its pass); a revert takes seconds, and 1 s here was a pass a
 * second for as long as a restore stayed InProgress.
 */
const RESTORE_WAIT_MS = 10_000;
/** How often a deleted machine retries restores another node's agent claimed. */
const RESTORE_REFUSED_RETRY_MS = 60_000;

export const reconcileVirtualMachine: KindReconcile = async (key, ctx) => {
  const vm = cachedByKey<VirtualMachine>(ctx, KIND, key);
  // Another node's machine is never ours to touch (the agent's field selector keeps them away).
  if (!vm || vm.spec.nodeName !== ctx.nodeName) return done;
  const hold = vm.metadata.deletionTimestamp ? undefined : restoreHold(vm, ctx);
  // A restore is reverting the domain: redefining, starting or stopping it now would fight
  // the revert. Afterwards runStrategy applies as usual. One that waits for a user instead
  // (waiting) does not keep the machine from its runStrategy: materialise keeps only the
  // definition as it is.
  if (hold && !hold.waiting) return standAside(vm, hold, ctx);
  return withFinalizer(ctx, KIND, vm, HOST_FINALIZER, {
    apply: (vm) => materialise(vm, ctx, hold),
    cleanup: (vm) => removeFromHost(vm, ctx),
  });
};

/**
 * Says on the machine which restore holds it (Synced=False RestoreInProgress), once: the
 * passes that follow while it holds find it said and write nothing. Already named (a restore
 * that waits, whose passes hold the machine for their few moments too): left as it is, not
 * flipped to "reverting" and back with each of those passes.
 */
async function standAside(
  vm: VirtualMachine,
  hold: RestoreHold,
  ctx: ControllerContext,
): Promise<Action> {
  const synced = findCondition(vm.status?.conditions, 'Synced');
  const named = synced?.status === 'False' && synced.message.includes(restoreNamed(hold));
  if (!named) {
    const problem = restoreHoldProblem(vm, hold);
    await ctx.applyStatus(KIND, vm, standingAsideStatus(vm, problem, ctx.now()));
  }
  return requeueAfter(RESTORE_WAIT_MS);
}

async function materialise(
  cached: VirtualMachine,
  ctx: ControllerContext,
  /**
   * A begun restore that waits for a user (restoreHold): the domain is planned as for a spec
   * that does not resolve (runStrategy only, no define or device change), since a definition
   * written now would drop the restore's marker, the record that nothing was reverted yet: its
   * next pass would then take the revert for done and end Succeeded without reverting.
   */
  hold?: RestoreHold,
): Promise<Action> {
  const conn = ctx.libvirt();
  const earlier = ctx.host.earlierLeases.get(String(cached.metadata.uid));
  const before = await observeMachine(conn, cached, ctx.stateDir, { earlierLeases: earlier });
  // The clock is read once the host has been observed: with many passes sharing the
  // connection an observation can take a second, and a grace period that ended meanwhile
  // must not wait for one more pass.
  const now = ctx.now();
  const vm = planView(cached, before.domain, ctx);
  const hostLacks = async (maxAgeMs: number) =>
    unknownCpuModel(vm, await knownCpuModels(ctx, vm, maxAgeMs), ctx.nodeName) ??
    missingFirmware(vm, await firmwareOnHost(ctx, vm, maxAgeMs), ctx.nodeName);
  // A lack is read again sooner than the host's capabilities are otherwise: it ends when a
  // package is installed, which wakes nothing (see HOST_LACK_RECHECK_MS). The read is shared
  // by every machine of the domain type, so libvirt is asked about once a minute whatever
  // their number.
  const cpuProblem =
    (await hostLacks(CPU_MODELS_TTL_MS)) && (await hostLacks(HOST_LACK_MAX_AGE_MS));
  // Checked before the restart is begun: the node cannot start such a machine again, so a
  // requested restart of the running guest waits (requestedRestart), and the problem says so.
  const restart = requestedRestart(newRestartRequest(vm), before.domain, cpuProblem);
  const held = hold && restoreHoldProblem(vm, hold);
  const resolved = cpuProblem
    ? { problem: restart && 'waits' in restart ? restart.waits : cpuProblem }
    : await resolve(vm, ctx, before.domain, await macsHeldByOthers(conn, vm, ctx, before.domain));
  if (restart && 'begin' in restart && before.domain.state === 'ours') {
    // A problem with the spec stays reported: the restart does not fix it, and a status
    // without it would flip Synced (and a GitOps tool's health) for one pass, with a second
    // Warning when the next pass finds the problem again.
    const problem = withRestoreHold('problem' in resolved ? resolved.problem : undefined, held);
    const wanted = !held && 'inputs' in resolved ? desiredDomain(vm, resolved.inputs) : undefined;
    const pending = pendingOf(ctx, vm, wanted, before.domain, []);
    return beginRequestedRestart(ctx, vm, before.domain, restart.begin, problem, pending);
  }
  const inputs = !held && 'inputs' in resolved ? resolved.inputs : undefined;
  const desired = inputs && desiredDomain(vm, inputs);
  const uid = String(vm.metadata.uid);
  const restored =
    before.domain.state === 'ours'
      ? restoredRun(vm, before.domain, ctx.host.restoredRuns.get(uid))
      : undefined;
  const planInput = {
    vm,
    desired,
    cloudInit: inputs?.cloudInit,
    observed: before,
    now,
    // After an agent restart only the restore objects tell that a restore stopped the domain
    // (by destroying it, so a guest that shut down or crashed since is not taken for that).
    restoreStopped:
      ctx.host.restoreStops.has(uid) ||
      (before.domain.state === 'ours' &&
        before.domain.power.reason === 'destroyed' &&
        stoppedByRestore(vm, ctx)),
    restoredRun: restored,
    deferred: refusedLive(ctx, uid, before.domain),
    holdStart: 'holdStart' in resolved && resolved.holdStart === true,
    restartsCounted: countedRestarts(ctx, vm),
    restartsUnrecordable: ctx.host.restartsUnrecordable.has(uid),
    lastDetachRetry: lastDetachRetry(ctx, uid),
  };
  const plan = planMachine(planInput);
  const ours = before.domain.state === 'ours' ? before.domain.domain : undefined;
  const beforeStart = await leasesBeforeStart(conn, plan.steps, desired, before.domain);
  const steps = withRunGeneration(
    withRestartCount(
      plan.steps,
      restartCountOf({
        vm,
        observed: before.domain,
        started: 'restart',
        restartsCounted: countedRestarts(ctx, vm),
      }),
    ),
    desired ? (vm.metadata.generation ?? 0) : 0,
  );
  const outcome = await actMachine(conn, ours, steps, ctx.onLane?.bind(ctx));
  rememberRestartsUnrecordable(ctx.host.restartsUnrecordable, uid, outcome, ctx.log);
  rememberRecordFailures(ctx.host.recordFailuresLogged, uid, outcome, ctx.log);
  if (outcome.executed.some((s) => s.op === 'detachDevice' && s.retry))
    ctx.host.detachRetried.set(uid, now.getTime());
  if (outcome.executed.some((s) => s.op === 'attachDevice' && s.device.kind === 'interface'))
    ctx.host.interfacesAttached.set(String(vm.metadata.uid), now.getTime());
  const shutdownSentAt = shutdownSent(outcome.executed, ctx);
  const stopAttemptedAt = unsentStop(plan.steps, outcome.executed, now);
  rememberShutdown(ctx, vm, before.domain, plan.shutdown, shutdownSentAt);
  const look = outcome.executed.length > 0 ? ctx.lookAtHost?.() : undefined;
  const after =
    outcome.executed.length > 0
      ? await observeDomain(
          conn,
          vm,
          beforeStart ? { keys: beforeStart } : (seenLeases(before) ?? earlier),
        )
      : before.domain;
  rememberEarlierLeases(ctx, uid, after);
  // A restore's power-off is accounted for once the domain runs again (or is gone).
  if (after.state !== 'ours' || after.active) ctx.host.restoreStops.delete(uid);
  // Remembered for as long as that run lasts: this pass may resume it (its reason
  // from_snapshot then gone), and the next may come before the watch brings back the status
  // that names it.
  const stillRestored =
    after.state === 'ours' && after.active && after.id === restored?.run ? restored : undefined;
  if (stillRestored !== undefined) ctx.host.restoredRuns.set(uid, stillRestored);
  else ctx.host.restoredRuns.delete(uid);
  // The domain as our steps left it needs nothing more: libvirt's events for those steps, which
  // arrive during this pass, need not run it again (its status is written from this look).
  if (
    look &&
    !outcome.failure &&
    planMachine({ ...planInput, observed: { ...before, domain: after } }).steps.length === 0
  )
    look(ownLifecycleChanges(outcome.executed));
  const problem: Problem | undefined =
    before.domain.state === 'foreign'
      ? nameConflict(before.domain, ctx.nodeName)
      : withRestoreHold(
          outcome.failure ?? ('problem' in resolved ? resolved.problem : undefined),
          held,
        );
  const names = desired && deviceNames(vm, desired);
  const live = after.state === 'ours' ? after.live : undefined;
  // Device steps the driver could not take live wait for a restart like any restart-time field.
  const deferred = outcome.deferred.flatMap((s) =>
    s.op === 'attachDevice' || s.op === 'detachDevice' ? [s.device.field] : [],
  );
  const refusedThisRun = rememberRefusedLive(ctx, uid, after, deferred);
  const detaching =
    desired && live && names
      ? detachingOf(
          vm,
          deviceDiff(desired, live, names).detach,
          // Refused by this run, now or in an earlier pass (then not asked again): not detaching.
          refusedThisRun,
          outcome.detachErrors,
          now,
        )
      : undefined;
  if (!detaching) ctx.host.detachRetried.delete(uid);
  const pending = pendingOf(ctx, vm, desired, after, deferred);
  // After the steps, not with them: only what they left tells that the run reflects the spec.
  // Not part of the plan the pass checks its result against (look, above): at most one write,
  // which the next observation shows.
  const record = runRecord(vm, before.domain, plan, after, {
    resolved: desired !== undefined,
    pending,
    settled: passSettled({ outcome, shutdown: plan.shutdown, detaching: detaching !== undefined }),
    restoredRun: stillRestored,
    unrecordable: ctx.host.restartsUnrecordable.has(uid),
  });
  if (record && after.state === 'ours') {
    const recorded = await actMachine(conn, after.domain, [record]);
    rememberRestartsUnrecordable(ctx.host.restartsUnrecordable, uid, recorded, ctx.log);
    rememberRecordFailures(ctx.host.recordFailuresLogged, uid, recorded, ctx.log);
  }
  const ports = after.state === 'ours' ? after.networkPorts : undefined;
  const outsideSpec =
    desired !== undefined &&
    live !== undefined &&
    changedOutsideSpec(desired, live, ports, refusedThisRun);
  const statusInput: StatusInput = {
    vm,
    nodeName: ctx.nodeName,
    now,
    observed: after,
    problem,
    shutdown: shutdownAfterSteps(
      vm,
      plan,
      outcome.executed,
      before.domain.state === 'ours' ? before.domain : { active: false },
    ),
    started: startedBy(outcome.executed),
    pending,
    // A restart asked of a machine that is not running has nothing to do: it is recorded. One
    // that waits (requestedRestart) is not: the first pass without the problem begins it.
    ...(restart && 'record' in restart ? { restartRequest: restart.record } : {}),
    ...(detaching ? { detaching } : {}),
    ...(shutdownSentAt ? { shutdownSentAt } : {}),
    ...(stopAttemptedAt ? { stopAttemptedAt } : {}),
    ...(stillRestored !== undefined ? { restoredRun: stillRestored } : {}),
    outsideSpec,
    restartsCounted: countedRestarts(ctx, vm),
  };
  const status = machineStatus(statusInput);
  // Remembered before the write, which may fail: the next pass counts from it (planView).
  if (startedBy(outcome.executed) === 'restart')
    ctx.host.restarts.set(String(vm.metadata.uid), status.restartCount ?? 0);
  await report(ctx, vm, status, outcome.executed, pending, restartHoldOf(statusInput)?.by);
  // The soonest of every reason to look again: a running grace period must not wait for a
  // problem's backoff. Unsupported input waits for a spec change, which wakes us anyway (what
  // the node lacks, for an install: HOST_LACK_RECHECK_MS); so does a pause the annotation asked
  // for (Ready=False, but as wanted).
  const settled =
    !problem &&
    (isConditionTrue(status.conditions, 'Ready') ||
      findCondition(status.conditions, 'Paused')?.reason === 'PausedByRequest');
  const looks = [
    plan.waitMs === undefined ? undefined : settledWait(plan, after, now, ctx, vm, shutdownSentAt),
    problem?.reason === 'Unsupported' || settled ? undefined : retryDelayMs(status, now),
    // What the node lacks (the CPU model, OVMF, swtpm) ends with an install, not a spec change:
    // a requested restart or a start waiting for it goes on within this, not at the resync.
    cpuProblem ? hostLackRecheckMs() : undefined,
    awaitingAddresses(vm, status, after, now, ctx) ? ADDRESS_POLL_MS : undefined,
    detaching
      ? detaching.expired
        ? retryDelayMs(status, now)
        : Math.min(
            STOP_POLL_MS,
            Math.max(TRANSITION_MS, detaching.since.getTime() + gracePeriodMs(vm) - now.getTime()),
          )
      : undefined,
    balloonMoving(vm, status, outcome.executed, now) ? BALLOON_POLL_MS : undefined,
    // A device change the domain refused live is now restart-time, and this policy restarts
    // for it: nothing else wakes the machine (its own status write does not).
    deferred.length > 0 && vm.spec.updatePolicy === 'Restart' ? TRANSITION_MS : undefined,
  ].filter((ms): ms is number => ms !== undefined);
  return looks.length > 0 ? requeueAfter(Math.min(...looks)) : done;
}

/** The device changes this run of the domain refused to take live (HostState). */
/**
 * The restart-time fields the running domain does not reflect, for RestartRequired: against
 * the spec when it resolves, else what the saved definition holds that the running one lacks.
 * `deferred`: device changes this pass's steps could not take live.
 */
function pendingOf(
  ctx: ControllerContext,
  vm: VirtualMachine,
  desired: DomainDocument | undefined,
  domain: ObservedDomain,
  deferred: readonly string[],
): string[] {
  if (domain.state !== 'ours' || !domain.live) return [];
  const { live, networkPorts: ports } = domain;
  if (desired) {
    const names = deviceNames(vm, desired);
    const refused = refusedLive(ctx, String(vm.metadata.uid), domain);
    return [
      ...new Set([
        ...restartPending(desired, live, names, ports),
        ...deferred,
        ...liveRefused(desired, live, names, refused),
      ]),
    ];
  }
  return domain.config ? savedPending(vm, domain.config, live, ports) : [];
}

function refusedLive(ctx: ControllerContext, uid: string, domain: ObservedDomain): string[] {
  const refused = ctx.host.deferredDevices.get(uid);
  if (!refused || domain.state !== 'ours' || !domain.active) return [];
  return refused.run === domain.id ? refused.fields : [];
}

/**
 * Remembers the device changes the running domain refused to take live, for this run: the next
 * pass's plan counts them as restart-time (updatePolicy Restart restarts for them), since the
 * plan alone cannot tell an attach that will work from one the driver or the slots refuse.
 * Returns the fields this run has refused, in this pass or an earlier one (only this pass's
 * `fields` for a domain that is not running: nothing is remembered for it).
 */
function rememberRefusedLive(
  ctx: ControllerContext,
  uid: string,
  domain: ObservedDomain,
  fields: readonly string[],
): readonly string[] {
  if (domain.state !== 'ours' || !domain.active) {
    ctx.host.deferredDevices.delete(uid);
    return fields;
  }
  const refused = [...new Set([...refusedLive(ctx, uid, domain), ...fields])];
  if (refused.length === 0) ctx.host.deferredDevices.delete(uid);
  else ctx.host.deferredDevices.set(uid, { run: domain.id, fields: refused });
  return refused;
}

/**
 * The first pass that sees a new virt.dev/restart-requested-at value on a running domain:
 * the request is recorded (status.lastRestartRequest, and ShutdownRequested naming the run
 * being stopped) BEFORE the ACPI request is sent (or, with a grace period of 0, the destroy).
 * An agent that dies between the two finds the request recorded and the stop under way (it
 * then destroys after the grace period); one that dies after the start finds the domain under
 * a new runtime ID, i.e. restarted. Either way the value causes exactly one restart.
 */
async function beginRequestedRestart(
  ctx: ControllerContext,
  vm: VirtualMachine,
  domain: OursDomain,
  request: string,
  problem: Problem | undefined,
  pending: readonly string[],
): Promise<Action> {
  const now = ctx.now();
  const status = machineStatus({
    vm,
    nodeName: ctx.nodeName,
    now,
    observed: domain,
    problem,
    shutdown: 'RestartRequested',
    started: undefined,
    // What the passes during the stop report too: the restart applies the pending changes
    // only when the domain starts again. Shown as UpToDate here, RestartRequired turned True
    // again at the next pass, with a second RestartRequired Event in the middle of the restart.
    pending,
    restartRequest: request,
    restartRun: domain.id,
    restartsCounted: countedRestarts(ctx, vm),
  });
  const answered = await report(ctx, vm, status, [], pending);
  const steps = shutdownSteps(vm, domain.power, 'RestartRequested', now);
  const outcome = await actMachine(ctx.libvirt(), domain.domain, steps, ctx.onLane?.bind(ctx));
  for (const e of stepEvents(outcome.executed, vm, ctx.nodeName, status.restartCount ?? 0)) {
    ctx.event(KIND, vm, e.type, e.reason, e.message);
  }
  // The status just written says the guest is being asked. A wake-up or shutdown that failed
  // is reported as materialise reports it (Synced=False with a Warning Event), and a request
  // that was not sent is recorded as such, so that the next pass tries again.
  const stopAttemptedAt = unsentStop(steps, outcome.executed, now);
  if (outcome.failure || stopAttemptedAt) {
    // Against the first write's answer (the status writer refuses a stale copy).
    const written = answered ?? vm;
    const failed = machineStatus({
      vm: written,
      nodeName: ctx.nodeName,
      now,
      observed: domain,
      problem: outcome.failure ?? problem,
      shutdown: 'RestartRequested',
      started: undefined,
      pending,
      restartRequest: request,
      restartRun: domain.id,
      ...(stopAttemptedAt ? { stopAttemptedAt } : {}),
      restartsCounted: countedRestarts(ctx, vm),
    });
    await report(ctx, written, failed, [], pending);
  }
  return requeueAfter(Math.min(STOP_POLL_MS, gracePeriodMs(vm) || TRANSITION_MS));
}

function lastDetachRetry(ctx: ControllerContext, uid: string): Date | undefined {
  const at = ctx.host.detachRetried.get(uid);
  return at === undefined ? undefined : new Date(at);
}

function detachingOf(
  vm: VirtualMachine,
  detach: ReturnType<typeof deviceDiff>['detach'],
  deferred: readonly string[],
  errors: readonly string[],
  now: Date,
): Detaching | undefined {
  const fields = detach.map((d) => d.field).filter((f) => !deferred.includes(f));
  if (fields.length === 0) return undefined;
  const since = detachRequestedSince(vm) ?? now;
  return {
    fields,
    since,
    expired: now.getTime() - since.getTime() >= gracePeriodMs(vm),
    errors,
  };
}

/** How long the host's list of CPU models is trusted: a QEMU upgrade can change it. */
const CPU_MODELS_TTL_MS = 10 * 60_000;

/**
 * The CPU model names the host's QEMU knows for the machine's domain type, when its spec asks
 * for a custom model (unknownCpuModel); undefined when the driver cannot tell.
 */
async function knownCpuModels(
  ctx: ControllerContext,
  vm: VirtualMachine,
  maxAgeMs: number,
): Promise<string[] | undefined> {
  if (vm.spec.cpu?.mode !== 'custom') return undefined;
  const type = vm.spec.domainType ?? 'kvm';
  const now = ctx.now().getTime();
  const known = ctx.host.cpuModels.get(type);
  if (known && now - known.readAt < maxAgeMs) return known.models;
  const models = await readCapabilities(ctx, type, null, customCpuModels);
  ctx.host.cpuModels.set(type, { readAt: now, models });
  return models;
}

/**
 * The host's domain capabilities for `type` and `machine` (null: the default one), as `parse`
 * reads them; undefined where the host cannot tell: a driver without domain capabilities
 * (libvirt's test driver), a type the host lacks (kvm without /dev/kvm) or a document that
 * does not parse leave the judgement to libvirt. A broken connection is thrown (retried).
 */
async function readCapabilities<T>(
  ctx: ControllerContext,
  type: string,
  machine: string | null,
  parse: (xml: string) => T | undefined,
): Promise<T | undefined> {
  try {
    return parse(await ctx.libvirt().getDomainCapabilities(type, undefined, machine));
  } catch (err) {
    const refused = isLibvirtError(err) && !isConnectionError(err) && !isTimeout(err);
    if (!refused && !(err instanceof XmlDocumentError)) throw err;
    return undefined;
  }
}

/**
 * What the host offers for UEFI and an emulated TPM (missingFirmware), for the machine's
 * domain type and the q35 machine the operator defines, when the spec asks for either;
 * undefined when the driver cannot tell. A read older than `maxAgeMs` is made again: a
 * package installed meanwhile is seen then.
 */
async function firmwareOnHost(
  ctx: ControllerContext,
  vm: VirtualMachine,
  maxAgeMs: number,
): Promise<HostFirmware | undefined> {
  if (vm.spec.firmware !== 'uefi' && !vm.spec.tpm) return undefined;
  const type = vm.spec.domainType ?? 'kvm';
  const now = ctx.now().getTime();
  const known = ctx.host.firmware.get(type);
  if (known && now - known.readAt < maxAgeMs) return known.offers;
  const offers = await readCapabilities(ctx, type, 'q35', hostFirmware);
  ctx.host.firmware.set(type, { readAt: now, offers });
  return offers;
}

async function resolve(
  vm: VirtualMachine,
  ctx: ControllerContext,
  domain: ObservedDomain,
  heldMacs: ReadonlyMap<string, string>,
) {
  const unsupported = unsupportedSpec(vm);
  if (unsupported) return { problem: unsupported };
  const elsewhere = await volumesElsewhere(vm, ctx);
  const refs = {
    heldMacs,
    runningOn:
      domain.state === 'ours' && domain.live
        ? domain.live.devices.interfaces.map((n) => n.source.network)
        : [],
    volume: (ns: string, name: string) =>
      ctx.get<Volume>('Volume', ns, name) ?? elsewhere.get(name),
    network: (name: string) => ctx.get<VirtualNetwork>('VirtualNetwork', undefined, name),
    machinesOn: (network: string) => ctx.byIndex<VirtualMachine>(KIND, INDEX_NETWORK, network),
    nodeLabels: () => {
      const node = ctx.node();
      return node ? (node.metadata.labels ?? {}) : undefined;
    },
    overlaysOf: (ns: string, name: string) =>
      ctx
        .byIndex<Volume>('Volume', INDEX_SOURCE_VOLUME, `${ns}/${name}`)
        .filter((v) => v.spec.source?.backingVolume?.volume === name)
        .map((v) => String(v.metadata.name)),
  };
  return machineInputs(vm, refs, ctx.nodeName, ctx.stateDir);
}

/**
 * The Volumes the spec names that this node's cache lacks but the API server has: on another
 * node (the cache holds only this node's), which only a user can change (spec.nodeName is
 * immutable on both), so status says so (VolumeNotOnNode, Stalled) instead of waiting for a
 * Volume that will never come (VolumeNotReady, InProgress for ever). One GET per missing
 * Volume per pass: such a machine is retried with backoff, and a machine whose Volume is
 * simply not created yet gets a 404 and keeps waiting.
 */
async function volumesElsewhere(
  vm: VirtualMachine,
  ctx: ControllerContext,
): Promise<Map<string, Volume>> {
  const namespace = String(vm.metadata.namespace);
  const found = new Map<string, Volume>();
  for (const name of vmVolumeNames(vm)) {
    if (ctx.get<Volume>('Volume', namespace, name)) continue;
    const vol = await ctx.getFromServer<Volume>('Volume', namespace, name);
    if (vol && vol.spec.nodeName !== ctx.nodeName) found.set(name, vol);
  }
  return found;
}

/**
 * The MACs of this machine's interfaces that other machines' running guests hold on the same
 * network by their live definitions. Only the interfaces its domain does not have there yet
 * (it is about to be started or plugged) are looked for, and only among the machines on this
 * node whose spec has the MAC: none in the usual case, and then nothing is read.
 */
async function macsHeldByOthers(
  conn: Connect,
  vm: VirtualMachine,
  ctx: ControllerContext,
  domain: ObservedDomain,
): Promise<ReadonlyMap<string, string>> {
  const live = domain.state === 'ours' ? domain.live : undefined;
  const have = new Set(
    (live?.devices.interfaces ?? []).flatMap((n) =>
      n.mac ? [heldKey(n.source.network, n.mac)] : [],
    ),
  );
  const macs = interfaceMacs(vm);
  const wanted = new Set(
    (vm.spec.interfaces ?? [])
      .map((nic, i) => heldKey(nic.network, macs[i]!.mac))
      .filter((key) => !have.has(key)),
  );
  const others = [...new Set(macs.map((m) => m.mac))]
    .flatMap((mac) => ctx.byIndex<VirtualMachine>(KIND, INDEX_MAC, mac))
    .filter((other) => other.metadata.uid !== vm.metadata.uid);
  if (wanted.size === 0 || others.length === 0) return new Map();
  return heldMacs(conn, [...new Set(others)], wanted);
}

/**
 * Deleting: stop gracefully, undefine, remove our files, then release the finalizer. When a
 * stop completes at once (an ACPI-aware guest that is quick, or the test driver), the removal
 * continues in the same pass. A domain that is already gone, or one that is not ours, only
 * costs the finalizer.
 */
async function removeFromHost(cached: VirtualMachine, ctx: ControllerContext): Promise<Action> {
  const conn = ctx.libvirt();
  const uid = String(cached.metadata.uid);
  // Which leases are an earlier run's, as materialise knows them: the status written while the
  // machine stops shows this run's addresses only.
  const earlierLeases = ctx.host.earlierLeases.get(uid);
  for (let round = 0; ; round++) {
    const observed = await observeMachine(conn, cached, ctx.stateDir, {
      allIsos: true,
      earlierLeases,
    });
    // Read after observing, as in materialise.
    const now = ctx.now();
    const vm = planView(cached, observed.domain, ctx);
    // The NVRAM file too: undefine removes it, but not when the domain is already gone.
    const files = [
      ...observed.cloudInitIsos,
      consoleLogFile(ctx.stateDir, uid),
      nvramFile(ctx.stateDir, uid),
    ];
    const plan = planRemoval(vm, observed, files, now, [tpmStateDir(libvirtUuid(vm))]);
    const ours = observed.domain.state === 'ours' ? observed.domain.domain : undefined;
    const outcome = await actMachine(conn, ours, plan.steps, ctx.onLane?.bind(ctx));
    const shutdownSentAt = shutdownSent(outcome.executed, ctx);
    const stopAttemptedAt = unsentStop(plan.steps, outcome.executed, now);
    rememberShutdown(ctx, vm, observed.domain, plan.shutdown, shutdownSentAt);
    for (const e of stepEvents(outcome.executed, vm, ctx.nodeName, vm.status?.restartCount ?? 0)) {
      ctx.event(KIND, vm, e.type, e.reason, e.message);
    }
    // A destroy that took effect left the domain stopped: the next round's observation is the
    // look after it (one more in between would cost every deleted machine a round of calls on
    // the connection all passes share, while many are deleted at once).
    const destroyed = outcome.executed.some((s) => s.op === 'destroy');
    if (round === 0 && destroyed && !outcome.failure) continue;
    const after = await observeDomain(conn, vm, seenLeases(observed) ?? earlierLeases);
    if (after.state !== 'ours' && !outcome.failure) {
      const refused = await deleteRestoresOf(vm, ctx);
      const wait =
        refused.length > 0
          ? { reason: RESTORE_CLAIMED_ELSEWHERE, message: restoresRefusedMessage(refused) }
          : undefined;
      await reportDeletion(ctx, vm, wait);
      // Another node's claim (a host that died and was not forgotten): a retry on a quiet
      // cadence, since only an admin's forget-node or delete ends the wait.
      if (wait) return requeueAfter(RESTORE_REFUSED_RETRY_MS);
      await deleteSnapshotsOf(vm, ctx);
      await ctx.removeFinalizer(KIND, vm, HOST_FINALIZER);
      ctx.host.shutdowns.delete(uid);
      ctx.host.interfacesAttached.delete(uid);
      ctx.host.detachRetried.delete(uid);
      ctx.host.restarts.delete(uid);
      ctx.host.restartsUnrecordable.delete(uid);
      ctx.host.recordFailuresLogged.delete(uid);
      ctx.host.deferredDevices.delete(uid);
      ctx.host.earlierLeases.delete(uid);
      ctx.host.restoredRuns.delete(uid);
      return done;
    }
    const stopped =
      observed.domain.state === 'ours' &&
      observed.domain.active &&
      after.state === 'ours' &&
      !after.active;
    if (round === 0 && stopped && !outcome.failure) continue;
    return reportRemoval(ctx, vm, {
      after,
      plan,
      failure: outcome.failure,
      now,
      ...(shutdownSentAt ? { shutdownSentAt } : {}),
      ...(stopAttemptedAt ? { stopAttemptedAt } : {}),
    });
  }
}

/**
 * Says on a machine whose domain is gone why its deletion waits (DeletionBlocked, Ready), with
 * one Warning Event `DeletePending` when that changes, or clears the condition once the wait
 * is over (an admin's forget-node or delete). Writes nothing when the status already says so:
 * the wait is retried every minute, and a machine that never waited is not written to at all.
 * The Event follows the write: a write that fails is retried at the error pace, and an Event
 * sent before it would be sent again with each retry.
 */
async function reportDeletion(
  ctx: ControllerContext,
  vm: VirtualMachine,
  wait: Problem | undefined,
): Promise<void> {
  if (saysDeletion(vm, wait)) return;
  const status = removedStatus({
    vm,
    nodeName: ctx.nodeName,
    now: ctx.now(),
    wait,
    restartsCounted: countedRestarts(ctx, vm),
  });
  await ctx.applyStatus(KIND, vm, status);
  if (wait) ctx.event(KIND, vm, 'Warning', 'DeletePending', wait.message);
}

async function reportRemoval(
  ctx: ControllerContext,
  vm: VirtualMachine,
  pass: {
    after: ObservedDomain;
    plan: MachinePlan;
    failure: StepFailure | undefined;
    now: Date;
    shutdownSentAt?: Date;
    stopAttemptedAt?: Date;
  },
): Promise<Action> {
  const status = machineStatus({
    vm,
    nodeName: ctx.nodeName,
    now: pass.now,
    observed: pass.after,
    problem: pass.failure,
    shutdown: pass.plan.shutdown,
    started: undefined,
    pending: [],
    ...(pass.shutdownSentAt ? { shutdownSentAt: pass.shutdownSentAt } : {}),
    ...(pass.stopAttemptedAt ? { stopAttemptedAt: pass.stopAttemptedAt } : {}),
    restartsCounted: countedRestarts(ctx, vm),
  });
  await report(ctx, vm, status, []);
  if (pass.failure) return requeueAfter(retryDelayMs(status, pass.now));
  return requeueAfter(settledWait(pass.plan, pass.after, pass.now, ctx, vm, pass.shutdownSentAt));
}

/**
 * The cached machine with a request this process sent and the cache lacks (withSentShutdown).
 * A restart count it remembers is forgotten here once the cache shows it (countedRestarts).
 */
function planView(
  vm: VirtualMachine,
  domain: ObservedDomain,
  ctx: ControllerContext,
): VirtualMachine {
  const uid = String(vm.metadata.uid);
  const view = withSentShutdown(vm, domain, ctx.host.shutdowns.get(uid));
  if (!view.current) ctx.host.shutdowns.delete(uid);
  if ((vm.status?.restartCount ?? 0) >= (ctx.host.restarts.get(uid) ?? 0)) {
    ctx.host.restarts.delete(uid);
  }
  return view.vm;
}

/**
 * The restartCount this process gave the machine for a restart it made, while the cached
 * status lacks it (machineStatus counts from it). After a status write that failed, the next
 * pass finds the domain running under a new ID; the count the start recorded in the domain's
 * metadata (act.ts recordRestart) says the same where the driver kept it, and is all a
 * successor agent has. Not folded into planView's copy of the object: the
 * status writer compares with that copy and would find nothing to write.
 */
function countedRestarts(ctx: ControllerContext, vm: VirtualMachine): number | undefined {
  return ctx.host.restarts.get(String(vm.metadata.uid));
}

/**
 * The steps with the count a restart makes on its start step (act.ts records it in the
 * domain's metadata before the start), or on the record of a restart whose start is held back
 * (plan.ts heldBack). Pure.
 */
export function withRestartCount(steps: readonly MachineStep[], count: number): MachineStep[] {
  return steps.map((s) =>
    (s.op === 'start' && s.kind === 'restart') || s.op === 'recordRestart'
      ? { ...s, restartCount: count }
      : s,
  );
}

/**
 * The steps with the generation a start records in the domain's metadata (act.ts recordRun):
 * the machine's, when this pass resolved the spec (its configuration steps, before the start,
 * made the persistent definition the spec's, or found it so), else 0: the definition the domain
 * starts from may lack the spec's newest change, which a later pass must still restart for
 * (plan.ts runStartedUnder). A define, made only from a resolved spec, gets it too: the run
 * record its old definition had is carried forward set to it (ownership/metadata.ts
 * keptMetadata). Pure.
 */
export function withRunGeneration(
  steps: readonly MachineStep[],
  generation: number,
): MachineStep[] {
  return steps.map((s) => (s.op === 'start' || s.op === 'define' ? { ...s, generation } : s));
}

/** Remembers an ACPI request this pass sent to the domain's current run. */
function rememberShutdown(
  ctx: ControllerContext,
  vm: VirtualMachine,
  domain: ObservedDomain,
  reason: ShutdownReason | undefined,
  sentAt: Date | undefined,
): void {
  if (!sentAt || !reason || domain.state !== 'ours' || !domain.active) return;
  ctx.host.shutdowns.set(String(vm.metadata.uid), { reason, sentAt, run: domain.id });
}

/**
 * When a pass that was to send the ACPI request began, if it sent none: a step before it (the
 * wake-up of a guest suspended to RAM, a resume) or the request itself failed. The status
 * records it, so that later passes try again (plan.ts gracefulStop).
 */
function unsentStop(
  steps: readonly MachineStep[],
  executed: readonly MachineStep[],
  now: Date,
): Date | undefined {
  const planned = steps.some((s) => s.op === 'shutdown');
  return planned && !executed.some((s) => s.op === 'shutdown') ? now : undefined;
}

/**
 * When this pass's ACPI request had been sent: the clock read after the call returned, so the
 * grace period counted from it is never shorter than the guest really had.
 */
function shutdownSent(executed: readonly MachineStep[], ctx: ControllerContext): Date | undefined {
  return executed.some((s) => s.op === 'shutdown') ? ctx.now() : undefined;
}

/**
 * The leases libvirt lists for the machine's interfaces, read when the pass is about to start
 * the domain: none of them can be the coming run's. dnsmasq keeps a lease until it expires,
 * so the previous run's stays listed until the guest asks again, and a guest started paused
 * (or still booting after a crash) would be shown with an address it does not have.
 */
async function leasesBeforeStart(
  conn: Connect,
  steps: readonly MachineStep[],
  desired: DomainDocument | undefined,
  domain: ObservedDomain,
): Promise<Set<string> | undefined> {
  if (!steps.some((s) => s.op === 'start')) return undefined;
  const doc = desired ?? (domain.state === 'ours' ? domain.config : undefined);
  return doc && doc.devices.interfaces.length > 0 ? await leaseKeysOf(conn, doc) : undefined;
}

/** The earlier runs' leases the first look of the pass settled on for the run it saw. */
function seenLeases(before: ObservedMachine): EarlierLeases | undefined {
  return before.domain.state === 'ours' ? before.domain.earlierLeases : undefined;
}

/**
 * Keeps, for the next look, which leases are the running domain's earlier runs' (observe.ts
 * earlierLeasesOf); a stopped domain is remembered as seen, so that its next run, whoever
 * starts it, counts every lease listed at its first look as an earlier run's.
 */
function rememberEarlierLeases(ctx: ControllerContext, uid: string, after: ObservedDomain): void {
  if (after.state !== 'ours') ctx.host.earlierLeases.delete(uid);
  else if (after.active && after.earlierLeases?.run !== undefined)
    ctx.host.earlierLeases.set(uid, {
      run: after.earlierLeases.run,
      keys: after.earlierLeases.keys,
    });
  else if (!after.active) ctx.host.earlierLeases.set(uid, { run: -1, keys: new Set() });
}

/**
 * Events for what was done, the status (if changed), then Events for conditions that turned
 * bad. `pending`: the restart-time fields the status names in RestartRequired. Returns the
 * object as the API server answered the write (undefined when nothing was written).
 */
async function report(
  ctx: ControllerContext,
  vm: VirtualMachine,
  status: VirtualMachineStatus,
  executed: readonly MachineStep[],
  pending: readonly string[] = [],
  /** Why RestartRequired says the run is not restarted for `pending` (status.ts restartHoldOf). */
  held?: RestartHold['by'],
): Promise<VirtualMachine | undefined> {
  // Before the write: the steps happened whether or not it goes through, and the next pass
  // does not take them again.
  const done = stepEvents(executed, vm, ctx.nodeName, status.restartCount ?? 0, pending, held);
  for (const e of done) ctx.event(KIND, vm, e.type, e.reason, e.message);
  // After it: a condition turned bad is told by comparing with the stored status, so a write
  // that fails (retried at the error pace) would have each retry tell it again (after-write.ts).
  const turned = conditionEvents(vm.status, status);
  return (await tellAfterWrite(
    () => ctx.applyStatus(KIND, vm, status),
    () => {
      for (const e of turned) ctx.event(KIND, vm, e.type, e.reason, e.message);
    },
    { skipUnwritten: true },
  )) as VirtualMachine | undefined;
}

function startedBy(executed: readonly MachineStep[]) {
  for (const step of executed) if (step.op === 'start') return step.kind;
  return undefined;
}

/** When to look again after a pass (nextLookMs), with the clock read now. */
function settledWait(
  plan: MachinePlan,
  after: ObservedDomain,
  now: Date,
  ctx: ControllerContext,
  vm: VirtualMachine,
  shutdownSentAt: Date | undefined,
): number {
  return nextLookMs(plan, {
    active: after.state === 'ours' && after.active,
    planned: now,
    now: ctx.now(),
    shutdownSentAt,
    graceMs: gracePeriodMs(vm),
  });
}

/**
 * DHCP leases appear seconds after boot. Where the host can report leases, a running machine
 * whose interfaces lack an address from their network's DHCP pool (of each family it serves:
 * a DHCPv6 lease often comes after the IPv4 one; an old lease outside a changed range does not
 * count) is looked at again for a few
 * minutes after its start, or after this process hot-plugged an interface into it (a NIC added
 * to a machine that has run for an hour waits for its lease as a new machine does); after that
 * the periodic resync suffices.
 */
function awaitingAddresses(
  vm: VirtualMachine,
  status: VirtualMachineStatus,
  after: ObservedDomain,
  now: Date,
  ctx: ControllerContext,
): boolean {
  if (after.state !== 'ours' || !after.active || !after.leasesSupported) return false;
  const pools = (network: string) =>
    dhcpPools(ctx.get<VirtualNetwork>('VirtualNetwork', undefined, network));
  return (
    addressesMissing(vm, status, pools) &&
    addressWindowOpen(status, ctx.host.interfacesAttached.get(String(vm.metadata.uid)), now)
  );
}
