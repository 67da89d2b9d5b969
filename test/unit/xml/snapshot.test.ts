import { describe, expect, it } from 'vitest';
import {
  buildRedefineSnapshotXML,
  buildSnapshotXML,
  addedVcpus,
  hasPflashLoader,
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

  it('builds a redefinition with the domain carried over parsed, its text still escaped', () => {
    const domainXml = `<domain type='qemu'>
  <name>ns_a&amp;b</name>
  <metadata><lvo:owner xmlns:lvo="https://virt.dev/owner" name="a&lt;b"/></metadata>
  <devices><disk type='file' device='disk'><source file='/p/x&apos;y.qcow2'/><target dev='vda'/></disk><disk type='file' device='cdrom'><target dev='sda'/><readonly/></disk></devices>
</domain>`;
    const xml = buildRedefineSnapshotXML(
      {
        name: 's',
        description: 'a<b',
        memory: 'no',
        disks: [{ name: 'vda', snapshot: 'internal' }],
      },
      { state: 'shutoff', creationTime: 1796309332 },
      domainXml,
    );
    expect(xml).toContain('<description>a&lt;b</description>');
    expect(xml).toContain('<creationTime>1796309332</creationTime>');
    expect(xml).toContain('<state>shutoff</state>');
    expect(xml).toContain('<name>ns_a&amp;b</name>');
    expect(xml).toContain('name="a&lt;b"');
    expect(xml).toContain('file="/p/x&apos;y.qcow2"');
    // Both disks of the domain survive, the second with its empty <readonly/>.
    expect(
      domainDiskViews(xml.slice(xml.indexOf('<domain ')).replace('</domainsnapshot>', '')),
    ).toMatchObject([
      { name: 'vda', source: "/p/x'y.qcow2" },
      { name: 'sda', device: 'cdrom', readonly: true },
    ]);
    expect(parseSnapshotXML(xml)).toMatchObject({ name: 's', state: 'shutoff' });
  });

  it('counts the vCPUs added to a running domain (hotpluggable and enabled)', () => {
    // What libvirt 9.0 reports after `virsh setvcpus --live 2` on a domain booted with 1 of 4.
    const live = `<domain type='qemu'><name>x</name>
  <vcpu placement='static' current='2'>4</vcpu>
  <vcpus>
    <vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>
    <vcpu id='1' enabled='yes' hotpluggable='yes' order='2'/>
    <vcpu id='2' enabled='no' hotpluggable='yes'/>
    <vcpu id='3' enabled='no' hotpluggable='yes'/>
  </vcpus><devices/></domain>`;
    expect(addedVcpus(live)).toBe(1);
    // Before the change libvirt has no <vcpus> element at all.
    expect(addedVcpus("<domain><vcpu current='1'>4</vcpu><devices/></domain>")).toBe(0);
  });

  it('tells a running domain on pflash (UEFI) firmware', () => {
    // libvirt 9.0's running definition of `<os firmware='efi'>`; the persistent one has no loader.
    const live = `<domain type='qemu'><name>x</name><os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <firmware><feature enabled='no' name='secure-boot'/></firmware>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
  </os><devices/></domain>`;
    expect(hasPflashLoader(live)).toBe(true);
    expect(hasPflashLoader("<domain><os firmware='efi'><type>hvm</type></os></domain>")).toBe(
      false,
    );
    expect(hasPflashLoader('<domain><os><type>hvm</type></os><devices/></domain>')).toBe(false);
  });

  it('reads back what libvirt reports', () => {
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

  it('reads each disk’s file from the domain kept with the snapshot', () => {
    const xml = `<domainsnapshot>
  <name>s1</name>
  <disks><disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='no'/></disks>
  <domain type='qemu'><name>x</name><devices>
    <disk type='file' device='disk'><source file='/p/data'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/p/scratch'/><target dev='vdb' bus='virtio'/><readonly/></disk>
  </devices></domain>
</domainsnapshot>`;
    expect(parseSnapshotXML(xml).disks).toEqual([
      { name: 'vda', snapshot: 'internal', source: '/p/data' },
      { name: 'vdb', snapshot: 'no', source: '/p/scratch' },
    ]);
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
