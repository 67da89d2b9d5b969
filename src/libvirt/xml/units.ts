// libvirt's scaled integers (<memory unit='MiB'>, <capacity unit='G'>): a value and an
// optional `unit` attribute, case-insensitive. 'k'/'KiB' are powers of 1024, 'KB' of 1000,
// 'b'/'bytes' are bytes (virScaleInteger in libvirt's util/virutil.c).
import { XmlDocumentError, attr, textOf, type XmlElement } from './codec.js';

const PREFIXES = 'kmgtpe';

/** Bytes per `unit`; `fallback` is the unit libvirt assumes when the attribute is absent. */
export function unitScale(
  unit: string | undefined,
  fallback: 'bytes' | 'KiB',
  field: string,
): bigint {
  // An empty unit means the default, as in libvirt.
  const u = (unit || fallback).toLowerCase();
  if (u === 'b' || u === 'byte' || u === 'bytes') return 1n;
  const power = PREFIXES.indexOf(u.charAt(0)) + 1;
  const rest = u.slice(1);
  if (power === 0 || !['', 'ib', 'b'].includes(rest)) {
    throw new XmlDocumentError(field, `unknown unit ${JSON.stringify(unit)}`);
  }
  return (rest === 'b' ? 1000n : 1024n) ** BigInt(power);
}

/** A scaled-integer element as bytes. */
export function scaledBytes(el: XmlElement, fallback: 'bytes' | 'KiB', field: string): bigint {
  const text = textOf(el).trim();
  if (!/^\d+$/.test(text)) {
    throw new XmlDocumentError(
      field,
      `${JSON.stringify(textOf(el))} is not a non-negative integer`,
    );
  }
  return BigInt(text) * unitScale(attr(el, 'unit'), fallback, `${field}@unit`);
}

/** A scaled-integer element as KiB, rounded up as libvirt does for memory sizes. */
export function scaledKiB(el: XmlElement, field: string): number {
  const bytes = scaledBytes(el, 'KiB', field);
  const kib = (bytes + 1023n) / 1024n;
  if (kib > BigInt(Number.MAX_SAFE_INTEGER))
    throw new XmlDocumentError(field, `${kib} KiB is too large`);
  return Number(kib);
}
