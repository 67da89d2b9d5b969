// desired + observed + the object -> the libvirt steps of one pass. Pure.
//
// Three parts, in this order: the host files (cloud-init ISO), the configuration (define,
// live memory and vCPU changes) and the power state (runStrategy). Only the fields the operator
// owns are compared (ownedDomainFields), so libvirt's defaults never look like drift, and a
// converged machine plans nothing at all.
//
// Memory: on QEMU the running definition's <currentMemory> is the balloon's ACTUAL size (libvirt
// updates it from QEMU's balloon events), so comparing the spec with it would call SetMemory on
// every pass for a guest without a balloon driver. The target we set lives in the persistent
// definition instead: a memory change is applied LIVE and CONFIG together, and is due exactly
// when the persistent <currentMemory> differs from the spec (a domain being stopped takes it
// once it is off: see withSavedTarget).
//
// Devices: disks (by source file) and interfaces (by MAC) are compared as sets, not lists, since
// libvirt inserts an attached device where its bus and target sort. A `disk` on virtio or scsi
// and any interface that is in the spec but not in the running domain is attached, and one in
// the running domain but not in the spec is detached (LIVE, and CONFIG where the persistent
// definition still differs: that keeps it in step without a redefinition, which would renumber
// PCI slots, see configSteps); everything else about devices is restart-time. The guest must
// release a detached device: until it does, the detach is not repeated; after the grace period
// it is retried (Synced=False, DetachPending), never replaced by a restart.
//
// Power actions: the annotation virt.dev/paused suspends and resumes; virt.dev/restart-requested-at
// asks for one graceful restart per value (see reconcile.ts for the record-before-act order).
import { createHash } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { conditionTime, findCondition } from '../../api/conditions.js';
import type { VirtualMachine } from '../../api/generated/types.js';
import {
  effectiveCpu,
  ownedDomainFields,
  type Disk,
  type DomainCpu,
  type DomainDocument,
  type NetworkInterface,
  type OwnedDomainFields,
} from '../../libvirt/xml/domain.js';
import { changedFields } from '../../ownership/owned.js';
import { lifecycleChange, type Problem } from '../kit.js';
import type { CloudInitImage } from './cloud-init.js';
import type { ObservedDomain, ObservedMachine, OursDomain } from './observe.js';
import { diskIndex, diskLetters } from './desired.js';

/** The condition that remembers why and since when the operator is stopping the domain. */
export const SHUTDOWN_CONDITION = 'ShutdownRequested';
const SHUTDOWN_REASONS = [
  'RunStrategyHalted',
  'RestartToApplyChanges',
  'RestartRequested',
  'Deleting',
] as const;
/** The condition that remembers since when the guest is asked to release detached devices. */
export const DETACH_CONDITION = 'DetachRequested';
export const PAUSED_ANNOTATION = 'virt.dev/paused';
export const RESTART_ANNOTATION = 'virt.dev/restart-requested-at';
export type ShutdownReason = (typeof SHUTDOWN_REASONS)[number];

/**
 * Why a start happens: the first start of the machine, a restart after the domain stopped
 * without the operator asking (a crash, a destroy behind our back, a guest shutdown under
 * Always, a host reboot: counted in restartCount), or one the user asked for (a runStrategy
 * change, a restart to apply changes).
 */
export type StartKind = 'initial' | 'restart' | 'requested';

/** A disk or interface to attach or detach live; `field` names it for users. */
export type DeviceChange =
  | { kind: 'disk'; field: string; disk: Disk }
  | { kind: 'interface'; field: string; nic: NetworkInterface };

export type MachineStep =
  | { op: 'writeCloudInit'; image: CloudInitImage }
  | { op: 'attachDevice'; device: DeviceChange; live: boolean; config: boolean }
  | { op: 'detachDevice'; device: DeviceChange; live: boolean; config: boolean; retry: boolean }
  | { op: 'suspend' }
  | { op: 'resume' }
  /** Wakes a guest its OS suspended to RAM (pmsuspended), so that it can answer ACPI. */
  | { op: 'wakeup' }
  | {
      op: 'define';
      doc: DomainDocument;
      created: boolean;
      /**
       * Only if a device step's CONFIG change did not take (see configSteps): otherwise the
       * device steps already made the persistent definition the spec's.
       */
      fallback?: boolean;
      /**
       * The generation whose spec `doc` holds (reconcile.ts withRunGeneration): a run record
       * the replaced definition had is carried forward set to it (ownership/metadata.ts
       * keptMetadata).
       */
      generation?: number;
    }
  | { op: 'setMemory'; kib: number; live: boolean; config: boolean }
  | { op: 'setVcpus'; count: number; live: boolean; config: boolean }
  | {
      op: 'start';
      kind: StartKind;
      after: { state: string; reason: string };
      /** Start with the vCPUs stopped (virt.dev/paused): the guest never runs (act.ts). */
      paused?: boolean;
      /**
       * For kind 'restart': the restartCount this start makes, recorded in the domain's
       * metadata before the start (act.ts), so the run carries it should the status write
       * that follows never happen (reconcile.ts withRestartCount).
       */
      restartCount?: number;
      /**
       * The generation the persistent definition holds the spec of (0: unknown, the spec did
       * not resolve), recorded in the run's metadata right after the start (act.ts), so the run
       * carries it: updatePolicy Restart restarts it only for a spec changed since
       * (runStartedUnder, reconcile.ts withRunGeneration).
       */
      generation?: number;
    }
  /**
   * A restart after an unasked stop whose start is held back (heldBack): its count goes into
   * the stopped domain's definition as a start's would (act.ts), so that the restart stays
   * owed once the status shows the domain shut off (restartBegun).
   */
  | { op: 'recordRestart'; restartCount?: number }
  /**
   * A restart begun (restartBegun) that this plan gives up: runStrategy no longer starts it
   * (Manual, Halted), or a start that is not that restart comes first. The stopped domain's
   * definition gets back the count the status has, else the next run (a user's `virsh start`
   * under Manual, a requested start) inherited the larger one and was counted as the restart.
   */
  | { op: 'forgetRestart'; restartCount: number }
  /**
   * Writes the generation a running domain without a start record is judged against into its
   * live definition, once (runToRecord): from then on that run keeps its record as one the agent
   * started does. `persistent`: also into the persistent definition (runCaughtUp).
   */
  | { op: 'recordRun'; generation: number; persistent?: true }
  | { op: 'shutdown'; reason: ShutdownReason }
  | { op: 'destroy'; why: 'gracePeriodExpired' | 'crashed' }
  | { op: 'undefine'; nvram: boolean; tpm: boolean }
  | { op: 'removeFiles'; paths: string[] }
  /** Renames a file when it exists and the target does not (a UEFI variable store). */
  | { op: 'moveFile'; from: string; to: string }
  /** Removes the variable stores stashed beside `path` (variableStoreSteps). */
  | { op: 'removeStashes'; path: string };

/**
 * The lifecycle changes (libvirt's events, named by lifecycleChange) that executed steps make
 * to their own domain: a definition, a redefinition, a boot (QEMU's domains start paused and
 * are let go, which libvirt reports as well), a pause, a resume. Others (a stop, which the
 * guest completes later; a destroy of a crashed domain) wake the machine as anyone's do.
 */
export function ownLifecycleChanges(executed: readonly MachineStep[]): string[] {
  return executed.flatMap((s) => {
    if (s.op === 'define') return [lifecycleChange('defined', s.created ? 'added' : 'updated')];
    if (s.op === 'start')
      return [lifecycleChange('started', 'booted'), lifecycleChange('resumed', 'unpaused')];
    if (s.op === 'suspend') return [lifecycleChange('suspended', 'paused')];
    if (s.op === 'resume') return [lifecycleChange('resumed', 'unpaused')];
    return [];
  });
}

export interface MachinePlan {
  steps: MachineStep[];
  /** Why the operator is stopping (or has stopped) the domain after this pass, if it is. */
  shutdown: ShutdownReason | undefined;
  /**
   * Look again this soon even if nothing fails: a grace period runs or a state is in flux.
   * Counted from the plan's `now` (the pass subtracts the time its own calls took).
   */
  waitMs: number | undefined;
}

/** How often to look while a guest shuts down (its lifecycle event usually wakes us sooner). */
export const STOP_POLL_MS = 2_000;
/** How soon to look after a step whose effect arrives a moment later. */
export const TRANSITION_MS = 500;
const DEFAULT_GRACE_SECONDS = 60;

/** Fields that SetMemoryFlags / SetVcpusFlags change without a redefinition. */
const LIVE_PATHS = new Set(['currentMemoryKiB', 'vcpu.current']);

export interface ShutdownRequest {
  reason: ShutdownReason;
  /** The condition's lastTransitionTime: whole seconds, rounded down. */
  since: Date;
  /**
   * When the ACPI request had been sent, to the millisecond, where the condition's message
   * records it (requestMarker): the grace period then runs from exactly here.
   */
  sentAt?: Date;
  /**
   * The runtime ID of the domain run the request was sent to. A running domain with another ID
   * is a later run, which nobody has asked yet: for RestartRequested the restart is done even
   * if the agent died before it could record that (IDs are new on every start); for a stop,
   * the run it stopped is gone, and the one running now (started by a restore's revert, or
   * outside the operator) gets its own ACPI request and its own grace period.
   */
  run?: number;
  /**
   * When the operator first tried to ask the guest (attemptMarker), where that try sent no
   * ACPI request: a guest that could not be woken from suspend to RAM, or resumed, or whose
   * shutdown libvirt refused. Until `sentAt` is set too, every pass tries again; the grace
   * period runs from this moment either way (destroyDueAt), so the retries do not extend it.
   */
  attemptedAt?: Date;
}

/** How the run being restarted is written into the ShutdownRequested message. */
export const runMarker = (id: number): string => `(run ${id})`;

/**
 * How the moment the ACPI request had been sent is written into the ShutdownRequested message:
 * RFC 3339 with milliseconds. The condition's lastTransitionTime cannot carry it (metav1.Time
 * is whole seconds), and without it the grace period must be counted from the second after.
 */
export const requestMarker = (at: Date): string => `requested at ${at.toISOString()}`;
const REQUEST_MARKER = /requested at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)/;

/**
 * How the first try to ask the guest is written into the ShutdownRequested message when that
 * try sent no ACPI request (ShutdownRequest.attemptedAt); kept there after a later pass sends
 * it, since the grace period still runs from here.
 */
export const attemptMarker = (at: Date): string => `first attempt at ${at.toISOString()}`;
const ATTEMPT_MARKER = /first attempt at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)/;

