// PCI addresses across a redefinition. The desired document carries none, and a definition
// without them lets libvirt place every device anew, in its own order (NICs first, then the
// controllers, disks, the balloon): one more NIC moves every disk and controller after it to
// another slot at the next boot, and the guest's predictable NIC names and /dev/disk/by-path
// change with them. So a redefinition writes back where each device that stays was.
import type {
  Controller,
  DomainDocument,
  PciAddress,
  PciLayout,
} from '../../libvirt/xml/domain.js';

/**
 * `desired` with the PCI addresses `layout` (the persistent definition it replaces) gave its
 * devices: virtio disks by source file, interfaces by MAC, the balloon, the virtio-scsi
 * controller, the root ports they sit on (by index, so bus numbers stay), and the controllers
 * libvirt added itself (USB, virtio-serial, SATA). New devices get no address: libvirt puts
 * them on free root ports. A layout without placed root ports (libvirt's test driver numbers
 * them but assigns no addresses; a machine type without PCIe) leaves `desired` as it is.
 */
export function keepPciAddresses(desired: DomainDocument, layout: PciLayout): DomainDocument {
  const oldPorts = layout.controllers
    .filter((c) => c.model === 'pcie-root-port' && c.index !== undefined)
    .sort((a, b) => a.index! - b.index!);
  if (!oldPorts.some((p) => p.address)) return desired;
  const portIndexes = new Set(oldPorts.map((p) => p.index!));
  // An address is kept only where its bus stays: the root bus or one of the old root ports.
  const kept = (address: PciAddress | undefined) =>
    address && (busOf(address) === 0 || portIndexes.has(busOf(address))) ? address : undefined;

  const devices = desired.devices;
  const disks = devices.disks.map((disk) => {
    const address =
      disk.target.bus === 'virtio' && disk.source.type === 'file'
        ? kept(layout.disks.get(disk.source.file))
        : undefined;
    return address ? { ...disk, address } : disk;
  });
  const interfaces = devices.interfaces.map((nic) => {
    const address =
      nic.mac === undefined ? undefined : kept(layout.interfaces.get(nic.mac.toLowerCase()));
    return address ? { ...nic, address } : nic;
  });
  const balloonAddress =
    devices.memballoon?.model === 'virtio' ? kept(layout.memballoon) : undefined;
  const memballoon =
    devices.memballoon && balloonAddress
      ? { ...devices.memballoon, address: balloonAddress }
      : devices.memballoon;

  const others = otherControllers(devices.controllers ?? [], layout, kept);
  const used = [...disks, ...interfaces, ...others]
    .map((d) => d.address)
    .concat(memballoon?.address)
    .filter((a): a is PciAddress => a !== undefined)
    .map(busOf);
  const wanted = (devices.controllers ?? []).filter((c) => c.model === 'pcie-root-port').length;
  const ports = rootPorts(oldPorts, wanted, Math.max(0, ...used));

  return {
    ...desired,
    devices: {
      ...devices,
      controllers: [{ type: 'pci', model: 'pcie-root', index: 0 }, ...ports, ...others],
      disks,
      interfaces,
      ...(memballoon ? { memballoon } : {}),
    },
  };
}

/**
 * The old root ports in index order, as many as wanted and at least up to the highest bus a
 * kept device sits on (so no index is skipped), then new ones numbered after them.
 */
function rootPorts(old: Controller[], wanted: number, highestUsed: number): Controller[] {
  const ports: Controller[] = [];
  for (const port of old) {
    if (ports.length >= wanted && port.index! > highestUsed) break;
    ports.push({ type: 'pci', model: 'pcie-root-port', index: port.index!, ...addressOf(port) });
  }
  let next = Math.max(0, ...ports.map((p) => p.index!)) + 1;
  while (ports.length < wanted) ports.push({ type: 'pci', model: 'pcie-root-port', index: next++ });
  return ports;
}

/**
 * The desired controllers other than the PCIe ones (the virtio-scsi bus), at their old index and
 * address, and the controllers libvirt added to the old definition by itself, which it would
 * add again elsewhere.
 */
function otherControllers(
  desired: readonly Controller[],
  layout: PciLayout,
  kept: (a: PciAddress | undefined) => PciAddress | undefined,
): Controller[] {
  const same = (a: Controller, b: Controller) => a.type === b.type && a.model === b.model;
  const ours = desired
    .filter((c) => c.type !== 'pci')
    .map((c, i, all) => {
      // The n-th of a kind takes the n-th of that kind in the old definition.
      const nth = all.slice(0, i).filter((o) => same(o, c)).length;
      const old = layout.controllers.filter((o) => same(o, c))[nth];
      if (!old) return c;
      const address = kept(old.address);
      return { ...c, index: old.index, ...(address ? { address } : {}) };
    });
  const implicit = layout.controllers
    .filter((c) => c.type === 'usb' || c.type === 'virtio-serial' || c.type === 'sata')
    .map((c) => {
      const address = kept(c.address);
      const { address: _dropped, ...rest } = c;
      return address ? { ...rest, address } : rest;
    });
  return [...ours, ...implicit];
}

function addressOf(c: Controller): { address?: PciAddress } {
  return c.address ? { address: c.address } : {};
}

function busOf(address: PciAddress): number {
  return Number.parseInt(address.bus, 16);
}
