// What this host has for a VirtualMachineSnapshot: the machine's domain (ours only when it
// carries our stamp for that very VirtualMachine), its power state and disks, and the libvirt
// snapshot with the object's name. I/O only; shared by the snapshot and restore controllers.
import { libvirtUuid } from '../../api/names.js';
import type { VirtualMachine } from '../../api/generated/types.js';
import type { Connect } from '../../libvirt/connection.js';
import type { Domain } from '../../libvirt/domain.js';
import { isNotFound } from '../../libvirt/errors.js';
import type { DomainSnapshot } from '../../libvirt/snapshot.js';
import { identityOf, type OwnershipStamp } from '../../ownership/metadata.js';
import {
  addedVcpus,
  domainDiskViews,
  hasPflashLoader,
  parseSnapshotXML,
  type ObservedSnapshot,
  type SnapshotDiskView,
} from '../../libvirt/xml/snapshot.js';

export interface MachineDomain {
  domain: Domain;
  /** running, paused, shutoff… (libvirt's state name) */
  stateName: string;
  /** libvirt's reason for that state: from_snapshot, destroyed, booted… */
  reasonName: string;
  active: boolean;
  /** Disks of the running definition when active, else of the persistent one. */
  disks: SnapshotDiskView[];
  /** That definition's document (virDomainGetXMLDesc). */
  xml: string;
  /** vCPUs added to the running domain since it started (virDomainSetVcpusFlags LIVE). */
  addedVcpus: number;
  /** Whether that definition boots pflash (UEFI) firmware. */
  pflash: boolean;
}

/** The machine's domain when it exists and is ours; undefined otherwise. */
export async function observeMachineDomain(
  conn: Connect,
  vm: VirtualMachine,
): Promise<MachineDomain | undefined> {
  const domain = await conn
    .lookupDomainByUUIDString(libvirtUuid(vm))
    .catch((err: unknown) => absent(err, 'domain'));
  if (!domain) return undefined;
  // Undefined between the lookup and these reads: as good as absent.
  const xml = await domain.getXMLDesc().catch((err: unknown) => absent(err, 'domain'));
  if (xml === undefined || !isOurStamp(identityOf(xml).stamp, vm)) return undefined;
  const state = await domain.getState().catch((err: unknown) => absent(err, 'domain'));
  if (!state) return undefined;
  const { stateName, reasonName } = state;
  return {
    domain,
    stateName,
    reasonName,
    active: stateName !== 'shutoff' && stateName !== 'crashed',
    disks: domainDiskViews(xml),
    xml,
    addedVcpus: addedVcpus(xml),
    pflash: hasPflashLoader(xml),
  };
}

export interface FoundSnapshot {
  snapshot: DomainSnapshot;
  doc: ObservedSnapshot;
}

export async function observeSnapshot(
  domain: Domain,
  name: string,
): Promise<FoundSnapshot | undefined> {
  const snapshot = await domain
    .lookupSnapshotByName(name)
    .catch((err: unknown) => absent(err, 'domainSnapshot'));
  if (!snapshot) return undefined;
  // Deleted between the lookup and this read: as good as absent.
  const xml = await snapshot.getXMLDesc().catch((err: unknown) => absent(err, 'domainSnapshot'));
  return xml === undefined ? undefined : { snapshot, doc: parseSnapshotXML(xml) };
}

function absent(err: unknown, kind: 'domain' | 'domainSnapshot'): undefined {
  if (isNotFound(err, kind)) return undefined;
  throw err;
}

export function isOurStamp(stamp: OwnershipStamp | undefined, vm: VirtualMachine): boolean {
  return (
    stamp !== undefined &&
    stamp.kind === 'VirtualMachine' &&
    stamp.namespace === vm.metadata.namespace &&
    stamp.name === vm.metadata.name &&
    stamp.uid === vm.metadata.uid
  );
}
