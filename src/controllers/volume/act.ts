// Executes volume steps through the binding, one pool at a time (pool-lock.ts). Steps are
// idempotent: a create that finds the file already there is absorbed and the next observation
// decides whether the file is ours. Problems only the host can judge come back for status;
// transport errors are thrown and retried by the queue.
import { statfs } from 'node:fs/promises';
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

/**
 * qemu-img's (and QEMU's, for a live grow) refusal to grow a qcow2 version 2 (compat 0.10)
 * image that holds internal snapshots: the v2 snapshot table records no size per snapshot.
 * Imported v2 images get them from VirtualMachineSnapshots (internal snapshots). The file is
 * left as it was; retrying never helps until the snapshots go or the image becomes v3.
 */
const V2_WITH_SNAPSHOTS = /Can't resize a v2 image which has snapshots/;

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
        if (step.op === 'resize' && (V2_WITH_SNAPSHOTS.test(err.message) || tooLarge(err))) {
          outcome.resizeProblem = await resizeRefusal(pool, target, step.capacity, err);
        } else if (step.op === 'resize' && NO_SPACE.test(err.message)) {
          // A full file system clears when space is freed: ResizeFailed, retried, with the
          // numbers (a qcow2 grow writes larger tables; QEMU's live grow the same).
          outcome.resizeProblem = await fullPoolProblem(
            pool,
            'ResizeFailed',
            `growing to ${step.capacity} bytes (spec.capacity` +
              (live ? `, disk ${live.target} of running VirtualMachine ${live.vm}` : '') +
              ') failed',
            "the grow needs room for the file's larger tables",
            err,
          );
        } else if (step.op === 'resize') {
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
          outcome.problem = await createProblem(pool, err, readsElsewhere(step), step.doc.capacity);
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
      return createProblem(pool, err, false, fileSize);
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
      // A full file system: ImportFailed as any failed transfer (retried with backoff, as
      // freeing space fixes it), with the numbers; the file begun is gone again (above).
      if (NO_SPACE.test(err.message)) {
        return fullPoolProblem(
          pool,
          'ImportFailed',
          'the upload failed',
          `the image needs ${fileSize} bytes`,
          err,
        );
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
 * strerror(EFBIG): the size is beyond the largest file the pool's file system takes (ext4
 * with 4 KiB blocks: 16 TiB less 4 KiB, below the schema's 64Ti), measured as libvirt's
 * "cannot extend file '...': File too large" for a raw file. No retry ever makes it fit.
 */
const TOO_LARGE = /File too large/;
/** strerror(ENOSPC), from libvirt's allocation of a raw file or qemu-img's metadata writes. */
const NO_SPACE = /No space left on device/;

const tooLarge = (err: Error) => TOO_LARGE.test(err.message);

/** statfs's f_type of ext2, ext3 and ext4 (one magic number for the three). */
const EXT_MAGIC = 0xef53;

/**
 * The largest file a file system takes, when its type says so: ext4 addresses a file's
 * blocks with 32-bit numbers, so (2^32 - 1) blocks (measured: truncate to 17592186040320
 * bytes works on 4 KiB blocks, one byte more fails with EFBIG). Others (xfs, btrfs, tmpfs)
 * take files far beyond the schema's 64Ti: undefined.
 */
export function largestFile(fsType: number, blockSize: number): bigint | undefined {
  return fsType === EXT_MAGIC ? (2n ** 32n - 1n) * BigInt(blockSize) : undefined;
}

/** The pool's directory as libvirt has it, or undefined when its XML cannot be read. */
async function poolDirectory(pool: ReadyPool): Promise<string | undefined> {
  return pool.handle
    .getXMLDesc(0)
    .then((xml) => parsePoolXML(xml).target.path)
    .catch(() => undefined);
}

/**
 * "the largest file it takes is N bytes (ext4 with B-byte blocks)" for the pool's directory,
 * read with statfs (the agent sees pool directories at their host paths); empty when unknown.
 */
async function fileLimitText(dir: string | undefined): Promise<string> {
  if (!dir) return '';
  const fs = await statfs(dir).catch(() => undefined);
  const limit = fs ? largestFile(fs.type, fs.bsize) : undefined;
  return limit === undefined || !fs
    ? ''
    : `: the largest file it takes is ${limit} bytes (ext4 with ${fs.bsize}-byte blocks)`;
}

/**
 * A grow qemu-img or QEMU refuses for the file as it is, which no retry changes: a raw file
 * beyond the file system's largest (ResizeUnsupported: only a spec change is tried again), or
 * a qcow2 v2 image holding internal snapshots (ResizeRefused: Stalled, and retried with
 * backoff, since deleting the snapshots or upgrading the image outside the spec fixes it).
 */
async function resizeRefusal(
  pool: ReadyPool,
  target: StorageVol | undefined,
  capacity: bigint,
  err: Error,
): Promise<Problem> {
  const dir = await poolDirectory(pool);
  if (tooLarge(err)) {
    const where = dir ? `pool ${pool.name}'s directory ${dir}` : `pool ${pool.name}'s directory`;
    return {
      reason: 'ResizeUnsupported',
      message:
        `spec.capacity (${capacity} bytes) is larger than the file system of ${where} ` +
        `takes for one file${await fileLimitText(dir)}; the file keeps its size (${err.message})`,
    };
  }
  const path = (await target?.getPath().catch(() => undefined)) ?? 'FILE';
  return {
    reason: 'ResizeRefused',
    message:
      `growing to ${capacity} bytes (spec.capacity) is refused: the file is a qcow2 version 2 ` +
      `(compat 0.10) image holding internal snapshots, which qemu-img cannot grow; the file is ` +
      `unchanged. Delete the VirtualMachineSnapshots that hold snapshots of it, or, with no ` +
      `machine using it, upgrade it with \`qemu-img amend -f qcow2 -o compat=1.1 ${path}\` ` +
      `(snapshots are kept); the grow is retried (${err.message.trim()})`,
  };
}

/**
 * Why making the volume file failed. A read-only or forbidden directory is the user's to fix
 * (Stalled, as the pool's own PathReadOnly/PathForbidden), still retried with backoff since a
 * remount or chmod fixes it without a spec change; so is a size beyond the largest file the
 * file system takes (CapacityTooLarge: spec.capacity cannot shrink, so the Volume is made
 * again smaller, or in another pool). A full file system is CreateFailed, retried, as freeing
 * space fixes it: its message says so with the numbers. Anything else (a qemu-img crash...) is
 * CreateFailed, and may pass by itself. `readsElsewhere`: the create also reads a file that
 * may be in another directory (a copy's source, an overlay's backing file, which qemu-img
 * opens and libvirt first checks for access), so its "permission denied" may be about that
 * file and is not blamed on the pool's directory. `capacity`: the size asked for.
 */
export async function createProblem(
  pool: ReadyPool,
  err: Error,
  readsElsewhere: boolean,
  capacity?: bigint,
): Promise<Problem> {
  const readOnly = READ_ONLY.test(err.message);
  const big = tooLarge(err);
  const full = NO_SPACE.test(err.message);
  if (!readOnly && !big && !full && (readsElsewhere || !FORBIDDEN.test(err.message))) {
    return { reason: 'CreateFailed', message: `creating the volume failed: ${err.message}` };
  }
  const dir = await poolDirectory(pool);
  const where = dir ? `pool ${pool.name}'s directory ${dir}` : `pool ${pool.name}'s directory`;
  const asked = capacity === undefined ? '' : ` (${capacity} bytes)`;
  if (big) {
    return {
      reason: 'CapacityTooLarge',
      message:
        `spec.capacity${asked} is larger than the file system of ${where} takes for one ` +
        `file${await fileLimitText(dir)}; spec.capacity cannot shrink, so delete the Volume and ` +
        `create it with a smaller capacity, or in a pool on a file system that takes larger ` +
        `files, such as xfs (${err.message})`,
    };
  }
  if (full) {
    return fullPoolProblem(
      pool,
      'CreateFailed',
      undefined,
      `the volume needs ${capacity === undefined ? 'more' : `${capacity} bytes (spec.capacity; raw files are allocated in full, qcow2 ones need room for their metadata)`}`,
      err,
      dir,
    );
  }
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

/**
 * A file system full while making, growing or filling the volume file: "`what`: pool P is full
 * on this node: libvirt reports N bytes available, `needs`; free space in DIR or create the
 * Volume in another pool; retried (libvirt's words)". One wording for create, grow and upload,
 * under the transient `reason` of each (freeing space fixes it without a spec change). `dir`:
 * the pool's directory when the caller has read it already.
 */
async function fullPoolProblem(
  pool: ReadyPool,
  reason: string,
  what: string | undefined,
  needs: string,
  err: Error,
  dir?: string,
): Promise<Problem> {
  const where = dir ?? (await poolDirectory(pool)) ?? 'its directory';
  return {
    reason,
    message:
      `${what ? `${what}: ` : ''}pool ${pool.name} is full on this node: ` +
      `${await availableText(pool)}${needs}; free space in ${where} or create the Volume in ` +
      `another pool; retried (${err.message.trim()})`,
  };
}

/**
 * "libvirt reports N bytes available, " after re-reading the pool (what a failed create
 * began is gone again, and libvirt's figures are from its last refresh); empty if unread.
 * Runs inside the pool's lock, as the create did.
 */
async function availableText(pool: ReadyPool): Promise<string> {
  try {
    await pool.handle.refresh(0);
    const info = await pool.handle.getInfo();
    return `libvirt reports ${info.available} bytes available, `;
  } catch {
    return '';
  }
}
