// The libvirt storage volume XML the operator writes, typed after
// https://libvirt.org/formatstorage.html#storage-volume-xml. Sizes are bytes as bigint:
// capacities beyond 2^53 bytes are legal and libvirt reports them exactly.
import {
  assign,
  attr,
  child,
  childText,
  requireValue,
  xmlCodec,
  type XmlElement,
} from './codec.js';
import { changedFields } from '../../ownership/owned.js';
import { scaledBytes } from './units.js';

/** 'iso' is what libvirt's format probe reports for an ISO 9660 image, e.g. a cloud-init disk. */
export const VOLUME_FORMATS = ['qcow2', 'raw', 'iso'] as const;
export type VolumeFormat = (typeof VOLUME_FORMATS)[number];

export function isVolumeFormat(format: string): format is VolumeFormat {
  return (VOLUME_FORMATS as readonly string[]).includes(format);
}

export interface VolumeDocument {
  /** A plain file name inside the pool, never a path. */
  name: string;
  capacity: bigint;
  /** For raw volumes, how much to preallocate; libvirt reports the space actually used. */
  allocation?: bigint;
  format: VolumeFormat;
  /** A copy-on-write overlay over another image (qcow2 only). */
  backingStore?: { path: string; format: VolumeFormat };
}

/**
 * A volume as libvirt reports it: also where it lives. Its formats are whatever libvirt's probe
 * names, also one the operator never writes (vmdk, vpc, qed, …: a file put in the pool behind
 * our back, or imported before such images were refused). Read as they are, not refused: the
 * Volume must still be able to report the clash and be deleted (isVolumeFormat narrows them).
 */
export interface ObservedVolume extends Omit<VolumeDocument, 'format' | 'backingStore'> {
  format: string;
  backingStore?: { path: string; format: string };
  path?: string;
  key?: string;
  /**
   * The file's change times as libvirt's per-volume refresh (every getXMLDesc) read them from
   * its stat, as libvirt writes them (seconds with nanoseconds): any write, a replacement or a
   * rename into place changes ctime. Absent where libvirt reports none (its test driver).
   */
  changed?: { mtime?: string; ctime: string };
}

const codec = xmlCodec('volume');

export function buildVolumeXML(doc: VolumeDocument): string {
  return codec.build({
    name: doc.name,
    capacity: { '@unit': 'bytes', '#text': doc.capacity },
    allocation:
      doc.allocation === undefined ? undefined : { '@unit': 'bytes', '#text': doc.allocation },
    // qcow2 v3 (compat 1.1; libvirt writes v2, compat 0.10, when not told): a v2 image with
    // internal snapshots, which a VirtualMachineSnapshot of a running machine takes, cannot
    // be resized ("Can't resize a v2 image which has snapshots"). Not observed or compared:
    // existing v2 images are left as they are.
    target: { format: { '@type': doc.format }, compat: doc.format === 'qcow2' ? '1.1' : undefined },
    backingStore: doc.backingStore && {
      path: doc.backingStore.path,
      format: { '@type': doc.backingStore.format },
    },
  });
}

export function parseVolumeXML(xml: string): ObservedVolume {
  const el = codec.parse(xml);
  const target = child(el, 'target') ?? {};
  const doc: ObservedVolume = {
    name: requireValue(childText(el, 'name'), 'volume/name'),
    capacity: scaledBytes(
      requireValue(child(el, 'capacity'), 'volume/capacity'),
      'bytes',
      'volume/capacity',
    ),
    format: format(target, 'volume/target/format@type'),
  };
  const allocation = child(el, 'allocation');
  if (allocation) doc.allocation = scaledBytes(allocation, 'bytes', 'volume/allocation');
  const backing = child(el, 'backingStore');
  // libvirt writes an empty <backingStore/> for a volume without one.
  const backingPath = backing && childText(backing, 'path');
  if (backing && backingPath !== undefined) {
    doc.backingStore = {
      path: backingPath,
      format: format(backing, 'volume/backingStore/format@type'),
    };
  }
  assign(doc, 'path', childText(target, 'path'));
  assign(doc, 'key', childText(el, 'key'));
  const times = child(target, 'timestamps');
  const ctime = times && childText(times, 'ctime');
  if (times && ctime !== undefined) {
    doc.changed = { ctime };
    assign(doc.changed, 'mtime', childText(times, 'mtime'));
  }
  return doc;
}

function format(el: XmlElement, field: string): string {
  return requireValue(attr(child(el, 'format') ?? {}, 'type'), field);
}

/**
 * The fields of a volume the operator owns (see owned.ts). Allocation is not owned: it is
 * what the file uses. Capacity is compared as is; whether a difference is a resize (grow)
 * or an error (shrink) is the controller's decision.
 */
export function ownedVolumeFields(doc: VolumeDocument | ObservedVolume) {
  return {
    name: doc.name,
    capacity: doc.capacity,
    format: doc.format,
    backingStore: doc.backingStore
      ? { path: doc.backingStore.path, format: doc.backingStore.format }
      : null,
  };
}
export type OwnedVolumeFields = ReturnType<typeof ownedVolumeFields>;

export function changedVolumeFields(desired: VolumeDocument, observed: ObservedVolume): string[] {
  return changedFields(ownedVolumeFields(desired), ownedVolumeFields(observed));
}
