// VirtualMachine spec -> the libvirt domain document this node should have. Pure: Volumes and
// VirtualNetworks are resolved through lookups passed in (the cache), never fetched here.
//
// Rules users see, stated once here:
// - the domain is named `<namespace>_<name>` (a namespace is a DNS label, so '_' cannot occur
//   in it and the name maps back to one object) and has UUID spec.uuid or metadata.uid;
// - disks are file disks on the Volume's status.path, driver type = the Volume's format,
//   targets vda, vdb... on virtio and sda, sdb... on sata and scsi (one shared sd namespace, in
//   spec order), then the cloud-init CD-ROM on the next sd name; scsi disks on the unit of
//   their sd name (sda 0, sdb 1...) of the one virtio-scsi controller; a cdrom disk (an ISO
//   Volume) is read-only on sata unless it says scsi;
// - the CPU: spec.cpu's mode, model and topology; without a mode, host-model on kvm and QEMU's
//   default model on qemu (TCG has no host CPU to model);
// - spare PCIe root ports (HOTPLUG_PORTS beyond what the devices take): q35 places every
//   hot-plugged disk or NIC on a free root port, and libvirt adds none for later use; and a
//   virtio-scsi controller for scsi disks and CD-ROMs (also ones attached later);
// - a NIC without macAddress gets 52:54:00 (QEMU's locally administered prefix) + 3 bytes of
//   SHA-256(metadata.uid + '/' + interface name): stable across agent restarts and redefinitions;
// - the serial console is a pty (`libvirt-operator console` attaches to it); with the annotation
//   `virt.dev/console-log: "true"` virtlogd also copies it to `<stateDir>/console/<metadata.uid>.log`,
//   emptied at each start (what end-to-end tests read the guest console from);
// - always: ACPI (graceful shutdown needs it), a virtio balloon reporting stats every 5 s (so
//   status.memory.actual is known), the qemu-guest-agent channel, machine q35 on x86_64,
//   on_poweroff destroy / on_reboot restart / on_crash destroy, and our ownership stamp;
// - firmware uefi: libvirt picks the OVMF build from QEMU's firmware descriptors by the
//   features asked for (secure-boot, enrolled-keys), and keeps the UEFI variables in
//   `<stateDir>/nvram/<metadata.uid>_VARS.fd`; secureBoot adds SMM and a secure loader;
// - tpm: a TPM 2.0 emulated by swtpm, model tpm-crb. libvirt 9.0 has no per-domain place for
//   its state (<backend><source> came later): it lives in /var/lib/libvirt/swtpm/<uuid>.
import { join } from 'node:path';
import { isStalledReason } from '../../api/conditions.js';
import { parseQuantity } from '../../api/quantity.js';
import { defaultMacAddress, domainName, libvirtUuid } from '../../api/names.js';
import type { VirtualMachine, VirtualNetwork, Volume } from '../../api/generated/types.js';
import {
  GUEST_AGENT_CHANNEL,
  type Controller,
  type Disk,
  type DomainCpu,
  type DiskBus,
  type DomainDocument,
  type NetworkInterface,
  type Serial,
} from '../../libvirt/xml/domain.js';
import { cloudInitImage, type CloudInitImage } from './cloud-init.js';
import type { Problem } from '../kit.js';
import type { HostFirmware } from '../../libvirt/xml/capabilities.js';
import { selectsNode, type NodeLabels } from '../node-selector.js';

const CONSOLE_LOG_ANNOTATION = 'virt.dev/console-log';
/** Seconds between the balloon driver's memory statistics (virDomainMemoryStats). */
const BALLOON_STATS_PERIOD = 5;
const MACHINE = 'q35';
/** Free PCIe root ports left for live attaches (virt-install leaves a similar number). */
const HOTPLUG_PORTS = 8;
/** Devices besides disks and NICs that take a root port: balloon, virtio-serial, USB, SCSI. */
const OTHER_PCI_DEVICES = 4;
const ARCH = 'x86_64';

export interface VolumeSource {
  path: string;
  format: 'qcow2' | 'raw';
}

/** What the spec refers to, resolved on this node. */
export interface MachineInputs {
  /** By Volume name (same namespace). */
  volumes: ReadonlyMap<string, VolumeSource>;
  cloudInit: CloudInitImage | undefined;
  /** The serial console's log file, when the console-log annotation asks for one. */
  consoleLog: string | undefined;
  /** The UEFI variable store, for firmware uefi. */
  nvram?: string;
}

