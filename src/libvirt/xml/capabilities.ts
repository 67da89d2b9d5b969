// <domainCapabilities> (virConnectGetDomainCapabilities): what the host's QEMU offers one
// virtualization type. Read only as far as the operator judges a spec against it, leniently:
// a section libvirt leaves out means "not known", never an error.
import { attr, children, child, parseAnyXML, textOf } from './codec.js';

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
 * Whether the host's QEMU can boot UEFI, and a secure-boot build of it, for the machine type
 * the document was asked for (libvirt reads QEMU's firmware descriptors for each call: no
 * OVMF installed, no `efi`). Undefined when the document does not say (no firmware list).
 * Read for q35: the secure builds need SMM, which i440fx lacks, so libvirt lists them only
 * for q35.
 */
export function uefiSupport(xml: string): { efi: boolean; secureBoot: boolean } | undefined {
  const { element } = parseAnyXML(
    xml,
    [
      'domainCapabilities.os.enum',
      'domainCapabilities.os.enum.value',
      'domainCapabilities.os.loader.enum',
      'domainCapabilities.os.loader.enum.value',
      'domainCapabilities.os.loader.value',
    ],
    'domainCapabilities',
  );
  const os = child(element, 'os');
  const values = (el: ReturnType<typeof child>, name: string) => {
    const e = children(el ?? {}, 'enum').find((x) => attr(x, 'name') === name);
    return e && children(e, 'value').map((v) => textOf(v).trim());
  };
  const firmware = values(os, 'firmware');
  if (!os || firmware === undefined) return undefined;
  const efi = attr(os, 'supported') !== 'no' && firmware.includes('efi');
  const secure = values(child(os, 'loader'), 'secure') ?? [];
  return { efi, secureBoot: efi && secure.includes('yes') };
}
