// The libvirt volume a Volume becomes: a file named <namespace>_<name> in the pool (a
// namespace cannot contain '_', so no two Volumes share a file; the name comes from validated
// metadata and is never a path), blank, a copy of another Volume or a qcow2 overlay on one.
import type { Volume } from '../../api/generated/types.js';
import { volumeFileName } from '../../api/names.js';
import { parseQuantity } from '../../api/quantity.js';
import type { VolumeDocument, VolumeFormat } from '../../libvirt/xml/volume.js';

/** The libvirt volume behind a source Volume (clone or backingVolume), as libvirt reports it. */
export interface SourceImage {
  path: string;
  capacity: bigint;
  format: VolumeFormat;
}

export type SourceKind = 'blank' | 'clone' | 'backingVolume' | 'http';

export function sourceKind(vol: Volume): SourceKind {
  const s = vol.spec.source;
  if (s?.clone) return 'clone';
  if (s?.backingVolume) return 'backingVolume';
  if (s?.http) return 'http';
  return 'blank';
}

/** The name of the Volume this one is copied from or layered on, if any. */
export function sourceVolumeName(vol: Volume): string | undefined {
  return vol.spec.source?.clone?.volume ?? vol.spec.source?.backingVolume?.volume;
}

const KIB = 1024n;

/**
 * spec.capacity in bytes; undefined when the size comes from the source. libvirt creates a
 * qcow2 image through `qemu-img create` with the size in whole KiB, rounded up, and qemu-img
 * resize and QEMU's live block_resize round a qcow2 image up to whole 512-byte sectors: `100M`
 * asked as is became 100,000,768 bytes, and then read as a shrink the user never asked for.
 * A qcow2 request is therefore rounded up to whole KiB, which every one of those makes
 * exactly. Raw files take any byte size.
 */
export function requestedCapacity(vol: Volume): bigint | undefined {
  if (vol.spec.capacity === undefined) return undefined;
  const bytes = parseQuantity(vol.spec.capacity);
  if ((vol.spec.format ?? 'qcow2') !== 'qcow2') return bytes;
  return ((bytes + KIB - 1n) / KIB) * KIB;
}

/**
 * The volume to create. A copy or overlay is at least as large as its source (libvirt cannot
 * make an image smaller than its content), and larger when spec.capacity asks for more.
 */
export function desiredVolume(vol: Volume, source?: SourceImage): VolumeDocument {
  const kind = sourceKind(vol);
  const name = volumeFileName(vol);
  const format = vol.spec.format ?? 'qcow2';
  const requested = requestedCapacity(vol);
  if (kind === 'clone' || kind === 'backingVolume') {
    if (!source) throw new Error(`Volume ${name}: a ${kind} source must be observed first`);
    const capacity =
      requested !== undefined && requested > source.capacity ? requested : source.capacity;
    return kind === 'clone'
      ? { name, capacity, format }
      : { name, capacity, format, backingStore: { path: source.path, format: source.format } };
  }
  if (requested === undefined) {
    throw new Error(`Volume ${name}: spec.capacity is required for a blank volume`);
  }
  return { name, capacity: requested, format };
}
