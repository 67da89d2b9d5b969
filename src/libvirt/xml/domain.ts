// The libvirt domain XML the operator writes, typed after https://libvirt.org/formatdomain.html
// for the fields it owns. parseDomainXML reads what libvirt returns, which also carries many
// defaults we never set (controllers, addresses, pty paths, emulator...): those are ignored.
import {
  assign,
  attr,
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
  type XmlElement,
  type XmlTree,
} from './codec.js';
import { stampFromMetadata, stampTree, type OwnershipStamp } from './metadata.js';
import { changedFields, normalMac, orNull } from './owned.js';
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
  /** <memory>: the maximum the guest can be given, in KiB. */
  memoryKiB: number;
  /** <currentMemory>: the balloon target, in KiB; libvirt's default is memoryKiB. */
  currentMemoryKiB?: number;
  /** <vcpu current='current'>max</vcpu>. */
  vcpu: { current: number; max: number };
  os: DomainOS;
  features: { acpi: boolean; apic: boolean };
  cpu?: { mode: CpuMode };
  clock?: { offset: ClockOffset };
  onPoweroff?: LifecycleAction;
  onReboot?: LifecycleAction;
  onCrash?: LifecycleAction;
  /** Graphics are never emitted: the operator's guests are headless (serial console only). */
  devices: DomainDevices;
}

export interface DomainOS {
  /** Always hvm (full virtualisation) for the guests the operator runs. */
  type: 'hvm';
  arch: string;
  /** A machine type or alias; libvirt's QEMU driver expands aliases (q35 -> pc-q35-7.2). */
  machine?: string;
  /** <os firmware=...>: libvirt picks a matching loader; absent means libvirt's default, BIOS. */
  firmware?: Firmware;
  /** Direct kernel boot: paths on the host. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

export interface DomainDevices {
  disks: Disk[];
  interfaces: NetworkInterface[];
  serials: Serial[];
  consoles: Console[];
  channels: Channel[];
  memballoon?: Memballoon;
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
}

/** <interface type='network'>: the only kind the operator attaches. */
export interface NetworkInterface {
  source: { network: string };
  /** Absent: libvirt generates one. */
  mac?: string;
  model?: string;
  bootOrder?: number;
  alias?: string;
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
}

const codec = xmlCodec('domain', [
  'domain.metadata.*',
  'domain.devices.disk',
  'domain.devices.interface',
  'domain.devices.serial',
  'domain.devices.console',
  'domain.devices.channel',
]);

// ---- build ----

export function buildDomainXML(doc: DomainDocument): string {
  return codec.build({
    '@type': doc.type,
    name: doc.name,
    uuid: doc.uuid,
    title: doc.title,
    description: doc.description,
    metadata: doc.stamp ? stampTree(doc.stamp) : undefined,
    memory: { '@unit': 'KiB', '#text': doc.memoryKiB },
    currentMemory:
      doc.currentMemoryKiB === undefined
        ? undefined
        : { '@unit': 'KiB', '#text': doc.currentMemoryKiB },
    vcpu: { '@current': doc.vcpu.current, '#text': doc.vcpu.max },
    os: osTree(doc.os),
    features: featuresTree(doc.features),
    cpu: doc.cpu ? { '@mode': doc.cpu.mode } : undefined,
    clock: doc.clock ? { '@offset': doc.clock.offset } : undefined,
    on_poweroff: doc.onPoweroff,
    on_reboot: doc.onReboot,
    on_crash: doc.onCrash,
    devices: devicesTree(doc.devices),
  });
}

function osTree(os: DomainOS): XmlTree {
  return {
    '@firmware': os.firmware,
    type: { '@arch': os.arch, '@machine': os.machine, '#text': os.type },
    kernel: os.kernel,
    initrd: os.initrd,
    cmdline: os.cmdline,
  };
}

function featuresTree(features: DomainDocument['features']): XmlTree | undefined {
  if (!features.acpi && !features.apic) return undefined;
  return { acpi: features.acpi ? '' : undefined, apic: features.apic ? '' : undefined };
}

function devicesTree(devices: DomainDevices): XmlTree {
  return {
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
        }
      : undefined,
  };
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
  };
}

function interfaceTree(nic: NetworkInterface): XmlTree {
  return {
    '@type': 'network',
    mac: nic.mac === undefined ? undefined : { '@address': nic.mac },
    source: { '@network': nic.source.network },
    model: nic.model === undefined ? undefined : { '@type': nic.model },
    boot: nic.bootOrder === undefined ? undefined : { '@order': nic.bootOrder },
    alias: nic.alias === undefined ? undefined : { '@name': nic.alias },
  };
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
  const current = child(el, 'currentMemory');
  if (current) doc.currentMemoryKiB = scaledKiB(current, 'domain/currentMemory');
  const cpuMode = attr(child(el, 'cpu') ?? {}, 'mode');
  if (cpuMode !== undefined) doc.cpu = { mode: oneOf(cpuMode, CPU_MODES, 'domain/cpu@mode') };
  const clock = child(el, 'clock');
  if (clock)
    doc.clock = { offset: oneOf(attr(clock, 'offset'), CLOCK_OFFSETS, 'domain/clock@offset') };
  assign(doc, 'onPoweroff', lifecycle(el, 'on_poweroff'));
  assign(doc, 'onReboot', lifecycle(el, 'on_reboot'));
  assign(doc, 'onCrash', lifecycle(el, 'on_crash'));
  return doc;
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
  assign(os, 'kernel', childText(el, 'kernel'));
  assign(os, 'initrd', childText(el, 'initrd'));
  assign(os, 'cmdline', childText(el, 'cmdline'));
  return os;
}

function parseFeatures(el: XmlElement | undefined): DomainDocument['features'] {
  return { acpi: el?.['acpi'] !== undefined, apic: el?.['apic'] !== undefined };
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
  return [disk];
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
  return [nic];
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
      firmware: orNull(doc.os.firmware),
      kernel: orNull(doc.os.kernel),
      initrd: orNull(doc.os.initrd),
      cmdline: orNull(doc.os.cmdline),
    },
    features: { acpi: doc.features.acpi, apic: doc.features.apic },
    cpuMode: doc.cpu?.mode,
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
  };
}
export type OwnedDomainFields = ReturnType<typeof ownedDomainFields>;

/** Owned fields where `observed` differs from `desired`, as paths (e.g. `vcpu.current`). */
export function changedDomainFields(desired: DomainDocument, observed: DomainDocument): string[] {
  return changedFields(ownedDomainFields(desired), ownedDomainFields(observed));
}
