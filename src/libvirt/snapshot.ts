import {
  HANDLE,
  native,
  type CallOptions,
  type SnapshotCalls,
  type SnapshotHandle,
} from './addon.js';
import type { Domain } from './domain.js';
import { LibvirtObject, type Kind } from './object.js';

/**
 * A snapshot of a domain (virDomainSnapshotPtr). Obtained from the domain's
 * createSnapshotXML, lookupSnapshotByName, listAllSnapshots or currentSnapshot; released by the
 * garbage collector or free(). Each call that returns a snapshot returns a handle of its own.
 */
export class DomainSnapshot extends LibvirtObject<SnapshotHandle, SnapshotCalls> {
  /** @internal handles come from Domain */
  constructor(
    readonly domain: Domain,
    handle: SnapshotHandle,
  ) {
    super(domain.connect, handle);
  }

  protected get kind(): Kind<SnapshotHandle, SnapshotCalls> {
    return SNAPSHOT;
  }

  /** The parent snapshot; a root snapshot rejects with VIR_ERR_NO_DOMAIN_SNAPSHOT. */
  async getParent(flags = 0, opts?: CallOptions): Promise<DomainSnapshot> {
    const h = await native.domainSnapshot.getParent(this[HANDLE], flags, this.timeout(opts));
    return new DomainSnapshot(this.domain, h);
  }

  isCurrent(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainSnapshot.isCurrent(this[HANDLE], flags, this.timeout(opts));
  }

  hasMetadata(flags = 0, opts?: CallOptions): Promise<boolean> {
    return native.domainSnapshot.hasMetadata(this[HANDLE], flags, this.timeout(opts));
  }

  /** Reverts the domain to this snapshot (virDomainRevertToSnapshot); flags: DomainSnapshotRevertFlags. */
  revert(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainSnapshot.revert(this[HANDLE], flags, this.timeout(opts));
  }

  /** virDomainSnapshotDelete; flags: DomainSnapshotDeleteFlags. */
  delete(flags = 0, opts?: CallOptions): Promise<void> {
    return native.domainSnapshot.delete(this[HANDLE], flags, this.timeout(opts));
  }
}

const SNAPSHOT: Kind<SnapshotHandle, SnapshotCalls> = {
  calls: native.domainSnapshot,
  freed: native.domainSnapshot.freedHandle(),
};
