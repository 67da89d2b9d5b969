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
//   False condition with libvirt's message.
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Connect } from '../../libvirt/connection.js';
import { DomainUndefineFlags } from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import {
  ErrorCode,
  isAlreadyExists,
  isConnectionError,
  isLibvirtError,
  isNotFound,
  isTimeout,
  isUnsupported,
} from '../../libvirt/errors.js';
import { buildDomainXML, type DomainDocument } from '../../libvirt/xml/domain.js';
import { CloudInitError, writeCloudInitISO } from './iso.js';
import type { MachineStep } from './plan.js';

export interface StepFailure {
  step: MachineStep;
  reason: string;
  message: string;
}

export interface ActOutcome {
  /** The steps that took effect (or whose goal already held), in order. */
  executed: MachineStep[];
  failure: StepFailure | undefined;
}

const FAILURE_REASON: Record<MachineStep['op'], string> = {
  writeCloudInit: 'CloudInitFailed',
  define: 'DefineFailed',
  setMemory: 'MemoryChangeFailed',
  setVcpus: 'VcpuChangeFailed',
  start: 'StartFailed',
  shutdown: 'ShutdownFailed',
  destroy: 'DestroyFailed',
  undefine: 'UndefineFailed',
  removeFiles: 'CleanupFailed',
};

/** `domain` is undefined until a define step creates it. */
export async function actMachine(
  conn: Connect,
  domain: Domain | undefined,
  steps: readonly MachineStep[],
): Promise<ActOutcome> {
  let target = domain;
  const executed: MachineStep[] = [];
  for (const step of steps) {
    try {
      if (step.op === 'define') target = await define(conn, step.doc);
      else if (step.op === 'writeCloudInit') await writeCloudInitISO(step.image);
      else if (step.op === 'removeFiles') await removeFiles(step.paths);
      else if (!target) throw new Error(`step ${step.op} has no domain: the plan lacks a define`);
      else await onDomain(target, step);
      executed.push(step);
    } catch (err) {
      if (err instanceof CloudInitError) {
        return {
          executed,
          failure: { step, reason: FAILURE_REASON[step.op], message: err.message },
        };
      }
      if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
      if (target && (await goalHolds(target, step))) {
        executed.push(step);
        continue;
      }
      return { executed, failure: refusal(step, err) };
    }
  }
  return { executed, failure: undefined };
}

async function define(conn: Connect, doc: DomainDocument): Promise<Domain> {
  // A file console or a console log: QEMU / virtlogd create the file, not its directory.
  for (const serial of doc.devices.serials) {
    if (serial.source.type === 'file')
      await mkdir(dirname(serial.source.path), { recursive: true });
    if (serial.log) await mkdir(dirname(serial.log.file), { recursive: true });
  }
  return conn.defineDomainXML(buildDomainXML(doc));
}

async function onDomain(domain: Domain, step: Exclude<MachineStep, { op: 'define' }>) {
  switch (step.op) {
    case 'setMemory':
      return bothOrEach(step, (impact) => domain.setMemory(step.kib, impact));
    case 'setVcpus':
      return bothOrEach(step, (impact) => domain.setVcpus(step.count, impact));
    case 'start':
      return domain.create();
    case 'shutdown':
      return domain.shutdown();
    case 'destroy':
      return domain.destroy();
    case 'undefine':
      return undefine(domain, step.nvram);
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

async function undefine(domain: Domain, nvram: boolean): Promise<void> {
  if (!nvram) return domain.undefine();
  try {
    await domain.undefine(DomainUndefineFlags.NVRAM);
  } catch (err) {
    // A driver without UEFI variable stores (libvirt's test driver) refuses the flag.
    if (!isUnsupported(err)) throw err;
    await domain.undefine();
  }
}

async function removeFiles(paths: readonly string[]): Promise<void> {
  for (const path of paths) await rm(path, { force: true });
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
      default:
        return false;
    }
  } catch (err) {
    if (isNotFound(err, 'domain')) return step.op !== 'start';
    throw err;
  }
}

function refusal(step: MachineStep, err: { message: string }): StepFailure {
  const reason =
    step.op === 'define' && isAlreadyExists(err) ? 'NameConflict' : FAILURE_REASON[step.op];
  return { step, reason, message: describe(step, err.message) };
}

function describe(step: MachineStep, message: string): string {
  switch (step.op) {
    case 'define':
      return `libvirt refused the domain definition: ${message}`;
    case 'start':
      return `libvirt could not start the domain: ${message}`;
    case 'setMemory':
      return `libvirt could not set the memory to ${step.kib} KiB: ${message}`;
    case 'setVcpus':
      return `libvirt could not set ${step.count} vCPUs: ${message}`;
    default:
      return `libvirt refused ${step.op}: ${message}`;
  }
}
