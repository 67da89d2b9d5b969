// Executes a plan through the binding, one call per step, in order.
//
// Errors split three ways:
// - the step's goal already holds (starting a running domain, destroying a stopped one,
//   undefining one that is gone): the step counts as done, so a pass interrupted between any
//   two steps resumes cleanly. libvirt's drivers disagree on the error for these (QEMU says
//   OPERATION_INVALID, the test driver INTERNAL_ERROR), so the state is read back instead;
// - the transport failed or timed out: thrown, the queue retries the key with backoff;
// - libvirt refused the step for this host (bad definition, QEMU failed to start, a name
//   taken meanwhile): the remaining steps are skipped and the refusal is returned, to become a
//   False condition with libvirt's message;
// - the driver cannot attach or detach devices live (libvirt's test driver): the step is
//   deferred, the pass goes on, and the device change counts as restart-time.
import { access, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Connect } from '../../libvirt/connection.js';
import {
  DomainCreateFlags,
  DomainDeviceModifyFlags,
  DomainMetadataType,
  DomainSnapshotListFlags,
  DomainUndefineFlags,
  DomainXMLFlags,
} from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import {
  ErrorCode,
  isAlreadyExists,
  isConnectionError,
  isLibvirtError,
  isNotFound,
  isOperationInvalid,
  isOutOfPciSlots,
  isRefusedDefinition,
  isTimeout,
  isUnsupported,
} from '../../libvirt/errors.js';
import { XmlDocumentError } from '../../libvirt/xml/codec.js';
import {
  buildDiskXML,
  buildDomainXML,
  buildInterfaceXML,
  parsePersistentBasis,
  type DomainDocument,
} from '../../libvirt/xml/domain.js';
import {
  buildRestartsXML,
  buildRunXML,
  keptMetadata,
  RESTARTS_NAMESPACE,
  RESTARTS_PREFIX,
  RUN_NAMESPACE,
  RUN_PREFIX,
} from '../../ownership/metadata.js';
import type { Logger } from '../context.js';
import { stableMessage } from '../kit.js';
import { CloudInitError, writeCloudInitISO } from './iso.js';
import { keepPciAddresses } from './placement.js';
import { isStashOf, type DeviceChange, type MachineStep } from './plan.js';

export interface StepFailure {
  step: MachineStep;
  reason: string;
  message: string;
}

export interface ActOutcome {
  /** The steps that took effect (or whose goal already held), in order. */
  executed: MachineStep[];
  /** Live device steps the driver does not support: their changes wait for a restart. */
  deferred: MachineStep[];
  /**
   * libvirt's messages for detaches it refused (QEMU refuses to repeat an unplug the guest has
   * not answered yet): the device stays pending, and the rest of the pass goes on.
   */
  detachErrors: string[];
  failure: StepFailure | undefined;
  /**
   * The driver refused the restart-count metadata as unsupported (recordRestart): it will
   * refuse it on every pass (rememberRestartsUnrecordable).
   */
  restartsUnrecordable?: true;
  /**
   * Records (recordRun, recordRestart) the driver refused for another reason: the pass went on
   * without them (rememberRecordFailures logs them).
   */
  recordFailures?: RecordFailure[];
  /** Records the driver took (rememberRecordFailures: a later refusal of that kind is news). */
  recordsWritten?: Array<RecordFailure['record']>;
}

/** What became of the metadata records a pass wrote (ActOutcome recordFailures, recordsWritten). */
interface RecordResults {
  failures: RecordFailure[];
  written: Set<RecordFailure['record']>;
}

/** A metadata record the driver refused other than as unsupported, and why. */
export interface RecordFailure {
  record: 'run' | 'restarts';
  /** libvirt's error code name (VIR_ERR_…), or the error's name for one not libvirt's. */
  kind: string;
  message: string;
}