export function shutdownRequest(vm: VirtualMachine): ShutdownRequest | undefined {
  const c = findCondition(vm.status?.conditions, SHUTDOWN_CONDITION);
  if (c?.status !== 'True') return undefined;
  const reason = (SHUTDOWN_REASONS as readonly string[]).includes(c.reason)
    ? (c.reason as ShutdownReason)
    : 'RunStrategyHalted';
  const request: ShutdownRequest = { reason, since: new Date(c.lastTransitionTime) };
  const run = /\(run (\d+)\)/.exec(c.message)?.[1];
  if (run !== undefined) request.run = Number(run);
  const sent = REQUEST_MARKER.exec(c.message)?.[1];
  // A time before the condition turned True is not this request's: it is ignored, and the
  // grace period is counted conservatively from the second after lastTransitionTime.
  if (sent !== undefined && Date.parse(sent) >= request.since.getTime()) {
    request.sentAt = new Date(sent);
  }
  const attempted = ATTEMPT_MARKER.exec(c.message)?.[1];
  if (attempted !== undefined) request.attemptedAt = new Date(attempted);
  return request;
}

/**
 * When a graceful stop may destroy the domain: the grace period after the request was sent.
 * Where only the whole-second lastTransitionTime is known, one second is added, so a guest
 * is never destroyed before its full grace period. A first try that sent no request
 * (attemptedAt) starts the grace period itself: retrying must not put the destroy off forever.
 */
export function destroyDueAt(request: ShutdownRequest, graceMs: number): number {
  if (request.attemptedAt !== undefined) return request.attemptedAt.getTime() + graceMs;
  return request.sentAt !== undefined
    ? request.sentAt.getTime() + graceMs
    : request.since.getTime() + 1000 + graceMs;
}

/** An ACPI request this process sent: why, when, and to which run of the domain. */
export interface SentShutdown {
  reason: ShutdownReason;
  sentAt: Date;
  run: number;
}

/**
 * The machine as a pass plans it, given a request this process sent (`sent`): while the
 * cached status does not show it yet (the watch brings our own write back late when the API
 * server is busy), the request is taken from memory as the status records it. A pass in that
 * window would otherwise find no request, ask the guest again and count a new grace period.
 * Only for the same run of the domain: one that stopped, or runs under another ID, is done
 * with that stop. `current` false: the memory is of no more use (forget it).
 */
export function withSentShutdown(
  vm: VirtualMachine,
  domain: ObservedDomain,
  sent: SentShutdown | undefined,
): { vm: VirtualMachine; current: boolean } {
  if (!sent) return { vm, current: false };
  // The cache's request wins unless it was sent to an earlier run than this process's.
  const cached = shutdownRequest(vm);
  // A cached record of a try that sent nothing (attemptedAt without sentAt) is older than
  // the request remembered here: taken as is, the next pass would ask the guest again.
  const attempt = cached?.sentAt === undefined ? cached?.attemptedAt : undefined;
  if (cached !== undefined && !attempt && (cached.run === undefined || cached.run === sent.run))
    return { vm, current: false };
  if (domain.state !== 'ours' || !domain.active || domain.id !== sent.run) {
    return { vm, current: false };
  }
  const others = (vm.status?.conditions ?? []).filter((c) => c.type !== SHUTDOWN_CONDITION);
  const condition = {
    type: SHUTDOWN_CONDITION,
    status: 'True' as const,
    reason: sent.reason,
    message:
      `ACPI shutdown ${requestMarker(sent.sentAt)} ${runMarker(sent.run)}` +
      (attempt ? ` ${attemptMarker(attempt)}` : ''),
    lastTransitionTime: conditionTime(attempt ?? sent.sentAt),
  };
  return {
    vm: { ...vm, status: { ...vm.status, conditions: [...others, condition] } },
    current: true,
  };
}

/**
 * Whether the remembered stop is a Halted one that runStrategy no longer asks for (powerPlan):
 * its ACPI request stays on record, but the operator is not stopping the domain.
 */
export function stopWithdrawn(vm: VirtualMachine, shutdown: ShutdownReason | undefined): boolean {
  return shutdown === 'RunStrategyHalted' && (vm.spec.runStrategy ?? 'Always') !== 'Halted';
}

/** Whether the annotation asks for the guest to be paused. */
export function pauseRequested(vm: VirtualMachine): boolean {
  return vm.metadata.annotations?.[PAUSED_ANNOTATION] === 'true';
}

/**
 * The annotation's value when it is neither "true" nor "false" ("yes", "True"): no schema can
 * refuse an annotation, and read as "not paused" such a typo would resume a paused guest. It
 * asks nothing; the guest stays as it is and status says why (status.ts).
 */
export function invalidPauseValue(vm: VirtualMachine): string | undefined {
  const value = vm.metadata.annotations?.[PAUSED_ANNOTATION];
  return value === undefined || value === 'true' || value === 'false' ? undefined : value;
}

/**
 * Words the Paused condition keeps while an invalid virt.dev/paused value leaves a pause the
 * operator made in place (status.ts): the condition is the only record that the pause is the
 * operator's, which under runStrategy Manual decides whether "false" undoes it.
 */
export const OPERATOR_PAUSE = 'a pause virt.dev/paused asked for';

/**
 * Whether the status records the guest's pause as one the operator made for the annotation:
 * reported PausedByRequest, or kept through an invalid value since (OPERATOR_PAUSE). Pure.
 */
export function operatorPaused(vm: VirtualMachine): boolean {
  const paused = findCondition(vm.status?.conditions, 'Paused');
  if (paused?.status !== 'True') return false;
  return (
    paused.reason === 'PausedByRequest' ||
    (paused.reason === 'InvalidAnnotation' && paused.message.includes(OPERATOR_PAUSE))
  );
}

/** status.lastRestartRequest's schema bound. */
const RESTART_RECORD_MAX = 256;

/**
 * How a restart-requested-at value is recorded in status.lastRestartRequest: as is, or when
 * longer than the field allows, as its digest (a value status cannot hold would otherwise never
 * count as done, and restart the machine on every pass).
 */
function restartRecord(value: string): string {
  return value.length <= RESTART_RECORD_MAX
    ? value
    : `sha256:${createHash('sha256').update(value).digest('hex')}`;
}

/** The restart-requested-at value not yet acted on, as it is to be recorded; if any. */
export function newRestartRequest(vm: VirtualMachine): string | undefined {
  const value = vm.metadata.annotations?.[RESTART_ANNOTATION];
  if (value === undefined) return undefined;
  const record = restartRecord(value);
  return record !== vm.status?.lastRestartRequest ? record : undefined;
}

/**
 * What a new restart-requested-at value (newRestartRequest) does to the domain: on a running one
 * the restart begins, unless the node cannot start the machine as its spec asks (`startProblem`:
 * a CPU model QEMU does not know, OVMF or swtpm missing; desired.ts). The stop would then leave
 * the guest down until a package is installed, so the restart waits: the request is not
 * recorded (status.lastRestartRequest keeps the earlier value), and the first pass that finds
 * the problem gone begins it, exactly once as any other. The problem's message says so. A
 * machine not running has nothing to restart: the request is recorded and does nothing. Pure.
 */
export function requestedRestart(
  request: string | undefined,
  domain: { state: string; active?: boolean },
  startProblem: Problem | undefined,
): { begin: string } | { waits: Problem } | { record: string } | undefined {
  if (request === undefined || domain.state === 'foreign') return undefined;
  if (domain.state !== 'ours' || !domain.active) return { record: request };
  if (!startProblem) return { begin: request };
  return {
    waits: {
      ...startProblem,
      message:
        `${startProblem.message}; the restart virt.dev/restart-requested-at asks waits for it ` +
        '(stopped, the guest could not start again), then runs once',
    },
  };
}

/** Since when the guest has been asked to release detached devices. */
export function detachRequestedSince(vm: VirtualMachine): Date | undefined {
  const c = findCondition(vm.status?.conditions, DETACH_CONDITION);
  return c?.status === 'True' ? new Date(c.lastTransitionTime) : undefined;
}

const DETACH_MESSAGE = 'detach requested from the running domain: ';

/** The DetachRequested message: the devices whose detach was asked (detachAsked reads it). */
export function detachMessage(fields: readonly string[]): string {
  return DETACH_MESSAGE + fields.join(', ');
}

/** The DetachRequested condition's message while it is True: which detaches were asked. */
export function detachAskedMessage(vm: VirtualMachine): string | undefined {
  const c = findCondition(vm.status?.conditions, DETACH_CONDITION);
  return c?.status === 'True' ? c.message : undefined;
}

/**
 * Whether `message` (detachMessage) lists `field`. Unknown (no message) counts as asked: only
 * a device known to be new is asked at once. Fields hold file names, which may hold ', ': the
 * whole entry between separators is matched, not a split of the list.
 */
function detachAsked(message: string | undefined, field: string): boolean {
  if (message === undefined) return true;
  if (!message.startsWith(DETACH_MESSAGE)) return true;
  return `, ${message.slice(DETACH_MESSAGE.length)}, `.includes(`, ${field}, `);
}

export function gracePeriodMs(vm: VirtualMachine): number {
  return (vm.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS) * 1000;
}

// ---- restart-time fields ----

/**
 * The memory size a domain boots with: libvirt's QEMU driver rounds it up to whole MiB on x86
 * (qemuDomainAlignMemorySizes) in the running definition only, so `512M` (500000 KiB) runs as
 * 500736 KiB. Compared unrounded, such a spec would read as a pending maxMemory change forever,
 * and under updatePolicy Restart restart the guest on every boot.
 */
export function bootedMemoryKiB(kib: number): number {
  return Math.ceil(kib / 1024) * 1024;
}

/**
 * The owned fields grouped by the spec field a user changes. Each group is compared between the
 * spec and the running domain; a group that differs is named in RestartRequired.
 */
const RESTART_GROUPS: ReadonlyArray<[field: string, pick: (o: OwnedDomainFields) => unknown]> = [
  ['spec.domainType', (o) => o.type],
  ['spec.maxMemory', (o) => bootedMemoryKiB(o.memoryKiB)],
  ['spec.maxVcpus', (o) => o.vcpu.max],
  ['spec.firmware', (o) => [o.os.firmware, o.os.nvram]],
  // Whether secure boot is asked for, not the feature list: a plain UEFI machine names
  // secure-boot off, which a BIOS one lacks, and switching only the firmware must not name
  // spec.secureBoot (the define still writes the list: definitionChanges compares it).
  [
    'spec.secureBoot',
    (o) => [o.os.secureBoot, o.os.firmwareFeatures.includes('secure-boot=yes'), o.smm],
  ],
  ['spec.tpm', (o) => o.tpms],
  ['spec.boot', (o) => [o.os.kernel, o.os.initrd, o.os.cmdline]],
  [`metadata.annotations['virt.dev/console-log']`, (o) => o.serials],
  // What the operator itself sets on every domain; differs only after an operator upgrade.
  [
    'operator domain defaults',
    (o) => [
      o.name,
      o.os.type,
      o.os.arch,
      o.features,
      o.onPoweroff,
      o.onReboot,
      o.onCrash,
      o.channels,
      o.memballoon,
    ],
  ],
];

