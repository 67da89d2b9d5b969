// The libvirt calls of a snapshot: freeze (best effort, bounded), create, thaw; delete.
//
// Errors split like the machine controller's: transport failures and timeouts are thrown (the
// queue retries with backoff, and the next pass finds the snapshot by name if libvirt made it
// meanwhile); libvirt refusing the snapshot is returned as a refusal, a False condition.
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import type { Domain } from '../../libvirt/domain.js';
import type { DomainSnapshot } from '../../libvirt/snapshot.js';
import {
  isAlreadyExists,
  isConnectionError,
  isLibvirtError,
  isNotFound,
  isTimeout,
} from '../../libvirt/errors.js';
import { DomainSnapshotCreateFlags } from '../../libvirt/constants.js';
import {
  buildRedefineSnapshotXML,
  buildSnapshotXML,
  type SnapshotDocument,
} from '../../libvirt/xml/snapshot.js';
import {
  observeSnapshot,
  type FoundSnapshot,
  type MachineDomain,
} from '../shared/machine-snapshot.js';
import type { CheckpointRoom } from './plan.js';

/**
 * A guest agent that is configured but never answers must not hold a snapshot up: libvirt's
 * own agent timeout applies inside, this bounds the whole call.
 */
const FREEZE_TIMEOUT_MS = 10_000;
/** Writing a checkpoint copies the guest's RAM into the qcow2 file: minutes for a big guest. */
const CREATE_TIMEOUT_MS = 10 * 60_000;

export type TakeOutcome =
  | { kind: 'taken'; found: FoundSnapshot; quiesced: boolean | undefined }
  | { kind: 'refused'; message: string };

/**
 * Takes the snapshot `doc` describes. With `freeze`, the guest's filesystems are frozen first
 * when its agent answers (quiesced true), and thawed whatever happens; without an answer the
 * snapshot is taken anyway (quiesced false: crash-consistent). `describe` writes the record
 * into the description once the freeze's outcome is known.
 */
export async function takeSnapshot(
  domain: Domain,
  doc: Omit<SnapshotDocument, 'description'>,
  freeze: boolean,
  describe: (quiesced: boolean | undefined) => string,
): Promise<TakeOutcome> {
  const quiesced = freeze ? await tryFreeze(domain) : undefined;
  try {
    await domain.createSnapshotXML(
      buildSnapshotXML({ ...doc, description: describe(quiesced) }),
      0,
      { timeoutMs: CREATE_TIMEOUT_MS },
    );
  } catch (err) {
    // Made by an earlier pass that died before recording it: the lookup below finds it.
    if (!isAlreadyExists(err)) {
      if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
      return { kind: 'refused', message: `libvirt could not take the snapshot: ${err.message}` };
    }
  } finally {
    if (quiesced) await thaw(domain);
  }
  const found = await observeSnapshot(domain, doc.name);
  if (!found) throw new Error(`libvirt snapshot ${doc.name} vanished right after it was taken`);
  return { kind: 'taken', found, quiesced };
}

export type CleanupOutcome = { kind: 'clean' } | { kind: 'refused'; message: string };

/**
 * Removes an internal snapshot named `doc.name` that the machine's disks may hold without
 * libvirt knowing of it. On a shut-off machine libvirt takes a snapshot by running `qemu-img
 * snapshot -c` on each disk and writes its own record after that (a running one's QEMU
 * finishes its savevm whatever happens to libvirtd); a libvirtd killed in between leaves a
 * snapshot in the qcow2 files that no libvirt call lists, and taking it again would add a
 * second of the same name (qcow2 allows that) that nothing would ever delete. libvirt deletes
 * only what it has a record of, so: define the record (REDEFINE, with the domain's document,
 * which libvirt needs to match the disks), then delete it, which runs `qemu-img snapshot -d`
 * on each disk, or QEMU's delvm on a running machine, and passes over a disk that has no such
 * snapshot (measured on libvirt 9.0). `description` marks the record, so that a pass after a
 * crash between the two steps knows it for what it is: that pass hands the record it found
 * as `leftover`, and only the delete runs (redefining over it could fail: libvirt refuses to
 * change a record between online and offline states).
 */
