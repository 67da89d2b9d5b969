// The VirtualMachine's status, rebuilt each pass from what was observed after acting. Pure.
//
// Deterministic by construction, so a converged machine's status equals the stored one and
// costs no write: conditions keep their lastTransitionTime while their status holds, times are
// whole seconds, quantities are printed one way (the largest binary unit that divides them),
// address lists are sorted. Two values carry over from the previous status, which is their
// only record: restartCount and startedAt (the time we first saw the current run).
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import {
  conditionTime,
  findCondition,
  isStalledReason,
  progressConditions,
  setCondition,
  type Condition,
} from '../../api/conditions.js';
import { domainName, libvirtUuid } from '../../api/names.js';
import type {
  VirtualMachine,
  VirtualMachineStatus,
  VirtualMachineStatusInterface,
  VirtualNetwork,
} from '../../api/generated/types.js';
import { ownedDomainFields, type DomainDocument } from '../../libvirt/xml/domain.js';
import { failingForDelay, turnedBad, type Problem } from '../kit.js';
import { interfaceMacs } from './desired.js';
import {
  bareAddress,
  type ForeignDomain,
  type ObservedDomain,
  type OursDomain,
} from './observe.js';
import {
  DETACH_CONDITION,
  detachMessage,
  gracePeriodMs,
  heldMarker,
  firstStartDue,
  ranUnderAgent,
  restartHold,
  runStartedUnder,
  UNCHANGED_SPEC,
  rerunStarts,
  restartBegun,
  restartsSoFar,
  stopReason,
  invalidPauseValue,
  OPERATOR_PAUSE,
  operatorPaused,
  pauseRequested,
  resumedUnlessAsked,
  runMarker,
  requestMarker,
  attemptMarker,
  shutdownRequest,
  SHUTDOWN_CONDITION,
  stopWithdrawn,
  type MachineStep,
  type RestartHold,
  type RestoredRun,
  type ShutdownReason,
  type StartKind,
} from './plan.js';

type Phase = NonNullable<VirtualMachineStatus['phase']>;

/** libvirt's reasons for a pause that does not end by itself and that the operator leaves. */
const STUCK_PAUSES = new Set(['ioerror', 'watchdog', 'crashed', 'postcopy_failed']);

/**
 * A guest the guest OS suspended to RAM (libvirt's pmsuspended): the operator neither wakes it
 * to make it Ready nor calls it running. It wakes by itself (a wake-up source in the guest) or
 * when a user asks; the operator wakes it only to stop it (awakeFirst in plan.ts).
 */
const GUEST_SUSPENDED = 'GuestSuspended';
const GUEST_SUSPENDED_MESSAGE =
  'the guest suspended itself to RAM (pmsuspended); it runs again when it wakes up: by a ' +
  'wake-up source of its own, or virsh dompmwakeup';

/** A domain with our name or UUID that this object did not create: reported, never adopted. */
export function nameConflict(observed: ForeignDomain, nodeName: string): Problem {
  const owner = observed.stamp
    ? `it belongs to ${observed.stamp.kind} ${observed.stamp.namespace ?? ''}/${observed.stamp.name} (uid ${observed.stamp.uid})`
    : 'the operator did not create it';
  const what =
    observed.clash === 'uuid'
      ? `a libvirt domain '${observed.name}' with this machine's UUID ${observed.uuid}`
      : `a libvirt domain named '${observed.name}' (uuid ${observed.uuid})`;
  return {
    reason: observed.clash === 'uuid' ? 'UUIDConflict' : 'NameConflict',
    message:
      `node ${nodeName} already has ${what}; ${owner}, so it is left untouched. ` +
      `Remove or rename it on the node${observed.clash === 'uuid' ? ', or set another spec.uuid' : ', or rename this object'}.`,
  };
}

export interface StatusInput {
  vm: VirtualMachine;
  nodeName: string;
  now: Date;
  /** The domain as observed after this pass's steps. */
  observed: ObservedDomain;
  problem: Problem | undefined;
  /** Why the operator is stopping or has stopped the domain (ShutdownRequested). */
  shutdown: ShutdownReason | undefined;
  /** A start this pass made. */
  started: StartKind | undefined;
  /** Restart-time fields the running domain does not reflect. */
  pending: readonly string[];
  /** A virt.dev/restart-requested-at value acted on (or moot) in this pass. */
  restartRequest?: string;
  /** For a restart requested now: the runtime ID of the run being stopped. */
  restartRun?: number;
  /** The run a restore brought back from a checkpoint (plan.ts restoredRun). */
  restoredRun?: RestoredRun;
  /** The pending fields include one the spec's generation does not track (plan.ts). */
  outsideSpec?: boolean;
  /** When this pass's ACPI shutdown request had been sent (read after the call returned). */
  shutdownSentAt?: Date;
  /**
   * This pass tried to ask the guest to shut down and sent nothing (a wake-up or resume that
   * failed, a refused shutdown): when it began. The first such try is kept in the message.
   */
  stopAttemptedAt?: Date;
  /** Devices detached from the spec that the running domain still has. */
  detaching?: Detaching;
  /**
   * A restartCount this process gave the machine that the previous status may not show (its
   * write failed): the count goes on from the larger of the two.
   */
  restartsCounted?: number;
}

export interface Detaching {
  fields: string[];
  since: Date;
  /** The grace period has passed since the first request: the detach is being retried. */
  expired: boolean;
  /** libvirt's refusals of this pass's retries. */
  errors: readonly string[];
}

/** Says on a machine why its deletion waits (as Volumes and snapshots do). */
export const DELETION_BLOCKED = 'DeletionBlocked';
/**
 * The deletion waits for a restore of the machine that another node's agent claimed, which the
 * admission policy lets no other agent delete: only an admin ends the wait (Stalled).
 */
export const RESTORE_CLAIMED_ELSEWHERE = 'RestoreClaimedElsewhere';
/** Synced's reason while a VirtualMachineRestore holds the machine (shared/restores.ts). */
export const RESTORE_IN_PROGRESS = 'RestoreInProgress';

/** How a machine's messages name the restore that holds it (standAside looks for it). */
export const restoreNamed = (hold: { name: string }): string =>
  `VirtualMachineRestore ${hold.name} `;

const REVERTING = ' is reverting the domain';

/**
 * Whether a Synced condition says a restore is reverting the domain (restoreHoldProblem
 * without `waiting`): the machine's passes stand aside, so a requested restart waits for the
 * revert to finish. A restore that waits for a user does not hold a restart. Pure.
 */
export function saysReverting(synced: {
  status: string;
  reason: string;
  message: string;
}): boolean {
  return (
    synced.status === 'False' &&
    synced.reason === RESTORE_IN_PROGRESS &&
    synced.message.startsWith('VirtualMachineRestore ') &&
    synced.message.includes(`${REVERTING}:`)
  );
}