export interface References {
  volume(namespace: string, name: string): Volume | undefined;
  network(name: string): VirtualNetwork | undefined;
  /** The machines on this node with an interface on the network (this one included). */
  machinesOn?(network: string): VirtualMachine[];
  /** The Volumes layered on this one (spec.source.backingVolume names it). */
  overlaysOf?(namespace: string, name: string): string[];
  /** This node's labels, for networks' spec.nodeSelector; undefined while the Node is unknown. */
  nodeLabels?(): NodeLabels | undefined;
  /** The networks the running domain's interfaces are on (none while it does not run). */
  runningOn?: readonly string[];
  /**
   * MACs other machines' running guests hold on a network by their live definitions
   * (heldKey -> "namespace/name"), whatever their specs now say.
   */
  heldMacs?: ReadonlyMap<string, string>;
}

/** The key of a MAC on a network in References.heldMacs. */
export const heldKey = (network: string, mac: string) => `${network} ${mac.toLowerCase()}`;

/** Phases in which a Volume's file exists and may be attached. */
const USABLE_VOLUME_PHASES = new Set(['Available', 'InUse']);

/** Where a machine's serial console is logged when the annotation asks for it. */
export function consoleLogFile(stateDir: string, uid: string): string {
  return join(stateDir, 'console', `${uid}.log`);
}

/**
 * Where libvirt 9.0 (qemu:///system) keeps the swtpm state of the domain with this UUID (see
 * the header); removed with the machine.
 */
export function tpmStateDir(uuid: string): string {
  return join('/var/lib/libvirt/swtpm', uuid);
}

/** Where a UEFI machine's variable store lives; removed with the machine. */
export function nvramFile(stateDir: string, uid: string): string {
  return join(stateDir, 'nvram', `${uid}_VARS.fd`);
}

function consoleLogPath(vm: VirtualMachine, stateDir: string): string | undefined {
  if (vm.metadata.annotations?.[CONSOLE_LOG_ANNOTATION] !== 'true') return undefined;
  return consoleLogFile(stateDir, String(vm.metadata.uid));
}

/** What the spec asks for that this agent cannot do at all; waits for a spec change. */
export function unsupportedSpec(vm: VirtualMachine): Problem | undefined {
  if (vm.spec.cloudInit?.secretRef) {
    return {
      reason: 'Unsupported',
      message:
        'spec.cloudInit.secretRef is not supported by this agent (it is not allowed to read ' +
        'Secrets); give userData, metaData and networkData inline instead',
    };
  }
  return undefined;
}

/**
 * A custom CPU model the host's QEMU does not know (`models`: its names for the machine's
 * domain type; undefined when the driver cannot tell). libvirt defines such a domain and
 * refuses only its start ("Unknown CPU model"): under updatePolicy Restart, or at the next
 * restart of any machine, a running guest would be shut down for a start that cannot
 * succeed. Names are compared as QEMU does, exactly.
 */
export function unknownCpuModel(
  vm: VirtualMachine,
  models: readonly string[] | undefined,
  nodeName: string,
): Problem | undefined {
  const model = vm.spec.cpu?.mode === 'custom' ? vm.spec.cpu.model : undefined;
  if (model === undefined || models === undefined || models.includes(model)) return undefined;
  const type = vm.spec.domainType ?? 'kvm';
  const near = models.filter((m) => m.toLowerCase().startsWith(model.slice(0, 3).toLowerCase()));
  const hint = (near.length > 0 ? near : models).slice(0, 8).join(', ');
  return {
    reason: 'Unsupported',
    message:
      `spec.cpu.model: ${QEMU_ON_NODE}${nodeName} has no CPU model '${model}' for domainType ` +
      `${type} (it knows e.g. ${hint}); the domain is left as it is until the model changes`,
  };
}

/** Where the host-lack messages (unknownCpuModel, missingFirmware) name the node. */
const QEMU_ON_NODE = 'QEMU on node ';

/**
 * Whether a problem's message is one of the node lacking what the spec asks (unknownCpuModel,
 * missingFirmware): the `vm restart` command reads it from the status to say that a restart
 * waits (requestedRestart). Pure.
 */
export function saysHostLacks(message: string): boolean {
  return /^spec\.[\w.]+: /.test(message) && message.includes(`: ${QEMU_ON_NODE}`);
}

