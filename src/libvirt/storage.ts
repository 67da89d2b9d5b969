import {
  FREED,
  HANDLE,
  native,
  type CallOptions,
  type PoolCalls,
  type PoolHandle,
  type RawPoolInfo,
  type RawVolInfo,
  type VolCalls,
  type VolHandle,
} from './addon.js';
import { FlaglessLifecycle, LibvirtObject, type Kind } from './object.js';
import { storagePoolStateName, storageVolTypeName } from './names.js';

export interface StoragePoolInfo extends RawPoolInfo {
  /** 'inactive', 'building', 'running', 'degraded', 'inaccessible' */
  stateName: string;
}

export interface StorageVolInfo extends RawVolInfo {
  /** 'file', 'block', 'dir', 'network', 'netdir', 'ploop' */
  typeName: string;
}

export interface TransferOptions extends CallOptions {
  /** Byte offset in the volume. */
  offset?: number | bigint;
  /** Bytes to transfer; 0 or absent: everything (upload: the whole file). */
  length?: number | bigint;
  /** StorageVolUploadFlags / StorageVolDownloadFlags */
  flags?: number;
}

/**
 * A libvirt storage pool (virStoragePoolPtr). Obtained from a Connect lookup,
 * listAllStoragePools, defineStoragePoolXML/createStoragePoolXML or an event.
 */
export class StoragePool extends FlaglessLifecycle<PoolHandle, PoolCalls> {
  protected get kind(): Kind<PoolHandle, PoolCalls> {
    return POOL;
  }

  /** Creates the pool's backing (the directory of a dir pool); flags: StoragePoolBuildFlags. */
  build(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePool.build(this[HANDLE], flags, this.timeout(opts));
  }

  /** Starts a defined pool; flags: StoragePoolCreateFlags. */
  create(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePool.create(this[HANDLE], flags, this.timeout(opts));
  }

  /** Removes the pool's backing (the inverse of build); flags: StoragePoolDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePool.delete(this[HANDLE], flags, this.timeout(opts));
  }

  refresh(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePool.refresh(this[HANDLE], flags, this.timeout(opts));
  }

  async getInfo(opts?: CallOptions): Promise<StoragePoolInfo> {
    const info = await native.storagePool.getInfo(this[HANDLE], this.timeout(opts));
    return { ...info, stateName: storagePoolStateName(info.state) };
  }

  numOfVolumes(opts?: CallOptions): Promise<number> {
    return native.storagePool.numOfVolumes(this[HANDLE], this.timeout(opts));
  }

  async listAllVolumes(flags = 0, opts?: CallOptions): Promise<StorageVol[]> {
    const handles = await native.storagePool.listAllVolumes(
      this[HANDLE],
      flags,
      this.timeout(opts),
    );
    return handles.map((h) => new StorageVol(this.connect, h));
  }

  lookupStorageVolByName(name: string, opts?: CallOptions): Promise<StorageVol> {
    return native.storageVol
      .lookupByName(this[HANDLE], name, this.timeout(opts))
      .then((h) => new StorageVol(this.connect, h));
  }

  /** virStorageVolCreateXML; flags: StorageVolCreateFlags. */
  createVolumeXML(xml: string, flags = 0, opts?: CallOptions): Promise<StorageVol> {
    return native.storageVol
      .createXML(this[HANDLE], xml, flags, this.timeout(opts))
      .then((h) => new StorageVol(this.connect, h));
  }

  /** virStorageVolCreateXMLFrom: a new volume in this pool with `clone`'s contents. */
  createVolumeXMLFrom(
    xml: string,
    clone: StorageVol,
    flags = 0,
    opts?: CallOptions,
  ): Promise<StorageVol> {
    return native.storageVol
      .createXMLFrom(this[HANDLE], xml, clone[HANDLE], flags, this.timeout(opts))
      .then((h) => new StorageVol(this.connect, h));
  }
}

/**
 * A libvirt storage volume (virStorageVolPtr). Obtained from a pool, listAllVolumes or
 * Connect.lookupStorageVolByKey/ByPath.
 */
export class StorageVol extends LibvirtObject<VolHandle, VolCalls> {
  protected get kind(): Kind<VolHandle, VolCalls> {
    return VOL;
  }

  getKey(): string {
    return native.storageVol.getKey(this[HANDLE]);
  }

  getPath(opts?: CallOptions): Promise<string> {
    return native.storageVol.getPath(this[HANDLE], this.timeout(opts));
  }

  async getInfo(opts?: CallOptions): Promise<StorageVolInfo> {
    const info = await native.storageVol.getInfo(this[HANDLE], this.timeout(opts));
    return { ...info, typeName: storageVolTypeName(info.type) };
  }

  /** flags: StorageVolDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVol.delete(this[HANDLE], flags, this.timeout(opts));
  }

  wipe(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVol.wipe(this[HANDLE], flags, this.timeout(opts));
  }

  /** New capacity in bytes; flags: StorageVolResizeFlags (SHRINK to allow shrinking). */
  resize(capacity: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVol.resize(this[HANDLE], capacity, flags, this.timeout(opts));
  }

  /** Streams a local file into the volume; resolves with the bytes sent. */
  upload(filePath: string, opts: TransferOptions = {}): Promise<bigint> {
    return this.#transfer(native.storageVol.upload, filePath, opts);
  }

  /** Streams the volume into a local file (created or truncated); resolves with the bytes received. */
  download(filePath: string, opts: TransferOptions = {}): Promise<bigint> {
    return this.#transfer(native.storageVol.download, filePath, opts);
  }

  #transfer(call: VolCalls['upload'], filePath: string, opts: TransferOptions): Promise<bigint> {
    const t = this.timeout(opts);
    return call(this[HANDLE], filePath, opts.offset ?? 0, opts.length ?? 0, opts.flags ?? 0, t);
  }

  /** The pool holding this volume (virStoragePoolLookupByVolume). */
  storagePoolLookupByVolume(opts?: CallOptions): Promise<StoragePool> {
    return native.storagePool
      .lookupByVolume(this[HANDLE], this.timeout(opts))
      .then((h) => new StoragePool(this.connect, h));
  }
}

const POOL: Kind<PoolHandle, PoolCalls> = { calls: native.storagePool, freed: FREED.storagePool };
const VOL: Kind<VolHandle, VolCalls> = { calls: native.storageVol, freed: FREED.storageVol };
