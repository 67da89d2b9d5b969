// Executes volume steps through the binding, one pool at a time (pool-lock.ts). Steps are
// idempotent: a create that finds the file already there is absorbed and the next observation
// decides whether the file is ours. Problems only the host can judge come back for status;
// transport errors are thrown and retried by the queue.
import {
  isAlreadyExists,
  isConnectionError,
  isLibvirtError,
  isNotFound,
  isUnsupported,
} from '../../libvirt/errors.js';
import { DomainBlockResizeFlags } from '../../libvirt/constants.js';
import type { StorageVol } from '../../libvirt/storage.js';
import { parsePoolXML } from '../../libvirt/xml/pool.js';
import { buildVolumeXML } from '../../libvirt/xml/volume.js';
import type { LiveDisk, ReadyPool } from './observe.js';
import type { VolumeStep } from './plan.js';
import { withPoolLock } from '../shared/pool-lock.js';
import type { Problem } from '../kit.js';

/**
 * The storage driver's refusal of any new size below the space the file uses, a grow included:
 * a qcow2 file that holds a snapshot of a machine's memory uses more than its capacity.
 */
const BELOW_ALLOCATION = /can't shrink capacity below existing allocation/;

/**
 * The storage driver's refusal to create over a file the pool's listing does not have (put
 * there behind libvirt's back since the pool was last refreshed): a name clash, not a failure
 * that time resolves.
 */
const UNLISTED_FILE = /volume target path '.*' already exists/;

/** qemu-img's answer when the file to copy is open for writing (QEMU's image lock). */
const SOURCE_LOCKED = /Failed to get shared "write" lock/;

export interface VolumeActOutcome {
  done: VolumeStep['op'][];
  /** Creating the file failed for a reason the host judged (no space, invalid size...). */
  problem?: Problem;
  /** The resize could not be done; the volume itself is fine. */
  resizeProblem?: Problem;
}

export async function applyVolumeSteps(
  pool: ReadyPool,
  target: StorageVol | undefined,
  source: StorageVol | undefined,
  steps: readonly VolumeStep[],
  live?: LiveDisk,
): Promise<VolumeActOutcome> {
  const outcome: VolumeActOutcome = { done: [] };
  if (steps.length === 0) return outcome;
  await withPoolLock(pool.locks, pool.name, async () => {
    for (const step of steps) {
      try {
        if (step.op === 'resize' && live) {
          // A running guest's disk: QEMU holds the file's write lock, so the storage driver's
          // qemu-img would fail; QEMU grows it and the guest sees the new size.
          await live.domain.blockResize(live.target, step.capacity, DomainBlockResizeFlags.BYTES);
        } else {
          await applyStep(pool, target, source, step);
        }
        outcome.done.push(step.op);
      } catch (err) {
        if (!isLibvirtError(err) || isConnectionError(err)) throw err;
        if (step.op === 'resize') {
          outcome.resizeProblem = {
            reason: isUnsupported(err) ? 'ResizeUnsupported' : 'ResizeFailed',
            message:
              `growing to ${step.capacity} bytes` +
              (live ? ` (disk ${live.target} of running VirtualMachine ${live.vm})` : '') +
              ` failed: ${err.message}` +
              (BELOW_ALLOCATION.test(err.message)
                ? '; the file uses more space than the new capacity (snapshots holding a ' +
                  "machine's memory are kept in it), which libvirt's storage driver refuses " +
                  'even for a grow; QEMU grows it while its machine runs, or ask for a ' +
                  'capacity above the space the file uses'
                : ''),
          };
        } else if (step.op === 'discard') {
          // libvirt refuses to delete a volume it is still filling (a copy an earlier agent
          // process started): once it has finished, the file is discarded and copied again.
          outcome.problem = {
            reason: 'CopyInProgress',
            message: `an earlier copy into this volume's file is still running or could not be removed: ${err.message}`,
          };
        } else if (step.op === 'clone' && SOURCE_LOCKED.test(err.message)) {
          // A process the agent does not know of (or a machine started since the pass looked)
          // has the source open: waiting, not a failure of this Volume.
          outcome.problem = {
            reason: 'SourceInUse',
            message: `the source file is open for writing by another process, so it cannot be copied now: ${err.message}`,
          };
        } else if (
          (step.op === 'create' || step.op === 'clone') &&
          UNLISTED_FILE.test(err.message)
        ) {
          // Listed from now on, so the next pass judges the file as any clash (plan.ts): it
          // was CreateFailed, retried for ever (kstatus InProgress) on a file only a user can
          // remove.
          await pool.handle.refresh(0);
          outcome.problem = {
            reason: 'NameConflict',
            message:
              `a file with this Volume's name already exists in the pool and was not created ` +
              `by this Volume (libvirt did not list it): ${err.message}`,
          };
        } else {
          outcome.problem = await createProblem(pool, err, readsElsewhere(step));
        }
        return;
      }
    }
  });
  return outcome;
}

/** Whether the step reads a file besides the one it makes: see createProblem. */
function readsElsewhere(step: VolumeStep): boolean {
  return step.op === 'clone' || (step.op === 'create' && step.doc.backingStore !== undefined);
}

