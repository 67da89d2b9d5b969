// The file system a pool's directory was on while it ran, recorded in the agent's state
// directory. A directory on a mounted file system (a data disk, an NFS share) that is unmounted,
// or not mounted yet after a reboot when libvirtd autostarts the pool, leaves the pool running
// on the empty mount point, or its directory missing: libvirt sees nothing wrong with either,
// and every Volume would then make its file again, blank, on the file system below (a raw one
// at its full size, filling the root file system), under the real files once they are mounted
// again. The record is the mount point only (never a device number, which may change at a
// reboot), so "is it still a mount point" can be asked after an agent restart too.
//
// Mounts are read from /proc/self/mountinfo, and only a whole file system mounted somewhere
// (its "root" field is "/") is recorded, never a bind mount of a subdirectory: the same agent
// runs as a host process and as the DaemonSet's pod, sharing one state directory, and in the
// pod every hostPath (/srv/libvirt-pools, /var/lib/libvirt) is such a bind mount. Recorded
// there, it would read as unmounted to the same host's agent run as a process, which sees a
// plain directory, and stop a pool that lost nothing.
//
// Shared: the StoragePool controller notes the record and stops the pool; the Volume
// controller reads it too, because its passes run beside the pool's and one may come first.
import { mkdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { resolvedPath } from './pool.js';

/** One line of /proc/<pid>/mountinfo, the fields used here (proc(5)). */
export interface MountEntry {
  /** Where it is mounted, as this process sees it. */
  mountPoint: string;
  /** The directory of its file system shown there: "/" for a whole file system. */
  root: string;
  fsType: string;
  /**
   * Whether mounts made later under it elsewhere reach this view (mountinfo's optional fields
   * "shared:N" or "master:N"); a private copy, such as a pod's hostPath without
   * mountPropagation, keeps what was mounted when it was made.
   */
  propagates: boolean;
}

// The kernel writes space, tab, newline and backslash in paths as \ and three octal digits.
const unescapeMountPath = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));

/**
 * The mounts listed in mountinfo text, in its order (a later mount on the same point hides an
 * earlier one). A line is "id parent major:minor root mountpoint options [optional fields...]
 * - fstype source superoptions"; the optional fields vary in number, hence the separator.
 */
export function parseMountInfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (fields.length < 7 || separator < 0 || separator + 1 >= fields.length) continue;
    mounts.push({
      root: unescapeMountPath(fields[3]!),
      mountPoint: unescapeMountPath(fields[4]!),
      fsType: fields[separator + 1]!,
      propagates: fields.slice(6, separator).some((f) => /^(shared|master):/.test(f)),
    });
  }
  return mounts;
}

const isAtOrUnder = (path: string, dir: string) =>
  dir === '/' || path === dir || path.startsWith(`${dir}/`);

/**
 * The mount that holds the absolute, resolved `path`: the longest mount point at or above it,
 * the last listed of several on one point (the one on top).
 */
export function mountHolding(mounts: MountEntry[], path: string): MountEntry | undefined {
  let holding: MountEntry | undefined;
  for (const m of mounts)
    if (isAtOrUnder(path, m.mountPoint) && m.mountPoint.length >= (holding?.mountPoint.length ?? 0))
      holding = m;
  return holding;
}

/**
 * The mount point to watch for a pool whose resolved directory is `path`: that of the whole file
 * system holding it, when that is not `/`. Undefined for `/`, and for a bind mount of a
 * subdirectory (a hostPath, an emptyDir): another view of the same host (the agent as a
 * process) would not see it mounted.
 */
export function watchedMountPoint(mounts: MountEntry[], path: string): string | undefined {
  const holding = mountHolding(mounts, path);
  if (holding === undefined || holding.mountPoint === '/' || holding.root !== '/') return undefined;
  return holding.mountPoint;
}

