import {
  FREED,
  HANDLE,
  native,
  type CallOptions,
  type PoolHandle,
  type RawPoolInfo,
  type RawVolInfo,
  type VolHandle,
} from './addon.js';
import type { Connect } from './connection.js';
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
export class StoragePool {
  [HANDLE]: PoolHandle;

  /** @internal handles come from Connect */
  constructor(
    readonly connect: Connect,
    handle: PoolHandle,
  ) {
    this[HANDLE] = handle;
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  getName(): string {
    return native.storagePoolGetName(this[HANDLE]);
  }

  getUUIDString(): string {
    return native.storagePoolGetUUIDString(this[HANDLE]);
  }

  getUUID(): Buffer {
    return native.storagePoolGetUUID(this[HANDLE]);
  }

  free(): void {
    native.storagePoolFree(this[HANDLE]);
    this[HANDLE] = FREED.storagePool;
  }

  /** Creates the pool's backing (the directory of a dir pool); flags: StoragePoolBuildFlags. */
  build(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePoolBuild(this[HANDLE], flags, this.#t(opts));
  }

  /** Starts a defined pool; flags: StoragePoolCreateFlags. */
  create(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePoolCreate(this[HANDLE], flags, this.#t(opts));
  }

  destroy(opts?: CallOptions): Promise<void> {
    return native.storagePoolDestroy(this[HANDLE], this.#t(opts));
  }

  /** Removes the pool's backing (the inverse of build); flags: StoragePoolDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePoolDelete(this[HANDLE], flags, this.#t(opts));
  }

  undefine(opts?: CallOptions): Promise<void> {
    return native.storagePoolUndefine(this[HANDLE], this.#t(opts));
  }

  refresh(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storagePoolRefresh(this[HANDLE], flags, this.#t(opts));
  }

  async getInfo(opts?: CallOptions): Promise<StoragePoolInfo> {
    const info = await native.storagePoolGetInfo(this[HANDLE], this.#t(opts));
    return { ...info, stateName: storagePoolStateName(info.state) };
  }

  /** flags: StorageXMLFlags. */
  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return native.storagePoolGetXMLDesc(this[HANDLE], flags, this.#t(opts));
  }

  isActive(opts?: CallOptions): Promise<boolean> {
    return native.storagePoolIsActive(this[HANDLE], this.#t(opts));
  }

  isPersistent(opts?: CallOptions): Promise<boolean> {
    return native.storagePoolIsPersistent(this[HANDLE], this.#t(opts));
  }

  getAutostart(opts?: CallOptions): Promise<boolean> {
    return native.storagePoolGetAutostart(this[HANDLE], this.#t(opts));
  }

  setAutostart(autostart: boolean, opts?: CallOptions): Promise<void> {
    return native.storagePoolSetAutostart(this[HANDLE], autostart, this.#t(opts));
  }

  numOfVolumes(opts?: CallOptions): Promise<number> {
    return native.storagePoolNumOfVolumes(this[HANDLE], this.#t(opts));
  }

  async listAllVolumes(flags = 0, opts?: CallOptions): Promise<StorageVol[]> {
    const handles = await native.storagePoolListAllVolumes(this[HANDLE], flags, this.#t(opts));
    return handles.map((h) => new StorageVol(this.connect, h));
  }

  lookupStorageVolByName(name: string, opts?: CallOptions): Promise<StorageVol> {
    return native
      .storageVolLookupByName(this[HANDLE], name, this.#t(opts))
      .then((h) => new StorageVol(this.connect, h));
  }

  /** virStorageVolCreateXML; flags: StorageVolCreateFlags. */
  createVolumeXML(xml: string, flags = 0, opts?: CallOptions): Promise<StorageVol> {
    return native
      .storageVolCreateXML(this[HANDLE], xml, flags, this.#t(opts))
      .then((h) => new StorageVol(this.connect, h));
  }

  /** virStorageVolCreateXMLFrom: a new volume in this pool with `clone`'s contents. */
  createVolumeXMLFrom(
    xml: string,
    clone: StorageVol,
    flags = 0,
    opts?: CallOptions,
  ): Promise<StorageVol> {
    return native
      .storageVolCreateXMLFrom(this[HANDLE], xml, clone[HANDLE], flags, this.#t(opts))
      .then((h) => new StorageVol(this.connect, h));
  }
}

/**
 * A libvirt storage volume (virStorageVolPtr). Obtained from a pool, listAllVolumes or
 * Connect.lookupStorageVolByKey/ByPath.
 */
export class StorageVol {
  [HANDLE]: VolHandle;

  /** @internal handles come from Connect or StoragePool */
  constructor(
    readonly connect: Connect,
    handle: VolHandle,
  ) {
    this[HANDLE] = handle;
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  getName(): string {
    return native.storageVolGetName(this[HANDLE]);
  }

  getKey(): string {
    return native.storageVolGetKey(this[HANDLE]);
  }

  free(): void {
    native.storageVolFree(this[HANDLE]);
    this[HANDLE] = FREED.storageVol;
  }

  getPath(opts?: CallOptions): Promise<string> {
    return native.storageVolGetPath(this[HANDLE], this.#t(opts));
  }

  async getInfo(opts?: CallOptions): Promise<StorageVolInfo> {
    const info = await native.storageVolGetInfo(this[HANDLE], this.#t(opts));
    return { ...info, typeName: storageVolTypeName(info.type) };
  }

  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return native.storageVolGetXMLDesc(this[HANDLE], flags, this.#t(opts));
  }

  /** flags: StorageVolDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVolDelete(this[HANDLE], flags, this.#t(opts));
  }

  wipe(flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVolWipe(this[HANDLE], flags, this.#t(opts));
  }

  /** New capacity in bytes; flags: StorageVolResizeFlags (SHRINK to allow shrinking). */
  resize(capacity: number | bigint, flags = 0, opts?: CallOptions): Promise<void> {
    return native.storageVolResize(this[HANDLE], capacity, flags, this.#t(opts));
  }

  /** Streams a local file into the volume; resolves with the bytes sent. */
  upload(filePath: string, opts: TransferOptions = {}): Promise<bigint> {
    return native.storageVolUpload(
      this[HANDLE],
      filePath,
      opts.offset ?? 0,
      opts.length ?? 0,
      opts.flags ?? 0,
      this.#t(opts),
    );
  }

  /** Streams the volume into a local file (created or truncated); resolves with the bytes received. */
  download(filePath: string, opts: TransferOptions = {}): Promise<bigint> {
    return native.storageVolDownload(
      this[HANDLE],
      filePath,
      opts.offset ?? 0,
      opts.length ?? 0,
      opts.flags ?? 0,
      this.#t(opts),
    );
  }

  /** The pool holding this volume (virStoragePoolLookupByVolume). */
  storagePoolLookupByVolume(opts?: CallOptions): Promise<StoragePool> {
    return native
      .storagePoolLookupByVolume(this[HANDLE], this.#t(opts))
      .then((h) => new StoragePool(this.connect, h));
  }
}
