// The restore marker: an element in the domain's persistent <metadata>, written just before
// the revert. Reverting replaces the whole definition with the one saved in the snapshot,
// which predates the marker, so the revert itself removes it, in the same libvirt operation
// (measured on libvirt 9.0, QEMU and test driver alike; pinned by the integration test). After
// a crash, "status InProgress and no marker" therefore means the revert happened, and
// "marker present" that it did not: a restore never runs twice.
//
// Except where libvirt refuses the revert after it replaced the definition: qemu's
// qemuDomainRevertToSnapshot (qemu_snapshot.c) assigns the snapshot's definition to the domain
// before it starts QEMU from the snapshot (a domain that was off, or a forced respawn), before
// it resumes the loaded CPUs, and before it writes the snapshot's own metadata; any of those
// failing returns an error with the marker already gone. So a refused revert is recorded in
// the marker itself (`refused`, set again after the refusal) before its Failed status: a pass
// after a failed status write then reads the refusal, not a revert that happened. Pure.
import { attr, buildXML, parseAnyXML } from '../../libvirt/xml/codec.js';

export const RESTORE_NAMESPACE = 'http://virt.dev/libvirt-operator/restore/v1';
export const RESTORE_PREFIX = 'lvor';

/**
 * The bare element virDomainSetMetadata takes (type ELEMENT, key RESTORE_PREFIX); `refused`:
 * the Failed message of a revert libvirt refused.
 */
export function restoreMarkerXML(restoreUid: string, refused?: string): string {
  return buildXML('restore', {
    '@uid': restoreUid,
    ...(refused !== undefined ? { '@refused': refused } : {}),
  });
}

/** The refusal recorded in this restore's marker (restoreMarkerXML), if any. */
export function refusalIn(xml: string | undefined, restoreUid: string): string | undefined {
  if (xml === undefined) return undefined;
  const { element } = parseAnyXML(xml, [], 'restore marker');
  return attr(element, 'uid') === restoreUid ? attr(element, 'refused') : undefined;
}

/** Whether the element virDomainGetMetadata returned names this restore. */
export function isMarkerOf(xml: string | undefined, restoreUid: string): boolean {
  if (xml === undefined) return false;
  return attr(parseAnyXML(xml, [], 'restore marker').element, 'uid') === restoreUid;
}
