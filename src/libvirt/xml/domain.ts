// The libvirt domain XML the operator writes, typed after https://libvirt.org/formatdomain.html
// for the fields it owns. parseDomainXML reads what libvirt returns, which also carries many
// defaults we never set (controllers, addresses, pty paths, emulator...): those are ignored.
import {
  assign,
  attr,
  buildXML,
  child,
  childText,
  children,
  integer,
  oneOf,
  optionalInteger,
  optionalOneOf,
  requireValue,
  textOf,
  xmlCodec,
  XmlDocumentError,
  type XmlElement,
  type XmlTree,
} from './codec.js';
import {
  restartsFromMetadata,
  runGenerationFromMetadata,
  stampFromMetadata,
  stampTree,
  type OwnershipStamp,
} from '../../ownership/metadata.js';
import { changedFields, normalMac, orNull } from '../../ownership/owned.js';
import { scaledKiB } from './units.js';

export const DOMAIN_TYPES = ['kvm', 'qemu'] as const;
export type DomainType = (typeof DOMAIN_TYPES)[number];
export const FIRMWARES = ['efi', 'bios'] as const;
export type Firmware = (typeof FIRMWARES)[number];
export const CPU_MODES = ['host-passthrough', 'host-model', 'maximum', 'custom'] as const;
export type CpuMode = (typeof CPU_MODES)[number];
export const CLOCK_OFFSETS = ['utc', 'localtime', 'timezone', 'variable'] as const;
export type ClockOffset = (typeof CLOCK_OFFSETS)[number];
export const LIFECYCLE_ACTIONS = [
  'destroy',
  'restart',
  'preserve',
  'rename-restart',
  'coredump-destroy',
  'coredump-restart',
] as const;
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];
export const DISK_BUSES = ['virtio', 'sata', 'scsi'] as const;
export type DiskBus = (typeof DISK_BUSES)[number];
export const DISK_FORMATS = ['qcow2', 'raw'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];
export const DISK_DEVICES = ['disk', 'cdrom'] as const;
export type DiskDevice = (typeof DISK_DEVICES)[number];
export const MEMBALLOON_MODELS = ['virtio', 'none'] as const;
export type MemballoonModel = (typeof MEMBALLOON_MODELS)[number];
export const CONSOLE_TARGETS = ['serial', 'virtio'] as const;
export type ConsoleTarget = (typeof CONSOLE_TARGETS)[number];
export const LOADER_TYPES = ['rom', 'pflash'] as const;
export type LoaderType = (typeof LOADER_TYPES)[number];
export const TPM_MODELS = ['tpm-crb', 'tpm-tis'] as const;
export type TpmModel = (typeof TPM_MODELS)[number];
export const TPM_VERSIONS = ['2.0', '1.2'] as const;
export type TpmVersion = (typeof TPM_VERSIONS)[number];

/** The virtio-serial channel name qemu-guest-agent listens on. */
export const GUEST_AGENT_CHANNEL = 'org.qemu.guest_agent.0';

export interface DomainDocument {
  type: DomainType;
  name: string;
  uuid: string;
  title?: string;
  description?: string;
  /** Our ownership stamp in <metadata>; other metadata elements are not modelled. */
  stamp?: OwnershipStamp;
  /**
   * The restart count the agent recorded in <metadata> before starting this run (read only:
   * never written by a define; ownership/metadata.ts restartsFromMetadata).
   */
  restarts?: number;
  /**
   * The generation the agent recorded in <metadata> when it started this run (read only: never
   * written by a define; ownership/metadata.ts runGenerationFromMetadata).
   */
  startedUnder?: number;
  /** <memory>: the maximum the guest can be given, in KiB. */
  memoryKiB: number;
  /** <currentMemory>: the balloon target, in KiB; libvirt's default is memoryKiB. */
  currentMemoryKiB?: number;
  /** <vcpu current='current'>max</vcpu>. */
  vcpu: { current: number; max: number };
  os: DomainOS;
  /** smm: System Management Mode, which a secure-boot OVMF needs to protect its variables. */
  features: { acpi: boolean; apic: boolean; smm?: boolean };
  cpu?: DomainCpu;
  clock?: { offset: ClockOffset };
  onPoweroff?: LifecycleAction;
  onReboot?: LifecycleAction;
  onCrash?: LifecycleAction;
  /** Graphics are never emitted: the operator's guests are headless (serial console only). */
  devices: DomainDevices;
}

/**
 * <cpu>: the model and topology the guest sees. Without mode libvirt uses the hypervisor's
 * default model. The QEMU driver expands host-model in the running definition into mode
 * custom with the host's model, vendor and features (see cpuMatches).
 */
export interface DomainCpu {
  mode?: CpuMode;
  /** <model>: the named model (mode custom); read back also for expanded host-model CPUs. */
  model?: string;
  topology?: CpuTopology;
  /** <vendor>, read only: present when libvirt expanded host-model into a custom CPU. */
  vendor?: string;
}

export interface CpuTopology {
  sockets: number;
  cores: number;
  threads: number;
}