/**
 * What the machine says while a restore holds it, naming the restore and how the user gets the
 * machine back. A running revert: nothing is done meanwhile. A begun revert that waits for a
 * user (its marker says nothing was reverted yet): runStrategy applies, but the definition is
 * kept, as a redefinition would drop that marker. Pure.
 */
export function restoreHoldProblem(
  vm: VirtualMachine,
  hold: { name: string; waiting?: { reason: string } },
): Problem {
  const restore = restoreNamed(hold).trimEnd();
  if (!hold.waiting) {
    return {
      reason: RESTORE_IN_PROGRESS,
      message:
        `${restore}${REVERTING}: the machine is left alone until it has ` +
        'finished, then its spec and runStrategy apply again',
    };
  }
  return {
    reason: RESTORE_IN_PROGRESS,
    message:
      `${restore} has not reverted the domain yet and waits (${hold.waiting.reason}, see its ` +
      'status): runStrategy applies meanwhile, but spec changes wait, as redefining the domain ' +
      `would lose the restore's record that nothing was reverted; delete the restore ` +
      `(kubectl delete vmrestore ${hold.name} -n ${vm.metadata.namespace}) to have them applied now`,
  };
}

/**
 * The problem a pass reports while a restore that waits holds the machine (`held`): a problem
 * of its own (the spec, the host) keeps its reason, whose class (Stalled or not) and phase
 * still apply, and says the hold after it. Pure.
 */
export function withRestoreHold(
  own: Problem | undefined,
  held: Problem | undefined,
): Problem | undefined {
  if (!held || !own) return own ?? held;
  return { reason: own.reason, message: `${own.message}; ${held.message}` };
}

/**
 * The stored status with Synced=False saying `problem`, for a pass that stands aside for a
 * running revert and observes nothing: the rest is left as the last pass saw it. Reconciling
 * follows as conditionsOf derives it. Pure.
 */
export function standingAsideStatus(
  vm: VirtualMachine,
  problem: Problem,
  now: Date,
): VirtualMachineStatus {
  const generation = vm.metadata.generation;
  const gen = generation === undefined ? {} : { observedGeneration: generation };
  const synced = { type: 'Synced', status: 'False' as const, ...problem, ...gen };
  let conditions = setCondition(vm.status?.conditions, synced, now);
  const ready = findCondition(conditions, 'Ready');
  const progress = ready === undefined || ready.status === 'True' ? synced : ready;
  for (const u of progressConditions(progress)) conditions = setCondition(conditions, u, now);
  return { ...vm.status, conditions };
}

/** The domain is gone from the node and the removal waits for nothing more. */
const REMOVED: Problem = {
  reason: 'Removed',
  message: 'the domain is removed from the node; the machine goes once its finalizers are released',
};

/**
 * The status of a machine being deleted whose domain is gone from the node: what the removal
 * still waits for (`wait`: DeletionBlocked=True, and Ready=False for the same reason, so that
 * `kubectl get`, `kubectl wait` and kstatus readers see why the object stays, not the last
 * status of a run long gone), or nothing more (`undefined`: DeletionBlocked goes). An Event
 * alone left them nothing to read. Deterministic (the condition keeps its lastTransitionTime),
 * so a wait that lasts costs one write, not one per retry.
 */
export function removedStatus(input: {
  vm: VirtualMachine;
  nodeName: string;
  now: Date;
  wait: Problem | undefined;
  restartsCounted?: number | undefined;
}): VirtualMachineStatus {
  const { vm, wait, now } = input;
  const status = machineStatus({
    vm,
    nodeName: input.nodeName,
    now,
    observed: { state: 'absent' },
    problem: wait ?? REMOVED,
    shutdown: undefined,
    started: undefined,
    pending: [],
    ...(input.restartsCounted === undefined ? {} : { restartsCounted: input.restartsCounted }),
  });
  if (!wait) return status;
  const previous = findCondition(vm.status?.conditions, DELETION_BLOCKED);
  const generation = vm.metadata.generation;
  status.conditions = setCondition(
    [...(status.conditions ?? []), ...(previous ? [previous] : [])],
    {
      type: DELETION_BLOCKED,
      status: 'True',
      ...wait,
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    },
    now,
  );
  return status;
}

/** Whether the machine's status already says this about its deletion (no write, no Event). */
export function saysDeletion(vm: VirtualMachine, wait: Problem | undefined): boolean {
  const current = findCondition(vm.status?.conditions, DELETION_BLOCKED);
  if (!wait) return current === undefined;
  return (
    current?.status === 'True' && current.reason === wait.reason && current.message === wait.message
  );
}

export function machineStatus(input: StatusInput): VirtualMachineStatus {
  const { vm, observed } = input;
  const previous = vm.status;
  const status: VirtualMachineStatus = {
    phase: phaseOf(input),
    uuid: observed.state === 'ours' ? observed.uuid : libvirtUuid(vm),
    domainName: domainName(vm),
    nodeName: input.nodeName,
    restartCount: restartCountOf(input),
  };
  const lastRestartRequest = input.restartRequest ?? previous?.lastRestartRequest;
  if (lastRestartRequest !== undefined) status.lastRestartRequest = lastRestartRequest;
  if (vm.metadata.generation !== undefined) status.observedGeneration = vm.metadata.generation;
  if (observed.state === 'ours') Object.assign(status, hostFacts(vm, observed));
  const startedAt = startedAtOf(input);
  if (startedAt !== undefined) status.startedAt = startedAt;
  status.conditions = conditionsOf(input);
  return status;
}

/**
 * The restarts counted so far: the status's, this process's (a write that failed), plus this
 * pass's restart; and at least what the running domain's definition records (act.ts writes it
 * before each restart), which is all that is left of a restart whose agent died before its
 * status write.
 */
export function restartCountOf(
  input: Pick<StatusInput, 'vm' | 'observed' | 'started' | 'restartsCounted'>,
): number {
  const counted =
    restartsSoFar(input.vm, input.restartsCounted) + (input.started === 'restart' ? 1 : 0);
  const recorded =
    input.observed.state === 'ours' && input.observed.active
      ? (input.observed.live?.restarts ?? 0)
      : 0;
  return Math.max(counted, recorded);
}

function hostFacts(vm: VirtualMachine, d: OursDomain): Partial<VirtualMachineStatus> {
  // A stopped domain's reason is the one that stands (stopReason): libvirt's `unknown` after a
  // restart of libvirtd, stored here, would erase the recorded reason the next pass judges by
  // (a guest that shut itself down turned StoppedBeforeRerun one pass later).
  const reason = d.active ? d.power.reason : stopReason(vm, d.power);
  const facts: Partial<VirtualMachineStatus> = {
    state: { state: d.power.state, reason },
  };
  const shown = d.live ?? d.config;
  if (!shown) return facts;
  facts.vcpus = { current: shown.vcpu.current, max: shown.vcpu.max };
  facts.memory = { target: kibQuantity(balloonPages(balloonTarget(d))) };
  if (d.active && d.memoryActualKiB !== undefined) {
    facts.memory.actual = kibQuantity(d.memoryActualKiB);
  }
  const interfaces = interfacesOf(vm, shown, d);
  if (interfaces.length > 0) facts.interfaces = interfaces;
  return facts;
}

