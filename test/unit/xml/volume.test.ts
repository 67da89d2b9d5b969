import { describe, expect, it } from 'vitest';
import {
  buildVolumeXML,
  changedVolumeFields,
  parseVolumeXML,
  type VolumeDocument,
} from '../../../src/libvirt/xml/volume.js';
import { backedVolume, qcow2Volume } from '../../fixtures/xml/cases.js';

describe('parseVolumeXML', () => {
  it('reads what the test driver returns, with path and key', () => {
    const xml = `<volume type='file'>
  <name>v1.qcow2</name>
  <key>/var/lib/x/v1.qcow2</key>
  <capacity unit='bytes'>1073741824</capacity>
  <allocation unit='bytes'>0</allocation>
  <physical unit='bytes'>196608</physical>
  <target>
    <path>/var/lib/x/v1.qcow2</path>
    <format type='qcow2'/>
    <permissions><mode>0600</mode><owner>0</owner><group>0</group></permissions>
    <timestamps><atime>1.0</atime></timestamps>
    <compat>1.1</compat>
    <clusterSize unit='B'>65536</clusterSize>
  </target>
  <backingStore/>
</volume>`;
    expect(parseVolumeXML(xml)).toStrictEqual({
      name: 'v1.qcow2',
      capacity: 1073741824n,
      allocation: 0n,
      format: 'qcow2',
      path: '/var/lib/x/v1.qcow2',
      key: '/var/lib/x/v1.qcow2',
    });
  });

  it('normalises capacity units to bytes, beyond 2^53 exactly', () => {
    const cap = (c: string) =>
      parseVolumeXML(`<volume><name>v</name>${c}<target><format type='raw'/></target></volume>`)
        .capacity;
    expect(cap(`<capacity unit='G'>10</capacity>`)).toBe(10n * 2n ** 30n);
    expect(cap(`<capacity unit='GB'>10</capacity>`)).toBe(10n * 10n ** 9n);
    expect(cap(`<capacity>512</capacity>`)).toBe(512n);
    expect(cap(`<capacity unit='EiB'>8</capacity>`)).toBe(2n ** 63n);
    expect(cap(`<capacity unit='bytes'>9007199254740993</capacity>`)).toBe(9007199254740993n);
  });

  it("reads an ISO's probed format", () => {
    expect(
      parseVolumeXML(
        `<volume><name>ci.iso</name><capacity>0</capacity><target><format type='iso'/></target></volume>`,
      ).format,
    ).toBe('iso');
  });

  it.each([
    [
      `<volume><name>v</name><target><format type='raw'/></target></volume>`,
      'volume/capacity: is missing',
    ],
    [
      `<volume><name>v</name><capacity unit='parsecs'>1</capacity><target><format type='raw'/></target></volume>`,
      'volume/capacity@unit: unknown unit "parsecs"',
    ],
    [
      `<volume><name>v</name><capacity>1</capacity></volume>`,
      'volume/target/format@type: is missing',
    ],
  ])('refuses %s, naming the field', (xml, message) => {
    expect(() => parseVolumeXML(xml)).toThrow(message);
  });

  // A file put in the pool behind our back: read as it is, so its clash can be reported.
  it('reads a format the operator never writes (vmdk, a vdi backing file) as libvirt names it', () => {
    expect(
      parseVolumeXML(
        `<volume><name>v</name><capacity>1</capacity><target><format type='vmdk'/></target><backingStore><path>/b</path><format type='vdi'/></backingStore></volume>`,
      ),
    ).toMatchObject({ format: 'vmdk', backingStore: { path: '/b', format: 'vdi' } });
  });
});

describe('buildVolumeXML', () => {
  it('writes sizes in bytes, exactly', () => {
    const xml = buildVolumeXML({
      name: 'v',
      capacity: 2n ** 64n - 1n,
      allocation: 1n,
      format: 'raw',
    });
    expect(xml).toContain('<capacity unit="bytes">18446744073709551615</capacity>');
    expect(xml).toContain('<allocation unit="bytes">1</allocation>');
  });

  // libvirt makes qcow2 v2 (compat 0.10) unless told; a v2 image with internal snapshots
  // cannot grow. The e2e snapshot test grows such a Volume on the real libvirtd.
  it('asks for qcow2 v3 (compat 1.1), and nothing of the kind for raw', () => {
    const qcow2 = buildVolumeXML({ name: 'v', capacity: 1024n, format: 'qcow2' });
    expect(qcow2).toMatch(/<target>\s*<format type="qcow2"\/>\s*<compat>1\.1<\/compat>/);
    expect(buildVolumeXML({ name: 'v', capacity: 1024n, format: 'raw' })).not.toContain('compat');
    expect(parseVolumeXML(qcow2).format).toBe('qcow2');
  });
});

describe('changedVolumeFields', () => {
  const observed = parseVolumeXML(buildVolumeXML(backedVolume));

  it('compares name, capacity, format and backing store but not allocation', () => {
    expect(changedVolumeFields(backedVolume, { ...observed, allocation: 123n })).toEqual([]);
    const grown: VolumeDocument = { ...backedVolume, capacity: backedVolume.capacity + 1n };
    expect(changedVolumeFields(grown, observed)).toEqual(['capacity']);
    expect(changedVolumeFields({ ...backedVolume, backingStore: undefined }, observed)).toEqual([
      'backingStore',
    ]);
    expect(changedVolumeFields(qcow2Volume, observed)).toEqual([
      'name',
      'capacity',
      'backingStore',
    ]);
  });
});