/**
 * UEFI, its secure-boot build or an emulated TPM asked for where the host offers none
 * (`offers`: its domain capabilities for q35; undefined where the driver cannot tell).
 * libvirt 9.0 defines a UEFI domain and refuses only its start ("Unable to find any firmware
 * to satisfy 'efi'"): under updatePolicy Restart a running guest given UEFI would be shut
 * down for a start that cannot succeed, as with an unknown CPU model. A TPM 2.0 it refuses at
 * define already ("TPM version '2.0' is not supported": it asks swtpm_setup), in words that
 * name neither the field nor swtpm.
 */
export function missingFirmware(
  vm: VirtualMachine,
  offers: HostFirmware | undefined,
  nodeName: string,
): Problem | undefined {
  const lacks = (field: string, what: string, install: string): Problem => ({
    reason: 'Unsupported',
    message:
      `${field}: ${QEMU_ON_NODE}${nodeName} finds no ${what}; install ${install} there; the ` +
      'domain is left as it is until that is installed or the field changes',
  });
  if (vm.spec.firmware === 'uefi' && offers?.efi === false) {
    return lacks(
      'spec.firmware',
      'UEFI firmware',
      "Debian's ovmf (its descriptors in /usr/share/qemu/firmware)",
    );
  }
  if (vm.spec.secureBoot === true && offers?.secureBoot === false) {
    return lacks(
      'spec.secureBoot',
      'secure-boot UEFI build',
      "Debian's ovmf (OVMF_CODE_4M.ms.fd and its descriptor)",
    );
  }
  if (vm.spec.tpm && offers?.tpmEmulator === false) {
    return lacks('spec.tpm', 'TPM emulator (swtpm)', "Debian's swtpm and swtpm-tools");
  }
  return undefined;
}

/**
 * Resolves every Volume and VirtualNetwork the spec names. All problems are collected into one
 * message (field path first), so a user fixes them in one round; the reason is the first one's.
 */
export function machineInputs(
  vm: VirtualMachine,
  refs: References,
  nodeName: string,
  stateDir: string,
): { inputs: MachineInputs } | { problem: Problem; holdStart?: true } {
  const namespace = String(vm.metadata.namespace);
  const problems: Problem[] = [];
  const volumes = new Map<string, VolumeSource>();
  const uses: Array<[field: string, volume: string, boot?: true]> = [
    ...(vm.spec.disks ?? []).map((d, i): [string, string] => [`spec.disks[${i}].volume`, d.volume]),
  ];
  if (vm.spec.boot) {
    uses.push(['spec.boot.kernel.volume', vm.spec.boot.kernel.volume, true]);
    if (vm.spec.boot.initrd)
      uses.push(['spec.boot.initrd.volume', vm.spec.boot.initrd.volume, true]);
  }
  for (const [field, name, boot] of uses) {
    const vol = refs.volume(namespace, name);
    const problem =
      volumeProblem(field, name, namespace, vol, nodeName) ??
      (boot ? bootFileProblem(field, name, vol) : undefined);
    if (problem) problems.push(problem);
    else if (vol?.status?.path) {
      volumes.set(name, { path: vol.status.path, format: vol.spec.format ?? 'qcow2' });
    }
  }
  (vm.spec.disks ?? []).forEach((disk, i) => {
    const problem = overlaysProblem(i, disk, namespace, refs);
    if (problem) problems.push(problem);
  });
  const macs = interfaceMacs(vm);
  // Network problems hold the start of a domain already defined too: a network being deleted
  // or removed from this node must not get a new guest, and a start onto one that is missing
  // or not active here fails (or would join a foreign libvirt network of that name) and, as a
  // failed start, lost a requested restart that then never came back (runStrategy Manual).
  const onNetwork = new Set<Problem>();
  (vm.spec.interfaces ?? []).forEach((nic, i) => {
    const field = `spec.interfaces[${i}].network`;
    const unusable =
      networkProblem(field, nic.network, refs, nodeName) ??
      leavingProblem(field, nic.network, refs, nodeName);
    if (unusable) onNetwork.add(unusable);
    const problem =
      unusable ??
      heldMacProblem(i, nic.network, macs[i]!.mac, refs) ??
      macProblem(vm, i, nic.network, macs[i]!.mac, refs.machinesOn?.(nic.network) ?? []);
    if (problem) problems.push(problem);
  });
  const [first] = problems;
  if (first) {
    // Problems that forbid a start even of a domain already defined (plan.ts: holdStart).
    const hold = problems.some((p) => p.reason === 'VolumeHasOverlays' || onNetwork.has(p));
    return {
      problem: { reason: first.reason, message: problems.map((p) => p.message).join('; ') },
      ...(hold ? { holdStart: true as const } : {}),
    };
  }
  return {
    inputs: {
      volumes,
      cloudInit: cloudInitImage(vm, stateDir),
      consoleLog: consoleLogPath(vm, stateDir),
      nvram: vm.spec.firmware === 'uefi' ? nvramFile(stateDir, String(vm.metadata.uid)) : undefined,
    },
  };
}

