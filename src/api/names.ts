// How the API's objects map to names and identities on a libvirt host. These are part of the
// API contract (the CRD descriptions state them), so they live here, beside the types.
import { createHash } from 'node:crypto';

interface Named {
  metadata?: { name?: string; namespace?: string; uid?: string };
}

function nameOf(obj: Named, what: string): string {
  const name = obj.metadata?.name;
  if (!name) throw new TypeError(`${what} has no metadata.name`);
  return name;
}

function namespaceOf(obj: Named, what: string): string {
  const ns = obj.metadata?.namespace;
  if (!ns) throw new TypeError(`${what} '${obj.metadata?.name ?? ''}' has no metadata.namespace`);
  return ns;
}

/**
 * The libvirt domain name of a VirtualMachine: `<namespace>_<name>`. A namespace is a DNS label
 * (no '_'), so the name maps back to exactly one object.
 */
export function domainName(vm: Named): string {
  return `${namespaceOf(vm, 'VirtualMachine')}_${nameOf(vm, 'VirtualMachine')}`;
}

/**
 * The file name of a Volume inside its pool's directory: `<namespace>_<name>`. Both parts are
 * DNS names (no '/', no '..'), and a Volume name is at most 128 characters, so this is always
 * one plain file name of at most 63 + 1 + 128 bytes, never a path.
 */
export function volumeFileName(volume: Named): string {
  return `${namespaceOf(volume, 'Volume')}_${nameOf(volume, 'Volume')}`;
}

/** The libvirt UUID of any of our objects: spec.uuid when a VirtualMachine sets it, else metadata.uid. */
export function libvirtUuid(obj: Named & { spec?: { uuid?: string } }): string {
  const uuid = obj.spec?.uuid ?? obj.metadata?.uid;
  if (!uuid)
    throw new TypeError(`${obj.metadata?.name ?? 'object'} has neither spec.uuid nor metadata.uid`);
  return uuid.toLowerCase();
}

/**
 * The default MAC address of a VirtualMachine interface: QEMU's locally administered prefix
 * 52:54:00 and three bytes of SHA-256 over uid and interface name, so it stays the same across
 * agent restarts and re-definitions of the domain.
 */
export function defaultMacAddress(uid: string, interfaceName: string): string {
  const digest = createHash('sha256').update(`${uid}/${interfaceName}`).digest();
  const tail = [...digest.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0'));
  return ['52', '54', '00', ...tail].join(':');
}
