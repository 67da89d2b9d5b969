// What libvirt snapshot a VirtualMachineSnapshot asks for, given the domain as it is now: its
// name (fixed by the object's uid, so a pass interrupted after libvirt made it finds it again
// instead of taking a second one), the <domainsnapshot> document, and whether the guest's
// filesystems should be frozen first. Pure.
import type { VirtualMachineSnapshot } from '../../api/generated/types.js';
import type { SnapshotDiskView, SnapshotDocument } from '../../libvirt/xml/snapshot.js';

/**
 * libvirt keeps a snapshot's record in a file `<name>.xml`, written through `<name>.xml.new`
 * (Linux file names: 255 bytes), and saves it only after QEMU has written the snapshot into
 * the disks: a longer name fails then, leaving that snapshot in the disks with no record
 * (measured on libvirt 9.0). Object names run to 253.
 */
const MAX_LIBVIRT_NAME = 247;

/** The libvirt snapshot's name: readable, and unique per object (uid prefix). */
export function libvirtSnapshotName(snap: VirtualMachineSnapshot): string {
  const suffix = `-${String(snap.metadata.uid).slice(0, 8)}`;
  return `${String(snap.metadata.name).slice(0, MAX_LIBVIRT_NAME - suffix.length)}${suffix}`;
}

/**
 * What the snapshot's <description> records, so that a pass after a crash (status not yet
 * written) can tell our snapshot from a foreign one with the same name and knows what was
 * taken: uid, whether memory counts, and whether the guest's filesystems were frozen.
 */
export interface SnapshotRecord {
  uid: string;
  includeMemory: boolean;
  /** Only for disks-only snapshots of an active domain. */
  quiesced?: boolean;
}

const PREFIX = 'libvirt-operator VirtualMachineSnapshot';

export function recordDescription(snap: VirtualMachineSnapshot, record: SnapshotRecord): string {
  const parts = [
    `${PREFIX} ${snap.metadata.namespace}/${snap.metadata.name}`,
    `uid=${record.uid}`,
    `includeMemory=${record.includeMemory}`,
  ];
  if (record.quiesced !== undefined) parts.push(`quiesced=${record.quiesced}`);
  return parts.join(' ');
}

const CLEANUP_PREFIX = 'libvirt-operator cleanup for VirtualMachineSnapshot';

/**
 * The description of the short-lived record a cleanup defines (act.ts, removeUnrecorded): a
 * pass that finds it, because the one before died between defining and deleting it, cleans
 * up again instead of taking it for a snapshot. It must not parse as a SnapshotRecord.
 */
export function cleanupDescription(snap: VirtualMachineSnapshot): string {
  return `${CLEANUP_PREFIX} ${snap.metadata.namespace}/${snap.metadata.name} uid=${String(snap.metadata.uid)}`;
}

export function isCleanupRecord(description: string | undefined, uid: string): boolean {
  return (
    description !== undefined &&
    description.startsWith(CLEANUP_PREFIX) &&
    description.endsWith(` uid=${uid}`)
  );
}

export function parseRecord(description: string | undefined): SnapshotRecord | undefined {
  if (!description?.startsWith(PREFIX)) return undefined;
  const field = (name: string) => new RegExp(`(?:^| )${name}=(\\S+)`).exec(description)?.[1];
  const uid = field('uid');
  if (!uid) return undefined;
  const record: SnapshotRecord = { uid, includeMemory: field('includeMemory') === 'true' };
  const quiesced = field('quiesced');
  if (quiesced !== undefined) record.quiesced = quiesced === 'true';
  return record;
}

export type SnapshotDecision =
  | { kind: 'unsupported'; message: string }
  | {
      kind: 'take';
      /** The document without its description (that needs the freeze's outcome). */
      doc: Omit<SnapshotDocument, 'description'>;
      /** Whether restoring it resumes the guest (a checkpoint) rather than booting it. */
      includesMemory: boolean;
      /** Freeze the guest's filesystems through its agent around the snapshot. */
      freeze: boolean;
    };

