// What this host says about a restore: the machine's domain (shared with the snapshot
// controller), whether our marker is in its persistent definition, and the libvirt snapshot.
import type { Domain } from '../../libvirt/domain.js';
import { DomainMetadataType, DomainModificationImpact } from '../../libvirt/constants.js';
import { ErrorCode, isLibvirtError } from '../../libvirt/errors.js';
import { RESTORE_NAMESPACE } from './desired.js';

/** The marker element, or undefined when the definition has none. */
export async function observeMarker(domain: Domain): Promise<string | undefined> {
  try {
    return await domain.getMetadata(
      DomainMetadataType.ELEMENT,
      RESTORE_NAMESPACE,
      DomainModificationImpact.CONFIG,
    );
  } catch (err) {
    if (isLibvirtError(err) && err.code === ErrorCode.VIR_ERR_NO_DOMAIN_METADATA) return undefined;
    throw err;
  }
}
