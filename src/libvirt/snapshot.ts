import { HANDLE, native, type CallOptions, type SnapshotHandle } from './addon.js';
import type { Domain } from './domain.js';

const FREED_SNAPSHOT = native.domainSnapshotFreedHandle();

/**
 * A snapshot of a domain (virDomainSnapshotPtr). Obtained from the domain's
 * createSnapshotXML, lookupSnapshotByName, listAllSnapshots or currentSnapshot; released by the
 * garbage collector or free(). Each call that returns a snapshot returns a handle of its own.
 */
export class DomainSnapshot {
  [HANDLE]: SnapshotHandle;

  /** @internal handles come from Domain */
  constructor(
    readonly domain: Domain,
    handle: SnapshotHandle,
  ) {
    this[HANDLE] = handle;
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.domain.connect.callTimeoutMs;
  }

  getName(): string {
    return native.domainSnapshotGetName(this[HANDLE]);
  }

  /** Drops the libvirt reference now instead of at garbage collection; later calls reject. */
  free(): void {
    native.domainSnapshotFree(this[HANDLE]);
    this[HANDLE] = FREED_SNAPSHOT;
  }

  /** flags: DomainSnapshotXMLFlags. */
  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return native.domainSnapshotGetXMLDesc(this[HANDLE], flags, this.#t(opts));
  }

  /** The parent snapshot; a root snapshot rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async getParent(flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshotGetParent(this[HANDLE], flags, this.#t(opts));
    return new DomainSnapshot(this.domain, h);
  }

  isCurrent(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainSnapshotIsCurrent(this[HANDLE], flags, this.#t(opts));
  }

  hasMetadata(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainSnapshotHasMetadata(this[HANDLE], flags, this.#t(opts));
  }

  /** Reverts the domain to this snapshot (virDomainRevertToSnapshot); flags: DomainSnapshotRevertFlags. */
  revert(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainRevertToSnapshot(this[HANDLE], flags, this.#t(opts));
  }

  /** virDomainSnapshotDelete; flags: DomainSnapshotDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainSnapshotDelete(this[HANDLE], flags, this.#t(opts));
  }
}
