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
// when the persistent <currentMemory> differs from the spec.
import { findCondition } from '../../api/conditions.js';
import type { VirtualMachine } from '../../api/generated/types.js';
import {
  changedDomainFields,
  ownedDomainFields,
  type DomainDocument,
  type OwnedDomainFields,
} from '../../libvirt/xml/domain.js';
import { changedFields } from '../../libvirt/xml/owned.js';
import type { CloudInitImage } from './cloud-init.js';
import type { ObservedMachine, OursDomain } from './observe.js';

/** The condition that remembers why and since when the operator is stopping the domain. */
export const SHUTDOWN_CONDITION = 'ShutdownRequested';
export const SHUTDOWN_REASONS = ['RunStrategyHalted', 'RestartToApplyChanges', 'Deleting'] as const;
export type ShutdownReason = (typeof SHUTDOWN_REASONS)[number];

/**
 * Why a start happens: the first start of the machine, a restart after the domain stopped
 * without the operator asking (a crash, a destroy behind our back, a guest shutdown under
 * Always, a host reboot: counted in restartCount), or one the user asked for (a runStrategy
 * change, a restart to apply changes).
 */
export type StartKind = 'initial' | 'restart' | 'requested';

export type MachineStep =
  | { op: 'writeCloudInit'; image: CloudInitImage }
  | { op: 'define'; doc: DomainDocument; created: boolean }
  | { op: 'setMemory'; kib: number; live: boolean; config: boolean }
  | { op: 'setVcpus'; count: number; live: boolean; config: boolean }
  | { op: 'start'; kind: StartKind; after: { state: string; reason: string } }
  | { op: 'shutdown'; reason: ShutdownReason }
  | { op: 'destroy'; why: 'gracePeriodExpired' | 'crashed' }
  | { op: 'undefine'; nvram: boolean; tpm: boolean }
  | { op: 'removeFiles'; paths: string[] };

export interface MachinePlan {
  steps: MachineStep[];
  /** Why the operator is stopping (or has stopped) the domain after this pass, if it is. */
  shutdown: ShutdownReason | undefined;
  /** Look again this soon even if nothing fails: a grace period runs or a state is in flux. */
  waitMs: number | undefined;
}

/** How often to look while a guest shuts down (its lifecycle event usually wakes us sooner). */
export const STOP_POLL_MS = 2_000;
/** How soon to look after a step whose effect arrives a moment later. */
export const TRANSITION_MS = 500;
export const DEFAULT_GRACE_SECONDS = 60;

/** Fields that SetMemoryFlags / SetVcpusFlags change without a redefinition. */
const LIVE_PATHS = new Set(['currentMemoryKiB', 'vcpu.current']);

export interface ShutdownRequest {
  reason: ShutdownReason;
  since: Date;
}

export function shutdownRequest(vm: VirtualMachine): ShutdownRequest | undefined {
  const c = findCondition(vm.status?.conditions, SHUTDOWN_CONDITION);
  if (c?.status !== 'True') return undefined;
  const reason = (SHUTDOWN_REASONS as readonly string[]).includes(c.reason)
    ? (c.reason as ShutdownReason)
    : 'RunStrategyHalted';
  return { reason, since: new Date(c.lastTransitionTime) };
}

export function gracePeriodMs(vm: VirtualMachine): number {
  return (vm.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS) * 1000;
}

// ---- restart-time fields ----

/**
 * The owned fields grouped by the spec field a user changes. Each group is compared between the
 * spec and the running domain; a group that differs is named in RestartRequired.
 */
