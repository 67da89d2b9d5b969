// Bulk domain statistics (virConnectGetAllDomainStats, virDomainListGetStats) as typed records.
// libvirt returns flat typed parameters ('cpu.time', 'net.0.rx.bytes', 'block.1.name'); they
// are grouped here per stats group and per device. A field the driver did not report stays
// undefined (the test driver reports only the state group; a guest without a balloon driver
// reports no 'balloon.available'), so "absent" is never confused with zero.
import type { RawDomainStatsRecord } from './addon.js';
import { domainStateName, domainStateReasonName } from './names.js';

export interface DomainStatsState {
  state: number;
  reason: number;
  stateName: string;
  reasonName: string;
}

export interface DomainStatsCpu {
  /** Total CPU time in ns (`cpu.time`). */
  time?: bigint;
  /** ns spent in user / system mode. */
  user?: bigint;
  system?: bigint;
}

/** All KiB (`balloon.*`). */
export interface DomainStatsBalloon {
  /** Current balloon size. */
  current?: bigint;
  maximum?: bigint;
  /** What the guest reports as available to it (needs the guest's balloon driver). */
  available?: bigint;
  usable?: bigint;
  unused?: bigint;
  /** Resident set size of the QEMU process. */
  rss?: bigint;
  diskCaches?: bigint;
  lastUpdate?: bigint;
}

export interface DomainStatsVcpu {
  current?: number;
  maximum?: number;
}

export interface DomainStatsInterface {
  /** Host-side name (the tap device, e.g. vnet0). */
  name: string;
  rxBytes?: bigint;
  rxPackets?: bigint;
  rxErrors?: bigint;
  rxDrops?: bigint;
  txBytes?: bigint;
  txPackets?: bigint;
  txErrors?: bigint;
  txDrops?: bigint;
}

export interface DomainStatsBlock {
  /** Target name (vda, sda). */
  name: string;
  path?: string;
  /** Index in the backing chain (only with BACKING). */
  backingIndex?: number;
  rdBytes?: bigint;
  rdReqs?: bigint;
  rdTimes?: bigint;
  wrBytes?: bigint;
  wrReqs?: bigint;
  wrTimes?: bigint;
  flReqs?: bigint;
  allocation?: bigint;
  capacity?: bigint;
  physical?: bigint;
}

export interface DomainStatsRecord {
  name: string;
  uuid: string;
  state?: DomainStatsState;
  cpu?: DomainStatsCpu;
  balloon?: DomainStatsBalloon;
  vcpu?: DomainStatsVcpu;
  interfaces: DomainStatsInterface[];
  blocks: DomainStatsBlock[];
  /** Every typed parameter as libvirt named it, including groups not typed here. */
  params: Record<string, number | bigint | boolean | string>;
}

type Params = RawDomainStatsRecord['params'];

function big(params: Params, key: string): bigint | undefined {
  const v = params[key];
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(Math.trunc(v));
  return undefined;
}

function num(params: Params, key: string): number | undefined {
  const v = params[key];
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

function str(params: Params, key: string): string | undefined {
  const v = params[key];
  return typeof v === 'string' ? v : undefined;
}

/** Drops the keys whose value is undefined; undefined if none is left. */
function present<T extends object>(o: T): T | undefined {
  const entries = Object.entries(o).filter(([, v]) => v !== undefined);
  return entries.length === 0 ? undefined : (Object.fromEntries(entries) as T);
}

function devices<T>(params: Params, group: string, make: (prefix: string) => T): T[] {
  const count = num(params, `${group}.count`) ?? 0;
  const out: T[] = [];
  for (let i = 0; i < count; i++) out.push(make(`${group}.${i}.`));
  return out;
}

export function parseDomainStats(raw: RawDomainStatsRecord): DomainStatsRecord {
  const p = raw.params;
  const stateCode = num(p, 'state.state');
  const reasonCode = num(p, 'state.reason') ?? 0;
  return {
    name: raw.name,
    uuid: raw.uuid,
    state:
      stateCode === undefined
        ? undefined
        : {
            state: stateCode,
            reason: reasonCode,
            stateName: domainStateName(stateCode),
            reasonName: domainStateReasonName(stateCode, reasonCode),
          },
    cpu: present({
      time: big(p, 'cpu.time'),
      user: big(p, 'cpu.user'),
      system: big(p, 'cpu.system'),
    }),
    balloon: present({
      current: big(p, 'balloon.current'),
      maximum: big(p, 'balloon.maximum'),
      available: big(p, 'balloon.available'),
      usable: big(p, 'balloon.usable'),
      unused: big(p, 'balloon.unused'),
      rss: big(p, 'balloon.rss'),
      diskCaches: big(p, 'balloon.disk_caches'),
      lastUpdate: big(p, 'balloon.last-update'),
    }),
    vcpu: present({ current: num(p, 'vcpu.current'), maximum: num(p, 'vcpu.maximum') }),
    interfaces: devices(p, 'net', (k) => ({
      name: str(p, `${k}name`) ?? '',
      ...present({
        rxBytes: big(p, `${k}rx.bytes`),
        rxPackets: big(p, `${k}rx.pkts`),
        rxErrors: big(p, `${k}rx.errs`),
        rxDrops: big(p, `${k}rx.drop`),
        txBytes: big(p, `${k}tx.bytes`),
        txPackets: big(p, `${k}tx.pkts`),
        txErrors: big(p, `${k}tx.errs`),
        txDrops: big(p, `${k}tx.drop`),
      }),
    })),
    blocks: devices(p, 'block', (k) => ({
      name: str(p, `${k}name`) ?? '',
      ...present({
        path: str(p, `${k}path`),
        backingIndex: num(p, `${k}backingIndex`),
        rdBytes: big(p, `${k}rd.bytes`),
        rdReqs: big(p, `${k}rd.reqs`),
        rdTimes: big(p, `${k}rd.times`),
        wrBytes: big(p, `${k}wr.bytes`),
        wrReqs: big(p, `${k}wr.reqs`),
        wrTimes: big(p, `${k}wr.times`),
        flReqs: big(p, `${k}fl.reqs`),
        allocation: big(p, `${k}allocation`),
        capacity: big(p, `${k}capacity`),
        physical: big(p, `${k}physical`),
      }),
    })),
    params: p,
  };
}