/**
 * Spec fields the running domain does not reflect and cannot be given without a restart:
 * every restart-time group that differs, plus memory or vcpus beyond what the running domain's
 * maximum allows.
 */
export function restartPending(
  desired: DomainDocument,
  live: DomainDocument,
  names: DeviceNames = NO_NAMES,
  networkPorts: ReadonlyMap<string, ReadonlySet<string>> = new Map(),
): string[] {
  const want = ownedDomainFields(desired);
  const have = ownedDomainFields(live);
  const fields = RESTART_GROUPS.filter(
    ([, pick]) => changedFields(pick(want), pick(have)).length > 0,
  ).map(([field]) => field);
  if (!cpuMatches(effectiveCpu(desired), effectiveCpu(live))) fields.push('spec.cpu');
  fields.push(...deviceDiff(desired, live, names).pending);
  fields.push(...unpluggedInterfaces(live, networkPorts, names));
  if (want.currentMemoryKiB > have.memoryKiB) fields.push('spec.memory');
  // Fewer vCPUs than are running waits for a restart: see configSteps.
  if (want.vcpu.current > have.vcpu.max || want.vcpu.current < have.vcpu.current)
    fields.push('spec.vcpus');
  return fields;
}

/**
 * The restart-time changes a running domain does not reflect when this pass has no desired
 * definition (the spec names a missing Volume, an unknown CPU model…): what the saved
 * definition holds that the running one lacks, as the spec's earlier changes left it. The
 * spec's newest change waits for the problem to be fixed and is not among them; "nothing
 * pending" would hide the earlier ones until then.
 */
export function savedPending(
  vm: VirtualMachine,
  config: DomainDocument,
  live: DomainDocument,
  networkPorts: ReadonlyMap<string, ReadonlySet<string>> = new Map(),
): string[] {
  return restartPending(config, live, deviceNames(vm, config), networkPorts);
}

/**
 * Whether the running domain's CPU is the desired one. The QEMU driver rewrites host-model in
 * the running definition as mode custom with the host's model, vendor and features, so a
 * desired host-model matches such an expansion, and a desired custom model does not (not even
 * one of the expansion's name); a desired model or mode left unset is libvirt's to fill in.
 */
export function cpuMatches(want: DomainCpu | undefined, have: DomainCpu | undefined): boolean {
  const topology = (c: DomainCpu | undefined) => JSON.stringify(c?.topology ?? null);
  if (topology(want) !== topology(have)) return false;
  if (want?.mode === undefined) return true;
  if (want.mode === 'host-model') {
    return have?.mode === 'host-model' || (have?.mode === 'custom' && have.vendor !== undefined);
  }
  if (want.mode !== have?.mode) return false;
  // Only an expansion of host-model carries a vendor (libvirt adds none to a custom CPU,
  // measured on libvirt 9.0): a custom model of the same name lacks the host's features.
  if (want.mode === 'custom' && have.vendor !== undefined) return false;
  return want.model === undefined || want.model === have.model;
}

/**
 * Interfaces cut off from their network, named for RestartRequired: libvirt deletes a network's
 * ports when it stops and does not plug running guests into it again when it starts (the
 * agent starts a network someone stopped, e.g. to apply a restart-time change), so an
 * interface whose port the running network lacks has its tap on no bridge. Only a restart of
 * the guest plugs it in again; until then the guest is unreachable while the domain runs.
 */
export function unpluggedInterfaces(
  live: DomainDocument,
  networkPorts: ReadonlyMap<string, ReadonlySet<string>>,
  names: DeviceNames = NO_NAMES,
): string[] {
  return live.devices.interfaces.flatMap((nic) => {
    const ports = networkPorts.get(nic.source.network);
    if (!nic.port || !ports || ports.has(nic.port.toLowerCase())) return [];
    const field = names.interfaces.get(nicKey(nic)) ?? `spec.interfaces (${nicKey(nic)})`;
    return [`${field} (unplugged: network ${nic.source.network} was restarted)`];
  });
}

// ---- devices ----

/** The spec names of the desired devices, for messages: disk source file / MAC -> field. */
export interface DeviceNames {
  disks: ReadonlyMap<string, string>;
  interfaces: ReadonlyMap<string, string>;
}
const NO_NAMES: DeviceNames = { disks: new Map(), interfaces: new Map() };

/**
 * Names for desired's devices: its first disks are the spec's disks in order (desired.ts puts
 * the cloud-init seed after them), its interfaces the spec's interfaces in order.
 */
export function deviceNames(vm: VirtualMachine, desired: DomainDocument): DeviceNames {
  const disks = new Map<string, string>();
  (vm.spec.disks ?? []).forEach((spec, i) => {
    const disk = desired.devices.disks[i];
    if (disk) disks.set(diskKey(disk), `spec.disks[${spec.name}]`);
  });
  const interfaces = new Map<string, string>();
  (vm.spec.interfaces ?? []).forEach((spec, i) => {
    const mac = desired.devices.interfaces[i]?.mac;
    if (mac) interfaces.set(mac.toLowerCase(), `spec.interfaces[${spec.name}]`);
  });
  return { disks, interfaces };
}

const diskKey = (d: Disk): string =>
  d.source.type === 'file' ? d.source.file : `${d.source.pool}/${d.source.volume}`;
const nicKey = (n: NetworkInterface): string => (n.mac ?? '').toLowerCase();

/** The cloud-init seed: `<stateDir>/cloud-init/<uid>-<digest>.iso` (see cloud-init.ts). */
function isSeed(d: Disk): boolean {
  return (
    d.device === 'cdrom' &&
    d.source.type === 'file' &&
    basename(dirname(d.source.file)) === 'cloud-init' &&
    /^[0-9a-f-]{36}-[0-9a-f]+\.iso$/.test(basename(d.source.file))
  );
}

/** What libvirt and QEMU can attach and detach on a running domain. */
function hotPluggable(d: Disk): boolean {
  return d.device === 'disk' && (d.target.bus === 'virtio' || d.target.bus === 'scsi');
}

export interface DeviceDiff {
  attach: DeviceChange[];
  detach: DeviceChange[];
  /** Restart-time device changes, named for RestartRequired. */
  pending: string[];
}

/** Desired devices against the running domain's (see the header for the rules). */
export function deviceDiff(
  desired: DomainDocument,
  live: DomainDocument,
  names: DeviceNames = NO_NAMES,
): DeviceDiff {
  const diff: DeviceDiff = { attach: [], detach: [], pending: [] };
  const pending = new Set<string>();
  const seeds = (doc: DomainDocument) =>
    doc.devices.disks.filter(isSeed).map((d) => ownedDisk(d, true));
  if (changedFields(seeds(desired), seeds(live)).length > 0) pending.add('spec.cloudInit');

  const liveDisks = new Map(
    live.devices.disks.filter((d) => !isSeed(d)).map((d) => [diskKey(d), d]),
  );
  const wantDisks = new Map(
    desired.devices.disks.filter((d) => !isSeed(d)).map((d) => [diskKey(d), d]),
  );
  for (const [key, disk] of wantDisks) {
    const field = names.disks.get(key) ?? 'spec.disks';
    const have = liveDisks.get(key);
    if (!have) {
      if (hotPluggable(disk)) diff.attach.push({ kind: 'disk', field, disk });
      else pending.add(field);
    } else if (changedFields(ownedDisk(disk), ownedDisk(have)).length > 0) {
      pending.add(field);
    }
  }
  for (const [key, disk] of liveDisks) {
    if (wantDisks.has(key)) continue;
    const field = `spec.disks (removed ${basename(key)})`;
    if (hotPluggable(disk)) diff.detach.push({ kind: 'disk', field, disk });
    else pending.add(field);
  }

  const liveNics = new Map(live.devices.interfaces.map((n) => [nicKey(n), n]));
  const wantNics = new Map(desired.devices.interfaces.map((n) => [nicKey(n), n]));
  for (const [key, nic] of wantNics) {
    const field = names.interfaces.get(key) ?? 'spec.interfaces';
    const have = liveNics.get(key);
    if (!have) diff.attach.push({ kind: 'interface', field, nic });
    else if (changedFields(ownedNic(nic), ownedNic(have)).length > 0) pending.add(field);
  }
  for (const [key, nic] of liveNics) {
    if (!wantNics.has(key)) {
      diff.detach.push({ kind: 'interface', field: `spec.interfaces (removed ${key})`, nic });
    }
  }
  diff.pending = [...pending];
  return diff;
}

/** A disk's owned fields apart from its key (source) and its target name, which is a hint. */
function ownedDisk(d: Disk, withSource = false) {
  return {
    source: withSource ? diskKey(d) : undefined,
    device: d.device,
    bus: d.target.bus,
    format: d.driver?.type,
    readonly: d.readonly,
    bootOrder: d.bootOrder ?? null,
    // On the first SCSI controller or not, never the unit (a hot-plug may take another free
    // one). Operators before commit 9feacfa gave scsi disks no address and libvirt put sdh on
    // on an LSI card it added (see Disk scsiUnit): unless that is a restart-time change and a
    // redefinition, such a machine keeps disks its guest may not see across every restart
    // after an upgrade.
    onScsiController: d.target.bus === 'scsi' ? d.scsiUnit !== undefined : undefined,
  };
}

function ownedNic(n: NetworkInterface) {
  return { network: n.source.network, model: n.model, bootOrder: n.bootOrder ?? null };
}

/**
 * Live attach and detach steps. Detaches first (they free targets and slots). A device gets
 * CONFIG only where the persistent definition still differs, since libvirt refuses to attach a
 * device the definition already has or to detach one it lacks. A detach the guest has not
 * completed is not repeated until the grace period has passed since the first request.
 */
export function deviceSteps(
  desired: DomainDocument,
  domain: OursDomain,
  names: DeviceNames,
  detach: {
    since: Date | undefined;
    graceMs: number;
    now: Date;
    lastRetry?: Date | undefined;
    /** The DetachRequested message (detachMessage): the detaches already asked. */
    asked?: string | undefined;
  },
): MachineStep[] {
  const live = domain.live;
  if (!live) return [];
  const config = domain.config;
  const diff = deviceDiff(desired, live, names);
  const steps: MachineStep[] = [];
  const configDisk = (disk: Disk) =>
    (config?.devices.disks ?? []).find((d) => diskKey(d) === diskKey(disk));
  const inConfig = (change: DeviceChange) =>
    change.kind === 'disk'
      ? configDisk(change.disk) !== undefined
      : (config?.devices.interfaces ?? []).some((n) => nicKey(n) === nicKey(change.nic));
  const due = detachRetryDue(detach);
  for (const device of diff.detach) {
    // A device removed while another's detach waits for the guest is asked at once: the
    // grace period and the repeat cadence are those of the request already made.
    const retry = detach.since !== undefined && detachAsked(detach.asked, device.field);
    if (retry && !due) continue;
    const saved = device.kind === 'disk' ? configDisk(device.disk) : undefined;
    steps.push(...detachSteps(device, inConfig(device), saved, retry));
  }
  const present = [...live.devices.disks, ...(config?.devices.disks ?? [])];
  const used = new Set(present.map((d) => d.target.dev));
  const units = new Set(present.flatMap((d) => (d.scsiUnit === undefined ? [] : [d.scsiUnit])));
  for (const device of diff.attach) {
    const change =
      device.kind === 'disk'
        ? { ...device, disk: withFreeUnit(withFreeTarget(device.disk, used), units) }
        : device;
    steps.push({ op: 'attachDevice', device: change, live: true, config: !inConfig(device) });
  }
  return steps;
}