const RESTART_GROUPS: ReadonlyArray<[field: string, pick: (o: OwnedDomainFields) => unknown]> = [
  ['spec.domainType', (o) => o.type],
  ['spec.maxMemory', (o) => o.memoryKiB],
  ['spec.maxVcpus', (o) => o.vcpu.max],
  ['spec.firmware', (o) => [o.os.firmware, o.os.nvram]],
  ['spec.secureBoot', (o) => [o.os.secureBoot, o.os.firmwareFeatures, o.smm]],
  ['spec.tpm', (o) => o.tpms],
  ['spec.boot', (o) => [o.os.kernel, o.os.initrd, o.os.cmdline]],
  ['spec.disks', (o) => o.disks.filter((d) => d.device === 'disk')],
  ['spec.cloudInit', (o) => o.disks.filter((d) => d.device === 'cdrom')],
  ['spec.interfaces', (o) => o.interfaces],
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
export function restartPending(desired: DomainDocument, live: DomainDocument): string[] {
  const want = ownedDomainFields(desired);
  const have = ownedDomainFields(live);
  const fields = RESTART_GROUPS.filter(
    ([, pick]) => changedFields(pick(want), pick(have)).length > 0,
  ).map(([field]) => field);
  if (want.currentMemoryKiB > have.memoryKiB) fields.push('spec.memory');
  // Fewer vCPUs than are running waits for a restart: see configSteps.
  if (want.vcpu.current > have.vcpu.max || want.vcpu.current < have.vcpu.current)
    fields.push('spec.vcpus');
  return fields;
}

// ---- the plan ----

export interface PlanInput {
  vm: VirtualMachine;
  /** Undefined when the spec's references do not resolve: then only power steps are planned. */
  desired: DomainDocument | undefined;
  cloudInit: CloudInitImage | undefined;
  observed: ObservedMachine;
  now: Date;
}

export function planMachine(input: PlanInput): MachinePlan {
  const { vm, desired, observed, now } = input;
  const domain = observed.domain;
  if (domain.state === 'foreign') return { steps: [], shutdown: undefined, waitMs: undefined };
  if (domain.state === 'absent') {
    if (!desired) return { steps: [], shutdown: undefined, waitMs: undefined };
    const power = powerPlan(vm, { active: false, state: 'shutoff', reason: 'unknown' }, [], now);
    return {
      ...power,
      steps: [
        ...cloudInitSteps(input),
        { op: 'define', doc: desired, created: true },
        ...power.steps,
      ],
    };
  }
  const pending = desired && domain.live ? restartPending(desired, domain.live) : [];
  const power = powerPlan(vm, { active: domain.active, ...domain.power }, pending, now);
  if (!desired) return power;
  // A domain being stopped takes no live changes: they would die with it, and one the
  // guest or libvirt refuses would end the pass before its stop step.
  const target = power.shutdown ? { ...domain, live: undefined } : domain;
  return {
    ...power,
    steps: [
      ...cloudInitSteps(input),
      ...configSteps(desired, target),
      ...power.steps,
      ...pruneSteps(input, domain),
    ],
  };
}

function cloudInitSteps(input: PlanInput): MachineStep[] {
  const image = input.cloudInit;
  if (!image || input.observed.cloudInitIsos.includes(image.path)) return [];
  return [{ op: 'writeCloudInit', image }];
}

/** ISOs of earlier cloud-init data that neither the spec nor the running domain uses. */
function pruneSteps(input: PlanInput, domain: OursDomain): MachineStep[] {
  const keep = new Set<string>();
  if (input.cloudInit) keep.add(input.cloudInit.path);
  for (const disk of domain.live?.devices.disks ?? []) {
    if (disk.source.type === 'file') keep.add(disk.source.file);
  }
  const stale = input.observed.cloudInitIsos.filter((p) => !keep.has(p));
  return stale.length > 0 ? [{ op: 'removeFiles', paths: stale }] : [];
}

/**
 * Redefine when the persistent definition differs in anything but the live-changeable fields;
 * change memory and vCPUs with SetMemoryFlags / SetVcpusFlags, on the running domain when it
 * can take the value (within its maximum; vCPUs only upwards) and in the persistent
 * definition when no define writes it anyway. Live changes come before the define, so a pass interrupted in between
 * still finds the persistent definition differing and repeats them.
 */
export function configSteps(desired: DomainDocument, domain: OursDomain): MachineStep[] {
  const steps: MachineStep[] = [];
  const config = domain.config;
  const live = domain.live;
  const needsDefine =
    !config || changedDomainFields(desired, config).some((path) => !LIVE_PATHS.has(path));

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

  if (needsDefine) steps.push({ op: 'define', doc: desired, created: false });
  return steps;
}

interface PowerView {
  active: boolean;
  state: string;
  reason: string;
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
  const requested = shutdownRequest(vm);
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
      (vm.spec.updatePolicy === 'Restart' && pending.length > 0);
    const stopFor: ShutdownReason | undefined =
      strategy === 'Halted'
        ? 'RunStrategyHalted'
        : restarting
          ? 'RestartToApplyChanges'
          : undefined;
    if (stopFor) return gracefulStop(vm, requested, stopFor, now);
    // Running as wanted; a stop the strategy no longer asks for is forgotten.
    return {
      steps: [],
      shutdown: undefined,
      waitMs: power.state === 'shutdown' ? TRANSITION_MS : undefined,
    };
  }

  const previous = vm.status?.state?.state;
  const wasUp = previous !== undefined && previous !== 'shutoff';
  const initial = !vm.status?.startedAt && !requested;
  let start: boolean;
  switch (strategy) {
    case 'Halted':
      start = false;
      break;
    case 'Always':
      start = true;
      break;
    case 'Manual':
      start = initial || requested?.reason === 'RestartToApplyChanges';
      break;
    case 'RerunOnFailure':
      // Not after the guest shut itself down; after anything else that stopped it unasked.
      start = initial || requested !== undefined || (wasUp && power.reason !== 'shutdown');
      break;
  }
  if (!start) {
    return {
      steps: [],
      shutdown: requested && (strategy === 'Halted' ? 'RunStrategyHalted' : requested.reason),
      waitMs: undefined,
    };
  }
  const kind: StartKind = requested
    ? 'requested'
    : initial
      ? 'initial'
      : wasUp
        ? 'restart'
        : 'requested';
  return {
    steps: [{ op: 'start', kind, after: { state: power.state, reason: power.reason } }],
    shutdown: undefined,
    waitMs: undefined,
  };
}

/**
 * ACPI shutdown, then destroy once the grace period has passed since the request. The request
 * time is the condition's lastTransitionTime, stored in whole seconds (rounded down), so one
 * second is added: a guest is never destroyed before its full grace period.
 */
export function gracefulStop(
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
  const remaining = requested.since.getTime() + 1000 + grace - now.getTime();
  if (remaining <= 0) {
    return {
      steps: [{ op: 'destroy', why: 'gracePeriodExpired' }],
      shutdown: reason,
      waitMs: TRANSITION_MS,
    };
  }
  return { steps: [], shutdown: reason, waitMs: Math.min(remaining, STOP_POLL_MS) };
}

/**
 * Removing the machine from the host: a graceful stop, then undefine (with the UEFI variable
 * store and the TPM state when it has them), then our files. Each step is skipped once done,
 * so a pass interrupted anywhere resumes. A foreign domain is never touched: only files are
 * removed.
 */
export function planRemoval(
  vm: VirtualMachine,
  observed: ObservedMachine,
  files: readonly string[],
  now: Date,
): MachinePlan {
  const domain = observed.domain;
  const removeFiles: MachineStep[] =
    files.length > 0 ? [{ op: 'removeFiles', paths: [...files] }] : [];
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
    return gracefulStop(vm, shutdownRequest(vm), 'Deleting', now);
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
