// PCI addresses across a redefinition (placement.ts), from the inactive definition the system
// libvirtd wrote for the operator's own document (test/fixtures/xml/libvirt/README.md).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VirtualMachineSpec } from '../../../../src/api/generated/types.js';
import { actMachine } from '../../../../src/controllers/virtual-machine/act.js';
import type { MachineStep } from '../../../../src/controllers/virtual-machine/plan.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { DomainXMLFlags } from '../../../../src/libvirt/constants.js';
import type { Domain } from '../../../../src/libvirt/domain.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import { keepPciAddresses } from '../../../../src/controllers/virtual-machine/placement.js';
import {
  buildDomainXML,
  parsePciLayout,
  type DomainDocument,
  type PciAddress,
  type PciLayout,
} from '../../../../src/libvirt/xml/domain.js';
import { desired, vm } from './machines.js';

const LIBVIRT = join(import.meta.dirname, '../../../fixtures/xml/libvirt');
const OLD_XML = readFileSync(join(LIBVIRT, 'qemu-machine-inactive.xml'), 'utf8');
const TEST_DRIVER_XML = readFileSync(join(LIBVIRT, 'test-driver-domain-test.xml'), 'utf8');

const inputs = {
  volumes: new Map([
    ['root', { path: '/pool/root.qcow2', format: 'qcow2' as const }],
    ['data', { path: '/pool/data.raw', format: 'raw' as const }],
    ['iso', { path: '/pool/install.iso', format: 'raw' as const }],
    ['more', { path: '/pool/more.qcow2', format: 'qcow2' as const }],
  ]),
  cloudInit: undefined,
  consoleLog: undefined,
};
/** The spec the fixture was defined from. */
const SPEC: Partial<VirtualMachineSpec> = {
  disks: [
    { name: 'root', volume: 'root', readOnly: false },
    { name: 'iso', volume: 'iso', device: 'cdrom', readOnly: false },
    { name: 'data', volume: 'data', bus: 'scsi', readOnly: false },
  ],
  interfaces: [{ name: 'eth0', network: 'net-a', model: 'virtio' }],
};
const machine = (spec: Partial<VirtualMachineSpec>) => desired(vm(spec), inputs);

/** Each PCI device's address by what it is, as `virsh dumpxml` shows it. */
function slotsOf(layout: PciLayout): Map<string, string> {
  const at = (a: PciAddress | undefined) => (a ? `${a.bus}:${a.slot}.${a.function}` : 'libvirt');
  const found = new Map<string, string>();
  for (const [file, a] of layout.disks) found.set(`disk ${file}`, at(a));
  for (const [mac, a] of layout.interfaces) found.set(`nic ${mac}`, at(a));
  for (const c of layout.controllers) {
    found.set(`${c.type} ${c.model ?? ''} ${c.index}`, at(c.address));
  }
  if (layout.memballoon) found.set('balloon', at(layout.memballoon));
  return found;
}
/** Where a document, as the operator would define it, puts its devices. */
const slots = (doc: DomainDocument) => slotsOf(parsePciLayout(buildDomainXML(doc)));
/** Where libvirt put the fixture's devices. */
const OLD = slotsOf(parsePciLayout(OLD_XML));
const keep = (doc: DomainDocument) => keepPciAddresses(doc, parsePciLayout(OLD_XML));

describe('parsePciLayout', () => {
  it('reads where libvirt put each PCI device of the operator’s document', () => {
    const layout = parsePciLayout(OLD_XML);
    expect([...layout.disks]).toEqual([
      ['/pool/root.qcow2', { domain: '0x0000', bus: '0x05', slot: '0x00', function: '0x0' }],
    ]);
    expect([...layout.interfaces.values()].map((a) => a.bus)).toEqual(['0x01']);
    expect(layout.memballoon?.bus).toBe('0x06');
    const kinds = layout.controllers.map((c) => `${c.type}/${c.model ?? '-'}/${c.index}`);
    expect(kinds).toContain('pci/pcie-root/0');
    expect(kinds).toContain('scsi/virtio-scsi/0');
    expect(kinds).toContain('usb/qemu-xhci/0');
    expect(kinds).toContain('virtio-serial/-/0');
    expect(kinds).toContain('sata/-/0');
    expect(kinds.filter((k) => k.startsWith('pci/pcie-root-port/'))).toHaveLength(14);
  });
});

