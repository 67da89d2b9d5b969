import { describe, expect, it } from 'vitest';
import { xmlCodec } from '../../../src/libvirt/xml/codec.js';
import { scaledBytes, scaledKiB, unitScale } from '../../../src/libvirt/xml/units.js';

const codec = xmlCodec('capacity');
const el = (xml: string) => codec.parse(xml);

describe('unitScale (libvirt scaled integers)', () => {
  it.each([
    ['b', 1n],
    ['bytes', 1n],
    ['Byte', 1n],
    ['k', 1024n],
    ['KiB', 1024n],
    ['KB', 1000n],
    ['M', 1024n ** 2n],
    ['MiB', 1024n ** 2n],
    ['mb', 1000n ** 2n],
    ['GiB', 1024n ** 3n],
    ['G', 1024n ** 3n],
    ['GB', 1000n ** 3n],
    ['TiB', 1024n ** 4n],
    ['PiB', 1024n ** 5n],
    ['EiB', 1024n ** 6n],
    ['EB', 1000n ** 6n],
  ])('%s is %d bytes', (unit, bytes) => {
    expect(unitScale(unit, 'bytes', 'f')).toBe(bytes);
  });

  it('uses the element’s default unit when the attribute is absent or empty', () => {
    expect(unitScale(undefined, 'bytes', 'f')).toBe(1n);
    expect(unitScale(undefined, 'KiB', 'f')).toBe(1024n);
    expect(unitScale('', 'KiB', 'f')).toBe(1024n);
  });

  it.each(['x', 'KiBB', 'Ki', 'kib2', 'bit'])('refuses %j, naming the field', (unit) => {
    expect(() => unitScale(unit, 'bytes', 'volume/capacity@unit')).toThrow(
      /^volume\/capacity@unit: unknown unit/,
    );
  });
});

describe('scaledBytes', () => {
  it('multiplies exactly beyond 2^53', () => {
    expect(scaledBytes(el(`<capacity unit='EiB'>15</capacity>`), 'bytes', 'c')).toBe(
      15n * 1024n ** 6n,
    );
    expect(scaledBytes(el('<capacity>18446744073709551615</capacity>'), 'bytes', 'c')).toBe(
      2n ** 64n - 1n,
    );
  });

  it('refuses text that is not a non-negative integer', () => {
    for (const bad of ['-1', '1.5', '', 'ten', '1e3']) {
      expect(() => scaledBytes(el(`<capacity>${bad}</capacity>`), 'bytes', 'c')).toThrow(
        /^c: .* is not a non-negative integer/,
      );
    }
  });
});

describe('scaledKiB', () => {
  it('reads KiB by default and converts other units', () => {
    expect(scaledKiB(el('<capacity>2048</capacity>'), 'm')).toBe(2048);
    expect(scaledKiB(el(`<capacity unit='KiB'>2048</capacity>`), 'm')).toBe(2048);
    expect(scaledKiB(el(`<capacity unit='MiB'>512</capacity>`), 'm')).toBe(524288);
    expect(scaledKiB(el(`<capacity unit='GiB'>4</capacity>`), 'm')).toBe(4194304);
    expect(scaledKiB(el(`<capacity unit='bytes'>1048576</capacity>`), 'm')).toBe(1024);
  });

  it('rounds bytes up to whole KiB, as libvirt does', () => {
    expect(scaledKiB(el(`<capacity unit='b'>1025</capacity>`), 'm')).toBe(2);
    expect(scaledKiB(el(`<capacity unit='KB'>1</capacity>`), 'm')).toBe(1);
  });

  it('refuses sizes beyond what a JS number holds exactly', () => {
    expect(() => scaledKiB(el(`<capacity unit='EiB'>16</capacity>`), 'domain/memory')).toThrow(
      /^domain\/memory: \d+ KiB is too large/,
    );
  });
});