export async function removeUnrecorded(
  machine: MachineDomain,
  doc: Omit<SnapshotDocument, 'description'>,
  description: string,
  now: Date,
  leftover?: DomainSnapshot,
): Promise<CleanupOutcome> {
  try {
    const record =
      leftover ??
      (await machine.domain.createSnapshotXML(
        buildRedefineSnapshotXML(
          { ...doc, description },
          {
            state: machine.active ? 'running' : 'shutoff',
            creationTime: Math.floor(now.getTime() / 1000),
          },
          machine.xml,
        ),
        DomainSnapshotCreateFlags.REDEFINE,
        { timeoutMs: CREATE_TIMEOUT_MS },
      ));
    try {
      await record.delete(0, { timeoutMs: CREATE_TIMEOUT_MS });
    } finally {
      record.free();
    }
    return { kind: 'clean' };
  } catch (err) {
    if (isNotFound(err, 'domainSnapshot')) return { kind: 'clean' };
    if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
    return {
      kind: 'refused',
      message: `libvirt could not remove what an interrupted snapshot may have left in the disks: ${err.message}`,
    };
  }
}

async function tryFreeze(domain: Domain): Promise<boolean> {
  try {
    await domain.fsFreeze(null, 0, { timeoutMs: FREEZE_TIMEOUT_MS });
    return true;
  } catch (err) {
    if (isConnectionError(err)) throw err;
    // No agent configured, none answering, or a timeout: crash-consistent, said in status.
    // A freeze that timed out on our side may still land later: thaw to be sure.
    if (isTimeout(err)) await thaw(domain);
    return false;
  }
}

/**
 * Thaws whatever a freeze of ours left frozen; thawing a guest that is not frozen is a no-op,
 * so a pass after a crash between freeze and thaw can always call it.
 */
export async function thaw(domain: Domain): Promise<void> {
  try {
    await domain.fsThaw(null, 0, { timeoutMs: FREEZE_TIMEOUT_MS });
  } catch (err) {
    if (isConnectionError(err)) throw err;
  }
}

/** Deletes a libvirt snapshot found by observeSnapshot; one gone meanwhile is what was wanted. */
export async function deleteSnapshot(found: FoundSnapshot): Promise<void> {
  try {
    await found.snapshot.delete(0, { timeoutMs: CREATE_TIMEOUT_MS });
  } catch (err) {
    if (!isNotFound(err, 'domainSnapshot')) throw err;
  } finally {
    found.snapshot.free();
  }
}

/**
 * The room a running machine's checkpoint has (plan.ts, checkpointSpaceProblem): its memory,
 * its QEMU process's resident memory, and the free bytes of the file system of its first
 * writable disk, where QEMU writes the memory. Undefined when the disk or its file system
 * cannot be read (a disk that is no file, a file system this agent does not see at the host
 * path): the snapshot is then taken as before, unchecked; likewise without an rss.
 */
export async function checkpointRoom(machine: MachineDomain): Promise<CheckpointRoom | undefined> {
  const disk = machine.disks.find((d) => d.device === 'disk' && !d.readonly);
  if (!disk?.source || !path.isAbsolute(disk.source)) return undefined;
  const fs = await statfs(path.dirname(disk.source), { bigint: true }).catch(() => undefined);
  const unread = (err: unknown) => {
    if (isConnectionError(err)) throw err;
    return undefined;
  };
  const info = await machine.domain.getInfo().catch(unread);
  if (!fs || !info) return undefined;
  // KiB, like maxMem.
  const rss = (await machine.domain.memoryStats().catch(unread))?.rss;
  return {
    disk: disk.name,
    path: disk.source,
    memory: info.maxMem * 1024n,
    ...(rss === undefined ? {} : { rss: rss * 1024n }),
    free: fs.bavail * fs.bsize,
  };
}