async function applyStep(
  pool: ReadyPool,
  target: StorageVol | undefined,
  source: StorageVol | undefined,
  step: VolumeStep,
): Promise<void> {
  switch (step.op) {
    case 'create':
    case 'clone': {
      const xml = buildVolumeXML(step.doc);
      try {
        if (step.op === 'create') await pool.handle.createVolumeXML(xml, 0);
        else if (source) await pool.handle.createVolumeXMLFrom(xml, source, 0);
        else throw new Error('clone step without a source volume (plan bug)');
      } catch (err) {
        // Created by an earlier pass that crashed before its status write.
        if (!isAlreadyExists(err)) throw err;
      }
      return;
    }
    case 'resize':
      if (!target) throw new Error('resize step without a volume (plan bug)');
      await target.resize(step.capacity, 0);
      return;
    case 'discard':
      if (!target) throw new Error('discard step without a volume (plan bug)');
      await target.delete(0).catch((err: unknown) => {
        if (!isNotFound(err, 'storageVol')) throw err;
      });
      return;
  }
}

/** Deletes a volume file (Delete policy); one already gone is fine. */
export async function deleteVolumeFile(pool: ReadyPool, vol: StorageVol): Promise<void> {
  await withPoolLock(pool.locks, pool.name, () =>
    vol.delete(0).catch((err: unknown) => {
      if (!isNotFound(err, 'storageVol')) throw err;
    }),
  );
}

/**
 * Hands a verified download to libvirt: a sparse raw file of the download's size, the bytes
 * streamed in (virStorageVolUpload), then a pool refresh so libvirt probes the real format
 * and virtual size (a qcow2 image is then reported as qcow2). The file's bytes are exactly
 * the verified ones. If the upload fails, the file is deleted again.
 */
export async function uploadImage(
  pool: ReadyPool,
  name: string,
  file: string,
  fileSize: bigint,
): Promise<Problem | undefined> {
  return withPoolLock(pool.locks, pool.name, async () => {
    const xml = buildVolumeXML({ name, capacity: fileSize, allocation: 0n, format: 'raw' });
    let vol: StorageVol;
    try {
      vol = await pool.handle.createVolumeXML(xml, 0);
    } catch (err) {
      if (!isLibvirtError(err) || isConnectionError(err)) throw err;
      return createProblem(pool, err, false);
    }
    try {
      await vol.upload(file);
    } catch (err) {
      await vol.delete(0).catch(() => undefined);
      if (!isLibvirtError(err) || isConnectionError(err)) throw err;
      // A driver without uploads never gets them by retrying: for a user (Stalled), who
      // puts the Volume in a pool of a driver that has them.
      if (isUnsupported(err)) {
        return {
          reason: 'Unsupported',
          message: `the libvirt driver on this node cannot upload volumes: ${err.message}`,
        };
      }
      return { reason: 'ImportFailed', message: `the upload failed: ${err.message}` };
    }
    await pool.handle.refresh(0);
    return undefined;
  });
}

/**
 * libvirt's (or qemu-img's) words for a file that the pool's file system will not let anyone
 * make, whatever the retry: strerror(EROFS), and strerror(EACCES)/strerror(EPERM). libvirtd
 * reports them as text only (qemu-img's are its stderr), in its own locale: these are the
 * English words, and a libvirtd in another locale gets the transient CreateFailed instead.
 */
const READ_ONLY = /Read-only file system/;
const FORBIDDEN = /Permission denied|Operation not permitted/;

/**
 * Why making the volume file failed. A read-only or forbidden directory is the user's to fix
 * (Stalled, as the pool's own PathReadOnly/PathForbidden), still retried with backoff since a
 * remount or chmod fixes it without a spec change; anything else (no space left, a qemu-img
 * crash...) is CreateFailed, retried, and may pass by itself. `readsElsewhere`: the create
 * also reads a file that may be in another directory (a copy's source, an overlay's backing
 * file, which qemu-img opens and libvirt first checks for access), so its "permission denied"
 * may be about that file and is not blamed on the pool's directory.
 */
export async function createProblem(
  pool: ReadyPool,
  err: Error,
  readsElsewhere: boolean,
): Promise<Problem> {
  const readOnly = READ_ONLY.test(err.message);
  if (!readOnly && (readsElsewhere || !FORBIDDEN.test(err.message))) {
    return { reason: 'CreateFailed', message: `creating the volume failed: ${err.message}` };
  }
  const dir = await pool.handle
    .getXMLDesc(0)
    .then((xml) => parsePoolXML(xml).target.path)
    .catch(() => undefined);
  const where = dir ? `pool ${pool.name}'s directory ${dir}` : `pool ${pool.name}'s directory`;
  return readOnly
    ? {
        reason: 'PathReadOnly',
        message:
          `${where} is on a read-only file system on this node, so the volume file cannot be ` +
          `made (${err.message}); remount it read-write, or create the Volume in another pool`,
      }
    : {
        reason: 'PathForbidden',
        message:
          `libvirt may not write in ${where} on this node, so the volume file cannot be made ` +
          `(${err.message}); give it write access, or create the Volume in another pool`,
      };
}