/** The longest wait between two repeats of a detach the guest does not answer. */
const DETACH_RETRY_MAX_MS = 300_000;

/**
 * Whether to repeat a detach requested at `since`: once the grace period has passed, and then
 * each time the request has doubled its age since the last repeat (capped at 5 minutes). Any
 * pass would otherwise repeat it, with an Event each time: one woken every few seconds for
 * another reason (the address poll after a start or a NIC hot-plug) sent one every 5 s.
 */
export function detachRetryDue(detach: {
  since: Date | undefined;
  graceMs: number;
  now: Date;
  lastRetry?: Date | undefined;
}): boolean {
  if (detach.since === undefined) return true;
  const now = detach.now.getTime();
  const since = detach.since.getTime();
  if (now - since < detach.graceMs) return false;
  const last = detach.lastRetry?.getTime();
  if (last === undefined || last < since) return true;
  const gap = Math.min(DETACH_RETRY_MAX_MS, Math.max(detach.graceMs, last - since));
  return now - last >= gap;
}

/**
 * The detach of a device that left the spec: LIVE, and CONFIG where the persistent definition
 * has it. libvirt finds the disk to detach by its target name alone, in the running and in the
 * persistent definition alike, and the two can name one disk differently: a redefinition while
 * the domain runs writes the spec's targets, where a hot-plugged disk had taken a free one.
 * One LIVE|CONFIG call with the running target then removed another disk of the spec from the
 * persistent definition (and kept the detached one), so then each definition gets its own call
 * with its own target.
 */
function detachSteps(
  device: DeviceChange,
  inConfig: boolean,
  saved: Disk | undefined,
  retry: boolean,
): MachineStep[] {
  if (device.kind === 'disk' && saved && saved.target.dev !== device.disk.target.dev) {
    return [
      { op: 'detachDevice', device, live: true, config: false, retry },
      {
        op: 'detachDevice',
        device: { ...device, disk: saved },
        live: false,
        config: true,
        retry,
      },
    ];
  }
  return [{ op: 'detachDevice', device, live: true, config: inConfig, retry }];
}

/** The disk on its desired target, or on the first free name of its prefix when taken. */
function withFreeTarget(disk: Disk, used: Set<string>): Disk {
  let dev = disk.target.dev;
  const prefix = dev.slice(0, 2);
  for (let i = 0; used.has(dev); i++) dev = prefix + diskLetters(i);
  used.add(dev);
  return { ...disk, target: { ...disk.target, dev } };
}

/**
 * A scsi disk on the unit of the first SCSI controller its target name gives (as desired.ts),
 * or on the first free one when taken (in the running or the persistent definition). Without a
 * unit libvirt would derive one from the target name and, from sdh on, add a second controller
 * (see Disk scsiUnit).
 */
function withFreeUnit(disk: Disk, used: Set<number>): Disk {
  if (disk.target.bus !== 'scsi') return disk;
  let unit = diskIndex(disk.target.dev.slice(2));
  for (let i = 0; used.has(unit); i++) unit = i;
  used.add(unit);
  return { ...disk, scsiUnit: unit };
}

// ---- the plan ----

export interface PlanInput {
  vm: VirtualMachine;
  /** Undefined when the spec's references do not resolve: then only power steps are planned. */
  desired: DomainDocument | undefined;
  cloudInit: CloudInitImage | undefined;
  observed: ObservedMachine;
  now: Date;
  /** A restore of this process powered the running domain off (HostState restoreStops). */
  restoreStopped?: boolean;
  /** The run a restore brought back from a checkpoint (restoredRun). */
  restoredRun?: RestoredRun;
  /**
   * Device changes (spec field names) that this run of the domain refused to take live
   * (HostState deferredDevices): restart-time, like the fields restartPending names.
   */
  deferred?: readonly string[];
  /**
   * The machine must not be started: a writable disk of it is a base image that other Volumes
   * are layered on (VolumeHasOverlays), which its guest would corrupt for them; or a network
   * of it is missing, not active here, or being deleted or removed from this node
   * (NetworkNotReady, NetworkNotOnNode, NetworkFailed). A restart it holds back stays recorded.
   */
  holdStart?: boolean;
  /** When this process last repeated a detach the guest had not answered (HostState). */
  lastDetachRetry?: Date | undefined;
  /** The restartCount this process gave the machine that its status may lack (reconcile.ts). */
  restartsCounted?: number;
  /**
   * The driver refused the domain's restart-count metadata as unsupported (HostState
   * restartsUnrecordable): a forgetRestart would only be refused again, on every pass.
   */
  restartsUnrecordable?: boolean;
}

/**
 * The restart (a requested one, or one to apply changes) that stopped the domain and whose start
 * has not happened, if any: it stays recorded (ShutdownRequested) until the start does. Dropped
 * earlier, a machine under runStrategy Manual or RerunOnFailure was left stopped for good.
 */
function unfinishedRestart(
  vm: VirtualMachine,
  domain: { active: boolean; id?: number },
): ShutdownReason | undefined {
  const kept = requestOfThisRun(vm, domain)?.reason;
  return kept === 'RestartRequested' || kept === 'RestartToApplyChanges' ? kept : undefined;
}

/**
 * The power plan without its start (holdStart). A restart whose start is held back stays
 * recorded: a requested one in ShutdownRequested (unfinishedRestart), one after an unasked
 * stop (a crash under RerunOnFailure) in the definition (recordRestart, once). The start
 * follows once the hold ends (a network being deleted, then re-created); without the record
 * the next pass, finding the status shut off, took a crashed machine for a cleanly stopped one.
 */
function heldBack(
  vm: VirtualMachine,
  power: MachinePlan,
  domain: OursDomain,
  counted: number | undefined,
): MachinePlan {
  const start = power.steps.find((s) => s.op === 'start');
  if (!start) return power;
  const record: MachineStep[] =
    start.kind === 'restart' && !restartBegun(domain, vm, counted) ? [{ op: 'recordRestart' }] : [];
  return {
    ...power,
    steps: [...power.steps.filter((s) => s.op !== 'start'), ...record],
    shutdown: power.shutdown ?? unfinishedRestart(vm, domain),
  };
}

/**
 * Why the operator is stopping or has stopped the domain once the pass's steps ran: the plan's
 * reason, or, when its start did not run (a step failed: a disk file or lock not yet free, QEMU
 * exiting at start), the restart that start was to finish. The next pass then starts again, at
 * the failure's backoff, whatever runStrategy, as it would after a hold (heldBack).
 */
export function shutdownAfterSteps(
  vm: VirtualMachine,
  plan: MachinePlan,
  executed: readonly MachineStep[],
  domain: { active: boolean; id?: number },
): ShutdownReason | undefined {
  if (plan.shutdown !== undefined) return plan.shutdown;
  const started = executed.some((s) => s.op === 'start');
  const planned = plan.steps.some((s) => s.op === 'start');
  return planned && !started ? unfinishedRestart(vm, domain) : undefined;
}

export function planMachine(input: PlanInput): MachinePlan {
  const { vm, desired, observed, now } = input;
  const domain = observed.domain;
  if (domain.state === 'foreign') return { steps: [], shutdown: undefined, waitMs: undefined };
  if (domain.state === 'absent') {
    if (!desired) return { steps: [], shutdown: undefined, waitMs: undefined };
    const power = powerPlan(
      vm,
      { active: false, state: 'shutoff', reason: 'unknown', id: -1 },
      [],
      now,
    );
    return {
      ...power,
      steps: [
        ...cloudInitSteps(input),
        { op: 'define', doc: desired, created: true },
        ...power.steps,
      ],
    };
  }
  const names = desired ? deviceNames(vm, desired) : NO_NAMES;
  const pending =
    desired && domain.live
      ? [
          ...restartPending(desired, domain.live, names, domain.networkPorts),
          ...liveRefused(desired, domain.live, names, input.deferred ?? []),
        ]
      : [];
  const power = powerPlan(
    vm,
    {
      active: domain.active,
      id: domain.id,
      ...domain.power,
      restoreStopped: input.restoreStopped,
      restoredRun: input.restoredRun,
      startedRun: runStartedUnder(vm, domain),
      outsideSpec:
        desired !== undefined &&
        domain.live !== undefined &&
        changedOutsideSpec(desired, domain.live, domain.networkPorts, input.deferred ?? []),
      restartBegun: restartBegun(domain, vm, input.restartsCounted),
      restartsUnrecordable: input.restartsUnrecordable,
      counted: restartsSoFar(vm, input.restartsCounted),
      ranBefore: ranUnderAgent(domain),
    },
    pending,
    now,
  );
  if (!desired) return input.holdStart ? heldBack(vm, power, domain, input.restartsCounted) : power;
  // A domain being stopped takes no live changes: they would die with it, and one the
  // guest or libvirt refuses would end the pass before its stop step.
  const stopping = power.shutdown !== undefined && !stopWithdrawn(vm, power.shutdown);
  const target = stopping ? { ...domain, live: undefined } : domain;
  const detach = {
    since: detachRequestedSince(vm),
    graceMs: gracePeriodMs(vm),
    now,
    lastRetry: input.lastDetachRetry,
    asked: detachAskedMessage(vm),
  };
  // A device change this run of the domain refused to take live (a driver without hotplug,
  // no free root port) waits for the restart RestartRequired names: asked again on every pass
  // it would only be refused again, a libvirt call each time the machine is woken.
  const refused = new Set(input.deferred ?? []);
  const devices = deviceSteps(desired, target, names, detach).filter(
    (s) => !((s.op === 'attachDevice' || s.op === 'detachDevice') && refused.has(s.device.field)),
  );
  const saved = stopping && domain.active ? withSavedTarget(desired, domain) : desired;
  return {
    ...power,
    steps: [
      ...cloudInitSteps(input),
      ...devices,
      ...configSteps(saved, target, devices),
      ...stashCleanup(desired, power.steps),
      ...power.steps,
      ...pruneSteps(input, domain),
    ],
  };
}

