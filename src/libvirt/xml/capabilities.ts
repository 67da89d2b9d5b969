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