function volumeProblem(
  field: string,
  name: string,
  namespace: string,
  vol: Volume | undefined,
  nodeName: string,
): Problem | undefined {
  const notReady = (why: string): Problem => ({
    reason: 'VolumeNotReady',
    message: `${field}: Volume '${name}' ${why}`,
  });
  // The agent's cache holds only Volumes of its own node; one on another node is given here
  // when the API server has it (reconcile.volumesElsewhere).
  if (!vol) return notReady(`does not exist in namespace '${namespace}' on node '${nodeName}'`);
  if (vol.spec.nodeName !== nodeName) {
    return {
      reason: 'VolumeNotOnNode',
      message:
        `${field}: Volume '${name}' is on node '${vol.spec.nodeName}', not on this machine's ` +
        `node '${nodeName}'; a machine can only use Volumes on its own node: name a Volume ` +
        `on node '${nodeName}' (spec.nodeName cannot change: create one there)`,
    };
  }
  const phase = vol.status?.phase;
  if (!phase || !USABLE_VOLUME_PHASES.has(phase) || !vol.status?.path) {
    return notReady(`is not ready yet (phase ${phase ?? 'unknown'})`);
  }
  return undefined;
}

/**
 * QEMU loads a direct-boot kernel and initrd as plain files, not through its block layer: a
 * qcow2 image would be read as its container's bytes, and the guest hang or QEMU refuse to
 * start with a message that names neither field nor Volume. Volumes are raw or qcow2 only.
 */
function bootFileProblem(
  field: string,
  name: string,
  vol: Volume | undefined,
): Problem | undefined {
  const format = vol?.spec.format ?? 'qcow2';
  if (format === 'raw') return undefined;
  return {
    reason: 'Unsupported',
    message:
      `${field}: Volume '${name}' has format ${format}, but QEMU reads a kernel or initrd as a ` +
      `plain file; use a Volume with format raw (format is immutable: create one with format ` +
      `raw, e.g. a clone of this one)`,
  };
}

/**
 * An overlay reads its backing file for as long as it exists, and qcow2 cannot tell that the
 * file changed under it: a machine writing a base image silently corrupts every overlay on it
 * (QEMU's image locks only stop it while a machine on an overlay runs). So a base is attached
 * read-only or not at all.
 */
function overlaysProblem(
  index: number,
  disk: NonNullable<VirtualMachine['spec']['disks']>[number],
  namespace: string,
  refs: References,
): Problem | undefined {
  if (disk.readOnly || disk.device === 'cdrom') return undefined;
  const overlays = refs.overlaysOf?.(namespace, disk.volume) ?? [];
  if (overlays.length === 0) return undefined;
  return {
    reason: 'VolumeHasOverlays',
    message:
      `spec.disks[${index}].volume: Volume '${disk.volume}' is the backing file of ` +
      `${overlays.length === 1 ? 'Volume' : 'Volumes'} ${overlays.join(', ')}: writing it would ` +
      `corrupt what they read; attach it with readOnly: true, or delete them first`,
  };
}

function networkProblem(
  field: string,
  name: string,
  refs: References,
  nodeName: string,
): Problem | undefined {
  const vnet = refs.network(name);
  if (!vnet) {
    return {
      reason: 'NetworkNotReady',
      message: `${field}: VirtualNetwork '${name}' does not exist`,
    };
  }
  const entry = vnet.status?.nodes?.find((n) => n.nodeName === nodeName);
  const labels = refs.nodeLabels?.();
  if (entry?.active !== true && labels && !selectsNode(vnet.spec.nodeSelector, labels)) {
    // Not a wait: the network will never be here unless a user labels the node or changes
    // the selector (it was NetworkNotReady, retried for ever, kstatus InProgress).
    return {
      reason: 'NetworkNotOnNode',
      message: `${field}: VirtualNetwork '${name}' is not on node '${nodeName}': its spec.nodeSelector does not select this node`,
    };
  }
  if (entry?.active !== true) return notActiveProblem(field, name, nodeName, entry);
  return undefined;
}

