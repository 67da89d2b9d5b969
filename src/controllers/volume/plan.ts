// From the desired volume and the file found in the pool to the storage calls to make. Only
// owned fields count (name, capacity, format, backing store); allocation is what the guest
// wrote and never a reason to act. A file this Volume did not create is never touched.
import type { Volume } from '../../api/generated/types.js';
import { findCondition } from '../../api/conditions.js';
import {
  changedVolumeFields,
  type ObservedVolume,
  type VolumeDocument,
} from '../../libvirt/xml/volume.js';
import type { Problem } from '../kit.js';
import { requestedCapacity, type SourceKind } from './desired.js';
import type { ImageLayers, LiveDisk } from './observe.js';

export type VolumeStep =
  | { op: 'create'; doc: VolumeDocument }
  /** virStorageVolCreateXMLFrom: a full copy of the source volume. */
  | { op: 'clone'; doc: VolumeDocument }
  | { op: 'resize'; capacity: bigint }
  /** Deletes a copy's file that no finished pass recorded, before copying again. */
  | { op: 'discard' };

export type VolumePlan = { steps: VolumeStep[] } | { conflict: string };

export const RESIZED = 'Resized';

/**
 * What is known of the pool's file beside its XML, gathered at the I/O edge (reconcile.ts): who
 * made it and when. Each field is absent when it is not known or not needed.
 */
export interface FileFacts {
  /**
   * The file this process made for this Volume (created, or finished copying), if status may
   * not show it yet.
   */
  made?: string;
  /** The file's ctime, when it can be read. */
  changedAt?: Date;
  /** The file's birth time, when birthTimeDecides and it could be read. */
  bornAt?: Date;
}

/**
 * Whether the file in the pool is this Volume's. libvirt volumes carry no metadata, so the
 * proof is: the status already records this path (we created it), this process made it for
 * this Volume (`made`: its status write may not be seen yet, or may have failed), or the file
 * is exactly what we would have created (a crash between create and the status write) and was
 * made after this Volume was. Anything else under our file name was put there by someone else:
 * also a file an earlier Volume of this name kept (deletionPolicy Retain), which matches the
 * spec just as well; adopting it would hand the new Volume the old one's data, and make a new
 * base the backing file of an old retained overlay, or an old overlay file the new overlay.
 * The file's ctime and birth time: see predatesVolume.
 */
export function ownsVolume(
  vol: Volume,
  observed: ObservedVolume,
  desired: VolumeDocument | undefined,
  file: FileFacts = {},
): boolean {
  if (observed.path !== undefined && vol.status?.path === observed.path) return true;
  if (observed.path !== undefined && file.made === observed.path) return true;
  if (predatesVolume(vol, file)) return false;
  return desired !== undefined && changedVolumeFields(desired, observed).length === 0;
}

/** A time against the Volume's creation second (creationTimestamp has whole seconds). */
function againstCreation(
  vol: Volume,
  at: Date | undefined,
): 'before' | 'within' | 'after' | undefined {
  const created = Date.parse(String(vol.metadata.creationTimestamp));
  if (at === undefined || !Number.isFinite(created)) return undefined;
  const t = at.getTime();
  return t < created ? 'before' : t < created + 1000 ? 'within' : 'after';
}

/**
 * Whether the file was there before the Volume was made (see ownsVolume). The ctime only moves
 * forwards, so a file last changed before the creation second was not made by the Volume, and
 * one changed after it is taken for one a crash left. Changed within that second, it may be
 * the Volume's own (made, then the agent killed before its status write) or a kept one
 * changed just before a re-create: then the birth time tells, a file born before the creation
 * second is an older one. Birth time unknown (a file system without it, or no answer): the
 * file is taken for the Volume's own, as a crash's would be (docs/api.md, NameConflict).
 */
function predatesVolume(vol: Volume, { changedAt, bornAt }: FileFacts): boolean {
  const changed = againstCreation(vol, changedAt);
  if (changed === 'before') return true;
  return changed === 'within' && againstCreation(vol, bornAt) === 'before';
}

/**
 * Whether ownsVolume needs the file's birth time, the one look at the pool's file of its own
 * that it takes (reconcile.ts): a file neither recorded nor made by this process, last changed
 * within the Volume's creation second. Pure.
 */
export function birthTimeDecides(
  vol: Volume,
  observed: ObservedVolume,
  { changedAt, made }: FileFacts,
): boolean {
  if (observed.path === undefined) return false;
  if (vol.status?.path === observed.path || made === observed.path) return false;
  return againstCreation(vol, changedAt) === 'within';
}