/**
 * The balloon target we set: the persistent <currentMemory> (live changes are made to both,
 * see plan.ts), capped by the running maximum. Not the running <currentMemory>, which QEMU
 * keeps at the guest's actual size.
 */
export function balloonTarget(d: OursDomain): number {
  const doc = d.config ?? d.live;
  const target = doc ? ownedDomainFields(doc).currentMemoryKiB : 0;
  return d.live ? Math.min(target, d.live.memoryKiB) : target;
}

/** The size of the pages QEMU's virtio balloon moves, in KiB. */
const BALLOON_PAGE_KIB = 4;

/**
 * A balloon target as the guest reaches it: QEMU's balloon moves whole 4 KiB pages below a
 * MiB-aligned maximum, so a target that is not a multiple of 4 KiB (a decimal quantity such as
 * `500M`, 488282 KiB) ends up rounded up (488284 KiB, measured on QEMU 7.2). Shown unrounded,
 * target and actual would differ for good, as if the balloon never arrived.
 */
export function balloonPages(kib: number): number {
  return Math.ceil(kib / BALLOON_PAGE_KIB) * BALLOON_PAGE_KIB;
}

/** KiB as a quantity: the largest of Gi, Mi, Ki that divides it ("512Mi", "1536Mi", "100Ki"). */
export function kibQuantity(kib: number): string {
  if (kib > 0 && kib % (1024 * 1024) === 0) return `${kib / (1024 * 1024)}Gi`;
  if (kib > 0 && kib % 1024 === 0) return `${kib / 1024}Mi`;
  return `${kib}Ki`;
}

/** Spec order; an interface the domain does not have yet (pending restart) is left out. */
function interfacesOf(
  vm: VirtualMachine,
  doc: DomainDocument,
  d: OursDomain,
): VirtualMachineStatusInterface[] {
  const present = new Set(doc.devices.interfaces.map((n) => n.mac?.toLowerCase()));
  return interfaceMacs(vm)
    .filter(({ mac }) => present.has(mac))
    .map(({ name, mac }) => {
      const entry: VirtualMachineStatusInterface = { name, macAddress: mac };
      const ips = d.addresses.get(mac);
      if (ips && ips.length > 0) entry.ipAddresses = [...ips].sort(addressOrder);
      return entry;
    });
}

/**
 * IPv4 before IPv6, then as strings. The IP printer column shows an interface's first address,
 * and a user expects the IPv4 one there, as kubectl shows a Pod's; sorted as strings only, a
 * global IPv6 address (2001:db8::5) comes before an IPv4 one such as 203.0.113.5.
 */
export function addressOrder(a: string, b: string): number {
  const family = (ip: string) => (isIPv6(bareAddress(ip)) ? 6 : 4);
  return family(a) - family(b) || (a < b ? -1 : a > b ? 1 : 0);
}

function startedAtOf(input: StatusInput): string | undefined {
  const { vm, observed, now } = input;
  const previous = vm.status;
  if (observed.state !== 'ours' || !observed.active) return previous?.startedAt;
  const wasUp = previous?.state?.state !== undefined && previous.state.state !== 'shutoff';
  if (input.started === undefined && wasUp && previous?.startedAt) return previous.startedAt;
  return conditionTime(now);
}

/**
 * Whether runStrategy starts the stopped domain by itself: the plan's own judgment
 * (plan.firstStartDue, plan.rerunStarts), so phase and Ready never say Starting where no
 * start comes.
 */
function startsByItself(input: StatusInput, domain: OursDomain): boolean {
  const { vm } = input;
  const strategy = vm.spec.runStrategy ?? 'Always';
  const ranBefore = ranUnderAgent(domain);
  // Manual starts a machine once, when it is created.
  if (strategy === 'Manual') return firstStartDue(vm, { ranBefore });
  if (strategy !== 'RerunOnFailure') return strategy === 'Always';
  const begun = restartBegun(domain, vm, input.restartsCounted);
  return rerunStarts(vm, { reason: domain.power.reason, restartBegun: begun, ranBefore });
}

/** What the deletion of a machine whose domain is still defined is waiting for. Pure. */
function deletingMessage(input: StatusInput, domain: OursDomain): string {
  const what = 'the machine is being deleted: ';
  if (!domain.active) return `${what}the domain is shut off; undefining it`;
  if (domain.power.state === 'crashed') return `${what}destroying the crashed domain`;
  const grace = gracePeriodMs(input.vm) / 1000;
  if (grace === 0) {
    return `${what}destroying the domain at once, as terminationGracePeriodSeconds is 0`;
  }
  return (
    `${what}waiting for the guest to shut down (terminationGracePeriodSeconds ${grace}s; ` +
    'destroyed if it still runs then), then the domain is undefined'
  );
}

function phaseOf(input: StatusInput): Phase {
  const { observed, problem, shutdown, vm } = input;
  if (observed.state === 'foreign') return 'Failed';
  // Removed from the node for the machine's deletion: nothing runs, nothing is on its way up
  // (Pending would say it is about to be created), also while the deletion waits for a user.
  if (observed.state === 'absent' && vm.metadata.deletionTimestamp) return 'Stopped';
  if (observed.state === 'absent') {
    return problem && isStalledReason(problem.reason) ? 'Failed' : 'Pending';
  }
  const { state, reason } = observed.power;
  if (state === 'crashed') return 'Failed';
  if (observed.active) {
    if ((shutdown && !stopWithdrawn(vm, shutdown)) || state === 'shutdown') return 'Stopping';
    if (state === 'paused' && reason === 'starting_up') return 'Starting';
    if (state === 'paused') return 'Paused';
    // Suspended to RAM by the guest OS: its vCPUs do not run, as when paused, and it is on its
    // way nowhere until it wakes (Ready says GuestSuspended).
    if (state === 'pmsuspended') return 'Paused';
    return 'Running';
  }
  // Shut off for its deletion (an undefine still to come or retried): never started again.
  if (vm.metadata.deletionTimestamp) return 'Stopped';
  // Held off, not on its way up: a start would write a base image under its overlays.
  if (problem?.reason === 'VolumeHasOverlays') return 'Stopped';
  // Not running, and only a user can change that (Stalled: a start or define refused for the
  // definition, unsupported input). A failure that may pass on a retry (StartFailed: a lock
  // not yet free) is on its way up: Starting, as kstatus reads it InProgress.
  if (problem && isStalledReason(problem.reason)) return 'Failed';
  // Retried, whatever runStrategy (Manual's first start too): on its way up.
  if (problem?.reason === 'StartFailed') return 'Starting';
  if (shutdown === 'RestartToApplyChanges' || shutdown === 'RestartRequested') return 'Starting';
  return startsByItself(input, observed) ? 'Starting' : 'Stopped';
}

