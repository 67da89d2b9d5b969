import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { XmlDocumentError } from '../../../src/libvirt/xml/codec.js';
import {
  GUEST_AGENT_CHANNEL,
  buildDomainXML,
  changedDomainFields,
  domainNetworks,
  ownedDomainFields,
  parseDomainXML,
  type DomainDocument,
  type Serial,
} from '../../../src/libvirt/xml/domain.js';
import { fullDomain, minimalDomain } from '../../fixtures/xml/cases.js';

const LIBVIRT = join(import.meta.dirname, '../../fixtures/xml/libvirt');
const captured = (name: string) => readFileSync(join(LIBVIRT, name), 'utf8');

/** The document qemu-embed-domain-input.xml describes. */
const embedInput: DomainDocument = {
  type: 'kvm',
  name: 'default_vm1',
  uuid: '6f1b3c1e-0c1a-4a55-9d64-3d2c7b0e8a11',
  title: `t & <x> "q" 'a' ü`,
  description: 'line1\nline2\r',
  stamp: { kind: 'VirtualMachine', namespace: 'default', name: 'vm1', uid: 'abc', generation: 2 },
  memoryKiB: 262144,
  currentMemoryKiB: 131072,
  vcpu: { current: 1, max: 2 },
  os: {
    type: 'hvm',
    arch: 'x86_64',
    machine: 'q35',
    firmware: 'efi',
    kernel: '/var/lib/k',
    initrd: '/var/lib/i',
    cmdline: 'console=ttyS0 a="b & c"',
  },
  features: { acpi: true, apic: true },
  cpu: { mode: 'maximum' },
  clock: { offset: 'utc' },
  onPoweroff: 'destroy',
  onReboot: 'restart',
  onCrash: 'destroy',
  devices: {
    disks: [
      {
        device: 'disk',
        source: { type: 'volume', pool: 'default-pool', volume: 'root.qcow2' },
        driver: { name: 'qemu', type: 'qcow2' },
        target: { dev: 'vda', bus: 'virtio' },
        readonly: false,
        bootOrder: 1,
        alias: 'ua-root',
      },
      {
        device: 'cdrom',
        source: { type: 'file', file: '/var/lib/ci.iso' },
        driver: { name: 'qemu', type: 'raw' },
        target: { dev: 'sda', bus: 'sata' },
        readonly: true,
      },
    ],
    interfaces: [
      { source: { network: 'default' }, mac: '52:54:00:AA:bb:01', model: 'virtio', bootOrder: 2 },
    ],
    serials: [{ source: { type: 'file', path: '/tmp/serial.log' }, port: 0 }],
    consoles: [
      { source: { type: 'file', path: '/tmp/serial.log' }, targetType: 'serial', port: 0 },
    ],
    channels: [{ type: 'unix', target: { type: 'virtio', name: GUEST_AGENT_CHANNEL } }],
    memballoon: { model: 'virtio', statsPeriod: 10 },
  },
};

function domain(body: string, attrs = `type='kvm'`): string {
  return `<domain ${attrs}><name>d</name><uuid>u</uuid><memory>1024</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>${body}</domain>`;
}

describe('parsing what the real QEMU driver returns', () => {
  const observed = parseDomainXML(captured('qemu-embed-domain-inactive.xml'));

  it('ignores everything libvirt added and recovers the owned fields', () => {
    // Only the description differs: libvirt wrote its CR raw and XML parsing turns a raw CR
    // into LF (see the test-driver quirk test).
    expect(changedDomainFields(embedInput, observed)).toEqual(['description']);
    expect(changedDomainFields({ ...embedInput, description: 'line1\nline2\n' }, observed)).toEqual(
      [],
    );
  });

  it('reads the expanded machine type, which is why it is not an owned field', () => {
    expect(observed.os.machine).toBe('pc-q35-7.2');
    expect(ownedDomainFields(observed).os).not.toHaveProperty('machine');
  });

  it('reads MAC addresses as libvirt prints them, lower case', () => {
    expect(observed.devices.interfaces[0]?.mac).toBe('52:54:00:aa:bb:01');
  });

  it('keeps the stamp and the user strings exactly', () => {
    expect(observed.stamp).toStrictEqual(embedInput.stamp);
    expect(observed.title).toBe(embedInput.title);
    expect(observed.os.cmdline).toBe(embedInput.os.cmdline);
  });
});

