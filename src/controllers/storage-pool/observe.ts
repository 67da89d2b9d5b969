// What the host has for a StoragePool: the pool found by UUID (ours), a pool that holds our
// name under another UUID (a clash), or nothing. Reads only.
import { systemDirOf } from '../../api/rules.js';
import type { Connect } from '../../libvirt/connection.js';
import { isConnectionError, isLibvirtError, isUnsupported } from '../../libvirt/errors.js';
import { StorageXMLFlags } from '../../libvirt/constants.js';
import type { StoragePool as LibvirtPool } from '../../libvirt/storage.js';
import { parsePoolXML, type PoolDocument } from '../../libvirt/xml/pool.js';
import { absentIfNotFound } from '../shared/absent.js';
import { lookupPool, resolvedPath } from '../shared/pool.js';
import { withPoolLock, type PoolLocks } from '../shared/pool-lock.js';

export interface PoolFigures {
  /** libvirt's state name: inactive, building, running, degraded, inaccessible. */
  state: string;
  capacity: bigint;
  allocation: bigint;
  available: bigint;
}

export type ObservedPool =
  | { found: 'none' }
  | { found: 'clash'; uuid: string }
  | {
      found: 'ours';
      handle: LibvirtPool;
      /** The persistent definition (what the next start uses), when libvirt can tell it. */
      doc: PoolDocument;
      active: boolean;
      persistent: boolean;
      autostart: boolean;
      figures: PoolFigures;
      /**
       * Why libvirt stopped the pool when this pass refreshed it (its directory could not be
       * read: removed behind the operator's back, replaced by a file).
       */
      lost?: string;
    };

type OursObserved = Extract<ObservedPool, { found: 'ours' }>;

export async function observePool(conn: Connect, desired: PoolDocument): Promise<ObservedPool> {
  const handle = await lookupPool(conn, desired.uuid);
  if (!handle) {
    const clash = await conn
      .lookupStoragePoolByName(desired.name)
      .catch(absentIfNotFound('storagePool'));
    return clash ? { found: 'clash', uuid: clash.getUUIDString() } : { found: 'none' };
  }
  const [xml, info, persistent, autostart] = await Promise.all([
    persistentXML(conn, handle),
    handle.getInfo(),
    handle.isPersistent(),
    handle.getAutostart(),
  ]);
  return {
    found: 'ours',
    handle,
    doc: parsePoolXML(xml),
    active: info.stateName === 'running',
    persistent,
    autostart,
    figures: {
      state: info.stateName,
      capacity: info.capacity,
      allocation: info.allocation,
      available: info.available,
    },
  };
}

/**
 * A running pool looked at inside: libvirt keeps reporting a dir pool as running after its
 * directory was removed, until a refresh fails to read it and stops the pool. The refresh runs
 * under the pool lock (beside a volume being built libvirt refuses it). A refresh refused
 * while the pool stays running (another client's job) proves nothing and is not reported.
 */
export async function refreshPool(
  observed: OursObserved,
  locks: PoolLocks,
  poolName: string,
): Promise<OursObserved> {
  const failure = await withPoolLock(locks, poolName, () => observed.handle.refresh(0)).then(
    () => undefined,
    (err: unknown) => {
      if (!isLibvirtError(err) || isConnectionError(err)) throw err;
      return err.message;
    },
  );
  if (failure === undefined) return observed;
  const info = await observed.handle.getInfo();
  if (info.stateName === 'running') return observed;
  return {
    ...observed,
    active: false,
    figures: { ...observed.figures, state: info.stateName },
    lost: failure,
  };
}

/** Another libvirt pool on the host (any owner) and its target path as defined. */
export interface PoolTarget {
  name: string;
  path: string;
}

/** The host's other libvirt pools (any owner) with their target paths, by their definitions. */
export async function otherPoolTargets(conn: Connect, uuid: string): Promise<PoolTarget[]> {
  const targets: PoolTarget[] = [];
  for (const pool of await conn.listAllStoragePools()) {
    if (pool.getUUIDString() === uuid) continue;
    // Another pass may remove a pool between the list and this read (pools are deleted in
    // parallel): a pool gone has no directory to keep.
    const xml = await persistentXML(conn, pool).catch(absentIfNotFound('storagePool'));
    const doc = xml === undefined ? undefined : parsePoolXML(xml);
    if (doc?.target.path) targets.push({ name: doc.name, path: doc.target.path });
  }
  return targets;
}

/**
 * The directories of the host's other libvirt pools (any owner), by their definitions: each
 * path as written and where it leads, so a pool that reaches a directory through a symbolic
 * link keeps it too.
 */
export async function otherPoolDirs(conn: Connect, uuid: string): Promise<Set<string>> {
  const paths = (await otherPoolTargets(conn, uuid)).map((t) => t.path);
  return new Set([...paths, ...(await Promise.all(paths.map(resolvedPath)))]);
}

/**
 * The other pools' target paths with symbolic links followed (resolvedPath), for comparing
 * with spec.path: libvirt compares the paths as written, so a link reaches its check unseen.
 */
export async function resolvedPoolTargets(conn: Connect, uuid: string): Promise<PoolTarget[]> {
  const targets = await otherPoolTargets(conn, uuid);
  return Promise.all(
    targets.map(async (t) => ({ name: t.name, path: await resolvedPath(t.path) })),
  );
}

// Compare against the persistent definition: after a redefine the running pool keeps its old
// XML until restarted, and comparing that would redefine on every pass. The test driver
// refuses the INACTIVE flag (its live and persistent definitions are one), so connections
// that refused it once are asked without it.
const noInactiveFlag = new WeakSet<Connect>();

async function persistentXML(conn: Connect, pool: LibvirtPool): Promise<string> {
  if (!noInactiveFlag.has(conn)) {
    try {
      return await pool.getXMLDesc(StorageXMLFlags.INACTIVE);
    } catch (err) {
      if (!isUnsupported(err)) throw err;
      noInactiveFlag.add(conn);
    }
  }
  return pool.getXMLDesc(0);
}

/**
 * Where spec.path leads once symbolic links are followed, when that is a system directory the
 * schema keeps pools out of (it can judge only the path as written): a link such as
 * /srv/pool -> /etc would have libvirt build, fill and remove the pool's files there. The
 * deepest existing part of the path is resolved; undefined when it leads nowhere forbidden.
 */
export async function forbiddenTarget(path: string): Promise<string | undefined> {
  const target = await resolvedPath(path);
  return systemDirOf(target) ? target : undefined;
}