const FAILURE_REASON: Record<MachineStep['op'], string> = {
  writeCloudInit: 'CloudInitFailed',
  attachDevice: 'AttachFailed',
  detachDevice: 'DetachPending',
  suspend: 'PauseFailed',
  resume: 'ResumeFailed',
  wakeup: 'WakeupFailed',
  define: 'DefineFailed',
  setMemory: 'MemoryChangeFailed',
  setVcpus: 'VcpuChangeFailed',
  start: 'StartFailed',
  // Never fail (recordRestart is best effort).
  recordRestart: 'StartFailed',
  forgetRestart: 'StartFailed',
  recordRun: 'StartFailed',
  shutdown: 'ShutdownFailed',
  destroy: 'DestroyFailed',
  undefine: 'UndefineFailed',
  removeFiles: 'CleanupFailed',
  moveFile: 'CleanupFailed',
  removeStashes: 'CleanupFailed',
};

/** Runs a call on a connection of its own (ControllerContext.onLane). */
export type OnLane = <T>(fn: (conn: Connect) => Promise<T>) => Promise<T>;

/**
 * `domain` is undefined until a define step creates it. A destroy goes through `onLane` when
 * given: it waits until QEMU's process is gone, and must not hold the main connection's slots.
 */
export async function actMachine(
  conn: Connect,
  domain: Domain | undefined,
  steps: readonly MachineStep[],
  onLane?: OnLane,
): Promise<ActOutcome> {
  let target = domain;
  const executed: MachineStep[] = [];
  const deferred: MachineStep[] = [];
  const detachErrors: string[] = [];
  /** Attaches QEMU refused (see below); the first refusal is the pass's failure. */
  const refused: MachineStep[] = [];
  let failure: StepFailure | undefined;
  let unrecordable = false;
  const records: RecordResults = { failures: [], written: new Set() };
  const outcome = (): ActOutcome => ({
    executed,
    deferred,
    detachErrors,
    failure,
    ...(unrecordable ? { restartsUnrecordable: true } : {}),
    ...(records.failures.length > 0 ? { recordFailures: records.failures } : {}),
    ...(records.written.size > 0 ? { recordsWritten: [...records.written] } : {}),
  });
  for (const step of steps) {
    // The device steps before it wrote their own changes: nothing to redefine. A refused
    // attach is not written either: a definition with a disk QEMU cannot open (locked by
    // another machine) would fail the next start, where now only the attach waits.
    if (
      step.op === 'define' &&
      step.fallback &&
      !configChangeMissed(steps, [...executed, ...refused])
    )
      continue;
    try {
      if (step.op === 'define') {
        const redefined = step.created ? { doc: step.doc } : await redefinition(target, step);
        target = await define(conn, redefined.doc, redefined.kept);
      } else if (step.op === 'writeCloudInit') await writeCloudInitISO(step.image);
      else if (step.op === 'removeFiles') await removeFiles(step.paths);
      else if (step.op === 'moveFile') await moveFile(step.from, step.to);
      else if (step.op === 'removeStashes') await removeStashes(step.path);
      else if (!target) throw new Error(`step ${step.op} has no domain: the plan lacks a define`);
      else if (step.op === 'destroy' && onLane) await destroyOnLane(target, onLane);
      else if ((await onDomain(target, step, records)) === REFUSED) {
        unrecordable = true;
        // Nothing changed: a forgetRestart that did not take effect is not an executed step.
        if (step.op === 'forgetRestart') continue;
      }
      executed.push(step);
    } catch (err) {
      if (err instanceof CloudInitError || err instanceof WakeupTimeout) {
        failure = { step, reason: FAILURE_REASON[step.op], message: err.message };
        return outcome();
      }
      if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
      // A driver without hotplug, or a running domain whose spare root ports are all taken
      // (the next start brings more, desired.ts): the device waits for a restart.
      if (
        ((step.op === 'attachDevice' || step.op === 'detachDevice') && isUnsupported(err)) ||
        (step.op === 'attachDevice' && isOutOfPciSlots(err))
      ) {
        deferred.push(step);
        continue;
      }
      if (step.op === 'detachDevice') {
        detachErrors.push(describe(step, err.message));
        continue;
      }
      // An attach QEMU refuses (its file locked by another running machine, say) fails again
      // on every retry until someone acts: the steps after it (a resume, a suspend, the other
      // live changes) must not wait for that. It is the pass's failure all the same.
      if (step.op === 'attachDevice') {
        refused.push(step);
        failure ??= refusal(step, err);
        continue;
      }
      if (target && (await goalHolds(target, step))) {
        executed.push(step);
        continue;
      }
      failure ??= refusal(step, err);
      return outcome();
    }
  }
  return outcome();
}