describe('parseDomainXML', () => {
  it('reads the unit of a scsi disk on the first controller only, and writes it back', () => {
    const disk = (dev: string, controller: number, unit: number) =>
      `<disk type='file' device='disk'><source file='/p/${dev}.raw'/>` +
      `<target dev='${dev}' bus='scsi'/>` +
      `<address type='drive' controller='${controller}' bus='0' target='0' unit='${unit}'/></disk>`;
    const xml = domain(`<devices>${disk('sdc', 0, 9)}${disk('sdh', 1, 0)}</devices>`);
    const doc = parseDomainXML(xml);
    expect(doc.devices.disks.map((d) => d.scsiUnit)).toEqual([9, undefined]);
    const again = parseDomainXML(buildDomainXML(doc)).devices.disks;
    expect(again.map((d) => d.scsiUnit)).toEqual([9, undefined]);
  });

  it('reads the network port of a running interface, and never writes it', () => {
    const xml = domain(
      `<devices><interface type='network'><mac address='52:54:00:d1:83:22'/>` +
        `<source network='lab' portid='f57b8b5b-4ed6-4b37-89a3-c3c9834b3152' bridge='lvo95d171d5a4'/>` +
        `<target dev='vnet26'/></interface></devices>`,
    );
    const nic = parseDomainXML(xml).devices.interfaces[0]!;
    expect(nic.port).toBe('f57b8b5b-4ed6-4b37-89a3-c3c9834b3152');
    expect(buildDomainXML(parseDomainXML(xml))).not.toContain('portid');
  });

  it('reads both <vcpu> forms', () => {
    expect(
      parseDomainXML(domain('').replace('<vcpu>1</vcpu>', `<vcpu placement='static'>4</vcpu>`))
        .vcpu,
    ).toEqual({
      current: 4,
      max: 4,
    });
    expect(
      parseDomainXML(
        domain('').replace('<vcpu>1</vcpu>', `<vcpu placement='static' current='2'>4</vcpu>`),
      ).vcpu,
    ).toEqual({ current: 2, max: 4 });
  });

  it('reads memory in any unit as KiB, KiB being the default', () => {
    const mem = (xml: string) => {
      const doc = parseDomainXML(domain(xml).replace('<memory>1024</memory>', ''));
      return [doc.memoryKiB, doc.currentMemoryKiB];
    };
    expect(mem(`<memory>2048</memory>`)).toEqual([2048, undefined]);
    expect(
      mem(`<memory unit='MiB'>512</memory><currentMemory unit='GiB'>0</currentMemory>`),
    ).toEqual([524288, 0]);
    expect(
      mem(`<memory unit='bytes'>268435456</memory><currentMemory unit='M'>128</currentMemory>`),
    ).toEqual([262144, 131072]);
  });

  it('skips devices of kinds the operator never creates', () => {
    const doc = parseDomainXML(
      domain(`<devices>
        <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdz' bus='virtio'/></disk>
        <disk type='network' device='disk'><source protocol='rbd' name='p/i'/><target dev='vdy' bus='virtio'/></disk>
        <disk type='file' device='disk'><source file='/x.img'/><target dev='vda' bus='virtio'/></disk>
        <interface type='bridge'><source bridge='br0'/></interface>
        <interface type='user'/>
        <serial type='tcp'><source mode='bind' host='0.0.0.0' service='2445'/><target port='0'/></serial>
        <console type='pty' tty='/dev/pts/3'><source path='/dev/pts/3'/><target type='virtio' port='0'/></console>
        <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
        <channel type='unix'><source mode='bind' path='/run/x.sock'/><target type='virtio' name='${GUEST_AGENT_CHANNEL}' state='connected'/></channel>
        <graphics type='vnc' port='-1'/>
        <video><model type='vga'/></video>
      </devices>`),
    );
    expect(doc.devices).toStrictEqual({
      disks: [
        {
          device: 'disk',
          source: { type: 'file', file: '/x.img' },
          target: { dev: 'vda', bus: 'virtio' },
          readonly: false,
        },
      ],
      interfaces: [],
      serials: [],
      consoles: [{ source: { type: 'pty' }, targetType: 'virtio', port: 0 }],
      channels: [{ type: 'unix', target: { type: 'virtio', name: GUEST_AGENT_CHANNEL } }],
    });
  });

  it('reads a running pty serial with its virtlogd log as the QEMU driver prints it', () => {
    // Captured from libvirt 9.0 (virsh dumpxml of a running domain).
    const doc = parseDomainXML(
      domain(`<devices>
        <serial type='pty'>
          <source path='/dev/pts/1'/>
          <log file='/state/console/u.log' append='off'/>
          <target type='isa-serial' port='0'><model name='isa-serial'/></target>
          <alias name='serial0'/>
        </serial>
        <console type='pty' tty='/dev/pts/1'>
          <source path='/dev/pts/1'/>
          <log file='/state/console/u.log' append='off'/>
          <target type='serial' port='0'/>
          <alias name='serial0'/>
        </console>
      </devices>`),
    );
    const serial: Serial = {
      source: { type: 'pty' },
      log: { file: '/state/console/u.log', append: 'off' },
    };
    expect(doc.devices.serials).toStrictEqual([{ ...serial, port: 0 }]);
    const withSerials = (...serials: Serial[]): DomainDocument => ({
      ...doc,
      devices: { ...doc.devices, consoles: [], serials },
    });
    // What the operator writes (no port, no console mirror) survives its own codec and
    // compares equal to that read-back: no spurious diff.
    expect(parseDomainXML(buildDomainXML(withSerials(serial))).devices.serials).toStrictEqual([
      serial,
    ]);
    expect(changedDomainFields(withSerials({ ...serial, port: 0 }), doc)).toEqual([]);
    // A log that appears or goes is a change of the serial.
    const withoutLog = withSerials({ source: { type: 'pty' }, port: 0 });
    expect(changedDomainFields(withoutLog, doc)).toEqual(['serials[0].log']);
    expect(changedDomainFields(withSerials({ ...serial, port: 0 }), withoutLog)).toEqual([
      'serials[0].log',
    ]);
  });

  it('reads a domain without devices, features or optional elements', () => {
    expect(parseDomainXML(domain(''))).toStrictEqual({
      type: 'kvm',
      name: 'd',
      uuid: 'u',
      memoryKiB: 1024,
      vcpu: { current: 1, max: 1 },
      os: { type: 'hvm', arch: 'x86_64' },
      features: { acpi: false, apic: false },
      devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
    });
  });

  it.each([
    [`type='xen'`, '', 'domain@type: "xen" is not one of'],
    [
      `type='kvm'`,
      `<devices><disk type='file'><source file='/x'/><target dev='hda' bus='ide'/></disk></devices>`,
      `domain/devices/disk[0]/target@bus: "ide" is not one of 'virtio', 'sata', 'scsi'`,
    ],
    [
      `type='kvm'`,
      `<devices><disk type='file'><source file='/x'/><target dev='vda' bus='virtio'/></disk><disk type='volume'><source pool='p'/><target dev='vdb' bus='virtio'/></disk></devices>`,
      'domain/devices/disk[1]/source@volume: is missing',
    ],
    [
      `type='kvm'`,
      `<devices><disk type='file' device='floppy'><source file='/x'/><target dev='fda' bus='virtio'/></disk></devices>`,
      'domain/devices/disk[0]@device: "floppy"',
    ],
    [
      `type='kvm'`,
      `<devices><interface type='network'><source bridge='b'/></interface></devices>`,
      'domain/devices/interface[0]/source@network: is missing',
    ],
    [`type='kvm'`, `<on_crash>explode</on_crash>`, 'domain/on_crash: "explode"'],
    [`type='kvm'`, `<cpu mode='host'/>`, 'domain/cpu@mode: "host"'],
    [
      `type='kvm'`,
      `<devices><memballoon model='xen'/></devices>`,
      'domain/devices/memballoon@model',
    ],
    [
      `type='kvm'`,
      `<devices><interface type='network'><source network='n'/><boot order='first'/></interface></devices>`,
      'domain/devices/interface[0]/boot@order: "first" is not a non-negative integer',
    ],
  ])('refuses <domain %s> with %s, naming the field', (attrs, body, message) => {
    expect(() => parseDomainXML(domain(body, attrs))).toThrow(message);
  });

  it('refuses a domain without its required parts', () => {
    expect(() => parseDomainXML(`<domain type='kvm'><uuid>u</uuid></domain>`)).toThrow(
      'domain/name: is missing',
    );
    expect(() => parseDomainXML(domain('').replace('<vcpu>1</vcpu>', ''))).toThrow(
      'domain/vcpu: is missing',
    );
    expect(() =>
      parseDomainXML(domain('').replace('<memory>1024</memory>', '<memory>lots</memory>')),
    ).toThrow('domain/memory: "lots" is not a non-negative integer');
    expect(() => parseDomainXML(domain('').replace('hvm', 'xen'))).toThrow('domain/os/type: "xen"');
    expect(() => parseDomainXML('<network/>')).toThrow(XmlDocumentError);
  });

  it("refuses the test driver's built-in domain, whose type is 'test'", () => {
    expect(() => parseDomainXML(captured('test-driver-domain-test.xml'))).toThrow(
      `domain@type: "test" is not one of 'kvm', 'qemu'`,
    );
  });
});