/**
 * An active domain's snapshot is always an internal checkpoint (QEMU's savevm): libvirt 9.0
 * takes internal snapshots of a running domain only with its memory ("active qemu domains
 * require external disk snapshots"), and cannot revert external ones. So a disks-only
 * snapshot of a running machine is a checkpoint whose memory the restore never uses (it
 * boots the machine from the disks instead), taken with the filesystems frozen when the guest
 * agent answers. Writable disks must be qcow2: internal snapshots live inside the qcow2 file.
 * Read-only disks and CD-ROMs are left out (QEMU cannot write a snapshot into them).
 */
export function desiredSnapshot(
  snap: VirtualMachineSnapshot,
  domain: {
    active: boolean;
    disks: readonly SnapshotDiskView[];
    addedVcpus?: number;
    pflash?: boolean;
  },
  /** Disk target -> the Volume holding it, to name it in a refusal as the user knows it. */
  volumes: ReadonlyMap<string, string> = new Map(),
): SnapshotDecision {
  const writable = domain.disks.filter((d) => d.device === 'disk' && !d.readonly);
  const notQcow2 = writable.filter((d) => d.format !== 'qcow2');
  if (notQcow2.length > 0) {
    const list = notQcow2
      .map((d) => {
        const volume = volumes.get(d.name);
        return `${d.name} (${d.format ?? 'unknown format'}${volume ? `, Volume ${volume}` : ''})`;
      })
      .join(', ');
    return {
      kind: 'unsupported',
      message: `only qcow2 disks can be snapshotted; ${list} cannot`,
    };
  }
  if (writable.length === 0) {
    // Said with the way out: a machine booted from kernel and initrd Volumes alone (the
    // demo of `npm start -- --examples`) has no disk at all, and a Failed snapshot is never
    // retried, so the user has to add one and create the snapshot again.
    return {
      kind: 'unsupported',
      message:
        'the machine has no writable qcow2 disk to hold a snapshot; add a Volume of format ' +
        'qcow2 to spec.disks (attached live on bus virtio or scsi), then create the snapshot again',
    };
  }
  // A running machine's internal snapshot always holds its memory (also for includeMemory
  // false), and QEMU 7.2 cannot load the state of vCPUs added live: libvirt 9.0 takes the
  // snapshot, and reverting to it fails ("Unknown savevm section ... 'cpu_common'") and leaves
  // the domain shut off. A snapshot that reads Ready but cannot be restored is refused.
  const added = domain.active ? (domain.addedVcpus ?? 0) : 0;
  if (added > 0) {
    return {
      kind: 'unsupported',
      message:
        `the machine has ${added} vCPU${added === 1 ? '' : 's'} added while it runs, and QEMU ` +
        `cannot restore a running snapshot of such vCPUs; restart the machine (it then boots ` +
        `with them) or stop it, and create the snapshot again`,
    };
  }
  // libvirt 9.0 refuses internal snapshots of a running domain on pflash firmware (UEFI):
  // "internal snapshots of a VM with pflash based firmware are not supported". Shut off, the
  // disks-only snapshot is taken (qemu-img), without the UEFI variables.
  if (domain.active && domain.pflash === true) {
    return {
      kind: 'unsupported',
      message:
        'libvirt takes no snapshot of a running machine with UEFI firmware (firmware: uefi); ' +
        'stop the machine (runStrategy: Halted) and create the snapshot again for its disks',
    };
  }
  const memory = domain.active && snap.spec.includeMemory !== false;
  return {
    kind: 'take',
    doc: {
      name: libvirtSnapshotName(snap),
      memory: domain.active ? 'internal' : 'no',
      disks: domain.disks.map((d) => ({
        name: d.name,
        snapshot: writable.includes(d) ? 'internal' : 'no',
      })),
    },
    includesMemory: memory,
    freeze: domain.active && !memory,
  };
}