/**
 * Whether `mountPoint`, recorded for a pool whose resolved directory is `path`, is lost: no
 * whole file system mounted there now, with the pool's directory on one mounted above it (the
 * one underneath). A bind mount of a directory there does not count: in the pod, after a
 * reboot that did not mount the disk, the hostPath is a bind of the plain directory left
 * underneath. A pool seen through another mount below the recorded point (the pod's hostPath
 * of a subdirectory of a data disk the agent noted as a host process) is not judged: that
 * view cannot tell whether the disk is mounted on the host.
 */
export function mountLost(mounts: MountEntry[], mountPoint: string, path: string): boolean {
  const atPoint = mountHolding(mounts, mountPoint);
  if (atPoint?.mountPoint === mountPoint && atPoint.root === '/') return false;
  const holding = mountHolding(mounts, path);
  if (holding === undefined) return false;
  return holding.mountPoint === mountPoint || !isAtOrUnder(holding.mountPoint, mountPoint);
}

/**
 * Whether this view of `path` misses what the host mounts later: it is seen through a private
 * bind mount of a directory (the agent's pod, its hostPath mounted without mountPropagation),
 * which keeps the mounts there were when the pod started. A file system mounted on the host
 * after that shows here as the plain directory underneath until the pod restarts. Pure.
 */
export function viewMissesLaterMounts(mounts: MountEntry[], path: string): boolean {
  const holding = mountHolding(mounts, path);
  return holding !== undefined && holding.root !== '/' && !holding.propagates;
}

/** viewMissesLaterMounts for this process and the pool directory `path`. */
export async function missesLaterMounts(path: string): Promise<boolean> {
  return viewMissesLaterMounts(await readMounts(), await resolvedPath(path));
}

const isDirectory = (path: string) =>
  stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );

const readMounts = async () => parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));

function recordPath(stateDir: string, uid: string): string {
  return join(stateDir, 'pools', `${uid}.mount.json`);
}

async function recordedMountPoint(stateDir: string, uid: string): Promise<string | undefined> {
  const text = await readFile(recordPath(stateDir, uid), 'utf8').catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    },
  );
  return text === undefined ? undefined : (JSON.parse(text) as { mountPoint: string }).mountPoint;
}

/**
 * Records the mount point a running pool's directory is on, once (nothing for a directory on
 * the root file system or a bind mount, or one the agent cannot see).
 */
export async function noteMountPoint(stateDir: string, uid: string, path: string): Promise<void> {
  if ((await recordedMountPoint(stateDir, uid)) !== undefined) return;
  const resolved = await realpath(path).catch(() => undefined);
  if (resolved === undefined) return;
  const mountPoint = watchedMountPoint(await readMounts(), resolved);
  if (mountPoint === undefined) return;
  const file = recordPath(stateDir, uid);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Written aside and renamed: a crash never leaves half a record.
  await writeFile(`${file}.tmp`, JSON.stringify({ mountPoint }));
  await rename(`${file}.tmp`, file);
}

/**
 * The recorded mount point when it is no longer one (unmounted, or gone) and the pool's
 * directory `path` would be on the file system underneath; else undefined.
 */
export async function lostMountPoint(
  stateDir: string,
  uid: string,
  path: string,
): Promise<string | undefined> {
  const mountPoint = await recordedMountPoint(stateDir, uid);
  if (mountPoint === undefined) return undefined;
  // An unmounted file system leaves the directory it was mounted on. Where that is not there
  // either, this view does not show that part of the host: the agent's pod, for a pool outside
  // its host paths (libvirtd on the host uses it all the same), reading a record the same
  // host's agent left as a process. Stopping the pool there would stop one that lost nothing.
  // (Two nested file systems both unmounted go unseen too: the inner point is gone with the
  // outer one.)
  if (!(await isDirectory(mountPoint))) return undefined;
  // Resolved as far as it exists: the directory may have gone with the file system.
  const lost = mountLost(await readMounts(), mountPoint, await resolvedPath(path));
  return lost ? mountPoint : undefined;
}

export async function forgetMountPoint(stateDir: string, uid: string): Promise<void> {
  await rm(recordPath(stateDir, uid), { force: true });
}