type NetworkNodeEntry = NonNullable<NonNullable<VirtualNetwork['status']>['nodes']>[number];

/**
 * A network not active on this node, with the network's own Ready reason and message for the
 * node, so the user learns why from the machine. A network that only a user can make active
 * here (its entry is Stalled: DefineRefused, StartRefused, BridgeInUse, ...) makes the machine
 * Stalled too (NetworkFailed): the contract's Stalled is "a problem only a user can fix", and
 * read as InProgress a GitOps health check would wait for ever. Any other reason (not yet
 * reported, StartFailed, Inactive, ...) is a wait.
 */
function notActiveProblem(
  field: string,
  name: string,
  nodeName: string,
  entry: NetworkNodeEntry | undefined,
): Problem {
  const base = `${field}: VirtualNetwork '${name}' is not active on node '${nodeName}'`;
  const ready = entry?.conditions?.find((c) => c.type === 'Ready' && c.status === 'False');
  if (!ready?.reason) return { reason: 'NetworkNotReady', message: base };
  const why = `${base} (${ready.reason}${ready.message ? `: ${ready.message}` : ''})`;
  if (isStalledReason(ready.reason)) {
    return {
      reason: 'NetworkFailed',
      message: `${why}; fix the VirtualNetwork, or name another network`,
    };
  }
  return { reason: 'NetworkNotReady', message: why };
}

/**
 * A network being deleted, or removed from this node (its selector no longer selects it), is
 * still active while it waits for the guests on it (InUse), and a guest started onto it would
 * keep it waiting and lose its link once it goes. A machine whose running domain is already on
 * it is left alone: it is one of the guests the removal waits for. Any other waits for the
 * network to be gone or the interface to name another one.
 */
function leavingProblem(
  field: string,
  name: string,
  refs: References,
  nodeName: string,
): Problem | undefined {
  const vnet = refs.network(name);
  if (!vnet || refs.runningOn?.includes(name)) return undefined;
  const labels = refs.nodeLabels?.();
  const why = vnet.metadata.deletionTimestamp
    ? 'is being deleted'
    : labels && !selectsNode(vnet.spec.nodeSelector, labels)
      ? `is being removed from node '${nodeName}' (its spec.nodeSelector no longer selects it)`
      : undefined;
  if (!why) return undefined;
  return {
    reason: 'NetworkNotReady',
    message:
      `${field}: VirtualNetwork '${name}' ${why}: the machine is not started on it; ` +
      'name another network, or wait until it is gone and create it again',
  };
}

/**
 * A running guest holds its MAC on the network its live definition names, also after its
 * machine's spec moved that interface to another network (the move waits for a restart).
 */
function heldMacProblem(
  index: number,
  network: string,
  mac: string,
  refs: References,
): Problem | undefined {
  const holder = refs.heldMacs?.get(heldKey(network, mac));
  if (!holder) return undefined;
  return {
    reason: 'MACAddressInUse',
    message:
      `spec.interfaces[${index}].macAddress: ${mac} is in use on VirtualNetwork '${network}' by ` +
      `the running guest of VirtualMachine ${holder} (its interface stays on that network ` +
      'until the guest restarts)',
  };
}

/**
 * Two guests with one MAC on one network break each other's traffic, and libvirt lets both
 * start. The machine that claimed the address first keeps it (older creationTimestamp, then
 * namespace/name); any later one waits, with the holder named.
 */
function macProblem(
  vm: VirtualMachine,
  index: number,
  network: string,
  mac: string,
  machines: readonly VirtualMachine[],
): Problem | undefined {
  const created = (m: VirtualMachine) => new Date(m.metadata.creationTimestamp ?? 0).getTime();
  const key = (m: VirtualMachine) => `${m.metadata.namespace ?? ''}/${m.metadata.name ?? ''}`;
  const claimedBefore = (a: VirtualMachine, b: VirtualMachine) =>
    created(a) < created(b) || (created(a) === created(b) && key(a) < key(b));
  // claimedBefore is a strict order, so a machine never finds itself.
  const holder = machines.find((other) => {
    if (!claimedBefore(other, vm)) return false;
    const macs = interfaceMacs(other);
    return (other.spec.interfaces ?? []).some(
      (nic, i) => nic.network === network && macs[i]?.mac === mac,
    );
  });
  if (!holder) return undefined;
  return {
    reason: 'MACAddressInUse',
    message:
      `spec.interfaces[${index}].macAddress: ${mac} is already used on VirtualNetwork ` +
      `'${network}' by VirtualMachine ${holder.metadata.namespace}/${holder.metadata.name}`,
  };
}

