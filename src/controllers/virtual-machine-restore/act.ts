// The libvirt calls of a restore: mark, revert, power off. Transport failures and timeouts
// are thrown (the queue retries; the marker tells the next pass whether the revert happened),
// refusals are returned for a Failed status.
import {
  DomainMetadataType,
  DomainModificationImpact,
  DomainSnapshotRevertFlags,
} from '../../libvirt/constants.js';
import type { Domain } from '../../libvirt/domain.js';
import {
  ErrorCode,
  isConnectionError,
  isLibvirtError,
  isOperationInvalid,
  isTimeout,
} from '../../libvirt/errors.js';
import { RESTORE_NAMESPACE, RESTORE_PREFIX, restoreMarkerXML } from './desired.js';

/** Loading a checkpoint reads the guest's RAM back from the qcow2 file. */
const REVERT_TIMEOUT_MS = 10 * 60_000;

/** Into the persistent definition, and the running one too while the domain runs. */
export async function setMarker(
  domain: Domain,
  restoreUid: string,
  active: boolean,
): Promise<void> {
  const set = (flags: number) =>
    domain.setMetadata(
      DomainMetadataType.ELEMENT,
      restoreMarkerXML(restoreUid),
      RESTORE_PREFIX,
      RESTORE_NAMESPACE,
      flags,
    );
  const { LIVE, CONFIG } = DomainModificationImpact;
  if (!active) return set(CONFIG);
  try {
    await set(LIVE | CONFIG);
  } catch (err) {
    // Drivers that take one at a time (libvirt's test driver).
    if (!(isLibvirtError(err) && err.code === ErrorCode.VIR_ERR_INVALID_ARG)) throw err;
    await set(LIVE);
    await set(CONFIG);
  }
}

/**
 * Records a refused revert in the marker (desired.ts), into the persistent definition only:
 * the one observeMarker reads, and the one a domain that the failed revert left shut off has.
 * Written after the refusal, as the revert may have replaced the definition, marker and all;
 * on QEMU this also saves to disk the snapshot's definition the failed revert left in memory
 * only, which the machine's controller converges to the spec once the restore has ended.
 * A refusal of this write is left to the status write that follows (thrown: transport
 * failures and timeouts, retried by the queue).
 */
export async function recordRefusal(
  domain: Domain,
  restoreUid: string,
  message: string,
): Promise<void> {
  try {
    await domain.setMetadata(
      DomainMetadataType.ELEMENT,
      restoreMarkerXML(restoreUid, message),
      RESTORE_PREFIX,
      RESTORE_NAMESPACE,
      DomainModificationImpact.CONFIG,
    );
  } catch (err) {
    if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
  }
}

export type RevertOutcome = { kind: 'reverted' } | { kind: 'refused'; message: string };

/** With `paused`, the domain is left paused after the revert (plan.ts revertPaused). */
export async function revert(
  domain: Domain,
  snapshotName: string,
  paused: boolean,
): Promise<RevertOutcome> {
  const snapshot = await domain.lookupSnapshotByName(snapshotName);
  const flags = paused ? DomainSnapshotRevertFlags.PAUSED : 0;
  try {
    try {
      await snapshot.revert(flags, { timeoutMs: REVERT_TIMEOUT_MS });
    } catch (err) {
      // libvirt asks for FORCE where it must start a new QEMU process instead of loading the
      // state into the running one (a definition changed since): that is what a restore means.
      if (!(isLibvirtError(err) && err.code === ErrorCode.VIR_ERR_SNAPSHOT_REVERT_RISKY)) throw err;
      await snapshot.revert(flags | DomainSnapshotRevertFlags.FORCE, {
        timeoutMs: REVERT_TIMEOUT_MS,
      });
    }
    return { kind: 'reverted' };
  } catch (err) {
    if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
    return {
      kind: 'refused',
      message: `libvirt could not revert to ${snapshotName}: ${err.message}`,
    };
  } finally {
    snapshot.free();
  }
}

/** Powers the domain off at once; already off is fine. */
export async function powerOff(domain: Domain): Promise<void> {
  try {
    await domain.destroy();
  } catch (err) {
    if (isOperationInvalid(err) && !(await domain.isActive())) return;
    throw err;
  }
}
