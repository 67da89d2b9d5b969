// Guest metrics on the agent's /metrics (api-v1alpha1.md, "Guest metrics"): what each owned
// domain uses of CPU, memory, disks and network, from ONE virConnectGetAllDomainStats call per
// scrape. The call runs on the binding's worker threads, never on the JS thread and never on a
// reconcile's path, so a slow libvirtd slows the scrape, not the controllers.
//
// Series are rebuilt at every scrape from that scrape's records, which cover active domains
// only: a VM that is gone or stopped has no series in the next scrape, nothing to expire.
//
// Ownership: a domain counts only when it carries the operator's stamp for a VirtualMachine
// that this agent has in its cache with the same uid, and has that machine's UUID (spec.uuid
// or its uid), as the reconciles find it: a copy of our definition under another UUID
// (virt-clone, or dumpxml and define, keep <metadata>) carries our stamp too. The stamp is
// read once per domain UUID (a lookup and virDomainGetXMLDesc) and remembered until that
// UUID disappears from the stats, so a steady scrape costs the one bulk call.
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  ConnectGetAllDomainStatsFlags,
  DomainStatsTypes,
  isNotFound,
  type Connect,
  type DomainStatsRecord,
} from '../libvirt/index.js';
import { stampOf } from '../ownership/metadata.js';

/** The stats groups the metrics need. */
const GUEST_STATS =
  DomainStatsTypes.STATE |
  DomainStatsTypes.CPU_TOTAL |
  DomainStatsTypes.BALLOON |
  DomainStatsTypes.VCPU |
  DomainStatsTypes.INTERFACE |
  DomainStatsTypes.BLOCK;

export interface GuestMetricsOptions {
  registry: Registry;
  nodeName: string;
  /**
   * The current libvirt connection, or undefined while there is none (no guest series then).
   * The same object for as long as it is open: another one means a reconnect, after which
   * every remembered stamp is read again.
   */
  connection(): Connect | undefined;
  /**
   * VirtualMachine namespace/name as this agent knows it, if it is on this node: its uid and
   * the UUID of its domain (libvirtUuid: spec.uuid, else the uid; lower case).
   */
  vm(namespace: string, name: string): { uid: string; uuid: string } | undefined;
  /** Bound on the bulk call; a scrape never waits longer for libvirt. Default 5 s. */
  timeoutMs?: number;
  /** Reports a failed scrape (the series are then absent for that scrape). */
  onError?(err: unknown): void;
}

export interface GuestMetrics {
  /** One scrape's worth of records as the collectors will see them (tests, the bench). */
  collect(): Promise<OwnedRecord[]>;
}

export interface OwnedRecord {
  namespace: string;
  name: string;
  stats: DomainStatsRecord;
}

type Owner = { namespace: string; name: string; uid: string } | null;

const VM_LABELS = ['namespace', 'name', 'node'] as const;
/** The metric families below that collect once per scrape (the guest ones and the failures). */
const METRIC_COUNT = 10;
/**
 * Stamp reads (a lookup and an XML read per new domain) in flight at once, all scrapes
 * together: the first scrape of a host with many domains must not queue thousands of calls
 * ahead of the reconciles' calls on the binding's worker threads.
 */
const STAMP_READS_IN_FLIGHT = 8;

/**
 * One entry per disk: the first for each name, which is the top of its chain (libvirt reports
 * a backingIndex even for the top layer, and lower layers only with the BACKING flag).
 */
function topLayers(s: DomainStatsRecord): DomainStatsRecord['blocks'] {
  const seen = new Set<string>();
  return s.blocks.filter((b) => !seen.has(b.name) && seen.add(b.name));
}

/** The machine a domain name would be ours for (api/names.ts domainName: namespace_name). */
function machineNamed(domain: string): { namespace: string; name: string } | undefined {
  const at = domain.indexOf('_');
  return at > 0 ? { namespace: domain.slice(0, at), name: domain.slice(at + 1) } : undefined;
}