export function planVolume(
  vol: Volume,
  kind: SourceKind,
  desired: VolumeDocument | undefined,
  observed: ObservedVolume | undefined,
  file: FileFacts = {},
): VolumePlan {
  if (!observed) {
    if (!desired)
      throw new Error('planVolume: nothing to create from (the caller observes the source first)');
    return { steps: [{ op: kind === 'clone' ? 'clone' : 'create', doc: desired }] };
  }
  if (!ownsVolume(vol, observed, desired, file))
    return { conflict: conflictMessage(observed, predatesVolume(vol, file)) };
  // libvirt makes a copy's file at its full size and then streams the source in, so a file
  // that matches the copy but that status does not record may be one an agent or libvirtd
  // crash cut short: its content cannot be trusted. Copied again; a blank file or an
  // overlay (metadata only) is complete once it exists.
  const finished = observed.path !== undefined && observed.path === file.made;
  if (kind === 'clone' && desired && vol.status?.path !== observed.path && !finished) {
    return { steps: [{ op: 'discard' }, { op: 'clone', doc: desired }] };
  }
  const requested = requestedCapacity(vol);
  if (requested !== undefined && observed.capacity < requested && !resizeSuspended(vol)) {
    return { steps: [{ op: 'resize', capacity: requested }] };
  }
  // A capacity below the file's is never applied: volumes grow, they never shrink.
  return { steps: [] };
}

/**
 * A resize the host cannot do (the driver lacks it) is tried once per generation: retrying on
 * every pass would be a libvirt write per pass for nothing. A spec change tries again.
 */
export function resizeSuspended(vol: Volume): boolean {
  const c = findCondition(vol.status?.conditions, RESIZED);
  return (
    c?.status === 'False' &&
    c.reason === 'ResizeUnsupported' &&
    c.observedGeneration === (vol.metadata.generation ?? 0)
  );
}

/** Resized=False while running machines hold the file read-only: retried, not suspended. */
export const READ_ONLY_IN_USE = 'ReadOnlyInUse';

/**
 * How a grow reaches a file that running machines have open (`disks`). QEMU holds the file's
 * lock, so the storage driver's qemu-img cannot grow it; QEMU can through a writable disk
 * (virDomainBlockResize, and the guest sees the new size), never through a read-only one
 * (libvirt: "can't resize empty or readonly disk"). A file that only read-only disks hold grows
 * once their machines stop or detach it: a wait that is retried. Tried through QEMU it was
 * ResizeUnsupported, which is never retried within a generation, so the file kept its size
 * after the machines had stopped.
 */
export function liveGrowth(
  disks: readonly LiveDisk[],
  capacity: bigint,
): { through?: LiveDisk } | { wait: Problem } {
  const writable = disks.find((d) => !d.readonly);
  if (writable || disks.length === 0) return writable ? { through: writable } : {};
  const held = disks.map((d) => `disk ${d.target} of running VirtualMachine ${d.vm}`).join(', ');
  return {
    wait: {
      reason: READ_ONLY_IN_USE,
      message:
        `growing to ${capacity} bytes waits: the file is the read-only ${held}; QEMU cannot ` +
        `grow a read-only disk and holds the file's lock, so it grows once the machine is ` +
        `stopped or the disk detached`,
    },
  };
}

function conflictMessage(observed: ObservedVolume, older = false): string {
  return (
    `a file ${observed.path ?? observed.name} (format ${observed.format}, capacity ${observed.capacity} bytes) ` +
    `already exists in the pool and was not created by this Volume` +
    (older
      ? ` (it is older than the Volume: one of the same name kept it, deletionPolicy Retain, ` +
        `or it was put there)`
      : '') +
    `; it is never adopted or deleted: remove it or choose another Volume name`
  );
}

/** Set True once an HTTP import's file was verified and handed to libvirt; kept afterwards. */
export const IMPORTED = 'Imported';

export type ImportDecision =
  | { do: 'converged' }
  | { do: 'conflict'; message: string }
  /** Our file from an upload that was interrupted: delete it and import again. */
  | { do: 'discard' }
  | { do: 'download' }
  /** Downloading, or failed and waiting for the retry time. */
  | { do: 'wait' }
  /** Verified: first record the path in status, so a crash during the upload leaves a file we know is ours. */
  | { do: 'record'; path: string }
  | { do: 'upload' };

export interface ImportState {
  /** uploaded: this process finished the upload; the status saying so may not be seen yet. */
  state: 'downloading' | 'verified' | 'failed' | 'uploaded';
  retryAt?: number;
}

/**
 * The next step of an HTTP import. The file's content can only be trusted once the upload
 * finished (the Imported condition); a file whose path our status records but whose upload did
 * not complete is a partial upload and is replaced. `plannedPath` is where the file will be,
 * needed once the download is verified.
 */