/**
 * The desired definition with the balloon target the persistent definition holds, for a domain
 * being stopped. That target is the running guest's (a memory change goes LIVE and CONFIG
 * together) and status reports it from there (balloonTarget, status.ts): written to the
 * config alone during the stop, the next boot's size was shown as the running guest's target
 * until the guest was off. The pass after the stop writes it, before any start (configSteps
 * runs before the power steps).
 */
function withSavedTarget(desired: DomainDocument, domain: OursDomain): DomainDocument {
  const saved = domain.config && ownedDomainFields(domain.config).currentMemoryKiB;
  if (saved === undefined) return desired;
  return { ...desired, currentMemoryKiB: Math.min(saved, desired.memoryKiB) };
}

/** A start boots the saved build: variable stores stashed for other builds are done with. */
function stashCleanup(desired: DomainDocument, power: readonly MachineStep[]): MachineStep[] {
  const path = desired.os.nvram?.path;
  return path && power.some((s) => s.op === 'start') ? [{ op: 'removeStashes', path }] : [];
}

/**
 * The device changes the running domain refused to take live that the spec still asks for: a
 * device attached meanwhile, or dropped from the spec again, is no longer one.
 */
export function liveRefused(
  desired: DomainDocument,
  live: DomainDocument,
  names: DeviceNames,
  deferred: readonly string[],
): string[] {
  if (deferred.length === 0) return [];
  const diff = deviceDiff(desired, live, names);
  const open = new Set([...diff.attach, ...diff.detach].map((c) => c.field));
  return deferred.filter((field) => open.has(field));
}

function cloudInitSteps(input: PlanInput): MachineStep[] {
  const image = input.cloudInit;
  if (!image || input.observed.cloudInitIsos.includes(image.path)) return [];
  return [{ op: 'writeCloudInit', image }];
}

/**
 * ISOs of earlier cloud-init data that neither the spec nor the running domain uses, nor a
 * libvirt snapshot of the domain (a revert opens the ISO its definition names: without it the
 * restore fails "Cannot access storage file").
 */
function pruneSteps(input: PlanInput, domain: OursDomain): MachineStep[] {
  const keep = new Set<string>(input.observed.snapshotIsos);
  if (input.cloudInit) keep.add(input.cloudInit.path);
  for (const disk of domain.live?.devices.disks ?? []) {
    if (disk.source.type === 'file') keep.add(disk.source.file);
  }
  const stale = input.observed.cloudInitIsos.filter((p) => !keep.has(p));
  return stale.length > 0 ? [{ op: 'removeFiles', paths: stale }] : [];
}

/**
 * Redefine when the persistent definition, as this pass's device steps leave it, differs in
 * anything but the live-changeable fields; change memory and vCPUs with SetMemoryFlags /
 * SetVcpusFlags, on the running domain when it can take the value (within its maximum; vCPUs
 * only upwards) and in the persistent definition when no define writes it anyway. Live changes
 * come before the define, so a pass interrupted in between still finds the persistent
 * definition differing and repeats them.
 *
 * A redefinition is avoided where it is not needed: a CONFIG attach or detach only gives its
 * own device a slot or frees it. Should one not take (a driver without hotplug, no free root
 * port, a detach QEMU refuses), a fallback define writes the change instead. The define writes
 * the PCI addresses the persistent definition gave the devices that stay (act.ts, placement.ts),
 * so they keep their slots at the next boot.
 */
export function configSteps(
  desired: DomainDocument,
  domain: OursDomain,
  devices: readonly MachineStep[] = [],
): MachineStep[] {
  const steps: MachineStep[] = [];
  const config = domain.config;
  const live = domain.live;
  const differs = (doc: DomainDocument) =>
    definitionChanges(desired, doc).some((path) => !LIVE_PATHS.has(path));
  const needsDefine = !config || differs(configAfter(config, devices));
  const fallback = !needsDefine && differs(config);

  const memory = ownedDomainFields(desired).currentMemoryKiB;
  // A transient domain has no persistent target; its running one is the best knowledge.
  const reference = config ?? live;
  const targetMemory = reference && ownedDomainFields(reference).currentMemoryKiB;
  if (targetMemory !== memory) {
    const onLive = live !== undefined && memory <= live.memoryKiB;
    const onConfig = !needsDefine;
    if (onLive || onConfig)
      steps.push({ op: 'setMemory', kib: memory, live: onLive, config: onConfig });
  }

  // vCPUs are hot-plugged, never hot-unplugged: libvirt cannot unplug the vCPUs a domain
  // booted with, and unplugging a hot-plugged one waits on the guest's consent, so a live
  // decrease fails or hangs (and blocks the rest of the pass, a stop included). Fewer vCPUs
  // go into the persistent definition and take effect at the next start (RestartRequired).
  const vcpus = desired.vcpu.current;
  const vcpusLive = live !== undefined && live.vcpu.current < vcpus && vcpus <= live.vcpu.max;
  const vcpusConfig = !needsDefine && config !== undefined && config.vcpu.current !== vcpus;
  if (vcpusLive || vcpusConfig) {
    steps.push({ op: 'setVcpus', count: vcpus, live: vcpusLive, config: vcpusConfig });
  }

  if (needsDefine) {
    // Before the define, so a pass interrupted in between still sees the old build and
    // removes the store again.
    if (config) steps.push(...variableStoreSteps(desired, config, live));
    steps.push({ op: 'define', doc: desired, created: false });
  } else if (fallback) steps.push({ op: 'define', doc: desired, created: false, fallback: true });
  return steps;
}

/** Which OVMF build a definition asks for: bios, or UEFI with its secure-boot features. */
function firmwareBuild(doc: DomainDocument): string {
  const { firmware, secureBoot, firmwareFeatures } = ownedDomainFields(doc).os;
  return JSON.stringify([firmware, secureBoot, firmwareFeatures]);
}

/**
 * The UEFI variable store a redefinition leaves to the wrong firmware, if any. libvirt copies
 * a build's template into the store only when the file does not exist, and keeps it across
 * later changes: a machine switched to secure boot would boot the secure build on the plain
 * template's variables (no keys enrolled: Secure Boot off, measured) and one switched away
 * would keep Microsoft's keys. So when the build changes, or UEFI is dropped, the store goes,
 * and the next start copies the new build's template. A running guest keeps the open file
 * until it stops.
 */
export function staleVariableStore(
  desired: DomainDocument,
  config: DomainDocument,
): string | undefined {
  if (ownedDomainFields(config).os.firmware !== 'efi') return undefined;
  if (firmwareBuild(desired) === firmwareBuild(config)) return undefined;
  return config.os.nvram?.path ?? desired.os.nvram?.path;
}

/** Where the variable store of one OVMF build waits while another build's definition is saved. */
export function stashedStore(path: string, doc: DomainDocument): string {
  const tag = createHash('sha256').update(firmwareBuild(doc)).digest('hex').slice(0, 12);
  return `${path}.${tag}`;
}

/** Whether a file name in the store's directory is a stash of that store (stashedStore). */
export function isStashOf(path: string, name: string): boolean {
  const store = path.slice(path.lastIndexOf('/') + 1);
  return name.startsWith(`${store}.`) && /^[0-9a-f]{12}$/.test(name.slice(store.length + 1));
}

/**
 * What a redefinition does to the UEFI variable store. Shut off: the store of a build the
 * definition leaves goes (staleVariableStore), and one stashed earlier for the build it asks
 * for comes back. Running: the guest's store is not removed but moved aside under its build's
 * name (QEMU keeps writing the same file); a change reverted before the next start moves it
 * back, so a change and its revert lose none of the guest's variables (boot entries, enrolled
 * keys). A stash left when the machine next starts is removed then (planMachine). Pure.
 */
export function variableStoreSteps(
  desired: DomainDocument,
  config: DomainDocument,
  live: DomainDocument | undefined,
): MachineStep[] {
  const running = live && ownedDomainFields(live).os.firmware === 'efi' ? live : undefined;
  const path = running?.os.nvram?.path;
  if (running && path) {
    const stash = stashedStore(path, running);
    const runs = firmwareBuild(running);
    if (firmwareBuild(desired) !== runs) return [{ op: 'moveFile', from: path, to: stash }];
    return firmwareBuild(config) !== runs ? [{ op: 'moveFile', from: stash, to: path }] : [];
  }
  const stale = staleVariableStore(desired, config);
  const wanted = desired.os.nvram?.path;
  const steps: MachineStep[] = [];
  if (stale) steps.push({ op: 'removeFiles', paths: [stale] });
  if (stale && wanted && ownedDomainFields(desired).os.firmware === 'efi')
    steps.push({ op: 'moveFile', from: stashedStore(wanted, desired), to: wanted });
  return steps;
}

/**
 * Owned fields where a persistent definition differs from the spec, with disks and interfaces
 * compared as deviceDiff compares them: as sets (by source file, by MAC) and without target
 * names. libvirt inserts a CONFIG attach where its bus and target sort, and gives it the free
 * target the attach step picked; neither is worth a redefinition.
 */
function definitionChanges(desired: DomainDocument, config: DomainDocument): string[] {
  const project = (doc: DomainDocument) => ({
    ...ownedDomainFields(doc),
    disks: [...doc.devices.disks]
      .sort((a, b) => compareKeys(diskKey(a), diskKey(b)))
      .map((d) => ownedDisk(d, true)),
    interfaces: [...doc.devices.interfaces]
      .sort((a, b) => compareKeys(nicKey(a), nicKey(b)))
      .map((n) => ({ mac: nicKey(n), ...ownedNic(n) })),
  });
  return changedFields(project(desired), project(config));
}

const compareKeys = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The persistent definition once the device steps' CONFIG attaches and detaches took. */
function configAfter(config: DomainDocument, steps: readonly MachineStep[]): DomainDocument {
  let { disks, interfaces } = config.devices;
  for (const step of steps) {
    if ((step.op !== 'attachDevice' && step.op !== 'detachDevice') || !step.config) continue;
    const device = step.device;
    if (step.op === 'attachDevice') {
      if (device.kind === 'disk') disks = [...disks, device.disk];
      else interfaces = [...interfaces, device.nic];
    } else if (device.kind === 'disk') {
      disks = disks.filter((d) => diskKey(d) !== diskKey(device.disk));
    } else {
      interfaces = interfaces.filter((n) => nicKey(n) !== nicKey(device.nic));
    }
  }
  return { ...config, devices: { ...config.devices, disks, interfaces } };
}

