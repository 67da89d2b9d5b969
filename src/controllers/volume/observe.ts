// What the host has for a Volume: its pool (the StoragePool's libvirt pool on this node, found
// by the StoragePool's uid), the volume file in it, and for copies and overlays the source
// Volume's file. Reads only; a missing prerequisite is a NotReady value, never a throw.
import { open, stat } from 'node:fs/promises';
import type { StoragePool, VirtualMachine, Volume } from '../../api/generated/types.js';
import { findCondition } from '../../api/conditions.js';
import { volumeFileName } from '../../api/names.js';
import type { ControllerContext } from '../context.js';
import type { Domain } from '../../libvirt/domain.js';
import { isNotFound, isOperationInvalid } from '../../libvirt/errors.js';
import type { StoragePool as LibvirtPool, StorageVol } from '../../libvirt/storage.js';
import { parsePoolXML } from '../../libvirt/xml/pool.js';
import { isVolumeFormat, parseVolumeXML, type ObservedVolume } from '../../libvirt/xml/volume.js';
import { observeMachineDomain } from '../shared/machine-snapshot.js';
import { selectsNode } from '../node-selector.js';
import { lookupPool } from '../shared/pool.js';
import { lostMountPoint } from '../shared/pool-mounts.js';
import type { SourceImage } from './desired.js';
import { answeredWithin, HEADER_READ_TIMEOUT_MS } from './header-check.js';
import { qcow2Layers } from './import.js';
import { withPoolLock, type PoolLocks } from '../shared/pool-lock.js';

export interface NotReady {
  reason: 'PoolNotReady' | 'PoolNotOnNode' | 'SourceNotReady' | 'SourceNotOnNode';
  message: string;
  /** The host object is gone for good (not merely stopped): deletion need not wait for it. */
  gone?: boolean;
}

export interface ReadyPool {
  name: string;
  handle: LibvirtPool;
  /** This host's pool locks (pool-lock.ts): storage operations in one pool run one at a time. */
  locks: PoolLocks;
}

/**
 * Why the pool's agent says the pool is not ready on this node, for a Volume waiting on it: a
 * refusal only a user can clear (PathNested, PathConflict, ...) is read on the Volume too.
 */
function poolSays(pool: StoragePool, nodeName: string): string {
  const entry = pool.status?.nodes?.find((n) => n.nodeName === nodeName);
  const ready = findCondition(entry?.conditions, 'Ready');
  return ready?.status === 'False' ? ` (the pool says ${ready.reason}: ${ready.message})` : '';
}

/** The pool a Volume's file goes in, when it exists on this host and runs. */
export async function usablePool(
  ctx: ControllerContext,
  poolName: string,
): Promise<ReadyPool | NotReady> {
  const pool = ctx.get<StoragePool>('StoragePool', undefined, poolName);
  const at = `on node ${ctx.nodeName}`;
  if (!pool?.metadata.uid) {
    return {
      reason: 'PoolNotReady',
      message: `StoragePool ${poolName} does not exist`,
      gone: true,
    };
  }
  const handle = await lookupPool(ctx.libvirt(), pool.metadata.uid);
  const node = ctx.node();
  if (!handle && node && !selectsNode(pool.spec.nodeSelector, node.metadata.labels ?? {})) {
    // Not a wait: no agent makes the pool here until a user labels the node or changes the
    // selector (as NetworkNotOnNode for a machine). While the Node is unknown it stays a wait.
    return {
      reason: 'PoolNotOnNode',
      message:
        `spec.pool: StoragePool ${poolName} is not on node ${ctx.nodeName}: its ` +
        `spec.nodeSelector does not select this node; label the node, change the pool's ` +
        `nodeSelector, or create the Volume on a node the pool selects`,
      gone: true,
    };
  }
  if (!handle) {
    return {
      reason: 'PoolNotReady',
      message: `StoragePool ${poolName} is not present ${at}${poolSays(pool, ctx.nodeName)}`,
      gone: true,
    };
  }
  if (!(await handle.isActive())) {
    return {
      reason: 'PoolNotReady',
      message: `StoragePool ${poolName} is not running ${at}${poolSays(pool, ctx.nodeName)}`,
    };
  }
  // Running is not enough: after a reboot that did not mount the pool's file system, libvirtd
  // autostarts the pool on the directory underneath, and this pass may run before the
  // StoragePool's, which stops it (NotMounted). A file made now would be a blank one there.
  const unmounted = await lostMountPoint(ctx.stateDir, pool.metadata.uid, pool.spec.path);
  if (unmounted !== undefined) {
    return {
      reason: 'PoolNotReady',
      message:
        `StoragePool ${poolName} ${at}: spec.path ${pool.spec.path} was on the file system ` +
        `mounted at ${unmounted}, which is not mounted now; mount it again`,
    };
  }
  return { name: poolName, handle, locks: ctx.host.poolLocks };
}

