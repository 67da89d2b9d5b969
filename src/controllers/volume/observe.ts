// What the host has for a Volume: its pool (the StoragePool's libvirt pool on this node, found
// by the StoragePool's uid), the volume file in it, and for copies and overlays the source
// Volume's file. Reads only; a missing prerequisite is a NotReady value, never a throw.
import type { StoragePool, VirtualMachine, Volume } from '../../api/generated/types.js';
import { volumeFileName } from '../../api/names.js';
import type { ControllerContext } from '../context.js';
import type { Domain } from '../../libvirt/domain.js';
import { isNotFound, isOperationInvalid } from '../../libvirt/errors.js';
import type { StoragePool as LibvirtPool, StorageVol } from '../../libvirt/storage.js';
import { parsePoolXML } from '../../libvirt/xml/pool.js';
import { parseVolumeXML, type ObservedVolume } from '../../libvirt/xml/volume.js';
import { observeMachineDomain } from '../shared/machine-snapshot.js';
import { lookupPool } from '../shared/pool.js';
import type { SourceImage } from './desired.js';
import type { PoolLocks } from './pool-lock.js';

export interface NotReady {
  reason: 'PoolNotReady' | 'SourceNotReady';
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
  if (!handle) {
    return {
      reason: 'PoolNotReady',
      message: `StoragePool ${poolName} is not present ${at}`,
      gone: true,
    };
  }
  if (!(await handle.isActive())) {
    return { reason: 'PoolNotReady', message: `StoragePool ${poolName} is not running ${at}` };
  }
  return { name: poolName, handle, locks: ctx.host.poolLocks };
}

export interface HostVolume {
  handle: StorageVol;
  doc: ObservedVolume;
}

/** The volume called `name` in the pool, or undefined. */
export async function observeVolume(
  pool: LibvirtPool,
  name: string,
): Promise<HostVolume | undefined> {
  try {
    const handle = await pool.lookupStorageVolByName(name);
    return { handle, doc: parseVolumeXML(await handle.getXMLDesc(0)) };
  } catch (err) {
    // Not found, or the pool stopped between our look and this call.
    if (isNotFound(err, 'storageVol') || isOperationInvalid(err)) return undefined;
    throw err;
  }
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
  const source = ctx.get<Volume>('Volume', namespace, sourceName);
  // The agent only sees Volumes of its own node, so "missing" includes "on another node".
  if (!source) return notReady(`source Volume ${key} does not exist on node ${ctx.nodeName}`);
  if (source.spec.nodeName !== ctx.nodeName) {
    return notReady(
      `source Volume ${key} is on node ${source.spec.nodeName}, not on ${ctx.nodeName}`,
    );
  }
  if (source.metadata.deletionTimestamp) return notReady(`source Volume ${key} is being deleted`);
  const phase = source.status?.phase;
  if (phase !== 'Available' && phase !== 'InUse') {
    return notReady(`source Volume ${key} is not Available yet (phase ${phase ?? 'unknown'})`);
  }
  const pool = await usablePool(ctx, source.spec.pool);
  if ('reason' in pool) return notReady(`source Volume ${key}: ${pool.message}`);
  const found = await observeVolume(pool.handle, volumeFileName(source));
  if (!found?.doc.path)
    return notReady(`source Volume ${key} has no file in pool ${source.spec.pool}`);
  return {
    handle: found.handle,
    image: { path: found.doc.path, capacity: found.doc.capacity, format: found.doc.format },
  };
}

/** Where a new volume called `name` will be: the pool's directory (dir pools) + the name. */
export async function plannedPath(pool: LibvirtPool, name: string): Promise<string> {
  const dir = parsePoolXML(await pool.getXMLDesc(0)).target.path;
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

/**
 * The names of those `machines` whose running domain has the file `path` as a disk (only as a
 * writable one with `writable`: a read-only disk takes no write lock).
 */
export async function machinesHolding(
  ctx: ControllerContext,
  machines: readonly VirtualMachine[],
  path: string,
  writable = false,
): Promise<string[]> {
  const names: string[] = [];
  for (const vm of machines) {
    const found = await observeMachineDomain(ctx.libvirt(), vm);
    if (found?.active && found.disks.some((d) => d.source === path && !(writable && d.readonly))) {
      names.push(String(vm.metadata.name));
    }
  }
  return names;
}

/** A disk of a running domain whose QEMU has the volume's file open. */
export interface LiveDisk {
  domain: Domain;
  /** The guest's device name, e.g. vda. */
  target: string;
  /** namespace/name of the VirtualMachine. */
  vm: string;
}

/**
 * The running domain, among the VirtualMachines that use the Volume, that has its file open as
 * a disk. QEMU holds a write lock on such a file, so it can only grow through QEMU
 * (virDomainBlockResize), which also lets the guest see the new size.
 */
export async function liveDiskOf(
  ctx: ControllerContext,
  vol: Volume,
  vms: readonly string[],
  path: string,
): Promise<LiveDisk | undefined> {
  const namespace = String(vol.metadata.namespace);
  for (const name of vms) {
    const vm = ctx.get<VirtualMachine>('VirtualMachine', namespace, name);
    const found = vm && (await observeMachineDomain(ctx.libvirt(), vm));
    const disk = found?.active ? found.disks.find((d) => d.source === path) : undefined;
    if (found && disk)
      return { domain: found.domain, target: disk.name, vm: `${namespace}/${name}` };
  }
  return undefined;
}
