// <domainsnapshot> documents: what the operator asks virDomainSnapshotCreateXML for, and what
// it reads back from virDomainSnapshotGetXMLDesc. Also the small view of a domain's disks a
// snapshot decision needs (which are writable, in which format), read leniently: a disk the
// operator does not model must not make a snapshot impossible to plan.
import {
  attr,
  child,
  childText,
  children,
  parseAnyXML,
  requireValue,
  xmlCodec,
  type XmlElement,
  type XmlTree,
} from './codec.js';

/** internal: inside the qcow2 file (or QEMU's savevm state); no: left out. */
export type SnapshotLocation = 'internal' | 'no';

export interface SnapshotDocument {
  name: string;
  description?: string;
  /** Memory state: internal for a checkpoint of a running domain, no for disks only. */
  memory: SnapshotLocation;
  disks: Array<{ name: string; snapshot: SnapshotLocation }>;
}

/** What libvirt reports about an existing snapshot. */
export interface ObservedSnapshot {
  name: string;
  description?: string;
  /** The domain's state when it was taken: running, paused, shutoff, disk-snapshot… */
  state?: string;
  /** Seconds since the epoch. */
  creationTime?: number;
  memory?: string;
  /**
   * `source`: the disk's file when the snapshot was taken, from the domain definition libvirt
   * keeps with it (the machine's disks may have changed since).
   */
  disks: Array<{ name: string; snapshot?: string; source?: string }>;
}

const codec = xmlCodec('domainsnapshot', [
  'domainsnapshot.disks.disk',
  'domainsnapshot.domain.devices.disk',
]);

export function buildSnapshotXML(doc: SnapshotDocument): string {
  return codec.build(snapshotFields(doc));
}

function snapshotFields(doc: SnapshotDocument): XmlTree {
  return {
    name: doc.name,
    description: doc.description,
    memory: { '@snapshot': doc.memory },
    disks:
      doc.disks.length > 0
        ? { disk: doc.disks.map((d) => ({ '@name': d.name, '@snapshot': d.snapshot })) }
        : undefined,
  };
}

/**
 * A record for VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE: the document plus what libvirt only takes
 * from a redefinition (the state it was taken in, its time) and the domain it belongs to,
 * which libvirt needs to match the snapshot's disks to the domain's. `domainXml` is the
 * domain's own document from virDomainGetXMLDesc, carried over parsed, not spliced in.
 */
export function buildRedefineSnapshotXML(
  doc: SnapshotDocument,
  taken: { state: string; creationTime: number },
  domainXml: string,
): string {
  const { element } = parseAnyXML(domainXml, [], 'domain');
  return codec.build({
    ...snapshotFields(doc),
    creationTime: taken.creationTime,
    state: taken.state,
    domain: element,
  });
}

export function parseSnapshotXML(xml: string): ObservedSnapshot {
  const el = codec.parse(xml);
  const sources = new Map<string, string>();
  for (const d of children(child(child(el, 'domain') ?? {}, 'devices') ?? {}, 'disk')) {
    const dev = attr(child(d, 'target') ?? {}, 'dev');
    const file = diskSource(d);
    if (dev !== undefined && file !== undefined) sources.set(dev, file);
  }
  const snap: ObservedSnapshot = {
    name: requireValue(childText(el, 'name'), 'domainsnapshot/name'),
    disks: children(child(el, 'disks') ?? {}, 'disk').map((d) => {
      const name = requireValue(attr(d, 'name'), 'domainsnapshot/disks/disk@name');
      const source = sources.get(name);
      return { name, snapshot: attr(d, 'snapshot'), ...(source === undefined ? {} : { source }) };
    }),
  };
  const description = childText(el, 'description');
  if (description !== undefined) snap.description = description;
  const state = childText(el, 'state');
  if (state !== undefined) snap.state = state.trim();
  const created = childText(el, 'creationTime');
  if (created !== undefined && /^\d+$/.test(created.trim()))
    snap.creationTime = Number(created.trim());
  const memory = child(el, 'memory');
  if (memory) snap.memory = attr(memory, 'snapshot');
  return snap;
}

/** One <disk> of a domain, as far as a snapshot cares. */
export interface SnapshotDiskView {
  /** target dev, e.g. vda */
  name: string;
  /** disk, cdrom, floppy, lun */
  device: string;
  /** The driver's format (qcow2, raw…); undefined when libvirt was not told. */
  format?: string;
  readonly: boolean;
  /** The file or volume name, for the message of an unsupported disk. */
  source?: string;
}

/** The disks of a domain document (virDomainGetXMLDesc), whatever their bus or source kind. */
export function domainDiskViews(domainXml: string): SnapshotDiskView[] {
  const { element } = parseAnyXML(domainXml, ['domain.devices.disk'], 'domain');
  const devices = child(element, 'devices') ?? {};
  return children(devices, 'disk').map((d: XmlElement) => {
    const view: SnapshotDiskView = {
      name: requireValue(attr(child(d, 'target') ?? {}, 'dev'), 'domain/devices/disk/target@dev'),
      device: attr(d, 'device') ?? 'disk',
      readonly: child(d, 'readonly') !== undefined,
    };
    const format = attr(child(d, 'driver') ?? {}, 'type');
    if (format !== undefined) view.format = format;
    const src = diskSource(d);
    if (src !== undefined) view.source = src;
    return view;
  });
}

/**
 * How many vCPUs of a running domain were added while it runs (`<vcpus>`: enabled and
 * hotpluggable; those it booted with are not hotpluggable, and libvirt writes no `<vcpus>`
 * before the first change).
 */
export function addedVcpus(domainXml: string): number {
  const { element } = parseAnyXML(domainXml, ['domain.vcpus.vcpu'], 'domain');
  return children(child(element, 'vcpus') ?? {}, 'vcpu').filter(
    (v: XmlElement) => attr(v, 'enabled') === 'yes' && attr(v, 'hotpluggable') === 'yes',
  ).length;
}

/**
 * Whether the domain boots pflash firmware (UEFI): `<os><loader type='pflash'>`, which libvirt
 * writes into a running domain's definition when it picks the firmware (not into the persistent
 * one of `<os firmware='efi'>`).
 */
export function hasPflashLoader(domainXml: string): boolean {
  const { element } = parseAnyXML(domainXml, [], 'domain');
  return attr(child(child(element, 'os') ?? {}, 'loader') ?? {}, 'type') === 'pflash';
}

function diskSource(disk: XmlElement): string | undefined {
  const source = child(disk, 'source') ?? {};
  return attr(source, 'file') ?? attr(source, 'volume') ?? attr(source, 'dev');
}