describe('buildDomainXML', () => {
  it('writes boot order per device, never <boot dev>', () => {
    const xml = buildDomainXML(fullDomain);
    expect(xml).toContain('<boot order="1"/>');
    expect(xml).not.toMatch(/<boot dev/);
  });

  it('leaves <features> out when no feature is on, and omits graphics', () => {
    const xml = buildDomainXML(minimalDomain);
    expect(xml).not.toContain('<features');
    expect(xml).not.toContain('<graphics');
  });

  it('refuses a control character in a user string, naming where it is', () => {
    expect(() =>
      buildDomainXML({
        ...minimalDomain,
        os: { ...minimalDomain.os, cmdline: 'console=ttyS0\u0000' },
      }),
    ).toThrow('domain/os/cmdline: contains U+0000');
    const disks = [
      { ...fullDomain.devices.disks[2]!, source: { type: 'file' as const, file: '/x\u001f' } },
    ];
    expect(() =>
      buildDomainXML({ ...minimalDomain, devices: { ...minimalDomain.devices, disks } }),
    ).toThrow('domain/devices/disk[0]/source/@file: contains U+001F');
  });
});

describe('changedDomainFields', () => {
  const observed = parseDomainXML(buildDomainXML(fullDomain));
  const change = (edit: (d: DomainDocument) => void): string[] => {
    const desired = structuredClone(fullDomain);
    edit(desired);
    return changedDomainFields(desired, observed);
  };

  it('finds nothing when the owned fields agree', () => {
    expect(change(() => {})).toEqual([]);
  });

  it('names each owned field that differs', () => {
    expect(change((d) => (d.currentMemoryKiB = 1048576))).toEqual(['currentMemoryKiB']);
    expect(change((d) => (d.vcpu.current = 3))).toEqual(['vcpu.current']);
    expect(change((d) => (d.os.firmware = undefined))).toEqual(['os.firmware']);
    expect(change((d) => (d.devices.disks[0]!.bootOrder = undefined))).toEqual([
      'disks[0].bootOrder',
    ]);
    expect(change((d) => (d.devices.disks[1]!.readonly = false))).toEqual(['disks[1].readonly']);
    expect(change((d) => d.devices.disks.pop())).toEqual(['disks']);
    expect(change((d) => (d.devices.interfaces[1]!.source.network = 'other'))).toEqual([
      'interfaces[1].network',
    ]);
    expect(change((d) => (d.devices.memballoon = { model: 'virtio' }))).toEqual([
      'memballoon.statsPeriod',
    ]);
    expect(change((d) => (d.devices.channels = []))).toEqual(['channels']);
    expect(change((d) => (d.type = 'qemu'))).toEqual(['type']);
  });

  it('leaves to libvirt what the desired document does not set', () => {
    expect(
      change((d) => {
        d.title = undefined;
        d.description = undefined;
        d.cpu = undefined;
        d.clock = undefined;
        d.onCrash = undefined;
        d.os.machine = 'pc-q35-7.2';
        d.devices.interfaces[0]!.mac = undefined;
        d.devices.interfaces[0]!.alias = undefined;
        d.devices.consoles = [];
        d.devices.memballoon = undefined;
      }),
    ).toEqual([]);
  });

  it('compares MAC addresses and UUIDs without regard to case', () => {
    expect(
      change((d) => {
        d.devices.interfaces[0]!.mac = d.devices.interfaces[0]!.mac!.toUpperCase();
        d.uuid = d.uuid.toUpperCase();
      }),
    ).toEqual([]);
  });

  it('treats an absent currentMemory as equal to memory, as libvirt does', () => {
    const desired = { ...minimalDomain };
    const observedWithCurrent = { ...minimalDomain, currentMemoryKiB: minimalDomain.memoryKiB };
    expect(changedDomainFields(desired, observedWithCurrent)).toEqual([]);
  });
});

describe('domainNetworks', () => {
  it('names the networks of type network interfaces, once each, and skips the rest', () => {
    const xml =
      `<domain type='kvm' id='3'><name>any</name><devices>` +
      `<interface type='network'><mac address='52:54:00:00:00:01'/>` +
      `<source network='lab' portid='0f5b6c4a-1111-2222-3333-444455556666' bridge='virbr9'/>` +
      `<target dev='vnet0'/></interface>` +
      `<interface type='network'><source network='lab'/></interface>` +
      `<interface type='bridge'><source bridge='br0'/></interface>` +
      `<interface type='network'><source network='other'/></interface>` +
      `<interface type='user'/></devices></domain>`;
    expect(domainNetworks(xml)).toEqual(['lab', 'other']);
  });

  it('is empty for a domain without devices', () => {
    expect(domainNetworks(`<domain type='test'><name>bare</name></domain>`)).toEqual([]);
  });
});