interface PowerView {
  active: boolean;
  state: string;
  reason: string;
  /** Runtime ID; -1 when inactive (unknown when left out). */
  id?: number;
  /** A restore of this process powered the running domain off (HostState restoreStops). */
  restoreStopped?: boolean;
  /** The run a restore brought back from a checkpoint (restoredRun). */
  restoredRun?: RestoredRun;
  /** The running domain's run and the generation it was started under (runStartedUnder). */
  startedRun?: RestoredRun;
  /** The pending fields include one the spec's generation does not track (changedOutsideSpec). */
  outsideSpec?: boolean;
  /** A restart after an unasked stop was begun and did not start (restartBegun). */
  restartBegun?: boolean;
  /** The driver refuses the restart-count metadata (PlanInput restartsUnrecordable). */
  restartsUnrecordable?: boolean;
  /** The restarts counted so far: the status's, or more from this process (restartsCounted). */
  counted?: number;
  /** The agent has started this domain before (ranUnderAgent). */
  ranBefore?: boolean;
}

/**
 * The restarts counted so far: the status's, or more from this process (`counted`: a restart
 * whose status write has not been seen yet, or failed). Pure.
 */
export function restartsSoFar(vm: VirtualMachine, counted = 0): number {
  return Math.max(vm.status?.restartCount ?? 0, counted);
}

/**
 * Whether the stopped domain's definition records a restart no status counts yet: act.ts writes
 * the count into it just before a restart's start, so a larger count there than the status's
 * (and this process's, `counted`) is a restart whose start failed. Its stop is the one that
 * status, showing the domain shut off since that pass, no longer tells: without this a machine
 * under RerunOnFailure was judged cleanly stopped and never tried again, and under Always the
 * start that finally worked was not the counted restart (no Restarted Event). Not judged
 * without a status that saw a run (startedAt): a restart follows a run the status saw, and a
 * status lost (restored without it, wiped) counts no restarts, so any count the definition
 * keeps would look begun, and RerunOnFailure started a machine nobody asked to start.
 */
export function restartBegun(domain: OursDomain, vm: VirtualMachine, counted = 0): boolean {
  if (domain.active || !vm.status?.startedAt) return false;
  const recorded = domain.config?.restarts ?? 0;
  return recorded > restartsSoFar(vm, counted);
}

/**
 * Whether the stopped domain's stop is one the operator did not ask for: the status saw the run
 * up to it, or a restart of it began and did not start (the status has shown it shut off since).
 */
function stoppedUnasked(vm: VirtualMachine, power: { restartBegun?: boolean }): boolean {
  const previous = vm.status?.state?.state;
  return (previous !== undefined && previous !== 'shutoff') || power.restartBegun === true;
}

/**
 * Why the stopped domain stopped, as far as anyone knows: libvirt's reason, except `unknown` on
 * a stop the status had already seen. libvirt keeps no reason for an inactive domain across a
 * restart of libvirtd or a host reboot (every such domain is then shut off, reason `unknown`),
 * so the reason the status recorded when it saw the stop (the guest's own `shutdown`) stands.
 */
export function stopReason(vm: VirtualMachine, power: { reason: string }): string {
  const seen = vm.status?.state;
  return power.reason === 'unknown' && seen?.state === 'shutoff'
    ? (seen.reason ?? power.reason)
    : power.reason;
}

/**
 * Whether the agent has started the domain before: its persistent definition holds the run
 * record every start of the agent writes (act.ts recordRun; a define carries it forward,
 * ownership/metadata.ts keptMetadata). A domain not defined yet has not run. Pure.
 */
export function ranUnderAgent(domain: { config?: DomainDocument | undefined }): boolean {
  return domain.config?.startedUnder !== undefined;
}

/**
 * Whether the machine is still owed the first start that runStrategy Manual and RerunOnFailure
 * give it by themselves: the status has never seen it started, and the domain has never run
 * under the agent (ranUnderAgent). The status alone does not tell: one restored from a backup
 * without status, wiped by a tool, or whose write was lost, has no startedAt, and a machine
 * the user had shut off was started again as if it were new. A first start that failed (no
 * record: it is written after the create) is still owed, and retried; a domain an older agent
 * started has no record and is judged by the status alone, as it was. One judgment for the
 * plan (powerPlan, rerunStarts) and the status (status.ts startsByItself: phase Starting,
 * Ready=False), so neither says a start comes that the other does not make. Pure.
 */
export function firstStartDue(vm: VirtualMachine, power: { ranBefore?: boolean }): boolean {
  return !vm.status?.startedAt && power.ranBefore !== true;
}

/**
 * Whether runStrategy RerunOnFailure starts the stopped domain by itself (a requested restart
 * aside): its first start, and again after any stop it did not ask for but the guest's own
 * shutdown (a crash, a destroy behind its back, a host reboot while it ran: reason `unknown`
 * on a run the status saw up). One function for the plan and the status (phase, Ready): when
 * they judged apart, a guest that had shut itself down showed `Starting` for ever after a
 * restart of libvirtd, which the plan rightly never started.
 */
export function rerunStarts(
  vm: VirtualMachine,
  power: { reason: string; restartBegun?: boolean; ranBefore?: boolean },
): boolean {
  if (firstStartDue(vm, power)) return true;
  return stoppedUnasked(vm, power) && stopReason(vm, power) !== 'shutdown';
}

/**
 * The ShutdownRequested request, unless it was sent to a run that is not the one running now:
 * that one is over (see ShutdownRequest.run). A requested restart has happened; a stop must not
 * count this run's grace period from it, nor destroy this run without asking it first.
 */
function requestOfThisRun(
  vm: VirtualMachine,
  power: { active: boolean; id?: number },
): ShutdownRequest | undefined {
  const requested = shutdownRequest(vm);
  const over =
    power.active &&
    requested?.run !== undefined &&
    power.id !== undefined &&
    requested.run !== power.id;
  return over ? undefined : requested;
}

/**
 * The power steps runStrategy asks for. The ShutdownRequested condition is the memory across
 * passes (and agent restarts): since when a graceful stop runs, and that the operator, not the
 * guest, stopped the domain.
 */
export function powerPlan(
  vm: VirtualMachine,
  power: PowerView,
  pending: readonly string[],
  now: Date,
): MachinePlan {
  const strategy = vm.spec.runStrategy ?? 'Always';
  const requested = requestOfThisRun(vm, power);
  if (power.active) {
    if (power.state === 'crashed') {
      return {
        steps: [{ op: 'destroy', why: 'crashed' }],
        shutdown: requested?.reason,
        waitMs: TRANSITION_MS,
      };
    }
    const restarting =
      requested?.reason === 'RestartToApplyChanges' ||
      (vm.spec.updatePolicy === 'Restart' &&
        pending.length > 0 &&
        restartHold(vm, power, power) === undefined);
    const stopFor: ShutdownReason | undefined =
      strategy === 'Halted'
        ? 'RunStrategyHalted'
        : requested?.reason === 'RestartRequested'
          ? 'RestartRequested'
          : restarting
            ? 'RestartToApplyChanges'
            : undefined;
    if (stopFor) return awakeFirst(power, gracefulStop(vm, requested, stopFor, now));
    // Running as wanted. A Halted stop the strategy no longer asks for is not carried on (no
    // destroy), but the guest has had the ACPI request and may still act on it: until the
    // grace period after it is over, a stop of this run is the one the operator asked for (a
    // requested start follows, not a counted restart with a Restarted Warning). Forgotten then.
    const unanswered =
      requested?.reason === 'RunStrategyHalted'
        ? destroyDueAt(requested, gracePeriodMs(vm)) - now.getTime()
        : 0;
    const waits = [
      unanswered > 0 ? unanswered : undefined,
      power.state === 'shutdown' ? TRANSITION_MS : undefined,
    ].filter((ms): ms is number => ms !== undefined);
    return {
      steps: pauseSteps(vm, power, strategy),
      shutdown: unanswered > 0 ? 'RunStrategyHalted' : undefined,
      waitMs: waits.length > 0 ? Math.min(...waits) : undefined,
    };
  }

  const wasUp = stoppedUnasked(vm, power);
  const initial = firstStartDue(vm, power) && !requested;
  let start: boolean;
  switch (strategy) {
    case 'Halted':
      start = false;
      break;
    case 'Always':
      start = true;
      break;
    case 'Manual':
      start =
        initial ||
        requested?.reason === 'RestartToApplyChanges' ||
        requested?.reason === 'RestartRequested';
      break;
    case 'RerunOnFailure':
      start = requested !== undefined || rerunStarts(vm, power);
      break;
  }
  const forget: MachineStep[] =
    power.restartBegun && !power.restartsUnrecordable
      ? [{ op: 'forgetRestart', restartCount: power.counted ?? vm.status?.restartCount ?? 0 }]
      : [];
  if (!start) {
    return {
      steps: forget,
      shutdown: requested && (strategy === 'Halted' ? 'RunStrategyHalted' : requested.reason),
      waitMs: undefined,
    };
  }
  // A restore's stop was asked for: a revert to a snapshot of the stopped machine (libvirt's
  // reason from_snapshot) or the power-off after a disks-only revert. No restart to count.
  const byRestore = power.reason === 'from_snapshot' || power.restoreStopped === true;
  const kind: StartKind = requested
    ? 'requested'
    : initial
      ? 'initial'
      : wasUp && !byRestore
        ? 'restart'
        : 'requested';
  // A machine the annotation wants paused is started paused, where the driver can, and
  // suspended in the same pass where it cannot (the suspend is a no-op on a paused domain):
  // otherwise the guest would run until the next pass, and status would say Running.
  const after = { state: power.state, reason: power.reason };
  return {
    steps: [
      ...(kind === 'restart' ? [] : forget),
      ...(pauseRequested(vm)
        ? [{ op: 'start', kind, after, paused: true } as const, { op: 'suspend' } as const]
        : [{ op: 'start', kind, after } as const]),
    ],
    shutdown: undefined,
    waitMs: undefined,
  };
}

/**
 * A run a restore brought back from a checkpoint, and the generation of the machine it was
 * brought back under (HostState restoredRuns, and the held RestartRequired message); or any
 * running domain's run and the generation it started under (runStartedUnder).
 */
export interface RestoredRun {
  run: number;
  generation: number;
}

/**
 * A run a restore brought back from a checkpoint whose spec has not changed since: updatePolicy
 * Restart does not restart it for the fields its definition lacks. Those differ because the
 * restore put back the snapshot's definition, not because the user changed the spec, and the
 * restart would throw away the guest state the user just restored. RestartRequired says so; a
 * spec change or virt.dev/restart-requested-at restarts it as usual. The spec change is judged
 * against the generation the run was brought back under, not status.observedGeneration: that
 * is written on every pass, so it equals the generation again one pass after an edit whose
 * first pass did not restart (a Volume not Ready yet, a failed define). The run is the one
 * restoredRun names: libvirt's reason `from_snapshot` lasts only until the state changes, and a
 * checkpoint of a paused machine comes back paused and is resumed at once (reason `unpaused`),
 * after which the run is no less the restored one. The same test holds a run whose spec has
 * not changed since it started (restartHold, with runStartedUnder's record). Pure.
 */