/**
 * Runs at most `max` of the calls given to it at once, the others in the order they came. One
 * for all scrapes: overlapping scrapes must not each have `max` calls in flight.
 */
function limiter(max: number): <T>(call: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (call) => {
    while (running >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await call();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

export function registerGuestMetrics(opts: GuestMetricsOptions): GuestMetrics {
  const { registry, nodeName } = opts;
  const timeoutMs = opts.timeoutMs ?? 5_000;
  // Domain UUID -> its stamp's owner (null: foreign or not a VM), keyed with the domain name so
  // a domain redefined under the same UUID with another name is read again.
  const owners = new Map<string, { domain: string; owner: Owner }>();
  // The connection the remembered stamps were read through: a new one (libvirtd restarted, the
  // agent reconnected) may see other domains under the same UUIDs, so they are read again.
  let ownersOf: Connect | undefined;

  // Stamp reads in flight, by domain UUID. Scrapes overlap (a second Prometheus, the next
  // interval while libvirtd was slow: they share the bulk call, then each looks at the same new
  // domains): a scrape waits for the read another one started rather than reading again, and
  // the bound on reads in flight holds for all of them together.
  const reading = new Map<string, { conn: Connect; domain: string; owner: Promise<Owner> }>();
  const limitStampReads = limiter(STAMP_READS_IN_FLIGHT);

  function ownerOf(conn: Connect, rec: DomainStatsRecord): Promise<Owner> {
    const known = owners.get(rec.uuid);
    if (known && known.domain === rec.name && !stampOutdated(known.owner, rec))
      return Promise.resolve(known.owner);
    const pending = reading.get(rec.uuid);
    if (pending && pending.conn === conn && pending.domain === rec.name) return pending.owner;
    const entry = { conn, domain: rec.name, owner: limitStampReads(() => readOwner(conn, rec)) };
    reading.set(rec.uuid, entry);
    const settled = () => {
      if (reading.get(rec.uuid) === entry) reading.delete(rec.uuid);
    };
    entry.owner.then(settled, settled);
    return entry.owner;
  }

  async function readOwner(conn: Connect, rec: DomainStatsRecord): Promise<Owner> {
    let owner: Owner = null;
    try {
      const dom = await conn.lookupDomainByUUIDString(rec.uuid, { timeoutMs });
      try {
        // The whole definition, not virDomainGetMetadata: libvirt returns the bare element
        // without its namespace declaration, which is what proves the stamp is ours.
        const stamp = stampOf(await dom.getXMLDesc(0, { timeoutMs }));
        if (stamp?.kind === 'VirtualMachine' && stamp.namespace) {
          owner = { namespace: stamp.namespace, name: stamp.name, uid: stamp.uid };
        }
      } finally {
        dom.free();
      }
    } catch (err) {
      // A domain gone since the bulk call is simply skipped this time.
      if (isNotFound(err, 'domain')) return null;
      throw err;
    }
    owners.set(rec.uuid, { domain: rec.name, owner });
    return owner;
  }

  // The bulk call still running, if any. libvirt cannot cancel a call: one that outlived its
  // scrape's timeout keeps a binding worker busy until libvirtd answers. A scrape that starts
  // another meanwhile (the next interval, a second Prometheus, a browser) would take one more
  // worker each time while libvirtd is slow or hung, until the reconciles' calls had none;
  // it waits for the same call instead, so a scrape costs at most one call in flight.
  let inFlight: { conn: Connect; call: Promise<DomainStatsRecord[]> } | undefined;
  function bulkStats(conn: Connect): Promise<DomainStatsRecord[]> {
    if (inFlight?.conn === conn) return inFlight.call;
    const call = conn.getAllDomainStats(
      GUEST_STATS,
      // ACTIVE: running and paused domains only. libvirtd lists a shut-off domain too, with its
      // last cpu.time, balloon and vCPU figures, which would read as a machine still there.
      // NOWAIT: a domain whose monitor is busy (a migration, a long block job) reports what it
      // can without waiting for the job, so one stuck guest cannot hold up the scrape.
      ConnectGetAllDomainStatsFlags.ACTIVE | ConnectGetAllDomainStatsFlags.NOWAIT,
      // No timeout of the binding's: its rejection would hide when the call really ends.
      // Each scrape bounds its own wait (withinTimeout).
      { timeoutMs: 0 },
    );
    const entry = { conn, call };
    inFlight = entry;
    const done = () => {
      if (inFlight === entry) inFlight = undefined;
    };
    call.then(done, done);
    return call;
  }

  function withinTimeout<T>(p: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`libvirt domain stats: no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  /**
   * Whether a remembered stamp may belong to an earlier domain under the same UUID and name,
   * which a scrape interval can miss the replacement of: a VirtualMachine deleted and created
   * again with the same spec.uuid (a new uid in the stamp), or a foreign domain (no stamp of
   * ours) with the machine's UUID and domain name, removed by its owner so that the machine's
   * own domain could take both. Read again: a stamp naming a machine we know, under that
   * machine's UUID, with another uid; none, on a domain with a machine's UUID and name (while
   * such a foreign domain stays, its one read a scrape is the price).
   */
  function stampOutdated(owner: Owner, rec: DomainStatsRecord): boolean {
    const who = owner ?? machineNamed(rec.name);
    if (!who) return false;
    const vm = opts.vm(who.namespace, who.name);
    return vm !== undefined && vm.uuid === rec.uuid.toLowerCase() && vm.uid !== owner?.uid;
  }

  async function scrape(): Promise<OwnedRecord[]> {
    const conn = opts.connection();
    if (!conn) {
      // Counted, not logged: the agent says so once when its connection goes.
      failures.inc({ node: nodeName });
      return [];
    }
    const records = await withinTimeout(bulkStats(conn));
    if (conn !== ownersOf) {
      owners.clear();
      ownersOf = conn;
    }
    const seen = new Set(records.map((r) => r.uuid));
    for (const uuid of owners.keys()) if (!seen.has(uuid)) owners.delete(uuid);
    const owned: OwnedRecord[] = [];
    const owners_ = await Promise.all(records.map((r) => ownerOf(conn, r)));
    records.forEach((stats, i) => {
      const owner = owners_[i];
      if (!owner) return;
      // Only this node's machines: the same VM known here with the same uid, and its domain
      // (its UUID), not a copy of the definition that kept the stamp.
      const vm = opts.vm(owner.namespace, owner.name);
      if (vm?.uid !== owner.uid || vm.uuid !== stats.uuid.toLowerCase()) return;
      owned.push({ namespace: owner.namespace, name: owner.name, stats });
    });
    return owned;
  }

  // Every metric's collect() awaits the same scrape: prom-client collects all metrics of a
  // registry concurrently, and the contract is one bulk call per scrape. A scrape's call is
  // shared by the collectors of that scrape (each metric asks once) and never reused after a
  // second, so a partial rendering (one metric) cannot keep stale figures alive.
  let current: { records: Promise<OwnedRecord[]>; users: number; at: number } | undefined;
  const shared = (): Promise<OwnedRecord[]> => {
    const now = Date.now();
    if (!current || current.users >= METRIC_COUNT || now - current.at > 1_000) {
      current = {
        records: scrape().catch((err: unknown) => {
          failures.inc({ node: nodeName });
          opts.onError?.(err);
          return [];
        }),
        users: 0,
        at: now,
      };
    }
    current.users++;
    return current.records;
  };

  const vmLabels = (r: OwnedRecord) => ({ namespace: r.namespace, name: r.name, node: nodeName });
  const r = [registry];

  // Without it a failing libvirtd and a node with no VMs read the same: no guest series. It
  // collects through the scrape too, so a failure shows in the page of the scrape it failed.
  const failures = new Counter({
    name: 'virt_agent_guest_stats_failures_total',
    help:
      'Scrapes whose libvirt domain stats call failed, was late (5 s) or found no libvirt ' +
      'connection; those scrapes had no guest series.',
    labelNames: ['node'],
    registers: r,
    async collect(this: Counter<string>) {
      await shared();
    },
  });
  // Present at 0 from the start, so that rate() and an alert on increase() have a series.
  failures.inc({ node: nodeName }, 0);

  type Labelled = Gauge<string> | Counter<string>;
  const set = (m: Labelled, labels: Record<string, string>, value: number) => {
    if (m instanceof Gauge) m.set(labels, value);
    else m.inc(labels, value);
  };
  const perVm = (
    kind: 'gauge' | 'counter',
    name: string,
    help: string,
    value: (s: DomainStatsRecord) => number | undefined,
  ) => {
    const config = {
      name,
      help,
      labelNames: VM_LABELS,
      registers: r,
      async collect(this: Labelled) {
        const records = await shared();
        this.reset();
        for (const rec of records) {
          const v = value(rec.stats);
          if (v !== undefined) set(this, vmLabels(rec), v);
        }
      },
    };
    return kind === 'gauge' ? new Gauge(config) : new Counter(config);
  };
  const perDevice = (
    name: string,
    help: string,
    label: 'drive' | 'interface',
    values: (s: DomainStatsRecord) => Array<[string, bigint | undefined]>,
  ) =>
    new Counter({
      name,
      help,
      labelNames: [...VM_LABELS, label],
      registers: r,
      async collect(this: Counter<string>) {
        const records = await shared();
        this.reset();
        for (const rec of records) {
          for (const [device, v] of values(rec.stats)) {
            if (v !== undefined) this.inc({ ...vmLabels(rec), [label]: device }, Number(v));
          }
        }
      },
    });

  const kib = (v: bigint | undefined) => (v === undefined ? undefined : Number(v) * 1024);
  perVm(
    'counter',
    'virt_vm_cpu_usage_seconds_total',
    'CPU time the guest used (all vCPUs and QEMU emulation), from libvirt cpu.time.',
    (s) => (s.cpu?.time === undefined ? undefined : Number(s.cpu.time) / 1e9),
  );
  perVm(
    'gauge',
    'virt_vm_vcpus',
    'vCPUs the guest has now (vcpu.current).',
    (s) => s.vcpu?.current,
  );
  perVm(
    'gauge',
    'virt_vm_memory_balloon_bytes',
    'Current balloon size: the memory the guest has now (balloon.current).',
    (s) => kib(s.balloon?.current),
  );
  perVm(
    'gauge',
    'virt_vm_memory_resident_bytes',
    'Resident set size of the QEMU process on the host (balloon.rss).',
    (s) => kib(s.balloon?.rss),
  );
  perVm(
    'gauge',
    'virt_vm_memory_available_bytes',
    "Memory the guest reports as available to it (balloon.available); only when the guest's balloon driver reports it.",
    (s) => kib(s.balloon?.available),
  );
  perDevice(
    'virt_vm_storage_read_bytes_total',
    'Bytes read by the guest, per disk (label drive: the guest device, e.g. vda).',
    'drive',
    (s) => topLayers(s).map((b) => [b.name, b.rdBytes]),
  );
  perDevice(
    'virt_vm_storage_write_bytes_total',
    'Bytes written by the guest, per disk (label drive: the guest device, e.g. vda).',
    'drive',
    (s) => topLayers(s).map((b) => [b.name, b.wrBytes]),
  );
  perDevice(
    'virt_vm_network_receive_bytes_total',
    'Bytes the guest received, per interface (label interface: the host-side device, e.g. vnet0).',
    'interface',
    (s) => s.interfaces.map((n) => [n.name, n.rxBytes]),
  );
  perDevice(
    'virt_vm_network_transmit_bytes_total',
    'Bytes the guest sent, per interface (label interface: the host-side device, e.g. vnet0).',
    'interface',
    (s) => s.interfaces.map((n) => [n.name, n.txBytes]),
  );

  return {
    collect: () => shared(),
  };
}