/** A quantity in whole KiB, rounded up (libvirt's unit for memory). */
export function quantityKiB(q: string | number): number {
  return Number((parseQuantity(q) + 1023n) / 1024n);
}

/** The index diskLetters names: a -> 0, z -> 25, aa -> 26, ... */
export function diskIndex(letters: string): number {
  let n = 0;
  for (const c of letters) n = n * 26 + (c.charCodeAt(0) - 96);
  return n - 1;
}

/** Linux's disk naming: 0 -> a, 25 -> z, 26 -> aa, ... */
export function diskLetters(index: number): string {
  let n = index;
  let s = '';
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return s;
}

const TARGET_PREFIX: Record<DiskBus, 'vd' | 'sd'> = { virtio: 'vd', sata: 'sd', scsi: 'sd' };

/** The MAC of each spec interface, by interface name (spec order). */
export function interfaceMacs(vm: VirtualMachine): Array<{ name: string; mac: string }> {
  return (vm.spec.interfaces ?? []).map((nic) => ({
    name: nic.name,
    mac: (nic.macAddress ?? defaultMacAddress(String(vm.metadata.uid), nic.name)).toLowerCase(),
  }));
}

export function desiredDomain(vm: VirtualMachine, inputs: MachineInputs): DomainDocument {
  const memory = quantityKiB(vm.spec.memory);
  const vcpus = vm.spec.vcpus;
  const doc: DomainDocument = {
    type: vm.spec.domainType ?? 'kvm',
    name: domainName(vm),
    uuid: libvirtUuid(vm),
    stamp: {
      kind: 'VirtualMachine',
      namespace: String(vm.metadata.namespace),
      name: String(vm.metadata.name),
      uid: String(vm.metadata.uid),
    },
    memoryKiB: vm.spec.maxMemory === undefined ? memory : quantityKiB(vm.spec.maxMemory),
    currentMemoryKiB: memory,
    vcpu: { current: vcpus, max: vm.spec.maxVcpus ?? vcpus },
    os: { type: 'hvm', arch: ARCH, machine: MACHINE },
    features: { acpi: true, apic: true },
    onPoweroff: 'destroy',
    onReboot: 'restart',
    onCrash: 'destroy',
    devices: {
      controllers: rootPorts(vm),
      disks: desiredDisks(vm, inputs),
      interfaces: desiredInterfaces(vm),
      serials: [desiredSerial(inputs.consoleLog)],
      // libvirt adds the console that mirrors serial 0 itself; writing it too is redundant.
      consoles: [],
      channels: [{ type: 'unix', target: { type: 'virtio', name: GUEST_AGENT_CHANNEL } }],
      memballoon: { model: 'virtio', statsPeriod: BALLOON_STATS_PERIOD },
    },
  };
  const cpu = desiredCpu(vm);
  if (cpu) doc.cpu = cpu;
  // bios is libvirt's default and reads back as no firmware attribute at all.
  if (vm.spec.firmware === 'uefi') desiredUefi(doc, vm.spec.secureBoot === true, inputs.nvram);
  if (vm.spec.tpm) {
    doc.devices.tpms = [
      { model: 'tpm-crb', backend: { type: 'emulator', version: vm.spec.tpm.version } },
    ];
  }
  const boot = vm.spec.boot;
  if (boot) {
    const kernel = inputs.volumes.get(boot.kernel.volume);
    if (kernel) doc.os.kernel = kernel.path;
    const initrd = boot.initrd && inputs.volumes.get(boot.initrd.volume);
    if (initrd) doc.os.initrd = initrd.path;
    // libvirt drops an empty <cmdline/>: "" is no command line, or it would differ forever.
    if (boot.cmdline) doc.os.cmdline = boot.cmdline;
  }
  return doc;
}

/**
 * Secure boot is named either way: left open, libvirt takes the first matching descriptor by
 * file name, which on Debian is the secure-boot build with Microsoft's keys enrolled.
 * enrolled-keys: with an empty key store the firmware would not enforce anything.
 */