export interface HostVolume {
  handle: StorageVol;
  doc: ObservedVolume;
  /**
   * When the file's inode last changed (ctime), as libvirt reports it; undefined when it
   * reports none (libvirt's test driver has no files). Only the ownership test of
   * an unrecorded file uses it (plan.ts, ownsVolume).
   */
  changedAt?: Date;
}

/**
 * The volume called `name` in the pool, or undefined. A volume whose file was deleted behind
 * libvirt's back is still listed by name until the pool is refreshed, though reading it says
 * "not found": creating it again would fail with "exists already" for ever (and a Volume
 * with an HTTP source download its image again before each try). So the pool is refreshed,
 * in turn with the pool's other storage operations, and the volume reported absent.
 */
export async function observeVolume(
  pool: ReadyPool,
  name: string,
): Promise<HostVolume | undefined> {
  let handle: StorageVol | undefined;
  try {
    handle = await pool.handle.lookupStorageVolByName(name);
    const doc = parseVolumeXML(await handle.getXMLDesc(0));
    const changedAt = fileChangedAt(doc);
    return { handle, doc, ...(changedAt ? { changedAt } : {}) };
  } catch (err) {
    // Not found, or the pool stopped between our look and this call.
    if (isNotFound(err, 'storageVol') || isOperationInvalid(err)) {
      if (handle && isNotFound(err, 'storageVol')) await refreshListing(pool);
      return undefined;
    }
    throw err;
  }
}

/**
 * When the file at `path` was made (its birth time: statx on Linux; ext4, xfs and tmpfs keep
 * it), for plan.ts ownsVolume when its ctime cannot tell (birthTimeDecides). Undefined when
 * unknown: a file system without it (Node reports 0), a failed look, or one that did not
 * answer within `timeoutMs` (a hung network file system: bounded like the header read).
 */
export async function fileBornAt(
  path: string,
  timeoutMs = HEADER_READ_TIMEOUT_MS,
  look: (path: string) => Promise<{ birthtimeMs: number }> = stat,
): Promise<Date | undefined> {
  const born = look(path).then(
    (s) =>
      Number.isFinite(s.birthtimeMs) && s.birthtimeMs > 0 ? new Date(s.birthtimeMs) : undefined,
    () => undefined,
  );
  return answeredWithin(born, timeoutMs);
}

/**
 * The file's ctime as libvirt read it for the volume's XML (`<timestamps><ctime>`, seconds with
 * a fraction): no access to the pool's files of our own. Undefined where libvirt reports none
 * (the test driver).
 */
function fileChangedAt(doc: ObservedVolume): Date | undefined {
  const seconds = doc.changed ? Number(doc.changed.ctime.split('.')[0]) : NaN;
  return Number.isFinite(seconds) ? new Date(seconds * 1000) : undefined;
}

/**
 * Re-reads the pool's directory, in turn with the pool's other storage operations, so libvirt
 * lists the files in it as they are now.
 */
export async function refreshListing(pool: ReadyPool): Promise<void> {
  await withPoolLock(pool.locks, pool.name, () => pool.handle.refresh(0)).catch((err: unknown) => {
    // A pool that stopped meanwhile has nothing to list.
    if (!isOperationInvalid(err)) throw err;
  });
}

export interface ReadySource {
  image: SourceImage;
  handle: StorageVol;
}

/**
 * The source Volume's file, once that Volume is Available on this node. A source that is being
 * deleted is not used: taking a new dependency on it would hold its deletion forever.
 */
