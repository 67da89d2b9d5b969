// The file system a pool's directory was on while it ran, recorded in the agent's state
// directory. A directory on a mounted file system (a data disk, an NFS share) that is unmounted,
// or not mounted yet after a reboot when libvirtd autostarts the pool, leaves the pool running
// on the empty mount point, or its directory missing: libvirt sees nothing wrong with either,
// and every Volume would then make its file again, blank, on the file system below (a raw one
// at its full size, filling the root file system), under the real files once they are mounted
// again. The record is the mount point only (never a device number, which may change at a
// reboot), so "is it still a mount point" can be asked after an agent restart too.
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

function recordPath(stateDir: string, uid: string): string {
  return join(stateDir, 'pools', `${uid}.mount.json`);
}

const deviceOf = (path: string) =>
  stat(path).then(
    (st) => st.dev,
    () => undefined,
  );

/**
 * The mount point of the file system holding `path`, when that is not the root file system:
 * the deepest directory at or above it whose parent is on another device. Undefined when
 * `path` cannot be read (an agent that does not see the pool's directory) or is on `/`.
 */
export async function mountPointOf(path: string): Promise<string | undefined> {
  const dev = await deviceOf(path);
  if (dev === undefined) return undefined;
  for (let dir = path; dir !== dirname(dir); dir = dirname(dir)) {
    const parent = await deviceOf(dirname(dir));
    if (parent === undefined) return undefined;
    if (parent !== dev) return dir;
  }
  return undefined;
}

/** Whether `dir` is (still) a mount point: on another device than its parent. */
async function isMountPoint(dir: string): Promise<boolean> {
  const [own, parent] = await Promise.all([deviceOf(dir), deviceOf(dirname(dir))]);
  return own !== undefined && parent !== undefined && own !== parent;
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
 * the root file system, or one the agent cannot see).
 */
export async function noteMountPoint(stateDir: string, uid: string, path: string): Promise<void> {
  if ((await recordedMountPoint(stateDir, uid)) !== undefined) return;
  const mountPoint = await mountPointOf(path);
  if (mountPoint === undefined) return;
  const file = recordPath(stateDir, uid);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Written aside and renamed: a crash never leaves half a record.
  await writeFile(`${file}.tmp`, JSON.stringify({ mountPoint }));
  await rename(`${file}.tmp`, file);
}

/** The recorded mount point when it is no longer one (unmounted, or gone); else undefined. */
export async function lostMountPoint(stateDir: string, uid: string): Promise<string | undefined> {
  const mountPoint = await recordedMountPoint(stateDir, uid);
  if (mountPoint === undefined) return undefined;
  return (await isMountPoint(mountPoint)) ? undefined : mountPoint;
}

export async function forgetMountPoint(stateDir: string, uid: string): Promise<void> {
  await rm(recordPath(stateDir, uid), { force: true });
}
