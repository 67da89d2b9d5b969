// The restore marker: an element in the domain's persistent <metadata>, written just before
// the revert. Reverting replaces the whole definition with the one saved in the snapshot,
// which predates the marker, so the revert itself removes it, in the same libvirt operation
// (measured on libvirt 9.0, QEMU and test driver alike; pinned by the integration test). After
// a crash, "status InProgress and no marker" therefore means the revert happened, and
// "marker present" that it did not: a restore never runs twice. Pure.
import { attr, buildXML, parseAnyXML } from '../../libvirt/xml/codec.js';

export const RESTORE_NAMESPACE = 'http://virt.dev/libvirt-operator/restore/v1';
export const RESTORE_PREFIX = 'lvor';

/** The bare element virDomainSetMetadata takes (type ELEMENT, key RESTORE_PREFIX). */
export function restoreMarkerXML(restoreUid: string): string {
  return buildXML('restore', { '@uid': restoreUid });
}

/** Whether the element virDomainGetMetadata returned names this restore. */
export function isMarkerOf(xml: string | undefined, restoreUid: string): boolean {
  if (xml === undefined) return false;
  return attr(parseAnyXML(xml, [], 'restore marker').element, 'uid') === restoreUid;
}