export function heldByRestore(
  vm: VirtualMachine,
  power: { state: string; id?: number },
  restored: RestoredRun | undefined,
): boolean {
  return (
    power.state !== 'shutoff' &&
    restored !== undefined &&
    power.id === restored.run &&
    (vm.metadata.generation ?? 0) === restored.generation
  );
}

/**
 * The generation the running domain is judged against for updatePolicy Restart: the one the
 * agent recorded in its metadata when it started this run (act.ts recordRun; 0 when that start
 * could not render the spec), which the live definition keeps for the whole run (a guest reboot
 * is the same run; an agent restart, an upgrade included, reads it back). Why the record lives
 * there and not in status: the run and its record begin together in one definition, and a run
 * that is not the agent's (`virsh start`, libvirt's autostart) starts from the persistent
 * definition, which holds either the record of the agent's last start from that very definition
 * or, once the agent wrote a new one, none. A run without a record (started by an agent older
 * than the record, or from a definition the agent wrote since its last start) is judged
 * against the generation the status last observed, and gets that as its record (runToRecord):
 * a spec edited while no agent ran is a change (restarted for), and an upgrade to this version
 * restarts nothing the spec did not ask for. What that cannot tell is an edit an older agent
 * had already observed and not applied (a Volume not Ready then); RestartRequired names the
 * fields either way. Pure.
 */
export function runStartedUnder(
  vm: VirtualMachine,
  domain: { active: boolean; id?: number; live?: DomainDocument | undefined },
): RestoredRun | undefined {
  if (!domain.active || domain.id === undefined || domain.id < 0) return undefined;
  const generation = domain.live?.startedUnder ?? vm.status?.observedGeneration ?? 0;
  return { run: domain.id, generation };
}

/**
 * The record a running domain without one gets (recordRun): the generation runStartedUnder
 * judges it against now, the status's observedGeneration, written into its live definition so
 * that later passes judge it against that, not against an observedGeneration every pass moves
 * on. Without it, an edit of such a run whose first passes could not apply it (a Volume not
 * Ready yet) was judged unchanged once the status had observed it, and held. A run an older
 * agent or `virsh start` began gets it at the first pass that sees it. A checkpoint a restore
 * brought back gets the generation it was brought back under (restoredRun) in place of the
 * snapshot's own, older record: once the agent no longer knows it as restored (the hold's
 * message gone with its pending fields), the run is still judged as the restore rule says, not
 * restarted at the next upgrade for having been started under the snapshot's generation. Not a
 * run this pass stops or starts, nor on a driver that refused domain metadata
 * (restartsUnrecordable). Pure.
 */
export function runToRecord(
  vm: VirtualMachine,
  domain: ObservedDomain,
  plan: MachinePlan,
  opts: { restoredRun?: RestoredRun; unrecordable?: boolean } = {},
): MachineStep | undefined {
  if (opts.unrecordable || domain.state !== 'ours' || !domain.active || !domain.live)
    return undefined;
  const ends = plan.steps.some(
    (s) => s.op === 'start' || s.op === 'shutdown' || s.op === 'destroy',
  );
  if (ends || plan.shutdown !== undefined) return undefined;
  const restored = opts.restoredRun?.run === domain.id ? opts.restoredRun : undefined;
  const generation = restored?.generation ?? runStartedUnder(vm, domain)?.generation;
  const recorded = domain.live.startedUnder;
  const due = restored ? recorded !== restored.generation : recorded === undefined;
  return due && generation !== undefined ? { op: 'recordRun', generation } : undefined;
}

/**
 * Whether a pass left the running domain as its steps meant to, for runCaughtUp: nothing
 * failed, was refused or deferred (a device change the driver could not take live), no detach
 * was refused or is still waiting for the guest, and the pass neither started nor stopped a run
 * nor is stopping one. Only then does "nothing pending" mean the run took the spec on live; a
 * pass short of that leaves the record as it was, and a later one that settles moves it. Pure.
 */
export function passSettled(pass: {
  outcome: {
    executed: readonly MachineStep[];
    deferred: readonly MachineStep[];
    detachErrors: readonly string[];
    failure: unknown;
  };
  /** Why the operator is stopping the domain after this pass (MachinePlan shutdown). */
  shutdown: ShutdownReason | undefined;
  /** Devices removed from the spec that the running domain still has. */
  detaching: boolean;
}): boolean {
  const { outcome } = pass;
  return (
    outcome.failure === undefined &&
    outcome.deferred.length === 0 &&
    outcome.detachErrors.length === 0 &&
    !pass.detaching &&
    pass.shutdown === undefined &&
    !outcome.executed.some((s) => s.op === 'start' || s.op === 'shutdown' || s.op === 'destroy')
  );
}

/**
 * The record a running domain gets once it reflects the spec of a generation newer than the one
 * it started under (recordRun, into its live definition): a pass that left nothing pending
 * (no restart-time field, no step failed or refused, no device still detaching) brought the run
 * to the spec's generation by live changes, or found it there (an edit that changes nothing in
 * the domain). Without it every machine whose spec was edited live since its start counted as
 * changed for good, and a later upgrade's defaults restarted it though nobody asked
 * (restartHold). A run still pending keeps its record: the next spec change restarts it, as
 * RestartRequired says. A checkpoint a restore brought back too, once it took a later spec on
 * live: it then reflects that generation as any run does, and is judged so from then on
 * (restoredRun drops a run whose record is newer than the generation it was brought back under);
 * kept at that generation, an upgrade's new default restarted it though nobody had changed a
 * restart-time field since (heldByRestore no longer held it, the spec being newer). Not a run
 * without a record yet (runRecord weighs it against runToRecord's), nor on a driver that
 * refused domain metadata. Also into the persistent definition, which with nothing pending reflects
 * that generation too (a live edit went to both): a run `virsh start`ed from it otherwise
 * inherited the older start's record and was restarted for a difference the spec did not cause.
 * Pure.
 */
export function runCaughtUp(
  vm: VirtualMachine,
  domain: ObservedDomain,
  pass: {
    /** The spec resolved (desired): what "nothing pending" was judged against. */
    resolved: boolean;
    pending: readonly string[];
    /** passSettled. */
    settled: boolean;
    restoredRun?: RestoredRun;
    unrecordable?: boolean;
  },
): MachineStep | undefined {
  if (pass.unrecordable || !pass.resolved || !pass.settled || pass.pending.length > 0)
    return undefined;
  if (domain.state !== 'ours' || !domain.active || !domain.live) return undefined;
  const recorded = domain.live.startedUnder;
  const generation = vm.metadata.generation ?? 0;
  return recorded === undefined || recorded === generation
    ? undefined
    : { op: 'recordRun', generation, persistent: true };
}

/**
 * The one record a pass writes into the running domain's metadata, if any, decided once its
 * steps are done (reconcile.ts): runCaughtUp's when the pass left the run reflecting the spec's
 * generation, else runToRecord's for a run without a record (or a restored run's). The two
 * meet on the first pass after an upgrade whose status lags an edit the run takes live: the run
 * has no record, is judged against the older observedGeneration, and ends the pass with nothing
 * pending. The spec's generation wins there: it is what the run now reflects, and the older one
 * written first only to be replaced at once was a second write for nothing; the older record
 * matters only while something stays pending, and then runCaughtUp gives none. Written once
 * the steps are done and looked at (runToRecord's used to be the last of the steps): nothing
 * in the pass reads the record, the status judges a run without one by that same
 * observedGeneration (runStartedUnder), and the next pass reads it back; and a step that failed
 * no longer keeps it from a run that lacks it (a failure cut the steps short, so a pass failing
 * at every try left the run judged against an observedGeneration moving on). Only into the run
 * the pass began with: a run that ended meanwhile is left to the next pass. Pure.
 */
export function runRecord(
  vm: VirtualMachine,
  /** The domain as the pass first observed it, and its plan. */
  before: ObservedDomain,
  plan: MachinePlan,
  /** The domain as the steps left it. */
  after: ObservedDomain,
  pass: Parameters<typeof runCaughtUp>[2],
): MachineStep | undefined {
  const missing = runToRecord(vm, before, plan, pass);
  if (missing?.op !== 'recordRun') return runCaughtUp(vm, after, pass);
  if (after.state !== 'ours' || !after.active || !after.live || before.state !== 'ours')
    return undefined;
  if (after.id !== before.id) return undefined;
  const recorded = { ...after, live: { ...after.live, startedUnder: missing.generation } };
  return runCaughtUp(vm, recorded, pass) ?? missing;
}

/**
 * Whether the running domain lacks something the spec's generation does not track: an
 * interface its network's restart unplugged (unpluggedInterfaces: only a restart plugs it in
 * again), a device change this run refused live (made for a spec change, and restart-time from
 * then on), or the console log the annotation asks for (annotations have no generation). These
 * are applied by a restart under updatePolicy Restart whatever generation the run started
 * under. Pure.
 */
export function changedOutsideSpec(
  desired: DomainDocument,
  live: DomainDocument,
  networkPorts: ReadonlyMap<string, ReadonlySet<string>> = new Map(),
  refused: readonly string[] = [],
): boolean {
  const logs = (doc: DomainDocument) => doc.devices.serials.map((s) => s.log !== undefined);
  return (
    refused.length > 0 ||
    unpluggedInterfaces(live, networkPorts).length > 0 ||
    changedFields(logs(desired), logs(live)).length > 0
  );
}

/**
 * Why updatePolicy Restart does not restart the running domain for its pending restart-time
 * fields, if it does not: a checkpoint a restore brought back (heldByRestore), or a run whose
 * spec has not changed since it started or took it on live (runStartedUnder, runCaughtUp), so
 * that its definition differs for another reason, e.g. an upgraded agent renders a new default
 * device or attribute. Restarting every such machine of every node at once, though nobody
 * changed a spec, is what an operator upgrade must not do; KubeVirt makes such workload updates
 * opt-in for the same reason. The restored run's record comes first: its live definition is the
 * snapshot's, whose own start record is older than the restore. Pure.
 */
export function restartHold(
  vm: VirtualMachine,
  power: { state: string; id?: number },
  runs: { restoredRun?: RestoredRun; startedRun?: RestoredRun; outsideSpec?: boolean },
): RestartHold | undefined {
  const { restoredRun: restored, startedRun: started } = runs;
  if (restored !== undefined && power.id === restored.run)
    return heldByRestore(vm, power, restored) ? { by: 'restore', run: restored } : undefined;
  return started !== undefined && !runs.outsideSpec && heldByRestore(vm, power, started)
    ? { by: 'unchangedSpec', run: started }
    : undefined;
}

export type RestartHold = { by: 'restore' | 'unchangedSpec'; run: RestoredRun };

/** Words of the RestartRequired message and Updated Event for a run held as unchanged. */
export const UNCHANGED_SPEC = 'the spec has not changed since';

/** Words of the RestartRequired message for a held run (status.ts), around heldMarker. */
export const HELD_BY_RESTORE = 'is a checkpoint a VirtualMachineRestore brought back';

