// The directories a pool's build made on this host, recorded in the agent's state directory so
// that removal takes away exactly those. libvirt's build of a dir pool creates spec.path and
// every missing parent (mode 0755); its pool delete removes only spec.path (rmdir), even when
// that directory existed before the pool, and never a parent. The record is written before
// each build, so a crash between the two leaves at most directories named that were never
// made, and rmdir of those fails harmlessly.
import {
  lstat,
  mkdir,
  readFile,
  realpath,
  rename,
  rm,
  rmdir,
  stat,
  writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface MadeDirectories {
  /** spec.path as recorded. */
  path: string;
  /** spec.path itself was missing before a build (so the build made it). */
  target: boolean;
  /** Parents of spec.path that were missing before a build, deepest first. */
  parents: string[];
}

function recordPath(stateDir: string, uid: string): string {
  return join(stateDir, 'pools', `${uid}.json`);
}

/** spec.path and its parents that do not exist (a dangling link counts as existing). */
async function missingDirectories(path: string): Promise<string[]> {
  const missing: string[] = [];
  for (let dir = path; dir !== dirname(dir); dir = dirname(dir)) {
    const exists = await lstat(dir).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        // ENOTDIR: a file stands on the way; the build fails and makes nothing below it.
        // ENAMETOOLONG: a segment longer than the file system takes, so nothing can be there;
        // the build still makes the parents above it before it fails (PathTooLong).
        if (err.code === 'ENOENT' || err.code === 'ENAMETOOLONG') return false;
        if (err.code === 'ENOTDIR') return true;
        throw err;
      },
    );
    if (exists) break;
    missing.push(dir);
  }
  return missing;
}

/** Adds what the coming build will create to the pool's record (made on the first build). */
export async function noteBuild(stateDir: string, uid: string, path: string): Promise<void> {
  const missing = await missingDirectories(path);
  const before = await madeDirectories(stateDir, uid);
  const record: MadeDirectories = {
    path,
    target: (before?.target ?? false) || missing.includes(path),
    parents: [...new Set([...(before?.parents ?? []), ...missing.filter((d) => d !== path)])].sort(
      (a, b) => b.length - a.length,
    ),
  };
  if (before && JSON.stringify(before) === JSON.stringify(record)) return;
  const file = recordPath(stateDir, uid);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Written aside and renamed: a crash never leaves half a record.
  await writeFile(`${file}.tmp`, JSON.stringify(record));
  await rename(`${file}.tmp`, file);
}

/** The pool's record; undefined for pools built before records were kept (or never built). */
export async function madeDirectories(
  stateDir: string,
  uid: string,
): Promise<MadeDirectories | undefined> {
  const text = await readFile(recordPath(stateDir, uid), 'utf8').catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    },
  );
  return text === undefined ? undefined : (JSON.parse(text) as MadeDirectories);
}

/**
 * Removes the recorded parents, deepest first, while they are empty: rmdir never removes a
 * directory that holds anything (another pool below it, a file someone put there). A parent
 * that is another pool's directory (`poolDirs`) stays even when empty: this pool's build made
 * it, but that pool has used it since (also through a symbolic link). Returns those removed.
 */
export async function removeMadeParents(
  record: MadeDirectories,
  poolDirs: ReadonlySet<string>,
): Promise<string[]> {
  const removed: string[] = [];
  for (const dir of record.parents) {
    // The recorded path and where it now leads (a link above it: poolDirs holds both forms).
    const real = await realpath(dir).catch(() => dir);
    if (poolDirs.has(dir) || poolDirs.has(real)) break;
    const outcome = await rmdir(dir).then(
      () => 'removed' as const,
      // ENAMETOOLONG: a segment no directory can have, so none is there (PathTooLong).
      (err: NodeJS.ErrnoException) =>
        err.code === 'ENOENT' || err.code === 'ENAMETOOLONG' ? 'absent' : 'kept',
    );
    // A parent kept (not empty) keeps every parent above it too.
    if (outcome === 'kept') break;
    if (outcome === 'removed') removed.push(dir);
  }
  return removed;
}

/**
 * Why a spec.path the pool's build did not make is left on removal: a directory that was
 * there before the pool, a file standing there or at a parent, or nothing there any more.
 */
export async function unmadeTarget(
  path: string,
): Promise<'preexisting' | 'notDirectory' | 'absent'> {
  // stat, not lstat: a symbolic link to a directory is a directory to libvirt.
  return stat(path).then(
    (st) => (st.isDirectory() ? 'preexisting' : 'notDirectory'),
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOTDIR') return 'notDirectory';
      if (err.code === 'ENOENT' || err.code === 'ENAMETOOLONG') return 'absent';
      throw err;
    },
  );
}

export async function forgetMadeDirectories(stateDir: string, uid: string): Promise<void> {
  await rm(recordPath(stateDir, uid), { force: true });
}