export function planImport(
  vol: Volume,
  observed: ObservedVolume | undefined,
  job: ImportState | undefined,
  nowMs: number,
  plannedPath: string | undefined,
): ImportDecision {
  if (observed) {
    if (observed.path === undefined || vol.status?.path !== observed.path) {
      return { do: 'conflict', message: conflictMessage(observed) };
    }
    // The cached status may predate our own Imported write (its watch event arrives after
    // the next pass began), so a file this process finished uploading is never taken for an
    // interrupted one: discarding it would pull a kernel or disk from under a machine that
    // the API server already saw the Volume Available for.
    return job?.state === 'uploaded' ||
      findCondition(vol.status?.conditions, IMPORTED)?.status === 'True'
      ? { do: 'converged' }
      : { do: 'discard' };
  }
  // A file we uploaded that is gone now (deleted behind our back) is imported again.
  if (!job || job.state === 'uploaded') return { do: 'download' };
  if (job.state === 'downloading') return { do: 'wait' };
  if (job.state === 'failed')
    return nowMs >= (job.retryAt ?? 0) ? { do: 'download' } : { do: 'wait' };
  if (plannedPath === undefined)
    throw new Error('planImport: a verified import needs the planned path');
  return vol.status?.path === plannedPath ? { do: 'upload' } : { do: 'record', path: plannedPath };
}

/**
 * A file this Volume made whose header now names what it was not made with: a backing file
 * (or another one than its backingVolume's file) or an external data file. It was replaced or
 * rewritten on the host after the Volume checked it, and QEMU would open the host file it
 * names, a data file read-write: not Ready, so no machine starts on it, until a user removes
 * the file (the Volume makes it again) or puts the Volume's own back.
 * `backing`: the backingVolume's file, when known; undefined for a Volume without one.
 */
export function layersProblem(
  path: string,
  kind: SourceKind,
  layers: ImageLayers | undefined,
  backing: string | undefined,
): Problem | undefined {
  if (!layers) return undefined;
  const fix =
    `it was replaced or changed on the host after this Volume made it, and a machine would ` +
    `open the host file it names; no machine starts on it: remove the file (the Volume makes ` +
    `it again from its source) or restore the Volume's own`;
  if (layers.dataFile) {
    return {
      reason: 'InvalidImage',
      message: `the volume file ${path} keeps its data in an external data file; ${fix}`,
    };
  }
  const named = layers.backingFile;
  if (named === undefined) return undefined;
  if (kind === 'backingVolume' && (backing === undefined || named === backing)) return undefined;
  return {
    reason: 'InvalidImage',
    message:
      `the volume file ${path} names the backing file ${named}` +
      (kind === 'backingVolume' ? `, not its backingVolume's file ${backing}` : '') +
      `; ${fix}`,
  };
}

/**
 * A base whose file is gone while overlays made on it still have theirs: the file is not made
 * again. An overlay names its backing file by path, so a new blank file there would silently
 * become what they read under their own data (a corrupt disk, with no error anywhere). A
 * Volume nobody is layered on makes its lost file again as usual. `recorded`: the path
 * status records (the file it had); `overlays`: names of Volumes layered on it that made
 * their file. Pure.
 */
export function lostBaseProblem(
  recorded: string | undefined,
  overlays: readonly string[],
): Problem | undefined {
  if (recorded === undefined || overlays.length === 0) return undefined;
  const which = overlays.length === 1 ? 'Volume' : 'Volumes';
  return {
    reason: 'BaseFileMissing',
    message:
      `the volume file ${recorded} is gone, and ${which} ${overlays.join(', ')} ` +
      `${overlays.length === 1 ? 'is an overlay' : 'are overlays'} on it: a new blank file ` +
      `would become their backing file and corrupt what they read, so none is made; put the ` +
      `file back, or delete the overlays (the file is then made again)`,
  };
}

/**
 * An overlay that no machine can open because its base cannot be, as the base Volume's own
 * status says: its file is gone (`BaseFileMissing` without a file observed), or it is an
 * overlay itself whose base file is gone (`BaseFileMissing` with its own file there). Taken
 * from the status the base's agent writes after each look through libvirt, not from a look at
 * the file of this pass's own: that was a file-system call on every pass of every overlay, and
 * a base's status change wakes its overlays. `path`: this overlay's file. Pure.
 */
export function lostBaseOfOverlay(
  path: string,
  baseName: string,
  base: Volume | undefined,
): Problem | undefined {
  const ready = findCondition(base?.status?.conditions, 'Ready');
  if (ready?.status !== 'False' || ready.reason !== 'BaseFileMissing') return undefined;
  const backing = base?.status?.path ?? `the file of base Volume ${baseName}`;
  const ownFileThere = base?.status?.capacity !== undefined;
  return missingBackingProblem(path, backing, baseName, ownFileThere);
}

/** An overlay whose backing file (its base Volume's) is gone: no machine can open it. Pure. */
export function missingBackingProblem(
  path: string,
  backing: string,
  base: string,
  /** The base's file is there, but it is an overlay whose own base file is gone. */
  deeper = false,
): Problem {
  return {
    reason: 'BaseFileMissing',
    message: deeper
      ? `the volume file ${path} is an overlay on ${backing}, the file of base Volume ${base}, ` +
        `which is an overlay itself whose base file is gone: no machine can open it; put that ` +
        `file back (base Volume ${base} names it)`
      : `the volume file ${path} is an overlay on ${backing}, the file of base Volume ${base}, ` +
        `which is gone: no machine can open it; put that file back (a new blank one would not ` +
        `hold what this overlay was made on)`,
  };
}