export async function observeSource(
  ctx: ControllerContext,
  vol: Volume,
  sourceName: string,
): Promise<ReadySource | NotReady> {
  const namespace = String(vol.metadata.namespace);
  const key = `${namespace}/${sourceName}`;
  const notReady = (message: string): NotReady => ({ reason: 'SourceNotReady', message });
  // The agent's cache holds only its own node's Volumes: one missing from it is asked of the
  // API server (once per pass; such a Volume is retried with backoff), since one on another
  // node can never be copied here (spec.nodeName is immutable on both): only a user can fix
  // that (SourceNotOnNode, Stalled), where a source not created yet is waited for.
  const source =
    ctx.get<Volume>('Volume', namespace, sourceName) ??
    (await ctx.getFromServer<Volume>('Volume', namespace, sourceName));
  if (!source) return notReady(`source Volume ${key} does not exist on node ${ctx.nodeName}`);
  if (source.spec.nodeName !== ctx.nodeName) {
    return {
      reason: 'SourceNotOnNode',
      message:
        `source Volume ${key} is on node ${source.spec.nodeName}, not on ${ctx.nodeName}: a ` +
        `Volume is copied or layered only from a Volume on its own node; create this Volume ` +
        `on node ${source.spec.nodeName}, or its source on ${ctx.nodeName}`,
    };
  }
  if (source.metadata.deletionTimestamp) return notReady(`source Volume ${key} is being deleted`);
  const phase = source.status?.phase;
  if (phase !== 'Available' && phase !== 'InUse') {
    return notReady(`source Volume ${key} is not Available yet (phase ${phase ?? 'unknown'})`);
  }
  const pool = await usablePool(ctx, source.spec.pool);
  if ('reason' in pool) return notReady(`source Volume ${key}: ${pool.message}`);
  const found = await observeVolume(pool, volumeFileName(source));
  if (!found?.doc.path)
    return notReady(`source Volume ${key} has no file in pool ${source.spec.pool}`);
  const format = found.doc.format;
  if (!isVolumeFormat(format)) {
    // Only a file imported before such images were refused: libvirt probes it as another
    // format, which a copy or an overlay would carry on.
    return notReady(
      `source Volume ${key}: its file ${found.doc.path} is in format ${format}, which is ` +
        `neither qcow2 nor raw; re-create the source Volume from an image in one of them`,
    );
  }
  return {
    handle: found.handle,
    image: { path: found.doc.path, capacity: found.doc.capacity, format },
  };
}

/** Where a new volume called `name` will be: the pool's directory (dir pools) + the name. */
export async function plannedPath(pool: LibvirtPool, name: string): Promise<string> {
  const dir = parsePoolXML(await pool.getXMLDesc(0)).target.path;
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

/** A disk of a running domain: its QEMU has the Volume's file open. */
export interface LiveDisk {
  domain: Domain;
  /** The guest's device name, e.g. vda. */
  target: string;
  /** The VirtualMachine's name, and namespace/name. */
  name: string;
  vm: string;
  /** A read-only disk takes no write lock on the file. */
  readonly: boolean;
}

/**
 * The disks of those `machines`' running domains whose file is `path`. QEMU holds a lock on
 * such a file: it can grow only through QEMU (virDomainBlockResize, which also lets the guest
 * see the new size), qemu-img cannot copy it while it is writable, and it must not be deleted.
 */
export async function liveDisksOf(
  ctx: ControllerContext,
  machines: readonly VirtualMachine[],
  path: string,
): Promise<LiveDisk[]> {
  const disks: LiveDisk[] = [];
  for (const vm of machines) {
    const found = await observeMachineDomain(ctx.libvirt(), vm);
    if (!found?.active) continue;
    const name = String(vm.metadata.name);
    for (const d of found.disks.filter((d) => d.source === path)) {
      const { domain } = found;
      const vmKey = `${vm.metadata.namespace}/${name}`;
      disks.push({ domain, target: d.name, name, vm: vmKey, readonly: d.readonly });
    }
  }
  return disks;
}

/** The names of the machines with a disk among `disks`, each once. */
export function holderNames(disks: readonly LiveDisk[]): string[] {
  return [...new Set(disks.map((d) => d.name))];
}

/** What QEMU would open besides a qcow2 volume file, read from its header. */
export interface ImageLayers {
  backingFile?: string;
  dataFile: boolean;
}

/** The most of a backing file name qcow2 allows (QEMU refuses longer ones). */
const BACKING_NAME_MAX = 1023;

/**
 * The layers the qcow2 header of `path` names, read from the file itself: libvirt reads a
 * volume's backing store only at a pool refresh (its per-volume refresh, run by every
 * getXMLDesc, keeps the old one: measured on libvirt 9.0), so a file replaced on the host
 * would go unseen. Two small reads, cheap enough for every pass. Undefined when the agent
 * cannot read the file (a pool directory not mounted into its container) or it is not qcow2.
 */
export async function readImageLayers(path: string): Promise<ImageLayers | undefined> {
  const file = await open(path, 'r').catch(() => undefined);
  if (!file) return undefined;
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await file.read(head, 0, head.length, 0);
    const layers = qcow2Layers(head.subarray(0, bytesRead));
    if (!layers) return undefined;
    if (!layers.backingFile) return { dataFile: layers.dataFile };
    const name = Buffer.alloc(Math.min(layers.backingFile.length, BACKING_NAME_MAX));
    const read = await file.read(name, 0, name.length, layers.backingFile.offset);
    return {
      backingFile: name.subarray(0, read.bytesRead).toString('utf8'),
      dataFile: layers.dataFile,
    };
  } catch {
    return undefined;
  } finally {
    await file.close();
  }
}