interface ConditionUpdate {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

function conditionsOf(input: StatusInput): Condition[] {
  const { vm, observed, now } = input;
  const updates: ConditionUpdate[] = [readyCondition(input), syncedCondition(input)];
  if (observed.state === 'ours') {
    updates.push(restartRequiredCondition(input), pausedCondition(input));
  }
  if (input.shutdown) updates.push(shutdownCondition(input, input.shutdown));
  if (input.detaching) updates.push(detachCondition(input.detaching));
  // A running machine that has not let go of a device the spec dropped (Synced=False, Ready
  // True) is still converging: kstatus and Flux must read InProgress, not Current, until the
  // guest releases it, as a Volume's pending grow does (its Resized=False).
  const [ready, synced] = updates as [ConditionUpdate, ConditionUpdate];
  const progress = ready.status === 'True' && synced.status === 'False' ? synced : ready;
  updates.push(...(progressConditions(progress) as ConditionUpdate[]));
  const generation = vm.metadata.generation;
  let conditions: Condition[] = vm.status?.conditions ?? [];
  for (const u of updates) {
    conditions = setCondition(
      conditions,
      generation === undefined ? u : { ...u, observedGeneration: generation },
      now,
    );
  }
  const wanted = new Set(updates.map((u) => u.type));
  return conditions.filter((c) => wanted.has(c.type));
}

/**
 * Ready, and for a virt.dev/paused value the operator does not understand, InvalidAnnotation
 * wherever the power state would read as done or as a pause to wait for: the value asks
 * nothing, so the operator cannot tell what is wanted, and a user must fix it, whether the
 * guest was left paused, running or shut off (a running guest whose "True" asked for a pause
 * read Ready=True: kstatus Current, Argo CD Healthy). Readings of a change under way (a start,
 * a stop, a restart, a crash being handled, a guest suspended to RAM where runStrategy wants it
 * running) come first; the value is read once they are over. So do PausedByError and
 * StoppedByCrash: fixing the value does not end those.
 */
function readyCondition(input: StatusInput): ConditionUpdate {
  const ready = powerReadiness(input);
  const { observed } = input;
  if (observed.state !== 'ours') return ready;
  const startingUp = observed.power.state === 'paused' && observed.power.reason === 'starting_up';
  const settled = ready.status === 'True' || (ready.reason === 'Paused' && !startingUp);
  return (settled && invalidPauseReady(input)) || ready;
}

/**
 * The shut-offs under runStrategy Manual that no user chose and nothing undoes (libvirt's
 * shut-off reason, kept by stopReason across a restart of libvirtd): a crash (QEMU killed, a
 * guest panic), a QEMU libvirtd killed because it could not reconnect to it after its own
 * restart, and a start that failed (QEMU exited while starting, a disk or lock it could not
 * take). Each read Ready=True ManualPower (Healthy). libvirt's `unknown` is not one: it is
 * also what a host reboot or a restart of libvirtd leaves, which no one need fix, and Manual
 * leaves restarting to the user.
 */
const MANUAL_STOPS: Readonly<Record<string, { reason: string; what: string; look?: true }>> = {
  crashed: { reason: 'StoppedByCrash', what: 'the domain crashed' },
  daemon: {
    reason: 'StoppedByCrash',
    what: 'libvirtd stopped the domain, which it could not reconnect to after it restarted,',
  },
  failed: { reason: 'StoppedByFailedStart', what: 'the domain failed to start', look: true },
};

function powerReadiness(input: StatusInput): ConditionUpdate {
  const { observed, problem, vm } = input;
  const no = (reason: string, message: string): ConditionUpdate => ({
    type: 'Ready',
    status: 'False',
    reason,
    message,
  });
  if (observed.state !== 'ours') {
    return problem
      ? no(problem.reason, problem.message)
      : no('NotCreated', 'the domain is not defined on the node yet');
  }
  // Ready means the power state is what runStrategy asks AND the definition is synced.
  if (problem) return no(problem.reason, problem.message);
  // Its domain still on the node: what runStrategy asks no longer counts (a guest shutting
  // down for the deletion read Ready=True Running beside phase Stopping).
  if (vm.metadata.deletionTimestamp) return no('Deleting', deletingMessage(input, observed));
  if (input.shutdown === 'RestartToApplyChanges') {
    return no('Restarting', 'restarting the domain gracefully to apply restart-time changes');
  }
  if (input.shutdown === 'RestartRequested') {
    return no(
      'Restarting',
      'restarting the domain gracefully, as virt.dev/restart-requested-at asks',
    );
  }
  const strategy = vm.spec.runStrategy ?? 'Always';
  const { state, reason } = observed.power;
  const yes = (why: string, message: string): ConditionUpdate => ({
    type: 'Ready',
    status: 'True',
    reason: why,
    message,
  });
  if (state === 'crashed') return no('Crashed', 'the guest crashed');
  const stopped = observed.active ? undefined : stopReason(vm, observed.power);
  switch (strategy) {
    case 'Manual':
      if (!observed.active && startsByItself(input, observed)) {
        return no(
          'NotRunning',
          'the domain has not started yet; runStrategy Manual starts it once',
        );
      }
      if (stopped !== undefined && Object.hasOwn(MANUAL_STOPS, stopped)) {
        const { reason: why, what, look } = MANUAL_STOPS[stopped]!;
        const name = domainName(vm);
        return no(
          why,
          `${what} and is shut off; runStrategy Manual does not start it again: ` +
            (look
              ? `see why in libvirt's log for domain ${name} on node ${input.nodeName}, then ` +
                `start it (virsh start ${name})`
              : `start it (virsh start ${name} on node ${input.nodeName})`) +
            ', or set runStrategy RerunOnFailure or Always to have it started, or Halted to ' +
            'keep it off',
        );
      }
      // Manual leaves the power state to the user, but a pause libvirt holds until a user acts
      // (a disk error, a watchdog, a panic) is not one the user chose: Stalled, as under the
      // other strategies, not Current (Argo CD: Suspended) for a guest that no longer runs.
      if (state === 'paused' && STUCK_PAUSES.has(reason)) return pausedByError(reason);
      // A pause an invalid virt.dev/paused value leaves in place is not the user's choice
      // either: readyCondition reads it as InvalidAnnotation (it read Ready=True ManualPower).
      return yes(
        'ManualPower',
        `the domain is ${state}; with runStrategy Manual the operator leaves its power state alone`,
      );
    case 'Halted':
      if (!observed.active)
        return yes('Halted', 'the domain is shut off, as runStrategy Halted asks');
      return no('Stopping', 'waiting for the guest to shut down (runStrategy Halted)');
    default:
      if (observed.active && (state === 'running' || state === 'blocked')) {
        return yes('Running', 'the domain is running');
      }
      if (
        !observed.active &&
        strategy === 'RerunOnFailure' &&
        !input.shutdown &&
        !startsByItself(input, observed)
      ) {
        return stopReason(vm, observed.power) === 'shutdown'
          ? yes(
              'GuestShutdown',
              'the guest shut itself down; runStrategy RerunOnFailure does not start it again',
            )
          : yes(
              'StoppedBeforeRerun',
              `the domain was already shut off (${stopReason(vm, observed.power)}) when the ` +
                'operator last looked; ' +
                'runStrategy RerunOnFailure starts it again only after a failure of a run it saw',
            );
      }
      // libvirt pauses a guest on a disk error, a watchdog or a guest panic, and nothing
      // resumes it: the operator undoes only pauses it knows to be safe (plan.pauseSteps). Only
      // a user ends that (Stalled), where a pause for a save, dump or snapshot ends by itself.
      // Whatever virt.dev/paused says: neither "true" (it read PausedByRequest, Current) nor
      // "false" ends such a pause.
      if (state === 'paused' && STUCK_PAUSES.has(reason)) return pausedByError(reason);
      // Paused as the annotation asks is the state the user wants: Ready, so kstatus reads
      // Current (it falls back to Ready when neither Reconciling nor Stalled is True) and
      // Argo CD Suspended. Any other pause is not what was asked for.
      if (state === 'paused' && reason !== 'starting_up' && pauseRequested(vm)) {
        return yes(
          'PausedByRequest',
          'the domain is paused, as the annotation virt.dev/paused asks',
        );
      }
      // A value the operator does not understand leaves the guest as it is (plan.pauseSteps):
      // nothing resumes it until a user fixes the annotation, so readyCondition reads it as
      // InvalidAnnotation (Stalled), not a pause being undone (Reconciling, which kstatus
      // would read as InProgress for ever).
      if (state === 'paused') return no('Paused', `the domain is paused (${reason})`);
      if (state === 'pmsuspended') {
        // Its vCPUs do not run, which is all the annotation asks: done, not a wake-up waited
        // for (it read Reconciling, kstatus InProgress until the guest woke, which a GitOps
        // health check times out on). It is paused when it wakes (plan.pauseSteps).
        return pauseRequested(vm)
          ? yes(
              'PausedByRequest',
              'the guest suspended itself to RAM (pmsuspended), so it does not run, as the ' +
                'annotation virt.dev/paused asks; it is paused when it wakes up',
            )
          : no(GUEST_SUSPENDED, GUEST_SUSPENDED_MESSAGE);
      }
      return no(
        'NotRunning',
        `the domain is ${state} (${reason}); runStrategy ${strategy} wants it running`,
      );
  }
}

/**
 * Ready for a virt.dev/paused value the operator does not understand (plan.invalidPauseValue),
 * if it has one: not Ready, reason InvalidAnnotation (Stalled: kstatus Failed, Argo CD
 * Degraded), naming the value. Pure.
 */
function invalidPauseReady(input: StatusInput): ConditionUpdate | undefined {
  const value = invalidPauseValue(input.vm);
  if (value === undefined || input.observed.state !== 'ours') return undefined;
  const { vm } = input;
  const { state, reason } = input.observed.power;
  // "false" is promised to resume only a pause that it does undo (plan.pauseSteps).
  const fix = resumedUnlessAsked(vm, input.observed.power, vm.spec.runStrategy ?? 'Always')
    ? 'set "false" to resume it or "true" to keep it paused'
    : 'only "true" (pause) and "false" (run) are understood: set one of them, or remove it';
  return {
    type: 'Ready',
    status: 'False',
    reason: 'InvalidAnnotation',
    message:
      `the domain is ${state} (${reason}) and virt.dev/paused is ${JSON.stringify(value)}, ` +
      `which asks nothing: ${fix}`,
  };
}

function pausedByError(reason: string): ConditionUpdate {
  return {
    type: 'Ready',
    status: 'False',
    reason: 'PausedByError',
    message:
      `the domain is paused (${reason}) and stays so until a user acts: fix the cause, ` +
      'then restart it (libvirt-operator vm restart) or resume it (virsh resume)',
  };
}

function syncedCondition(input: StatusInput): ConditionUpdate {
  const { observed, problem, detaching } = input;
  if (problem) return { type: 'Synced', status: 'False', ...problem };
  if (detaching) {
    const what = detaching.fields.join(', ');
    const grace = gracePeriodMs(input.vm) / 1000;
    return detaching.expired
      ? {
          type: 'Synced',
          status: 'False',
          reason: 'DetachPending',
          message:
            `the guest has not released ${what} within ${grace}s of the detach request; ` +
            'the detach is retried (the machine is not restarted for it)' +
            (detaching.errors.length > 0 ? `: ${detaching.errors.join('; ')}` : ''),
        }
      : {
          type: 'Synced',
          status: 'False',
          reason: 'Detaching',
          message: `waiting for the guest to release ${what} (up to ${grace}s, then retried)`,
        };
  }
  if (observed.state !== 'ours') {
    return {
      type: 'Synced',
      status: 'False',
      reason: 'NotCreated',
      message: 'the domain is not defined on the node yet',
    };
  }
  return {
    type: 'Synced',
    status: 'True',
    reason: 'Synced',
    message: "the domain's definition matches the spec",
  };
}

/**
 * Why RestartRequired says updatePolicy Restart does not restart the running domain for its
 * pending fields, if it says so (plan.ts restartHold): under updatePolicy Restart, with fields
 * pending. The pass hands it to the Updated Event as data (stepEvents), so the Event need not
 * read it back out of the condition's message. Pure.
 */
export function restartHoldOf(
  input: Pick<StatusInput, 'vm' | 'observed' | 'pending' | 'restoredRun' | 'outsideSpec'>,
): RestartHold | undefined {
  const { vm, observed } = input;
  if (input.pending.length === 0 || vm.spec.updatePolicy !== 'Restart') return undefined;
  if (observed.state !== 'ours') return undefined;
  return restartHold(
    vm,
    { ...observed.power, id: observed.id },
    {
      restoredRun: input.restoredRun,
      startedRun: runStartedUnder(vm, observed),
      outsideSpec: input.outsideSpec,
    },
  );
}

function restartRequiredCondition(input: StatusInput): ConditionUpdate {
  const { pending, vm } = input;
  if (pending.length === 0) {
    return {
      type: 'RestartRequired',
      status: 'False',
      reason: 'UpToDate',
      message: 'no restart-time change is pending',
    };
  }
  const hold = restartHoldOf(input);
  const later =
    'so updatePolicy Restart does not restart it for them; they apply at the next start, at ' +
    'once after a change of the spec or with virt.dev/restart-requested-at';
  const how =
    vm.spec.updatePolicy !== 'Restart'
      ? // Says how to get there: a newcomer's first RestartRequired named no way to restart.
        'they apply at the next start of the machine (updatePolicy Manual; libvirt-operator ' +
        'vm restart restarts it now, updatePolicy Restart lets the operator do so)'
      : hold?.by === 'restore'
        ? // The run and its generation are named so that the next agent still knows them once
          // libvirt's reason from_snapshot is gone (plan.ts restoredRun).
          `${heldMarker(hold.run)} with its own definition, ${later}`
        : hold?.by === 'unchangedSpec'
          ? // "or took on live": a run edited live since its start reflects a newer generation
            // (plan.ts runCaughtUp).
            `the running definition differs though ${UNCHANGED_SPEC} generation ` +
            `${hold.run.generation}, which this run ${runMarker(hold.run.run)} started under or ` +
            `took on live (e.g. the agent's defaults changed), ${later}`
          : 'the operator restarts the machine gracefully to apply them (updatePolicy Restart)';
  return {
    type: 'RestartRequired',
    status: 'True',
    reason: 'PendingChanges',
    message: `pending: ${pending.join(', ')}; ${how}`,
  };
}

function pausedCondition(input: StatusInput): ConditionUpdate {
  const { observed, vm } = input;
  const power = observed.state === 'ours' && observed.active ? observed.power : undefined;
  if (power?.state === 'pmsuspended') {
    return {
      type: 'Paused',
      status: 'True',
      reason: GUEST_SUSPENDED,
      message: GUEST_SUSPENDED_MESSAGE,
    };
  }
  const isPaused = power?.state === 'paused' && power.reason !== 'starting_up';
  const invalid = invalidPauseValue(vm);
  if (invalid !== undefined) {
    // The operator's own pause stays recorded as such (plan.operatorPaused): under Manual,
    // "false" undoes only that one.
    const left = !isPaused
      ? 'not paused'
      : operatorPaused(vm)
        ? `left paused (${OPERATOR_PAUSE} earlier)`
        : 'left paused';
    return {
      type: 'Paused',
      status: isPaused ? 'True' : 'False',
      reason: 'InvalidAnnotation',
      message:
        `virt.dev/paused is ${JSON.stringify(invalid)}, which asks nothing: only "true" ` +
        `(pause) and "false" (run) are understood, so the domain is ` +
        `${left}; set one of them, or remove the annotation`,
    };
  }
  if (isPaused) {
    // A pause libvirt holds for an error is not the one the annotation asked for, even when
    // it asks for one (Ready says PausedByError).
    return pauseRequested(vm) && !STUCK_PAUSES.has(power.reason)
      ? {
          type: 'Paused',
          status: 'True',
          reason: 'PausedByRequest',
          message: 'the domain is paused, as the annotation virt.dev/paused asks',
        }
      : {
          type: 'Paused',
          status: 'True',
          reason: 'Paused',
          message: `the domain is paused (${power.reason})`,
        };
  }
  return {
    type: 'Paused',
    status: 'False',
    reason: 'NotPaused',
    message: pauseRequested(vm)
      ? 'virt.dev/paused is "true": the domain is paused once it runs'
      : 'the domain is not paused',
  };
}

function detachCondition(detaching: Detaching): ConditionUpdate {
  return {
    type: DETACH_CONDITION,
    status: 'True',
    reason: 'Detaching',
    message: detachMessage(detaching.fields),
  };
}

const SHUTDOWN_WHY: Record<ShutdownReason, string> = {
  RunStrategyHalted: 'runStrategy Halted',
  RestartToApplyChanges: 'a restart to apply changes',
  RestartRequested: 'a restart requested by virt.dev/restart-requested-at',
  Deleting: 'the machine is being deleted',
};

function shutdownCondition(input: StatusInput, reason: ShutdownReason): ConditionUpdate {
  const active = input.observed.state === 'ours' && input.observed.active;
  const grace = gracePeriodMs(input.vm) / 1000;
  // The run asked is kept in the message: it is how a later pass (or agent) knows the restart
  // has happened, or that a run started since was never asked (see ShutdownRequest.run).
  const observedRun = active && input.observed.state === 'ours' ? input.observed.id : undefined;
  const run =
    reason === 'RestartRequested'
      ? (input.restartRun ?? shutdownRequest(input.vm)?.run)
      : (observedRun ?? shutdownRequest(input.vm)?.run);
  const suffix = run === undefined ? '' : ` ${runMarker(run)}`;
  // The request's time to the millisecond stays in the message while the stop runs: it is
  // what the grace period is counted from (see destroyDueAt in plan.ts).
  const previous = shutdownRequest(input.vm);
  const sentAt = input.shutdownSentAt ?? previous?.sentAt;
  const when = sentAt === undefined ? '' : ` ${requestMarker(sentAt)}`;
  // The first try that sent nothing, unless it was another run's (see ShutdownRequest.run).
  const sameRun =
    previous?.run === undefined || observedRun === undefined || previous.run === observedRun;
  const attemptedAt = (sameRun ? previous?.attemptedAt : undefined) ?? input.stopAttemptedAt;
  const unsent = attemptedAt !== undefined && sentAt === undefined;
  const failedTry =
    active && input.observed.state === 'ours' && input.observed.power.state === 'pmsuspended'
      ? 'woke the guest from suspend to RAM (pmsuspended) to ask it to shut down, which failed'
      : 'the operator could not ask the guest to shut down';
  const asked = unsent
    ? `${failedTry}; no ACPI request sent yet, tried again each pass (${SHUTDOWN_WHY[reason]})`
    : `ACPI shutdown${when === '' ? ' requested' : when} (${SHUTDOWN_WHY[reason]})`;
  const from = attemptedAt === undefined ? 'the request' : `the ${attemptMarker(attemptedAt)}`;
  return {
    type: SHUTDOWN_CONDITION,
    status: 'True',
    reason,
    message: !active
      ? `the operator shut the domain down (${SHUTDOWN_WHY[reason]})${suffix}`
      : grace === 0 && sentAt === undefined
        ? `destroying the domain without an ACPI request, as terminationGracePeriodSeconds is 0 ` +
          `(${SHUTDOWN_WHY[reason]})${suffix}`
        : stopWithdrawn(input.vm, reason)
          ? `${asked}, which runStrategy ${input.vm.spec.runStrategy ?? 'Always'} no longer asks for: ` +
            `the domain is not destroyed, but the guest may still act on the request, so a stop ` +
            `within ${grace}s of it is taken as the one asked for${suffix}`
          : `${asked}; the domain is destroyed if it still runs ${grace}s after ${from}${suffix}`,
  };
}

// ---- events ----

export interface MachineEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * Warning Events for conditions that turned bad since the last status: Synced turning False
 * (or False for another reason or message), RestartRequired naming other fields. Tied to
 * transitions, so a machine that stays in one state does not repeat itself each pass.
 */
export function conditionEvents(
  before: VirtualMachineStatus | undefined,
  after: VirtualMachineStatus,
): MachineEvent[] {
  const events: MachineEvent[] = [];
  const changed = (type: string, bad: 'True' | 'False') =>
    turnedBad(before?.conditions, after.conditions, type, bad);
  const synced = changed('Synced', 'False');
  if (synced && synced.reason !== 'NotCreated' && synced.reason !== 'Detaching') {
    events.push({ type: 'Warning', reason: synced.reason, message: synced.message });
  }
  const restart = changed('RestartRequired', 'True');
  if (restart) events.push({ type: 'Normal', reason: 'RestartRequired', message: restart.message });
  const paused = after.conditions?.find((c) => c.type === 'Paused');
  const pausedBefore = before?.conditions?.find((c) => c.type === 'Paused');
  if (
    paused?.reason === 'InvalidAnnotation' &&
    (pausedBefore?.reason !== paused.reason || pausedBefore.message !== paused.message)
  ) {
    events.push({ type: 'Warning', reason: 'InvalidAnnotation', message: paused.message });
  }
  return events;
}

/** Normal (and for surprises, Warning) Events for what a pass did on the host. */
export function stepEvents(
  executed: readonly MachineStep[],
  vm: VirtualMachine,
  nodeName: string,
  restartCount: number,
  /** The restart-time fields RestartRequired names (e.g. `spec.maxMemory`). */
  pending: readonly string[] = [],
  /** Why RestartRequired says updatePolicy Restart does not restart for them (restartHoldOf). */
  held?: RestartHold['by'],
): MachineEvent[] {
  const name = domainName(vm);
  const events: MachineEvent[] = [];
  // A new machine defined and started for the first time in one pass gets no Event: its first
  // status says all of it (Ready=True with reason Running and its transition time, startedAt,
  // uuid, domainName, nodeName), and an Event would be a third API write for every new machine
  // (bench/README.md, "Convergence of one agent"). A machine defined but not started, or
  // defined again after its domain vanished (it has a startedAt, so its start is not
  // 'initial'), still gets its Created Event: there the status alone does not tell it.
  const createdAndStarted =
    executed.some((s) => s.op === 'define' && s.created) &&
    executed.some((s) => s.op === 'start' && s.kind === 'initial');
  for (const step of executed) {
    switch (step.op) {
      case 'define':
        if (createdAndStarted) break;
        events.push(
          step.created
            ? {
                type: 'Normal',
                reason: 'Created',
                message: `defined libvirt domain ${name} (uuid ${step.doc.uuid}) on node ${nodeName}`,
              }
            : {
                type: 'Normal',
                reason: 'Updated',
                // Restart-time changes are named only when some are pending: a definition
                // saved while stopped, or for changes already made live, has none.
                message: `saved the new definition of domain ${name}${whenApplied(vm, pending, held)}`,
              },
        );
        break;
      case 'setMemory':
        if (step.live) {
          events.push({
            type: 'Normal',
            reason: 'MemoryChanged',
            message: `set the balloon target of the running domain to ${kibQuantity(step.kib)} without a restart`,
          });
        }
        break;
      case 'setVcpus':
        if (step.live) {
          events.push({
            type: 'Normal',
            reason: 'VcpusChanged',
            message: `set ${step.count} vCPUs on the running domain without a restart`,
          });
        }
        break;
      case 'start':
        if (createdAndStarted) break;
        events.push(
          step.kind === 'restart'
            ? {
                type: 'Warning',
                reason: 'Restarted',
                message: `domain ${name} was ${step.after.state} (${step.after.reason}) without the operator asking; started it again (restart ${restartCount})`,
              }
            : {
                type: 'Normal',
                reason: 'Started',
                message: `started domain ${name} on node ${nodeName}`,
              },
        );
        break;
      case 'wakeup':
        events.push({
          type: 'Normal',
          reason: 'WokenUp',
          message: `woke the guest from suspend to RAM (pmsuspended) so that it can answer the ACPI shutdown request`,
        });
        break;
      case 'shutdown':
        events.push({
          type: 'Normal',
          reason: 'ShuttingDown',
          message: `ACPI shutdown requested (${SHUTDOWN_WHY[step.reason]}); destroyed after ${gracePeriodMs(vm) / 1000}s if still running`,
        });
        break;
      case 'destroy':
        events.push(
          step.why === 'crashed'
            ? {
                type: 'Warning',
                reason: 'Crashed',
                message: `domain ${name} crashed; destroyed it`,
              }
            : {
                type: 'Warning',
                reason: 'GracePeriodExpired',
                message:
                  gracePeriodMs(vm) === 0
                    ? `terminationGracePeriodSeconds is 0: destroyed domain ${name} without an ACPI request`
                    : `the guest did not shut down within ${gracePeriodMs(vm) / 1000}s of the ACPI request; destroyed it`,
              },
        );
        break;
      case 'attachDevice':
        events.push({
          type: 'Normal',
          reason: 'DeviceAttached',
          message: `attached ${step.device.field} to the running domain without a restart`,
        });
        break;
      case 'detachDevice':
        // The persistent definition's half of a detach split in two (plan.ts detachSteps)
        // asks no guest anything: its LIVE half has the Event.
        if (!step.live) break;
        events.push({
          type: 'Normal',
          reason: 'DeviceDetachRequested',
          message: `${step.retry ? 'repeated the request to detach' : 'asked the guest to release'} ${step.device.field}`,
        });
        break;
      case 'suspend':
        events.push({ type: 'Normal', reason: 'Paused', message: `paused domain ${name}` });
        break;
      case 'resume':
        events.push({ type: 'Normal', reason: 'Resumed', message: `resumed domain ${name}` });
        break;
      case 'undefine':
        events.push({
          type: 'Normal',
          reason: 'Deleted',
          message: `removed libvirt domain ${name} from node ${nodeName}`,
        });
        break;
      default:
        break;
    }
  }
  return events;
}

/** When a saved definition with restart-time changes takes effect, for the Updated Event. */
function whenApplied(
  vm: VirtualMachine,
  pending: readonly string[],
  held: RestartHold['by'] | undefined,
): string {
  if (pending.length === 0) return '';
  const fields = `pending: ${pending.join(', ')}`;
  if (vm.spec.updatePolicy !== 'Restart')
    return `; it applies at the next start (${fields}; updatePolicy Manual)`;
  const notNow = `(${fields}; updatePolicy Restart, see RestartRequired)`;
  if (held === 'restore')
    return (
      `; it applies at the next start: the running checkpoint a VirtualMachineRestore brought ` +
      `back is not restarted for it ${notNow}`
    );
  if (held === 'unchangedSpec')
    return `; it applies at the next start: the run is not restarted for it, as ${UNCHANGED_SPEC} the generation it reflects ${notNow}`;
  return `; a graceful restart applies it now (${fields}; updatePolicy Restart)`;
}

const MIN_RETRY_MS = 1_000;
const MAX_RETRY_MS = 300_000;

/**
 * The retry delay for a machine that is not where it should be: as long as it has been so,
 * between 1 s and 5 min. Synced's (else Ready's) lastTransitionTime is the memory, so the
 * backoff survives agent restarts and needs no per-key state.
 */
export function retryDelayMs(status: VirtualMachineStatus, now: Date): number {
  const conditions = status.conditions;
  const synced = findCondition(conditions, 'Synced');
  const since = (synced?.status === 'False' ? synced : findCondition(conditions, 'Ready'))
    ?.lastTransitionTime;
  return failingForDelay(since, now, MIN_RETRY_MS, MAX_RETRY_MS);
}

/**
 * How often a machine the node cannot start as its spec asks (unknownCpuModel,
 * missingFirmware) is looked at again: what it lacks ends with a package install, which wakes
 * nothing, so an installed package is then seen within about a minute, not after the agent's
 * resync.
 */
export const HOST_LACK_RECHECK_MS = 60_000;
/**
 * The spread of that recheck, each way: the machines an agent finds lacking at its start
 * would otherwise all come back in the same second every minute (a burst of passes, status
 * reads and writes for a thousand of them).
 */
const HOST_LACK_SPREAD = 0.15;
/**
 * The shortest recheck: a capabilities read younger than this is trusted. Were it the full
 * minute, a recheck drawn short would find the last read still fresh and see an install only
 * one recheck later.
 */
export const HOST_LACK_MAX_AGE_MS = HOST_LACK_RECHECK_MS * (1 - HOST_LACK_SPREAD);
/** The longest recheck (hostLackRecheckMs draws between the two). */
export const HOST_LACK_LONGEST_RECHECK_MS = HOST_LACK_RECHECK_MS * (1 + HOST_LACK_SPREAD);

/** The delay before the next recheck of a machine the node lacks for; `random` in [0, 1). */
export function hostLackRecheckMs(random: () => number = Math.random): number {
  return Math.round(HOST_LACK_MAX_AGE_MS + 2 * HOST_LACK_SPREAD * HOST_LACK_RECHECK_MS * random());
}

/** What a network hands out by DHCP in one family: its range and its hosts' addresses. */
export interface DhcpPool {
  family: 4 | 6;
  serves(ip: string): boolean;
}

/**
 * What a network hands out by DHCP, per family, as its spec says now. After a change of range
 * or subnet and a network restart, libvirt lists the guest's old lease until the guest renews:
 * an address outside the pool is no sign that the lease the guest will use has come.
 */
export function dhcpPools(vnet: VirtualNetwork | undefined): DhcpPool[] {
  const v4 = vnet?.spec.ipv4?.dhcp;
  const v6 = vnet?.spec.ipv6?.dhcp;
  return [
    ...(v4
      ? dhcpPool(
          4,
          v4.rangeStart,
          v4.rangeEnd,
          (v4.hosts ?? []).map((h) => h.ipAddress),
        )
      : []),
    ...(v6 ? dhcpPool(6, v6.rangeStart, v6.rangeEnd, []) : []),
  ];
}

/**
 * One family's pool. A reversed range (CEL cannot order IPv6 addresses, so the API server
 * takes one) hands out nothing: the network reports it as InvalidAddress instead.
 */
function dhcpPool(family: 4 | 6, start: string, end: string, hosts: string[]): DhcpPool[] {
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const isFamily = family === 4 ? isIPv4 : isIPv6;
  const list = new BlockList();
  try {
    list.addRange(start, end, type);
  } catch {
    return [];
  }
  for (const host of hosts) list.addAddress(host, type);
  return [{ family, serves: (ip) => isFamily(ip) && list.check(ip, type) }];
}

/** How long after a start the balloon is watched on its way to the target (balloonMoving). */
const BALLOON_BOOT_WINDOW_MS = 60_000;

/**
 * Whether the guest's balloon is still on its way to the target: just set, moved since the last
 * status, or the machine started less than a minute ago. A machine whose memory is below
 * maxMemory boots with the balloon at maxMemory, and the guest's driver deflates it only a few
 * seconds into the boot, after the passes around the start have looked (nothing wakes us when
 * it does: libvirt has no balloon event here). A guest without a balloon driver never moves
 * it, so the looks stop after that minute and never loop. Pure.
 */
export function balloonMoving(
  vm: VirtualMachine,
  status: VirtualMachineStatus,
  executed: readonly { op: string }[],
  now: Date,
): boolean {
  const memory = status.memory;
  if (!memory?.actual || !memory.target || memory.actual === memory.target) return false;
  if (executed.some((s) => s.op === 'setMemory')) return true;
  if (vm.status?.memory?.actual !== memory.actual) return true;
  const startedAt = status.startedAt ? Date.parse(status.startedAt) : undefined;
  return startedAt !== undefined && now.getTime() - startedAt < BALLOON_BOOT_WINDOW_MS;
}

/** How long after a start, or a hot-plugged interface, a missing address is looked for. */
const ADDRESS_POLL_WINDOW_MS = 300_000;

/**
 * Whether a missing address is still worth looking for: within the window after the machine's
 * start or, later, after this process last hot-plugged an interface into it.
 */
export function addressWindowOpen(
  status: VirtualMachineStatus,
  interfaceAttachedAt: number | undefined,
  now: Date,
): boolean {
  const startedAt = status.startedAt ? Date.parse(status.startedAt) : now.getTime();
  const since = Math.max(startedAt, interfaceAttachedAt ?? 0);
  return now.getTime() - since < ADDRESS_POLL_WINDOW_MS;
}

/**
 * Whether an interface in the status has no address yet, or none from a DHCP pool of its
 * network (of each family the network hands out).
 */
export function addressesMissing(
  vm: VirtualMachine,
  status: VirtualMachineStatus,
  pools: (network: string) => readonly DhcpPool[],
): boolean {
  const byName = new Map((status.interfaces ?? []).map((i) => [i.name, i.ipAddresses ?? []]));
  return (vm.spec.interfaces ?? []).some((nic) => {
    // Status addresses are bare (observe.ts addresses); a prefix, should one come, is cut.
    const ips = (byName.get(nic.name) ?? []).map(bareAddress);
    if (ips.length === 0) return true;
    return pools(nic.network).some((pool) => !ips.some((ip) => pool.serves(ip)));
  });
}