function desiredUefi(doc: DomainDocument, secureBoot: boolean, nvram: string | undefined): void {
  doc.os.firmware = 'efi';
  if (secureBoot) {
    doc.os.firmwareFeatures = [
      { name: 'enrolled-keys', enabled: true },
      { name: 'secure-boot', enabled: true },
    ];
    doc.os.loader = { secure: true };
    doc.features.smm = true;
  } else {
    doc.os.firmwareFeatures = [{ name: 'secure-boot', enabled: false }];
  }
  if (nvram) doc.os.nvram = { path: nvram };
}

function desiredCpu(vm: VirtualMachine): DomainCpu | undefined {
  const spec = vm.spec.cpu;
  const mode = spec?.mode ?? ((vm.spec.domainType ?? 'kvm') === 'kvm' ? 'host-model' : undefined);
  const cpu: DomainCpu = {};
  if (mode) cpu.mode = mode;
  if (spec?.model !== undefined) cpu.model = spec.model;
  if (spec?.topology) {
    const { sockets, cores, threads } = spec.topology;
    cpu.topology = { sockets, cores, threads };
  }
  return Object.keys(cpu).length > 0 ? cpu : undefined;
}

function rootPorts(vm: VirtualMachine): Controller[] {
  const devices =
    (vm.spec.disks ?? []).filter((d) => diskBus(d) === 'virtio').length +
    (vm.spec.interfaces ?? []).length +
    OTHER_PCI_DEVICES;
  return [
    { type: 'pci', model: 'pcie-root' },
    { type: 'scsi', model: 'virtio-scsi' },
    ...Array.from({ length: devices + HOTPLUG_PORTS }, (): Controller => ({
      type: 'pci',
      model: 'pcie-root-port',
    })),
  ];
}

/** The bus of a spec disk: virtio for a disk, sata for a cdrom, unless the spec says. */
function diskBus(spec: { device?: 'disk' | 'cdrom'; bus?: DiskBus }): DiskBus {
  return spec.bus ?? (spec.device === 'cdrom' ? 'sata' : 'virtio');
}

function desiredDisks(vm: VirtualMachine, inputs: MachineInputs): Disk[] {
  const next = { vd: 0, sd: 0 };
  const target = (bus: DiskBus) => {
    const prefix = TARGET_PREFIX[bus];
    return { dev: prefix + diskLetters(next[prefix]++), bus };
  };
  const disks: Disk[] = [];
  for (const spec of vm.spec.disks ?? []) {
    const source = inputs.volumes.get(spec.volume);
    if (!source) throw new Error(`spec.disks '${spec.name}': Volume '${spec.volume}' unresolved`);
    const cdrom = spec.device === 'cdrom';
    const disk: Disk = {
      device: cdrom ? 'cdrom' : 'disk',
      source: { type: 'file', file: source.path },
      driver: { name: 'qemu', type: source.format },
      target: target(diskBus(spec)),
      readonly: cdrom || (spec.readOnly ?? false),
    };
    if (spec.bootOrder !== undefined) disk.bootOrder = spec.bootOrder;
    // Every scsi disk on the one virtio-scsi controller (see Disk scsiUnit), on the unit libvirt
    // derived from the target name below sdh, so those keep their /dev/disk/by-path names.
    if (disk.target.bus === 'scsi') disk.scsiUnit = diskIndex(disk.target.dev.slice(2));
    disks.push(disk);
  }
  if (inputs.cloudInit) {
    disks.push({
      device: 'cdrom',
      source: { type: 'file', file: inputs.cloudInit.path },
      driver: { name: 'qemu', type: 'raw' },
      target: target('sata'),
      readonly: true,
    });
  }
  return disks;
}

function desiredInterfaces(vm: VirtualMachine): NetworkInterface[] {
  const macs = interfaceMacs(vm);
  return (vm.spec.interfaces ?? []).map((nic, i) => ({
    source: { network: nic.network },
    mac: macs[i]?.mac,
    model: nic.model ?? 'virtio',
  }));
}

// A pty either way, so a console session can always attach: a file serial cannot be opened
// as a console. append 'off' keeps the old file serial's behaviour (one boot per file).
function desiredSerial(logFile: string | undefined): Serial {
  return logFile
    ? { source: { type: 'pty' }, log: { file: logFile, append: 'off' } }
    : { source: { type: 'pty' } };
}