export interface DomainOS {
  /** Always hvm (full virtualisation) for the guests the operator runs. */
  type: 'hvm';
  arch: string;
  /** A machine type or alias; libvirt's QEMU driver expands aliases (q35 -> pc-q35-7.2). */
  machine?: string;
  /** <os firmware=...>: libvirt picks a matching loader; absent means libvirt's default, BIOS. */
  firmware?: Firmware;
  /**
   * <os><firmware><feature enabled= name=/>: what the automatically chosen firmware must (or
   * must not) offer, by the names of QEMU's firmware descriptors (secure-boot, enrolled-keys).
   */
  firmwareFeatures?: FirmwareFeature[];
  /** <loader>: with firmware autoselection only `secure`; libvirt fills in path and type. */
  loader?: Loader;
  /** <nvram template=...>path</nvram>: the UEFI variable store; libvirt fills the template. */
  nvram?: { path?: string; template?: string };
  /** Direct kernel boot: paths on the host. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

export interface FirmwareFeature {
  name: string;
  enabled: boolean;
}

export interface Loader {
  secure?: boolean;
  readonly?: boolean;
  type?: LoaderType;
  path?: string;
}

/** <tpm model=><backend type='emulator' version=/>: a TPM emulated by swtpm. */
export interface Tpm {
  model: TpmModel;
  backend: { type: 'emulator'; version?: TpmVersion };
}

export interface DomainDevices {
  /**
   * Controllers the operator adds; written, never read back (libvirt adds and numbers its own,
   * so they are not compared). Spare PCIe root ports are where hot-plugged devices go.
   */
  controllers?: Controller[];
  disks: Disk[];
  interfaces: NetworkInterface[];
  serials: Serial[];
  consoles: Console[];
  channels: Channel[];
  memballoon?: Memballoon;
  /** Absent and empty mean no TPM. */
  tpms?: Tpm[];
}

/**
 * <controller type='pci' model='pcie-root-port'/>: one hot-plug slot on q35 (a list of them
 * must start with the q35 root bus, model pcie-root: libvirt numbers controllers without an
 * index from 0, and index 0 must be the root);
 * <controller type='scsi' model='virtio-scsi'/>: the SCSI bus for scsi disks (libvirt's own
 * default on x86 is an emulated LSI card that few guest kernels drive).
 */
export type Controller = (
  | { type: 'pci'; model: 'pcie-root' | 'pcie-root-port' }
  | { type: 'scsi'; model: 'virtio-scsi' }
  // Controllers libvirt adds by itself (a USB host controller, the bus of the virtio channels,
  // q35's built-in SATA): written only to keep the PCI addresses libvirt gave them before.
  | { type: 'usb'; model?: string }
  | { type: 'virtio-serial'; model?: undefined }
  | { type: 'sata'; model?: undefined }
) & { index?: number; address?: PciAddress };

/**
 * <address type='pci'>, as libvirt writes it (hexadecimal strings). Written only where a
 * redefinition keeps a device's slot (see keepPciAddresses); otherwise libvirt assigns one.
 */
export interface PciAddress {
  domain: string;
  bus: string;
  slot: string;
  function: string;
  multifunction?: 'on' | 'off';
}

export type DiskSource =
  { type: 'volume'; pool: string; volume: string } | { type: 'file'; file: string };

export interface Disk {
  device: DiskDevice;
  source: DiskSource;
  driver?: { name: 'qemu'; type: DiskFormat };
  target: { dev: string; bus: DiskBus };
  readonly: boolean;
  /** Per-device boot order; the operator never writes <os><boot dev=...>. */
  bootOrder?: number;
  /** A user alias; libvirt requires the 'ua-' prefix. */
  alias?: string;
  address?: PciAddress;
  /**
   * A scsi disk's unit on the first SCSI controller (<address type='drive' controller='0'
   * bus='0' target='0' unit=N>). Left to libvirt, a disk's unit follows its target name, and
   * from sdh on libvirt puts it on a second controller that it adds itself: an emulated LSI card
   * in the persistent definition (a live attach gets virtio-scsi), so the disk vanished from a
   * guest without that driver at the next boot. virtio-scsi takes thousands of units on one bus.
   */
  scsiUnit?: number;
}

/** <interface type='network'>: the only kind the operator attaches. */
export interface NetworkInterface {
  source: { network: string };
  /** Absent: libvirt generates one. */
  mac?: string;
  model?: string;
  bootOrder?: number;
  alias?: string;
  address?: PciAddress;
  /**
   * Running definition only, never written: the UUID of the network port libvirt plugged the
   * interface into (`<source portid>`).
   */
  port?: string;
}

export type CharSource = { type: 'pty' } | { type: 'file'; path: string };
export interface Serial {
  source: CharSource;
  port?: number;
  /**
   * A copy of everything the guest writes, kept by virtlogd (<log file append/>): how a pty
   * serial, which a console session can attach to, is also logged to a file.
   */
  log?: CharLog;
}
export interface CharLog {
  file: string;
  /** 'off': emptied at each domain start; 'on': kept across starts. */
  append?: 'on' | 'off';
}
export interface Console {
  source: CharSource;
  targetType?: ConsoleTarget;
  port?: number;
}
/** A unix-socket virtio channel; libvirt chooses the socket path. */
export interface Channel {
  type: 'unix';
  target: { type: 'virtio'; name: string };
}
export interface Memballoon {
  model: MemballoonModel;
  /** Seconds between guest memory statistics updates (virDomainMemoryStats). */
  statsPeriod?: number;
  address?: PciAddress;
}

/** The domain document's elements that may repeat (the reader's lists). */
export const DOMAIN_REPEATABLE = [
  'domain.metadata.*',
  'domain.devices.controller',
  'domain.devices.disk',
  'domain.devices.interface',
  'domain.devices.serial',
  'domain.devices.console',
  'domain.devices.channel',
  'domain.devices.tpm',
  'domain.os.firmware.feature',
];
const codec = xmlCodec('domain', DOMAIN_REPEATABLE);

// ---- build ----

/**
 * `kept`: <metadata> children besides the stamp, from the persistent definition this one
 * replaces (ownership/metadata.ts keptMetadata); the document models none of them.
 */
export function buildDomainXML(
  doc: DomainDocument,
  kept: Readonly<Record<string, readonly XmlTree[]>> = {},
): string {
  return codec.build({
    '@type': doc.type,
    name: doc.name,
    uuid: doc.uuid,
    title: doc.title,
    description: doc.description,
    metadata: metadataTree(doc.stamp, kept),
    memory: { '@unit': 'KiB', '#text': doc.memoryKiB },
    currentMemory:
      doc.currentMemoryKiB === undefined
        ? undefined
        : { '@unit': 'KiB', '#text': doc.currentMemoryKiB },
    vcpu: { '@current': doc.vcpu.current, '#text': doc.vcpu.max },
    os: osTree(doc.os),
    features: featuresTree(doc.features),
    cpu: doc.cpu ? cpuTree(doc.cpu) : undefined,
    clock: doc.clock ? { '@offset': doc.clock.offset } : undefined,
    on_poweroff: doc.onPoweroff,
    on_reboot: doc.onReboot,
    on_crash: doc.onCrash,
    devices: devicesTree(doc.devices),
  });
}

function metadataTree(
  stamp: OwnershipStamp | undefined,
  kept: Readonly<Record<string, readonly XmlTree[]>>,
): XmlTree | undefined {
  // Without a prototype: a kept element called `constructor` must not find Object's.
  const tree: Record<string, readonly XmlTree[]> = Object.create(null);
  if (stamp) {
    for (const [key, value] of Object.entries(stampTree(stamp))) tree[key] = [value as XmlTree];
  }
  // A kept element whose prefixed name is the stamp's (another namespace bound to our prefix)
  // stays beside it.
  for (const [key, value] of Object.entries(kept)) tree[key] = [...(tree[key] ?? []), ...value];
  return Object.keys(tree).length > 0 ? tree : undefined;
}

const yesNo = (b: boolean | undefined) => (b === undefined ? undefined : b ? 'yes' : 'no');

function osTree(os: DomainOS): XmlTree {
  const loader = os.loader;
  return {
    '@firmware': os.firmware,
    type: { '@arch': os.arch, '@machine': os.machine, '#text': os.type },
    firmware: os.firmwareFeatures?.length
      ? {
          feature: os.firmwareFeatures.map((f) => ({
            '@enabled': yesNo(f.enabled),
            '@name': f.name,
          })),
        }
      : undefined,
    loader: loader
      ? {
          '@readonly': yesNo(loader.readonly),
          '@secure': yesNo(loader.secure),
          '@type': loader.type,
          '#text': loader.path,
        }
      : undefined,
    nvram: os.nvram ? { '@template': os.nvram.template, '#text': os.nvram.path } : undefined,
    kernel: os.kernel,
    initrd: os.initrd,
    cmdline: os.cmdline,
  };
}

function cpuTree(cpu: DomainCpu): XmlTree {
  return {
    '@mode': cpu.mode,
    model: cpu.model,
    topology: cpu.topology && {
      '@sockets': cpu.topology.sockets,
      '@cores': cpu.topology.cores,
      '@threads': cpu.topology.threads,
    },
  };
}

function featuresTree(features: DomainDocument['features']): XmlTree | undefined {
  if (!features.acpi && !features.apic && features.smm === undefined) return undefined;
  return {
    acpi: features.acpi ? '' : undefined,
    apic: features.apic ? '' : undefined,
    smm: features.smm === undefined ? undefined : { '@state': features.smm ? 'on' : 'off' },
  };
}

function devicesTree(devices: DomainDevices): XmlTree {
  return {
    controller: (devices.controllers ?? []).map((c) => ({
      '@type': c.type,
      '@index': c.index,
      '@model': c.model,
      address: addressTree(c.address),
    })),
    disk: devices.disks.map(diskTree),
    interface: devices.interfaces.map(interfaceTree),
    serial: devices.serials.map((s) => ({
      ...charTree(s.source, { '@port': s.port }),
      log: s.log ? { '@file': s.log.file, '@append': s.log.append } : undefined,
    })),
    console: devices.consoles.map((c) =>
      charTree(c.source, { '@type': c.targetType, '@port': c.port }),
    ),
    channel: devices.channels.map((c) => ({
      '@type': c.type,
      target: { '@type': c.target.type, '@name': c.target.name },
    })),
    memballoon: devices.memballoon
      ? {
          '@model': devices.memballoon.model,
          stats:
            devices.memballoon.statsPeriod === undefined
              ? undefined
              : { '@period': devices.memballoon.statsPeriod },
          address: addressTree(devices.memballoon.address),
        }
      : undefined,
    tpm: (devices.tpms ?? []).map((t) => ({
      '@model': t.model,
      backend: { '@type': t.backend.type, '@version': t.backend.version },
    })),
  };
}

/** A standalone <disk> for virDomainAttachDeviceFlags / DetachDeviceFlags. */
export function buildDiskXML(disk: Disk): string {
  return buildXML('disk', diskTree(disk));
}

/** A standalone <interface> for virDomainAttachDeviceFlags / DetachDeviceFlags. */
export function buildInterfaceXML(nic: NetworkInterface): string {
  return buildXML('interface', interfaceTree(nic));
}

function diskTree(disk: Disk): XmlTree {
  const source: XmlTree =
    disk.source.type === 'volume'
      ? { '@pool': disk.source.pool, '@volume': disk.source.volume }
      : { '@file': disk.source.file };
  return {
    '@type': disk.source.type,
    '@device': disk.device,
    driver: disk.driver ? { '@name': disk.driver.name, '@type': disk.driver.type } : undefined,
    source,
    target: { '@dev': disk.target.dev, '@bus': disk.target.bus },
    readonly: disk.readonly ? '' : undefined,
    boot: disk.bootOrder === undefined ? undefined : { '@order': disk.bootOrder },
    alias: disk.alias === undefined ? undefined : { '@name': disk.alias },
    address: addressTree(disk.address) ?? driveAddressTree(disk.scsiUnit),
  };
}

function driveAddressTree(unit: number | undefined): XmlTree | undefined {
  return unit === undefined
    ? undefined
    : { '@type': 'drive', '@controller': 0, '@bus': 0, '@target': 0, '@unit': unit };
}

function interfaceTree(nic: NetworkInterface): XmlTree {
  return {
    '@type': 'network',
    mac: nic.mac === undefined ? undefined : { '@address': nic.mac },
    source: { '@network': nic.source.network },
    model: nic.model === undefined ? undefined : { '@type': nic.model },
    boot: nic.bootOrder === undefined ? undefined : { '@order': nic.bootOrder },
    alias: nic.alias === undefined ? undefined : { '@name': nic.alias },
    address: addressTree(nic.address),
  };
}

function addressTree(address: PciAddress | undefined): XmlTree | undefined {
  return (
    address && {
      '@type': 'pci',
      '@domain': address.domain,
      '@bus': address.bus,
      '@slot': address.slot,
      '@function': address.function,
      '@multifunction': address.multifunction,
    }
  );
}

function charTree(source: CharSource, target: XmlTree): XmlTree {
  return {
    '@type': source.type,
    source: source.type === 'file' ? { '@path': source.path } : undefined,
    target,
  };
}

// ---- parse ----

/**
 * The libvirt networks a domain's interfaces are on, read from any domain (also one the
 * operator did not define, with devices parseDomainXML would refuse): only
 * `<interface type='network'><source network=…>` is looked at.
 */
export function domainNetworks(xml: string): string[] {
  const devices = child(codec.parse(xml), 'devices');
  const names = children(devices ?? {}, 'interface')
    .filter((nic) => attr(nic, 'type') === 'network')
    .map((nic) => attr(child(nic, 'source') ?? {}, 'network'))
    .filter((name): name is string => name !== undefined);
  return [...new Set(names)];
}

/**
 * Reads a domain as libvirt describes it. Devices of kinds the operator never creates
 * (block or network disks, bridge interfaces, tcp serials, spice channels...) are skipped.
 */
export function parseDomainXML(xml: string): DomainDocument {
  const el = codec.parse(xml);
  const doc: DomainDocument = {
    type: oneOf(attr(el, 'type'), DOMAIN_TYPES, 'domain@type'),
    name: requireValue(childText(el, 'name'), 'domain/name'),
    uuid: requireValue(childText(el, 'uuid'), 'domain/uuid').trim(),
    memoryKiB: scaledKiB(requireValue(child(el, 'memory'), 'domain/memory'), 'domain/memory'),
    vcpu: parseVcpu(requireValue(child(el, 'vcpu'), 'domain/vcpu')),
    os: parseOS(requireValue(child(el, 'os'), 'domain/os')),
    features: parseFeatures(child(el, 'features')),
    devices: parseDevices(child(el, 'devices') ?? {}),
  };
  assign(doc, 'title', childText(el, 'title'));
  assign(doc, 'description', childText(el, 'description'));
  assign(doc, 'stamp', stampFromMetadata(child(el, 'metadata')));
  assign(doc, 'restarts', restartsFromMetadata(child(el, 'metadata')));
  assign(doc, 'startedUnder', runGenerationFromMetadata(child(el, 'metadata')));
  const current = child(el, 'currentMemory');
  if (current) doc.currentMemoryKiB = scaledKiB(current, 'domain/currentMemory');
  const cpu = child(el, 'cpu');
  if (cpu) doc.cpu = parseCpu(cpu);
  const clock = child(el, 'clock');
  if (clock)
    doc.clock = { offset: oneOf(attr(clock, 'offset'), CLOCK_OFFSETS, 'domain/clock@offset') };
  assign(doc, 'onPoweroff', lifecycle(el, 'on_poweroff'));
  assign(doc, 'onReboot', lifecycle(el, 'on_reboot'));
  assign(doc, 'onCrash', lifecycle(el, 'on_crash'));
  return doc;
}

function parseCpu(el: XmlElement): DomainCpu {
  const cpu: DomainCpu = {};
  assign(cpu, 'mode', optionalOneOf(attr(el, 'mode'), CPU_MODES, 'domain/cpu@mode'));
  assign(cpu, 'model', childText(el, 'model')?.trim());
  assign(cpu, 'vendor', childText(el, 'vendor')?.trim());
  const topology = child(el, 'topology');
  if (topology) {
    const count = (name: string) =>
      integer(requireValue(attr(topology, name), `domain/cpu/topology@${name}`), name);
    cpu.topology = { sockets: count('sockets'), cores: count('cores'), threads: count('threads') };
  }
  return cpu;
}

function lifecycle(el: XmlElement, tag: string): LifecycleAction | undefined {
  const text = childText(el, tag);
  return text === undefined ? undefined : oneOf(text.trim(), LIFECYCLE_ACTIONS, `domain/${tag}`);
}

// libvirt writes <vcpu>N</vcpu> when all are online and <vcpu current='C'>N</vcpu> otherwise.
function parseVcpu(el: XmlElement): DomainDocument['vcpu'] {
  const max = integer(textOf(el), 'domain/vcpu');
  const current = optionalInteger(attr(el, 'current'), 'domain/vcpu@current') ?? max;
  return { current, max };
}

function parseOS(el: XmlElement): DomainOS {
  const type = requireValue(child(el, 'type'), 'domain/os/type');
  const os: DomainOS = {
    type: oneOf(textOf(type).trim(), ['hvm'] as const, 'domain/os/type'),
    arch: requireValue(attr(type, 'arch'), 'domain/os/type@arch'),
  };
  assign(os, 'machine', attr(type, 'machine'));
  assign(os, 'firmware', optionalOneOf(attr(el, 'firmware'), FIRMWARES, 'domain/os@firmware'));
  const features = children(child(el, 'firmware') ?? {}, 'feature').map((f, i) => ({
    name: requireValue(attr(f, 'name'), `domain/os/firmware/feature[${i}]@name`),
    enabled: yes(attr(f, 'enabled'), `domain/os/firmware/feature[${i}]@enabled`) ?? false,
  }));
  if (features.length > 0) os.firmwareFeatures = features;
  const loaderEl = child(el, 'loader');
  if (loaderEl) {
    const loader: Loader = {};
    assign(loader, 'secure', yes(attr(loaderEl, 'secure'), 'domain/os/loader@secure'));
    assign(loader, 'readonly', yes(attr(loaderEl, 'readonly'), 'domain/os/loader@readonly'));
    assign(
      loader,
      'type',
      optionalOneOf(attr(loaderEl, 'type'), LOADER_TYPES, 'domain/os/loader@type'),
    );
    assign(loader, 'path', nonEmpty(textOf(loaderEl)));
    os.loader = loader;
  }
  const nvramEl = child(el, 'nvram');
  if (nvramEl) {
    const nvram: NonNullable<DomainOS['nvram']> = {};
    assign(nvram, 'path', nonEmpty(textOf(nvramEl)));
    assign(nvram, 'template', attr(nvramEl, 'template'));
    os.nvram = nvram;
  }
  assign(os, 'kernel', childText(el, 'kernel'));
  assign(os, 'initrd', childText(el, 'initrd'));
  assign(os, 'cmdline', childText(el, 'cmdline'));
  return os;
}

function parseFeatures(el: XmlElement | undefined): DomainDocument['features'] {
  const features: DomainDocument['features'] = {
    acpi: el?.['acpi'] !== undefined,
    apic: el?.['apic'] !== undefined,
  };
  const smm = el && child(el, 'smm');
  // <smm/> without a state means on.
  if (smm !== undefined) features.smm = (attr(smm, 'state') ?? 'on') === 'on';
  return features;
}

/** libvirt's yes/no attributes. */
function yes(value: string | undefined, at: string): boolean | undefined {
  return value === undefined ? undefined : oneOf(value, ['yes', 'no'] as const, at) === 'yes';
}

function nonEmpty(text: string): string | undefined {
  const trimmed = text.trim();
  return trimmed === '' ? undefined : trimmed;
}

function parseDevices(el: XmlElement): DomainDevices {
  const devices: DomainDevices = {
    disks: children(el, 'disk').flatMap((d, i) => parseDisk(d, `domain/devices/disk[${i}]`)),
    interfaces: children(el, 'interface').flatMap((n, i) =>
      parseInterface(n, `domain/devices/interface[${i}]`),
    ),
    serials: children(el, 'serial').flatMap((s, i) => {
      const source = parseCharSource(s, `domain/devices/serial[${i}]`);
      if (!source) return [];
      const serial: Serial = { source };
      assign(serial, 'port', port(s, `domain/devices/serial[${i}]`));
      const log = child(s, 'log');
      if (log) {
        serial.log = {
          file: requireValue(attr(log, 'file'), `domain/devices/serial[${i}]/log@file`),
        };
        assign(
          serial.log,
          'append',
          optionalOneOf(
            attr(log, 'append'),
            ['on', 'off'] as const,
            `domain/devices/serial[${i}]/log@append`,
          ),
        );
      }
      return [serial];
    }),
    consoles: children(el, 'console').flatMap((c, i) => {
      const at = `domain/devices/console[${i}]`;
      const source = parseCharSource(c, at);
      if (!source) return [];
      const console: Console = { source };
      const target = child(c, 'target') ?? {};
      assign(
        console,
        'targetType',
        optionalOneOf(attr(target, 'type'), CONSOLE_TARGETS, `${at}/target@type`),
      );
      assign(console, 'port', port(c, at));
      return [console];
    }),
    channels: children(el, 'channel').flatMap((c) => {
      const target = child(c, 'target') ?? {};
      const name = attr(target, 'name');
      if (attr(c, 'type') !== 'unix' || attr(target, 'type') !== 'virtio' || name === undefined) {
        return [];
      }
      return [{ type: 'unix' as const, target: { type: 'virtio' as const, name } }];
    }),
  };
  const balloon = child(el, 'memballoon');
  if (balloon) {
    const memballoon: Memballoon = {
      model: oneOf(attr(balloon, 'model'), MEMBALLOON_MODELS, 'domain/devices/memballoon@model'),
    };
    const stats = child(balloon, 'stats');
    assign(
      memballoon,
      'statsPeriod',
      stats && optionalInteger(attr(stats, 'period'), 'domain/devices/memballoon/stats@period'),
    );
    devices.memballoon = memballoon;
  }
  const tpms = children(el, 'tpm').flatMap((t, i) => parseTpm(t, `domain/devices/tpm[${i}]`));
  if (tpms.length > 0) devices.tpms = tpms;
  return devices;
}

function parseDisk(el: XmlElement, at: string): Disk[] {
  const type = attr(el, 'type');
  const source = child(el, 'source') ?? {};
  let diskSource: DiskSource;
  if (type === 'volume') {
    diskSource = {
      type,
      pool: requireValue(attr(source, 'pool'), `${at}/source@pool`),
      volume: requireValue(attr(source, 'volume'), `${at}/source@volume`),
    };
  } else if (type === 'file') {
    diskSource = { type, file: requireValue(attr(source, 'file'), `${at}/source@file`) };
  } else {
    return [];
  }
  const target = requireValue(child(el, 'target'), `${at}/target`);
  const disk: Disk = {
    device: oneOf(attr(el, 'device') ?? 'disk', DISK_DEVICES, `${at}@device`),
    source: diskSource,
    target: {
      dev: requireValue(attr(target, 'dev'), `${at}/target@dev`),
      bus: oneOf(attr(target, 'bus'), DISK_BUSES, `${at}/target@bus`),
    },
    readonly: el['readonly'] !== undefined,
  };
  const driver = child(el, 'driver');
  if (driver && attr(driver, 'type') !== undefined) {
    disk.driver = {
      name: oneOf(attr(driver, 'name'), ['qemu'] as const, `${at}/driver@name`),
      type: oneOf(attr(driver, 'type'), DISK_FORMATS, `${at}/driver@type`),
    };
  }
  assign(disk, 'bootOrder', bootOrder(el, at));
  assign(disk, 'alias', attr(child(el, 'alias') ?? {}, 'name'));
  if (disk.target.bus === 'scsi') assign(disk, 'scsiUnit', scsiUnit(el, at));
  return [disk];
}

/** The unit of a disk on the first SCSI controller's bus 0, target 0 (Disk scsiUnit). */
function scsiUnit(el: XmlElement, at: string): number | undefined {
  const a = child(el, 'address');
  if (!a || attr(a, 'type') !== 'drive') return undefined;
  const onFirst = ['controller', 'bus', 'target'].every((name) => (attr(a, name) ?? '0') === '0');
  return onFirst ? optionalInteger(attr(a, 'unit'), `${at}/address@unit`) : undefined;
}

function parseInterface(el: XmlElement, at: string): NetworkInterface[] {
  if (attr(el, 'type') !== 'network') return [];
  const nic: NetworkInterface = {
    source: {
      network: requireValue(attr(child(el, 'source') ?? {}, 'network'), `${at}/source@network`),
    },
  };
  assign(nic, 'mac', attr(child(el, 'mac') ?? {}, 'address'));
  assign(nic, 'model', attr(child(el, 'model') ?? {}, 'type'));
  assign(nic, 'bootOrder', bootOrder(el, at));
  assign(nic, 'alias', attr(child(el, 'alias') ?? {}, 'name'));
  assign(nic, 'port', attr(child(el, 'source') ?? {}, 'portid'));
  return [nic];
}

// Only emulated TPMs are the operator's; a passthrough of a host TPM is skipped.
function parseTpm(el: XmlElement, at: string): Tpm[] {
  const backend = child(el, 'backend') ?? {};
  if (attr(backend, 'type') !== 'emulator') return [];
  const tpm: Tpm = {
    model: oneOf(attr(el, 'model') ?? 'tpm-tis', TPM_MODELS, `${at}@model`),
    backend: { type: 'emulator' },
  };
  assign(
    tpm.backend,
    'version',
    optionalOneOf(attr(backend, 'version'), TPM_VERSIONS, `${at}/backend@version`),
  );
  return [tpm];
}

function bootOrder(el: XmlElement, at: string): number | undefined {
  const boot = child(el, 'boot');
  return boot && integer(requireValue(attr(boot, 'order'), `${at}/boot@order`), `${at}/boot@order`);
}

function port(el: XmlElement, at: string): number | undefined {
  return optionalInteger(attr(child(el, 'target') ?? {}, 'port'), `${at}/target@port`);
}

// A running domain's pty carries the allocated /dev/pts path; that is libvirt's, not ours.
function parseCharSource(el: XmlElement, at: string): CharSource | undefined {
  const type = attr(el, 'type');
  if (type === 'pty') return { type };
  if (type === 'file') {
    return {
      type,
      path: requireValue(attr(child(el, 'source') ?? {}, 'path'), `${at}/source@path`),
    };
  }
  return undefined;
}

// ---- PCI layout ----

/**
 * Where libvirt put a persistent definition's PCI devices, for a redefinition to keep them
 * there (keepPciAddresses): controllers with their index, virtio disks by source file,
 * interfaces by MAC, the balloon. Devices of other kinds, and addresses of other types (a
 * SATA disk's drive address follows its target name), are left to libvirt.
 */
export interface PciLayout {
  controllers: Controller[];
  disks: ReadonlyMap<string, PciAddress>;
  interfaces: ReadonlyMap<string, PciAddress>;
  memballoon?: PciAddress;
}

export function parsePciLayout(xml: string): PciLayout {
  return pciLayoutOf(codec.parse(xml));
}

/**
 * What a redefinition keeps from the persistent definition it replaces, from one parse of it:
 * where libvirt put its PCI devices (keepPciAddresses; undefined when they cannot be read as
 * libvirt writes them, which leaves the placement to libvirt) and its <metadata> element.
 */
export function parsePersistentBasis(xml: string): {
  layout: PciLayout | undefined;
  metadata: XmlElement | undefined;
} {
  const domain = codec.parse(xml);
  let layout: PciLayout | undefined;
  try {
    layout = pciLayoutOf(domain);
  } catch (err) {
    if (!(err instanceof XmlDocumentError)) throw err;
  }
  return { layout, metadata: child(domain, 'metadata') };
}

function pciLayoutOf(domainElement: XmlElement): PciLayout {
  const devices = child(domainElement, 'devices') ?? {};
  const disks = new Map<string, PciAddress>();
  for (const disk of children(devices, 'disk')) {
    const file = attr(child(disk, 'source') ?? {}, 'file');
    const address = pciAddress(disk);
    if (file !== undefined && address) disks.set(file, address);
  }
  const interfaces = new Map<string, PciAddress>();
  for (const nic of children(devices, 'interface')) {
    const mac = attr(child(nic, 'mac') ?? {}, 'address');
    const address = pciAddress(nic);
    if (mac !== undefined && address) interfaces.set(mac.toLowerCase(), address);
  }
  const layout: PciLayout = {
    controllers: children(devices, 'controller').flatMap(layoutController),
    disks,
    interfaces,
  };
  const balloon = child(devices, 'memballoon');
  assign(layout, 'memballoon', balloon && pciAddress(balloon));
  return layout;
}

function layoutController(el: XmlElement): Controller[] {
  const index = optionalInteger(attr(el, 'index'), 'domain/devices/controller@index');
  if (index === undefined) return [];
  const type = attr(el, 'type');
  const model = attr(el, 'model');
  let controller: Controller;
  if (type === 'pci' && (model === 'pcie-root' || model === 'pcie-root-port')) {
    controller = { type, model };
  } else if (type === 'scsi' && model === 'virtio-scsi') {
    controller = { type, model };
  } else if (type === 'usb') {
    controller = model === undefined ? { type } : { type, model };
  } else if (type === 'virtio-serial' || type === 'sata') {
    controller = { type };
  } else {
    return [];
  }
  controller.index = index;
  assign(controller, 'address', pciAddress(el));
  return [controller];
}

function pciAddress(el: XmlElement): PciAddress | undefined {
  const a = child(el, 'address');
  if (!a || attr(a, 'type') !== 'pci') return undefined;
  const part = (name: string) => requireValue(attr(a, name), `address@${name}`);
  const address: PciAddress = {
    domain: part('domain'),
    bus: part('bus'),
    slot: part('slot'),
    function: part('function'),
  };
  assign(
    address,
    'multifunction',
    optionalOneOf(attr(a, 'multifunction'), ['on', 'off'] as const, 'address@multifunction'),
  );
  return address;
}

// ---- owned fields ----

/**
 * The fields of a domain the operator owns, for comparing desired with observed (see
 * owned.ts for the null/undefined convention). Not owned: the machine type (the QEMU driver
 * expands aliases, q35 -> pc-q35-7.2), the stamp (ownership, not configuration), and
 * whatever libvirt may fill in when the desired document leaves it out: title, description,
 * cpu, clock, lifecycle actions, MACs, aliases, NIC model, console mirrors of serial 0, the
 * default memballoon.
 */
export function ownedDomainFields(doc: DomainDocument) {
  const d = doc.devices;
  return {
    type: doc.type,
    name: doc.name,
    uuid: doc.uuid.toLowerCase(),
    title: doc.title,
    description: doc.description,
    memoryKiB: doc.memoryKiB,
    currentMemoryKiB: doc.currentMemoryKiB ?? doc.memoryKiB,
    vcpu: { current: doc.vcpu.current, max: doc.vcpu.max },
    os: {
      type: doc.os.type,
      arch: doc.os.arch,
      firmware: firmwareOf(doc.os),
      // libvirt writes the chosen loader's path, type and read-only flag, and the NVRAM
      // template: those are its choice. Ours: the secure flag, the store's path, the features.
      secureBoot: doc.os.loader?.secure === true,
      nvram: orNull(doc.os.nvram?.path),
      firmwareFeatures: (doc.os.firmwareFeatures ?? [])
        .map((f) => `${f.name}=${f.enabled ? 'yes' : 'no'}`)
        .sort(),
      kernel: orNull(doc.os.kernel),
      initrd: orNull(doc.os.initrd),
      cmdline: orNull(doc.os.cmdline),
    },
    features: { acpi: doc.features.acpi, apic: doc.features.apic },
    // Only an SMM we ask for is compared: libvirt may switch it on for a firmware that needs it.
    smm: doc.features.smm === true ? true : undefined,
    // Mode and model only where the desired document sets them (libvirt may fill in a default
    // model); the topology always (null: libvirt's default, one socket per vCPU).
    cpu: {
      mode: effectiveCpu(doc)?.mode,
      model: effectiveCpu(doc)?.model,
      topology: orNull(doc.cpu?.topology && { ...doc.cpu.topology }),
    },
    clockOffset: doc.clock?.offset,
    onPoweroff: doc.onPoweroff,
    onReboot: doc.onReboot,
    onCrash: doc.onCrash,
    disks: d.disks.map((disk) => ({
      device: disk.device,
      source: { ...disk.source },
      format: disk.driver?.type,
      target: { dev: disk.target.dev, bus: disk.target.bus },
      readonly: disk.readonly,
      bootOrder: orNull(disk.bootOrder),
      alias: disk.alias,
    })),
    interfaces: d.interfaces.map((nic) => ({
      network: nic.source.network,
      mac: normalMac(nic.mac),
      model: nic.model,
      bootOrder: orNull(nic.bootOrder),
      alias: nic.alias,
    })),
    serials: d.serials.map((s) => ({
      source: { ...s.source },
      port: s.port,
      log: s.log ? { file: s.log.file, append: s.log.append } : null,
    })),
    consoles:
      d.consoles.length === 0
        ? undefined
        : d.consoles.map((c) => ({
            source: { ...c.source },
            targetType: c.targetType,
            port: c.port,
          })),
    channels: d.channels.map((c) => c.target.name),
    memballoon: d.memballoon && {
      model: d.memballoon.model,
      statsPeriod: orNull(d.memballoon.statsPeriod),
    },
    tpms: (d.tpms ?? []).map((t) => ({ model: t.model, version: orNull(t.backend.version) })),
  };
}

/**
 * A running domain whose firmware libvirt chose no longer says firmware='efi' (libvirt 9.0
 * replaces it with the chosen <loader type='pflash'>), so a pflash loader also means UEFI.
 */
function firmwareOf(os: DomainOS): Firmware | null {
  if (os.firmware) return os.firmware;
  return os.loader?.type === 'pflash' ? 'efi' : null;
}
export type OwnedDomainFields = ReturnType<typeof ownedDomainFields>;

/**
 * QEMU's default CPU model for x86-64 machines (QEMU 7.2); libvirt writes it into a qemu
 * domain's persistent definition when the domain gives no CPU mode.
 */
export const QEMU_DEFAULT_CPU_MODEL = 'qemu64';

/**
 * The CPU a document asks for, with libvirt's fill-in made explicit: a qemu (TCG) domain
 * without a mode runs QEMU's default model, so "no mode" and "custom qemu64" are the same and
 * another model written earlier is a difference. A kvm domain without a mode is left as is.
 */
export function effectiveCpu(doc: DomainDocument): DomainCpu | undefined {
  if (doc.type !== 'qemu' || doc.cpu?.mode !== undefined) return doc.cpu;
  return { ...doc.cpu, mode: 'custom', model: QEMU_DEFAULT_CPU_MODEL };
}

/** Owned fields where `observed` differs from `desired`, as paths (e.g. `vcpu.current`). */
export function changedDomainFields(desired: DomainDocument, observed: DomainDocument): string[] {
  return changedFields(ownedDomainFields(desired), ownedDomainFields(observed));
}
