// Executes pool steps through the binding. Every step is idempotent: define with our UUID
// updates rather than duplicates, build keeps an existing directory, starting an active pool
// is absorbed. Problems only the host can judge (the path is used by another pool, the
// directory cannot be created, a definition libvirt refuses) come back as a Problem for
// status; transport errors (and a define that timed out) are thrown and retried by the queue.
import type { Connect } from '../../libvirt/connection.js';
import {
  isAlreadyExists,
  isConnectionError,
  isLibvirtError,
  isNameTooLong,
  isNotFound,
  isOperationInvalid,
  isRefusedDefinition,
  isTimeout,
} from '../../libvirt/errors.js';
import type { StoragePool as LibvirtPool } from '../../libvirt/storage.js';
import { buildPoolXML } from '../../libvirt/xml/pool.js';
import type { PoolStep } from './plan.js';
import type { Problem } from '../kit.js';

export interface PoolActOutcome {
  problem?: Problem;
  /** Steps that ran, for Events ("Started" after a pool was found stopped, ...). */
  done: PoolStep['op'][];
}

export async function applyPoolSteps(
  conn: Connect,
  handle: LibvirtPool | undefined,
  steps: readonly PoolStep[],
  /** Runs before a build: the directories it will make are recorded (directories.ts). */
  beforeBuild: () => Promise<void> = async () => {},
): Promise<PoolActOutcome> {
  const done: PoolStep['op'][] = [];
  let pool = handle;
  for (const step of steps) {
    if (step.op === 'build') await beforeBuild();
    try {
      pool = await applyStep(conn, pool, step);
      done.push(step.op);
    } catch (err) {
      const problem = hostProblem(step, err);
      if (!problem) throw err;
      return { problem, done };
    }
  }
  return { done };
}

async function applyStep(
  conn: Connect,
  pool: LibvirtPool | undefined,
  step: PoolStep,
): Promise<LibvirtPool> {
  if (step.op === 'define') return conn.defineStoragePoolXML(buildPoolXML(step.doc));
  if (!pool) throw new Error(`pool step ${step.op} has no pool to act on (plan bug)`);
  switch (step.op) {
    case 'build':
      await pool.build(0);
      break;
    case 'start':
      await pool.create(0).catch((err: unknown) => {
        // Started meanwhile (libvirtd autostart, an admin): the goal is reached.
        if (!(isOperationInvalid(err) && String(err).includes('already active'))) throw err;
      });
      break;
    case 'autostart':
      await pool.setAutostart(step.value);
      break;
  }
  return pool;
}