/** Whether a device step that was to change the persistent definition did not take effect. */
function configChangeMissed(steps: readonly MachineStep[], executed: readonly MachineStep[]) {
  return steps.some(
    (s) =>
      (s.op === 'attachDevice' || s.op === 'detachDevice') && s.config && !executed.includes(s),
  );
}

/** The same domain, found by UUID on the lane's connection, destroyed there. */
async function destroyOnLane(domain: Domain, onLane: OnLane): Promise<void> {
  const uuid = domain.getUUIDString();
  await onLane(async (lane) => (await lane.lookupDomainByUUIDString(uuid)).destroy());
}

/**
 * The define step's document as the redefinition of the persistent definition it replaces,
 * read now rather than when the pass observed it (a device step of this pass may have given a
 * hot-plugged device its slot there), read once for both: with that definition's PCI addresses
 * (keepPciAddresses) and the <metadata> children other than our stamp (keptMetadata: a user's
 * own elements, the restart count, the run record carried forward to the step's generation).
 * A definition that cannot be read as libvirt wrote it leaves the placement to libvirt and
 * keeps nothing.
 */
async function redefinition(
  domain: Domain | undefined,
  step: Extract<MachineStep, { op: 'define' }>,
): Promise<{ doc: DomainDocument; kept?: ReturnType<typeof keptMetadata> }> {
  if (!domain) return { doc: step.doc };
  try {
    const basis = parsePersistentBasis(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    return {
      doc: basis.layout ? keepPciAddresses(step.doc, basis.layout) : step.doc,
      kept: keptMetadata(basis.metadata, step.generation),
    };
  } catch (err) {
    if (err instanceof XmlDocumentError || (isLibvirtError(err) && isUnsupported(err))) {
      return { doc: step.doc };
    }
    throw err;
  }
}

async function define(
  conn: Connect,
  doc: DomainDocument,
  kept?: ReturnType<typeof keptMetadata>,
): Promise<Domain> {
  // A file console or a console log: QEMU / virtlogd create the file, not its directory.
  for (const serial of doc.devices.serials) {
    if (serial.source.type === 'file')
      await mkdir(dirname(serial.source.path), { recursive: true });
    if (serial.log) await mkdir(dirname(serial.log.file), { recursive: true });
  }
  // libvirt copies the NVRAM template at start, but does not create the directory.
  if (doc.os.nvram?.path) await mkdir(dirname(doc.os.nvram.path), { recursive: true });
  return conn.defineDomainXML(buildDomainXML(doc, kept));
}

async function onDomain(
  domain: Domain,
  step: Exclude<MachineStep, { op: 'define' }>,
  /** Where a record written, or refused other than as unsupported, is noted. */
  records: RecordResults,
) {
  switch (step.op) {
    case 'setMemory':
      return bothOrEach(step, (impact) => domain.setMemory(step.kib, impact));
    case 'setVcpus':
      return bothOrEach(step, (impact) => domain.setVcpus(step.count, impact));
    case 'attachDevice':
      return domain.attachDeviceFlags(deviceXML(step.device), impact(step));
    case 'detachDevice':
      return domain.detachDeviceFlags(deviceXML(step.device), impact(step));
    case 'suspend':
      return domain.suspend();
    case 'resume':
      return domain.resume();
    case 'wakeup':
      return wakeUp(domain);
    case 'start': {
      const recorded =
        step.restartCount === undefined
          ? undefined
          : await recordRestart(domain, step.restartCount, records);
      await (step.paused ? startPaused(domain) : domain.create());
      // After the create, not before it: a call in between kept a new machine's domain shut off
      // longer after its define, and a snapshot asked before the machine existed found it so
      // (DisksOnly instead of a checkpoint). Such a snapshot now waits for the first start
      // (virtual-machine-snapshot/plan.ts firstStartWait); the window is kept short anyway.
      const run =
        step.generation === undefined
          ? undefined
          : await recordRun(
              domain,
              step.generation,
              DomainDeviceModifyFlags.LIVE | DomainDeviceModifyFlags.CONFIG,
              records,
            );
      return recorded ?? run;
    }
    case 'recordRestart':
      if (step.restartCount !== undefined) return recordRestart(domain, step.restartCount, records);
      return;
    case 'forgetRestart':
      return recordRestart(domain, step.restartCount, records);
    case 'recordRun':
      return recordRun(
        domain,
        step.generation,
        DomainDeviceModifyFlags.LIVE | (step.persistent ? DomainDeviceModifyFlags.CONFIG : 0),
        records,
      );
    case 'shutdown':
      return domain.shutdown();
    case 'destroy':
      return domain.destroy();
    case 'undefine':
      return undefine(domain, step);
  }
}

/**
 * Records the restart count in the stopped domain's persistent metadata, which the run about
 * to start inherits: an agent killed between the start and its status write finds the count
 * in the live definition. Best effort: a driver or definition that refuses it leaves the
 * count to the status alone, as before, and must not keep the machine down.
 */
async function recordRestart(
  domain: Domain,
  count: number,
  records: RecordResults,
): Promise<typeof REFUSED | undefined> {
  try {
    await domain.setMetadata(
      DomainMetadataType.ELEMENT,
      buildRestartsXML(count),
      RESTARTS_PREFIX,
      RESTARTS_NAMESPACE,
      DomainDeviceModifyFlags.CONFIG,
    );
    records.written.add('restarts');
  } catch (err) {
    // Left to the status (reconcile.ts countedRestarts). A driver without the call refuses
    // it on every pass: said, so that the caller stops asking (rememberRestartsUnrecordable).
    if (isLibvirtError(err) && isUnsupported(err)) return REFUSED;
    // Any other refusal may pass (see recordRun): asked again, and logged.
    records.failures.push(recordFailure('restarts', err));
  }
  return undefined;
}

/**
 * Records the generation a run was started under in its live definition and the persistent one
 * it started from (ownership/metadata.ts RUN_NAMESPACE), right after the start. Best effort, as
 * recordRestart: a run without one (an agent killed between the two calls) is judged by the
 * status's observed generation and gets that recorded once (plan.ts runStartedUnder,
 * runToRecord).
 */
async function recordRun(
  domain: Domain,
  generation: number,
  /** LIVE for a run that has none (runToRecord), else LIVE|CONFIG (CONFIG once it ended). */
  where: number,
  records: RecordResults,
): Promise<typeof REFUSED | undefined> {
  try {
    await domain.setMetadata(
      DomainMetadataType.ELEMENT,
      buildRunXML(generation),
      RUN_PREFIX,
      RUN_NAMESPACE,
      where,
    );
    records.written.add('run');
  } catch (err) {
    if (isLibvirtError(err) && isUnsupported(err)) return REFUSED;
    // The run it was for ended meanwhile (a guest shut down since the pass looked): nothing to
    // record in it, nor to say. The persistent definition's part still is: libvirt refuses a
    // LIVE|CONFIG change of a stopped domain whole, and a `virsh start` from that definition
    // would inherit the older record it holds (plan.ts runCaughtUp); an agent's start writes
    // its own, no other start does.
    if (await runEnded(domain, err)) {
      const persistent = where & DomainDeviceModifyFlags.CONFIG;
      return persistent && persistent !== where
        ? recordRun(domain, generation, persistent, records)
        : undefined;
    }
    // Any other refusal is noted (rememberRecordFailures logs it) and the pass goes on: the
    // record is a hint for a later upgrade, never worth a failed start or a False condition.
    // It is asked again at the next pass that wants it, not given up like an unsupported call:
    // what else refuses it tends to pass (the domain's job lock busy, the connection dropped),
    // a retry is one call on a pass that happens anyway (no requeue is made for it), and a run
    // left without its record is judged against an observedGeneration that moves on with every
    // pass, which holds an edit it never applied.
    records.failures.push(recordFailure('run', err));
  }
  return undefined;
}

/**
 * Whether a refused record was for a run that has ended: libvirt refuses a LIVE change of a
 * domain that is not running (VIR_ERR_OPERATION_INVALID, "domain is not running"), and a
 * domain undefined meanwhile is not found. Asked of the domain only after such a refusal, not
 * before every record: the pass looked at the domain once, and a run seldom ends in between.
 * The code alone does not tell: libvirt gives it for other refusals too (a transient domain's
 * persistent definition).
 */
async function runEnded(domain: Domain, err: unknown): Promise<boolean> {
  if (isNotFound(err, 'domain')) return true;
  if (!isOperationInvalid(err)) return false;
  try {
    return !(await domain.isActive());
  } catch (again) {
    // Not known: the refusal is noted as it came.
    return isNotFound(again, 'domain');
  }
}

function recordFailure(record: RecordFailure['record'], err: unknown): RecordFailure {
  if (isLibvirtError(err)) return { record, kind: err.codeName, message: err.message };
  const kind = err instanceof Error ? err.name : 'Error';
  return { record, kind, message: err instanceof Error ? err.message : String(err) };
}

/** recordRestart's answer when the driver does not support the metadata call. */
const REFUSED = Symbol('restart metadata unsupported');

/**
 * Remembers (HostState restartsUnrecordable, by machine uid) a driver that refused the
 * restart-count metadata as unsupported, and logs it once: the plan then stops asking for a
 * forgetRestart that every pass would see refused again. Other errors may pass: retried.
 */
export function rememberRestartsUnrecordable(
  unrecordable: Set<string>,
  uid: string,
  outcome: Pick<ActOutcome, 'restartsUnrecordable'>,
  log: Pick<Logger, 'info'>,
): void {
  if (!outcome.restartsUnrecordable || unrecordable.has(uid)) return;
  unrecordable.add(uid);
  log.info(
    { uid },
    'the libvirt driver does not support domain metadata: the restart count is kept in the ' +
      'status only, and not written to this domain again by this agent',
  );
}

/**
 * Logs the records a pass's driver refused other than as unsupported (ActOutcome
 * recordFailures), once per machine (by uid) and kind of refusal until a record of that sort
 * (run or restarts) is written again (HostState recordFailuresLogged): they are asked again on
 * later passes, which would otherwise repeat the line at every pass, and a new kind is said as
 * it comes. A refusal after a record that took is a new episode, said again: remembered for as
 * long as the process knows the machine, a refusal hours later went unsaid.
 */
export function rememberRecordFailures(
  logged: Map<string, Set<string>>,
  uid: string,
  outcome: Pick<ActOutcome, 'recordFailures' | 'recordsWritten'>,
  log: Pick<Logger, 'warn'>,
): void {
  const said = logged.get(uid);
  for (const record of outcome.recordsWritten ?? [])
    for (const key of said ?? []) if (key.startsWith(`${record} `)) said?.delete(key);
  if (said?.size === 0) logged.delete(uid);
  for (const failure of outcome.recordFailures ?? []) {
    const kinds = logged.get(uid) ?? new Set<string>();
    const key = `${failure.record} ${failure.kind}`;
    if (kinds.has(key)) continue;
    logged.set(uid, kinds.add(key));
    log.warn(
      { uid, record: failure.record, error: { code: failure.kind, message: failure.message } },
      failure.record === 'run'
        ? "libvirt refused to record the run's generation in the domain's metadata: the run is " +
            "judged against the record it has (without one, the status's observedGeneration) " +
            'meanwhile; asked again at the next passes (said once per kind of error until ' +
            'one is recorded)'
        : "libvirt refused to record the restart count in the domain's metadata: the count is " +
            'kept in the status meanwhile; asked again at the next passes (said once per kind ' +
            'of error until one is recorded)',
    );
  }
}

/** How long a woken guest may take to be reported running (QEMU's WAKEUP event). */
export const WAKEUP_WAIT_MS = 2_000;
const WAKEUP_POLL_MS = 50;

/**
 * Wakes a guest suspended to RAM and waits until libvirt reports it running. virDomainPMWakeup
 * returns once QEMU accepted system_wakeup; libvirt leaves pmsuspended only when QEMU's WAKEUP
 * event arrives, and an ACPI request sent before that is refused ("domain is not running").
 * A guest that does not wake in time is this step's failure (the ACPI request would be refused
 * too), so the stop falls back to the destroy after the grace period.
 */
async function wakeUp(domain: Domain): Promise<void> {
  await domain.pmWakeup();
  const deadline = Date.now() + WAKEUP_WAIT_MS;
  for (;;) {
    const state = (await domain.getState()).stateName;
    if (state !== 'pmsuspended') return;
    if (Date.now() >= deadline) throw new WakeupTimeout();
    await new Promise((resolve) => setTimeout(resolve, WAKEUP_POLL_MS));
  }
}

class WakeupTimeout extends Error {
  constructor() {
    super(
      `the guest was asked to wake up from suspend to RAM (pmsuspended) but was still ` +
        `suspended ${WAKEUP_WAIT_MS / 1000}s later`,
    );
  }
}

/**
 * Starts the domain with its vCPUs stopped (VIR_DOMAIN_START_PAUSED, libvirt's reason `user`),
 * so a machine annotated paused never runs, not even for the moment a suspend after a plain
 * start would take. A driver that refuses the flag (libvirt's test driver) starts it running,
 * and the suspend step the plan puts after the start pauses it.
 */
async function startPaused(domain: Domain): Promise<void> {
  try {
    await domain.create(DomainCreateFlags.START_PAUSED);
  } catch (err) {
    if (!isUnsupported(err)) throw err;
    await domain.create();
  }
}

/**
 * LIVE|CONFIG in one call where the driver takes it (QEMU); drivers that take one at a time
 * (the test driver: "flags ... are mutually exclusive") get the running domain first, so an
 * interruption leaves the persistent definition behind and the next pass repeats both.
 */
async function bothOrEach(
  target: { live: boolean; config: boolean },
  call: (impact: { live: boolean; config: boolean }) => Promise<void>,
): Promise<void> {
  try {
    await call({ live: target.live, config: target.config });
  } catch (err) {
    const exclusive =
      target.live &&
      target.config &&
      isLibvirtError(err) &&
      err.code === ErrorCode.VIR_ERR_INVALID_ARG &&
      err.message.includes('mutually exclusive');
    if (!exclusive) throw err;
    await call({ live: true, config: false });
    await call({ live: false, config: true });
  }
}

function deviceXML(device: DeviceChange): string {
  return device.kind === 'disk' ? buildDiskXML(device.disk) : buildInterfaceXML(device.nic);
}

function impact(target: { live: boolean; config: boolean }): number {
  return (
    (target.live ? DomainDeviceModifyFlags.LIVE : 0) |
    (target.config ? DomainDeviceModifyFlags.CONFIG : 0)
  );
}

async function undefine(domain: Domain, what: { nvram: boolean; tpm: boolean }): Promise<void> {
  await deleteSnapshots(domain);
  const flags =
    (what.nvram ? DomainUndefineFlags.NVRAM : 0) | (what.tpm ? DomainUndefineFlags.TPM : 0);
  if (flags === 0) return domain.undefine();
  try {
    await domain.undefine(flags);
  } catch (err) {
    // A driver without UEFI variable stores or TPM state (libvirt's test driver) refuses
    // the flags; it has nothing to remove either.
    if (!isUnsupported(err)) throw err;
    await domain.undefine();
  }
}

/**
 * A machine's libvirt snapshots go with it (libvirt refuses to undefine a domain that has
 * any, and internal ones live inside the machine's qcow2 files). Children first: deleting a
 * parent makes libvirt re-parent its children, work that is wasted here.
 */
async function deleteSnapshots(domain: Domain): Promise<void> {
  const snapshots = await domain.listAllSnapshots(DomainSnapshotListFlags.TOPOLOGICAL);
  for (const snapshot of snapshots.reverse()) {
    try {
      await snapshot.delete();
    } catch (err) {
      if (!isNotFound(err, 'domainSnapshot')) throw err;
    } finally {
      snapshot.free();
    }
  }
}

async function removeFiles(paths: readonly string[]): Promise<void> {
  // recursive: the TPM state is a directory.
  for (const path of paths) await rm(path, { force: true, recursive: true });
}

/** Renames `from` to `to` when `from` exists and `to` does not; the agent is their only writer. */
async function moveFile(from: string, to: string): Promise<void> {
  if (!(await exists(from)) || (await exists(to))) return;
  await rename(from, to);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

/** Removes the stashes of the store at `path` (plan.ts stashedStore), and no other file. */
async function removeStashes(path: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const name of names.filter((n) => isStashOf(path, n))) {
    await rm(join(dirname(path), name), { force: true });
  }
}

/** After a refusal: does what the step wanted hold anyway? */
async function goalHolds(domain: Domain, step: MachineStep): Promise<boolean> {
  try {
    switch (step.op) {
      case 'start':
        return await domain.isActive();
      case 'shutdown':
      case 'destroy':
        return !(await domain.isActive());
      case 'undefine':
        return !(await domain.isPersistent());
      case 'suspend':
        return (await domain.getState()).stateName === 'paused';
      case 'resume':
        return (await domain.getState()).stateName !== 'paused';
      case 'wakeup':
        return (await domain.getState()).stateName !== 'pmsuspended';
      default:
        return false;
    }
  } catch (err) {
    if (isNotFound(err, 'domain')) return step.op !== 'start';
    throw err;
  }
}

/**
 * A define or start libvirt refuses for the definition itself (isRefusedDefinition: e.g. QEMU's
 * "Maximum CPUs greater than specified machine type limit 288" at define) is DefineRefused or
 * StartRefused: Stalled, so GitOps tools fail with libvirt's message instead of waiting for
 * their timeout. Both are still retried at the usual backoff, so a fix on the host (a newer
 * QEMU, another CPU) is picked up; a new generation is tried at once. Other failures stay
 * DefineFailed / StartFailed (transient).
 */
function refusal(step: MachineStep, err: { message: string }): StepFailure {
  return { step, reason: refusalReason(step, err), message: describe(step, err.message) };
}

function refusalReason(step: MachineStep, err: { message: string }): string {
  if (step.op === 'define' && isAlreadyExists(err)) return 'NameConflict';
  if (step.op === 'define' && isRefusedDefinition(err)) return 'DefineRefused';
  if (step.op === 'start' && isRefusedDefinition(err)) return 'StartRefused';
  return FAILURE_REASON[step.op];
}

/**
 * What the node lacks when libvirt cannot find a program or firmware a spec field needs, said
 * as the field and the Debian packages to install: libvirt's own words name neither (libvirt
 * 9.0 looks for OVMF only when it starts the domain; swtpm_setup at define for a TPM 2.0).
 */
export function missingHostPackage(libvirtMessage: string): string | undefined {
  // qemuFirmwareFillDomain: no descriptor in /usr/share/qemu/firmware matches what the
  // domain asks for (no OVMF at all, or no build with the secure-boot features).
  if (libvirtMessage.includes('Unable to find any firmware to satisfy')) {
    return (
      'spec.firmware uefi (and spec.secureBoot, its secure-boot build) needs OVMF on this ' +
      "node: install Debian's ovmf, whose descriptors in /usr/share/qemu/firmware libvirt " +
      'picks the firmware from'
    );
  }
  // virTPMEmulatorInit: swtpm, swtpm_setup (swtpm-tools) or swtpm_ioctl not in libvirtd's PATH
  // at start. A TPM 2.0 is refused already at define (qemuValidateDomainDeviceDefTPM): libvirt
  // asks swtpm_setup which versions it supports, and without it (or swtpm) none is.
  if (
    /Unable to find 'swtpm[a-z_]*' binary/.test(libvirtMessage) ||
    /TPM version '[0-9.]+' is not supported/.test(libvirtMessage)
  ) {
    return "spec.tpm needs swtpm on this node: install Debian's swtpm and swtpm-tools";
  }
  return undefined;
}

function describe(step: MachineStep, libvirtMessage: string): string {
  const message = stableMessage(libvirtMessage);
  const missing = missingHostPackage(message);
  const hint = missing ? ` (${missing})` : '';
  switch (step.op) {
    case 'define':
      return `libvirt refused the domain definition: ${message}${hint}`;
    case 'start':
      return `libvirt could not start the domain: ${message}${hint}`;
    case 'wakeup':
      return `libvirt could not wake the guest from suspend to RAM (pmsuspended): ${message}`;
    case 'setMemory':
      return `libvirt could not set the memory to ${step.kib} KiB: ${message}`;
    case 'setVcpus':
      return `libvirt could not set ${step.count} vCPUs: ${message}`;
    case 'attachDevice':
      return `libvirt could not attach ${step.device.field} to the running domain: ${message}`;
    case 'detachDevice':
      return `libvirt could not detach ${step.device.field} from the running domain: ${message}`;
    default:
      return `libvirt refused ${step.op}: ${message}`;
  }
}
