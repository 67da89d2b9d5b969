import { describe, expect, it } from 'vitest';
import {
  buildSnapshotXML,
  domainDiskViews,
  parseSnapshotXML,
} from '../../../src/libvirt/xml/snapshot.js';

describe('<domainsnapshot> documents', () => {
  it('builds what virDomainSnapshotCreateXML takes, escaping user text', () => {
    expect(
      buildSnapshotXML({
        name: 'a<b',
        description: 'x & "y"',
        memory: 'internal',
        disks: [
          { name: 'vda', snapshot: 'internal' },
          { name: 'sda', snapshot: 'no' },
        ],
      }),
    ).toBe(
      [
        '<domainsnapshot>',
        '  <name>a&lt;b</name>',
        '  <description>x &amp; &quot;y&quot;</description>',
        '  <memory snapshot="internal"/>',
        '  <disks>',
        '    <disk name="vda" snapshot="internal"/>',
        '    <disk name="sda" snapshot="no"/>',
        '  </disks>',
        '</domainsnapshot>',
        '',
      ].join('\n'),
    );
  });

  it('reads back what libvirt reports, ignoring the embedded domain', () => {
    const xml = `<domainsnapshot>
  <name>s1</name>
  <description>d</description>
  <state>running</state>
  <parent><name>s0</name></parent>
  <creationTime>1796309332</creationTime>
  <memory snapshot='internal'/>
  <disks><disk name='vda' snapshot='internal'/><disk name='sda' snapshot='no'/></disks>
  <domain type='qemu'><name>x</name><devices><disk device='disk'><target dev='vda'/></disk></devices></domain>
</domainsnapshot>`;
    expect(parseSnapshotXML(xml)).toEqual({
      name: 's1',
      description: 'd',
      state: 'running',
      creationTime: 1796309332,
      memory: 'internal',
      disks: [
        { name: 'vda', snapshot: 'internal' },
        { name: 'sda', snapshot: 'no' },
      ],
    });
  });

  it('views any domain disk: format, device, read-only, source', () => {
    const xml = `<domain type='qemu'><name>x</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a'/><target dev='vda' bus='virtio'/></disk>
  <disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sdb' bus='ide'/></disk>
  <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/p/c.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
</devices></domain>`;
    expect(domainDiskViews(xml)).toEqual([
      { name: 'vda', device: 'disk', format: 'qcow2', readonly: false, source: '/p/a' },
      { name: 'sdb', device: 'lun', readonly: false, source: '/dev/sdz' },
      { name: 'sda', device: 'cdrom', format: 'raw', readonly: true, source: '/p/c.iso' },
    ]);
  });
});