function hostProblem(step: PoolStep, err: unknown): Problem | undefined {
  if (!isLibvirtError(err) || isConnectionError(err)) return undefined;
  if (step.op === 'define' && err.message.includes('Storage source conflict')) {
    return {
      reason: 'PathConflict',
      message: `another libvirt pool uses this path: ${err.message}`,
    };
  }
  if (step.op === 'define' && isAlreadyExists(err)) {
    return {
      reason: 'NameConflict',
      message: `a foreign libvirt pool holds this name: ${err.message}`,
    };
  }
  // ENOTDIR: a file stands where the directory (or one of its parents) should be. Retrying
  // cannot help and spec.path is immutable, so only a user can fix it.
  if ((step.op === 'build' || step.op === 'start') && err.message.includes('Not a directory')) {
    return {
      reason: 'PathNotDirectory',
      message:
        `spec.path is not a directory on this node (${err.message}); remove the file there, ` +
        `or re-create the StoragePool with another path (spec.path is immutable)`,
    };
  }
  // EROFS: the directory (or a missing parent) would be made on a read-only file system.
  // Retrying cannot help until someone remounts it, so this is the user's, as above.
  if (step.op === 'build' && err.message.includes('Read-only file system')) {
    return {
      reason: 'PathReadOnly',
      message:
        `spec.path is on a read-only file system on this node (${err.message}); remount it ` +
        `read-write, or re-create the StoragePool with another path (spec.path is immutable)`,
    };
  }
  // ENAMETOOLONG: libvirt names the pool's config file after the pool (<name>.xml.new, so a
  // metadata.name of 248 characters or more fails at define), and a segment of spec.path
  // longer than the file system's 255 bytes fails at build and start. Immutable, both.
  if (isNameTooLong(err)) {
    const what =
      step.op === 'define'
        ? 'libvirt names its files on the node after the pool: re-create the StoragePool ' +
          'with a shorter metadata.name (247 characters or fewer)'
        : 'a segment of spec.path is longer than the file system takes (255 bytes): ' +
          're-create the StoragePool with another path (spec.path is immutable)';
    return {
      reason: step.op === 'define' ? 'DefineRefused' : 'PathTooLong',
      message: `${err.message}; ${what}`,
    };
  }
  // Refused for the pool's definition itself: only a change of the spec or the host helps, so
  // Stalled (still retried with backoff). Anything else at define (a full disk, an internal
  // error) is reported too, rather than thrown with no status, and retried as transient.
  if (step.op === 'define' && !isTimeout(err)) {
    return isRefusedDefinition(err)
      ? { reason: 'DefineRefused', message: `libvirt refused the pool definition: ${err.message}` }
      : { reason: 'DefineFailed', message: `libvirt could not define the pool: ${err.message}` };
  }
  if (step.op === 'start' && isRefusedDefinition(err)) {
    return { reason: 'StartRefused', message: `libvirt refused to start the pool: ${err.message}` };
  }
  if (step.op === 'build') return { reason: 'BuildFailed', message: err.message };
  if (step.op === 'start') return { reason: 'StartFailed', message: err.message };
  return undefined;
}

export interface PoolRemoval {
  /**
   * What became of spec.path: removed; kept (libvirt could not remove it, usually because it
   * is not empty: `detail` says why); preexisting (it was there before the pool, so it is
   * left); absent (nothing there: removed meanwhile, or a build that failed); notDirectory (a file stands there or at a parent: left).
   */
  directory: 'removed' | 'kept' | 'preexisting' | 'absent' | 'notDirectory';
  detail?: string;
}

/**
 * Removes our pool from the host: stop, remove the directory if the pool's build made it and
 * it is empty, undefine. The directory goes only through libvirt's pool delete, which for dir
 * pools is rmdir(2): files that are not ours (retained volumes, anything an admin put there)
 * are never deleted, and a non-empty directory simply stays. `unmade` says why a spec.path the
 * pool's build did not make is left alone (it existed before the pool, ...): it is never
 * removed. Safe to repeat after a crash.
 */
export async function removePool(
  pool: LibvirtPool,
  unmade?: PoolRemoval['directory'],
): Promise<PoolRemoval> {
  await pool.destroy().catch((err: unknown) => {
    // Absorb only "not active": "has asynchronous jobs running" must not let the undefine
    // below fail quietly too and the pass report a pool removed that still runs.
    if (isNotFound(err, 'storagePool')) return;
    if (!(isOperationInvalid(err) && String(err).includes('is not active'))) throw err;
  });
  const removal: PoolRemoval = unmade
    ? { directory: unmade }
    : await pool.delete(0).then(
        (): PoolRemoval => ({ directory: 'removed' }),
        (err: unknown): PoolRemoval => {
          if (isNotFound(err, 'storagePool'))
            return { directory: 'kept', detail: 'the libvirt pool vanished before it' };
          if (!isLibvirtError(err) || isConnectionError(err)) throw err;
          if (err.message.includes('Not a directory')) return { directory: 'notDirectory' };
          // ENAMETOOLONG: a spec.path no directory can have (PathTooLong), so none is there.
          if (err.message.includes('No such file or directory') || isNameTooLong(err)) {
            return { directory: 'absent' };
          }
          return { directory: 'kept', detail: err.message };
        },
      );
  await pool.undefine().catch((err: unknown) => {
    // Undefining an already transient or gone pool: nothing left to remove.
    if (!isNotFound(err, 'storagePool') && !isOperationInvalid(err)) throw err;
  });
  return removal;
}