describe('keepPciAddresses', () => {
  it('keeps every device that stays where it was when a NIC and a disk are added', () => {
    const grown = keep(
      machine({
        disks: [...SPEC.disks!, { name: 'more', volume: 'more', readOnly: false }],
        // Listed first: without addresses libvirt would give it bus 1 and move eth0.
        interfaces: [{ name: 'eth1', network: 'net-b', model: 'virtio' }, ...SPEC.interfaces!],
      }),
    );
    const placed = slots(grown);
    expect(OLD.size).toBe(22); // 1 disk, 1 NIC, the balloon, 19 controllers
    for (const [device, at] of OLD) expect(placed.get(device), device).toBe(at);
    // The new disk and NIC: libvirt's choice, on the free ports.
    expect(grown.devices.disks.find((d) => d.target.dev === 'vdb')?.address).toBeUndefined();
    expect(grown.devices.interfaces[0]!.address).toBeUndefined();
    const ports = grown.devices.controllers!.filter((c) => c.model === 'pcie-root-port');
    // Two more devices, two more ports, numbered after the old ones.
    expect(ports.map((p) => p.index)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(ports.slice(14).every((p) => p.address === undefined)).toBe(true);
  });

  it('keeps the others where they were when a device goes, and the ports they sit on', () => {
    const shrunk = keep(machine({ ...SPEC, interfaces: [] }));
    const placed = slots(shrunk);
    for (const [device, at] of OLD) {
      if (device.startsWith('nic ')) expect(placed.has(device), device).toBe(false);
      else if (device !== 'pci pcie-root-port 14') expect(placed.get(device), device).toBe(at);
    }
    const ports = shrunk.devices.controllers!.filter((c) => c.model === 'pcie-root-port');
    expect(ports.map((p) => p.index)).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
  });

  it('leaves a document alone when the old definition has no placed root ports', () => {
    const doc = machine(SPEC);
    expect(keepPciAddresses(doc, parsePciLayout(TEST_DRIVER_XML))).toBe(doc);
    // libvirt's test driver numbers the ports of the operator's document but places nothing.
    const layout = parsePciLayout(OLD_XML);
    const numbered = layout.controllers.map(({ address: _placed, ...c }) => c);
    expect(keepPciAddresses(doc, { ...layout, controllers: numbered })).toBe(doc);
  });

  it('does not give a disk that moved off virtio its old PCI slot', () => {
    const moved = keep(
      machine({ ...SPEC, disks: [{ name: 'root', volume: 'root', bus: 'sata', readOnly: false }] }),
    );
    expect(moved.devices.disks[0]!.address).toBeUndefined();
  });
});

describe('a redefinition', () => {
  // A NIC model change is restart-time: the persistent definition is rewritten.
  const changed = machine({
    ...SPEC,
    interfaces: [{ name: 'eth0', network: 'net-a', model: 'e1000e' }],
  });
  const step = (created: boolean): MachineStep => ({ op: 'define', doc: changed, created });
  /** The XML the step defines, the old definition read from `domain`. */
  async function defined(domain: Partial<Domain> | undefined, created = false) {
    const xml: string[] = [];
    const conn = {
      defineDomainXML: (x: string) => (xml.push(x), Promise.resolve(domain)),
    } as unknown as Connect;
    const outcome = await actMachine(conn, domain as Domain | undefined, [step(created)]);
    expect(outcome.failure).toBeUndefined();
    return xml[0]!;
  }

  it('writes the addresses of the persistent definition it replaces, read when it defines', async () => {
    const flags: unknown[] = [];
    const domain = {
      getXMLDesc: (f?: number) => (flags.push(f), Promise.resolve(OLD_XML)),
    };
    expect(slotsOf(parsePciLayout(await defined(domain)))).toEqual(OLD);
    expect(flags).toEqual([DomainXMLFlags.INACTIVE]);
  });

  it('leaves the placement to libvirt for a new domain, or a definition it cannot read', async () => {
    expect(await defined(undefined, true)).toBe(buildDomainXML(changed));
    const unsupported = new LibvirtError(
      'this function is not supported by the connection driver',
      {
        code: ErrorCode.VIR_ERR_NO_SUPPORT,
        domain: ErrorDomain.VIR_FROM_TEST,
        level: 2,
      },
    );
    const cannotTell = { getXMLDesc: () => Promise.reject(unsupported) };
    expect(await defined(cannotTell)).toBe(buildDomainXML(changed));
  });
});
