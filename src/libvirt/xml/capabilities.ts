// <domainCapabilities> (virConnectGetDomainCapabilities): what the host's QEMU offers one
// virtualization type. Read only as far as the operator judges a spec against it, leniently:
// a section libvirt leaves out means "not known", never an error.
import { attr, children, child, parseAnyXML, textOf, type XmlElement } from './codec.js';

/**
 * The CPU model names the host's QEMU knows for mode `custom`, usable or not (a model QEMU
 * cannot fully provide still starts under TCG, and under KVM without `check='full'`), or
 * undefined when the document does not list them.
 */
export function customCpuModels(xml: string): string[] | undefined {
  const { element } = parseAnyXML(
    xml,
    ['domainCapabilities.cpu.mode', 'domainCapabilities.cpu.mode.model'],
    'domainCapabilities',
  );
  const custom = children(child(element, 'cpu') ?? {}, 'mode').find(
    (m) => attr(m, 'name') === 'custom',
  );
  if (!custom || attr(custom, 'supported') === 'no') return undefined;
  const models = children(custom, 'model')
    .map((m) => textOf(m).trim())
    .filter((m) => m !== '');
  return models.length > 0 ? models : undefined;
}

/**
 * What the host offers for UEFI and an emulated TPM, from the domain capabilities for the
 * machine type they were asked for. Each is undefined when the document does not say.
 * - efi, secureBoot: libvirt reads QEMU's firmware descriptors for each call (no OVMF
 *   installed, no `efi`); a secure build needs SMM, which i440fx lacks, so libvirt lists one
 *   only for q35;
 * - tpmEmulator: libvirt lists the emulator backend only when it finds swtpm and its tools.
 */
export interface HostFirmware {
  efi?: boolean;
  secureBoot?: boolean;
  tpmEmulator?: boolean;
}

export function hostFirmware(xml: string): HostFirmware {
  const { element } = parseAnyXML(
    xml,
    [
      'domainCapabilities.os.enum',
      'domainCapabilities.os.enum.value',
      'domainCapabilities.os.loader.enum',
      'domainCapabilities.os.loader.enum.value',
      'domainCapabilities.os.loader.value',
      'domainCapabilities.devices.tpm.enum',
      'domainCapabilities.devices.tpm.enum.value',
    ],
    'domainCapabilities',
  );
  const values = (el: XmlElement | undefined, name: string) => {
    const e = children(el ?? {}, 'enum').find((x) => attr(x, 'name') === name);
    return e && children(e, 'value').map((v) => textOf(v).trim());
  };
  const found: HostFirmware = {};
  const os = child(element, 'os');
  const firmware = values(os, 'firmware');
  if (os && firmware !== undefined) {
    found.efi = attr(os, 'supported') !== 'no' && firmware.includes('efi');
    const secure = values(child(os, 'loader'), 'secure') ?? [];
    found.secureBoot = found.efi && secure.includes('yes');
  }
  const tpm = child(child(element, 'devices') ?? {}, 'tpm');
  if (tpm && attr(tpm, 'supported') === 'no') found.tpmEmulator = false;
  else if (tpm) {
    const backends = values(tpm, 'backendModel');
    if (backends !== undefined) found.tpmEmulator = backends.includes('emulator');
  }
  return found;
}