/** The held RestartRequired message's start: names the run and its generation (restoredRun). */
export const heldMarker = (restored: RestoredRun): string =>
  `this run ${runMarker(restored.run)} ${HELD_BY_RESTORE} under generation ${restored.generation}`;

/**
 * The restored run a held RestartRequired condition records (heldMarker), if it holds one.
 * Pure.
 */
export function recordedRestoredRun(status: VirtualMachine['status']): RestoredRun | undefined {
  const required = findCondition(status?.conditions, 'RestartRequired');
  if (required?.status !== 'True') return undefined;
  const held = HELD_RUN.exec(required.message);
  return held ? { run: Number(held[1]), generation: Number(held[2]) } : undefined;
}

/** heldMarker's words, read back. */
const HELD_RUN = new RegExp(`this run \\(run (\\d+)\\) ${HELD_BY_RESTORE} under generation (\\d+)`);

/**
 * The run a restore brought back from a checkpoint, while that run lasts (runtime IDs are new
 * on every start), with the generation it was brought back under: remembered by this process
 * (`remembered`, HostState restoredRuns: the cache may not show our last status yet), else
 * recorded in the held RestartRequired message (how an agent that restarted after libvirt's
 * reason changed still knows it), else seen now by its reason `from_snapshot`, under the
 * generation the machine's status last observed: this controller stands aside while a restore
 * runs, so a spec edited meanwhile is a later generation, the user's change, which is not held.
 * The records come first: the reason lasts as long as the guest's state does not change,
 * across spec edits. Not a run that took a later spec on live since (its record newer): one
 * judged by the restore rule then would keep that older generation, and an upgrade's new
 * default restarted it. Pure.
 */
export function restoredRun(
  vm: VirtualMachine,
  domain: {
    active: boolean;
    id?: number;
    power: { reason: string };
    /** The running definition, whose record (startedUnder) may have moved on (runCaughtUp). */
    live?: { startedUnder?: number } | undefined;
  },
  remembered: RestoredRun | undefined,
): RestoredRun | undefined {
  if (!domain.active || domain.id === undefined || domain.id < 0) return undefined;
  const restored = restoredBy(vm, { ...domain, id: domain.id }, remembered);
  // Records only move on: runToRecord writes the generation the run was brought back under
  // (the snapshot's own record is older), runCaughtUp a later one the run took on live. A run
  // whose record is newer took that spec on live, and is judged as any run from then on.
  const record = domain.live?.startedUnder;
  return restored && record !== undefined && record > restored.generation ? undefined : restored;
}

function restoredBy(
  vm: VirtualMachine,
  domain: { id: number; power: { reason: string } },
  remembered: RestoredRun | undefined,
): RestoredRun | undefined {
  if (remembered?.run === domain.id) return remembered;
  const recorded = recordedRestoredRun(vm.status);
  if (recorded?.run === domain.id) return recorded;
  if (domain.power.reason === 'from_snapshot')
    return {
      run: domain.id,
      generation: vm.status?.observedGeneration ?? vm.metadata.generation ?? 0,
    };
  return undefined;
}

/**
 * The annotation's pause: suspend a running guest; resume one paused by a user (libvirt's
 * reason `user`, from us or `virsh suspend`) or by a restore of a paused machine's checkpoint
 * (reason `from_snapshot`: the annotation, not the snapshot, says whether the machine is
 * paused) once the annotation is gone or "false". Under runStrategy Manual only a pause this
 * operator reported (condition Paused) is undone.
 */
function pauseSteps(vm: VirtualMachine, power: PowerView, strategy: string): MachineStep[] {
  if (pauseRequested(vm)) {
    return power.state === 'running' || power.state === 'blocked' ? [{ op: 'suspend' }] : [];
  }
  if (invalidPauseValue(vm) !== undefined) return [];
  return resumedUnlessAsked(vm, power, strategy) ? [{ op: 'resume' }] : [];
}

/**
 * Whether the paused guest is resumed once virt.dev/paused does not ask for the pause (no
 * annotation, or "false"): a pause by a user or a restore, except under Manual, where only the
 * operator's own pause is undone (operatorPaused: reason Paused is any other pause, which the
 * status shows from the first pass on). Pure.
 */
export function resumedUnlessAsked(
  vm: VirtualMachine,
  power: { state: string; reason: string },
  strategy: string,
): boolean {
  if (power.state !== 'paused' || !RESUMABLE_PAUSES.has(power.reason)) return false;
  return strategy !== 'Manual' || operatorPaused(vm);
}

/** libvirt's reasons for a pause that the annotation undoes (others: starting up, I/O error). */
const RESUMABLE_PAUSES = new Set(['user', 'from_snapshot']);

/**
 * A guest that does not run cannot answer ACPI: a paused one is resumed first, and one its OS
 * suspended to RAM (pmsuspended) is woken first. QEMU's driver refuses the shutdown of the
 * latter outright ("domain is not running": qemuDomainShutdownFlagsMonitor accepts only the
 * running state), so without the wake-up the stop would end in a destroy after the grace
 * period: a hard power-off the user did not ask for.
 */
function awakeFirst(power: { state: string }, plan: MachinePlan): MachinePlan {
  if (!plan.steps.some((s) => s.op === 'shutdown')) return plan;
  if (power.state === 'paused') return { ...plan, steps: [{ op: 'resume' }, ...plan.steps] };
  if (power.state === 'pmsuspended') return { ...plan, steps: [{ op: 'wakeup' }, ...plan.steps] };
  return plan;
}

/**
 * The first steps of a stop no request was sent for yet (a requested restart's first pass):
 * the ACPI request, woken first as awakeFirst says, or with a grace period of 0 the destroy at
 * once, as every other stop does (gracefulStop): the guest is not asked.
 */
export function shutdownSteps(
  vm: VirtualMachine,
  power: { state: string },
  reason: ShutdownReason,
  now: Date,
): MachineStep[] {
  return awakeFirst(power, gracefulStop(vm, undefined, reason, now)).steps;
}

/**
 * ACPI shutdown, then destroy once the grace period has passed since the request (see
 * destroyDueAt). The wait ends exactly at that moment, so the requeue lands on it.
 */
function gracefulStop(
  vm: VirtualMachine,
  requested: ShutdownRequest | undefined,
  reason: ShutdownReason,
  now: Date,
): MachinePlan {
  const grace = gracePeriodMs(vm);
  if (grace === 0)
    return {
      steps: [{ op: 'destroy', why: 'gracePeriodExpired' }],
      shutdown: reason,
      waitMs: TRANSITION_MS,
    };
  if (!requested) {
    return {
      steps: [{ op: 'shutdown', reason }],
      shutdown: reason,
      waitMs: Math.min(grace, STOP_POLL_MS),
    };
  }
  const remaining = destroyDueAt(requested, grace) - now.getTime();
  if (remaining <= 0) {
    return {
      steps: [{ op: 'destroy', why: 'gracePeriodExpired' }],
      shutdown: reason,
      waitMs: TRANSITION_MS,
    };
  }
  // An earlier try sent no ACPI request (a wake-up that failed): try again, within the grace
  // period counted from the first try. Without this the guest would never be asked.
  const unsent = requested.attemptedAt !== undefined && requested.sentAt === undefined;
  return {
    steps: unsent ? [{ op: 'shutdown', reason }] : [],
    shutdown: reason,
    waitMs: Math.min(remaining, STOP_POLL_MS),
  };
}

/** What a pass knows when it decides when to look again. */
export interface PassEnd {
  /** The domain still runs after the pass's steps. */
  active: boolean;
  /** The plan's `now`. */
  planned: Date;
  /** The clock when the pass ends. */
  now: Date;
  /** When this pass's ACPI request had been sent, if it sent one. */
  shutdownSentAt?: Date | undefined;
  graceMs: number;
}

/**
 * How long until the next look, from the end of the pass: the plan's wait counts from its
 * `now`, so the pass's own time is subtracted; a wait for a stop is cut short when the domain
 * already stopped (the next step is due). After a fresh ACPI request the grace period ends at
 * its send time plus the grace, which is later than the plan could know: looking earlier
 * would only find it running, and (before the watch brings back the status just written)
 * without the request's record, so it would ask the guest again.
 */
export function nextLookMs(plan: MachinePlan, end: PassEnd): number {
  const wait = plan.waitMs ?? TRANSITION_MS;
  if (!end.active) return Math.max(0, Math.min(wait, TRANSITION_MS) - elapsed(end));
  if (end.shutdownSentAt !== undefined && plan.steps.some((s) => s.op === 'shutdown')) {
    const due = end.shutdownSentAt.getTime() + end.graceMs - end.now.getTime();
    return Math.max(0, Math.min(STOP_POLL_MS, due));
  }
  return Math.max(0, wait - elapsed(end));
}

const elapsed = (end: PassEnd) => end.now.getTime() - end.planned.getTime();

/**
 * Removing the machine from the host: a graceful stop, then undefine (with the UEFI variable
 * store and the TPM state when it has them), then our files. Each step is skipped once done,
 * so a pass interrupted anywhere resumes. A foreign domain is never touched: only our files
 * are removed, not `domainFiles` (libvirt's files named by the domain's UUID, i.e. the TPM
 * state: undefine removes it only while the definition still has a TPM, and one the spec
 * dropped earlier would stay behind).
 */
export function planRemoval(
  vm: VirtualMachine,
  observed: ObservedMachine,
  files: readonly string[],
  now: Date,
  domainFiles: readonly string[] = [],
): MachinePlan {
  const domain = observed.domain;
  const paths = domain.state === 'foreign' ? files : [...files, ...domainFiles];
  const removeFiles: MachineStep[] =
    paths.length > 0 ? [{ op: 'removeFiles', paths: [...paths] }] : [];
  // A UEFI variable store goes with the copies stashed beside it (variableStoreSteps).
  for (const path of files.filter((f) => f.endsWith('_VARS.fd')))
    removeFiles.push({ op: 'removeStashes', path });
  if (domain.state !== 'ours')
    return { steps: removeFiles, shutdown: undefined, waitMs: undefined };
  if (domain.active) {
    if (domain.power.state === 'crashed') {
      return {
        steps: [{ op: 'destroy', why: 'crashed' }],
        shutdown: 'Deleting',
        waitMs: TRANSITION_MS,
      };
    }
    return awakeFirst(
      domain.power,
      gracefulStop(vm, requestOfThisRun(vm, { active: true, id: domain.id }), 'Deleting', now),
    );
  }
  const steps: MachineStep[] = [];
  const config = domain.config;
  if (config) {
    steps.push({
      op: 'undefine',
      nvram: config.os.firmware === 'efi' || config.os.nvram !== undefined,
      tpm: (config.devices.tpms ?? []).length > 0,
    });
  }
  return { steps: [...steps, ...removeFiles], shutdown: 'Deleting', waitMs: undefined };
}
