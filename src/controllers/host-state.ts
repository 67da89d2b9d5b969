// What an agent keeps about its host between passes, besides the caches: one object made by
// the agent (or a test) and reached through the context, so nothing lives in module-level
// variables and two agents in one process (tests) never share it.
import type { ShownFigures } from './shared/figures.js';
import type { RestoredRun, SentShutdown } from './virtual-machine/plan.js';
import type { HeaderChecks } from './volume/header-check.js';
import type { ImportJobs } from './volume/import.js';
import type { PoolLocks } from './shared/pool-lock.js';
import type { NodeLookups } from './node-aggregate.js';
import type { JudgedSummaries } from './shared/unselected.js';
import type { HostFirmware } from '../libvirt/xml/capabilities.js';

export interface HostState {
  /** Byte figures last shown in status, per object (shared/figures.ts). */
  figures: ShownFigures;
  /** Storage operations queued per pool (shared/pool-lock.ts). */
  poolLocks: PoolLocks;
  /** HTTP imports by Volume uid (volume/import.ts). */
  imports: ImportJobs;
  /**
   * Machines (by uid) whose restore this process is running, with the restore's uid: a pass
   * that may revert the domain, from its start (virtual-machine-restore/plan.ts
   * mayActOnDomain), not one that only waits, e.g. for its snapshot to be taken
   * (virtual-machine-restore/, shared/restores.ts).
   */
  restores: Map<string, string>;
  /**
   * Machines (by uid) whose running domain a restore of this process powered off, until their
   * controller sees it running again: a stop that was asked for, not a crash to count
   * (virtual-machine/plan.ts powerPlan).
   */
  restoreStops: Set<string>;
  /**
   * The run (runtime ID) a restore brought back from a checkpoint and the machine's generation
   * it was brought back under, by machine uid, for as long as that run lasts (forgotten by the
   * first pass that finds another run or none): the cached status may not name it yet, and
   * names it only while it is held (virtual-machine/plan.ts restoredRun).
   */
  restoredRuns: Map<string, RestoredRun>;
  /**
   * ACPI shutdown requests this process sent, by machine uid, until the cached status shows
   * them (virtual-machine/plan.ts withSentShutdown).
   */
  shutdowns: Map<string, SentShutdown>;
  /**
   * When this process last hot-plugged an interface into a machine (by uid): its address
   * poll window starts then, not at the boot (virtual-machine/reconcile.ts awaitingAddresses).
   */
  interfacesAttached: Map<string, number>;
  /**
   * When this process last repeated a detach that the guest had not answered (by uid): the
   * next repeat waits as long again as the request had waited (virtual-machine/plan.ts
   * detachRetryDue).
   */
  detachRetried: Map<string, number>;
  /**
   * The restartCount this process gave a machine (by uid) when it started a domain that had
   * stopped on its own, until the cached status shows it (virtual-machine/reconcile.ts
   * countedRestarts): a status write that failed must not lose the restart.
   */
  restarts: Map<string, number>;
  /**
   * Machines (by uid) whose domain's driver refused the restart-count metadata as unsupported
   * (virtual-machine/act.ts rememberRestartsUnrecordable): not asked again in this process.
   */
  restartsUnrecordable: Set<string>;
  /**
   * The kinds of refusal of a domain's metadata records this process has logged, by machine
   * uid (virtual-machine/act.ts rememberRecordFailures): said once, not at every pass, until a
   * record of that sort is written again.
   */
  recordFailuresLogged: Map<string, Set<string>>;
  /**
   * Device changes (their spec field names) the running domain refused to take live, by
   * machine uid, for that run of the domain (its runtime ID): restart-time changes that
   * updatePolicy Restart must restart for (virtual-machine/plan.ts planMachine), and that
   * are not asked of this run again. Lost with the process: a new agent asks once more, is
   * refused again, and so delays such a restart by one pass.
   */
  deferredDevices: Map<string, { run: number; fields: string[] }>;
  /**
   * The DHCP leases (observe.ts leaseKey) of a machine's (by uid) earlier runs, which dnsmasq
   * keeps until they expire, for the run (its runtime ID; -1: seen stopped) they were taken
   * for: listed just before this process started it, or at its first look at a run it did not
   * start (observe.ts earlierLeasesOf). They are not this run's addresses.
   */
  earlierLeases: Map<string, { run: number; keys: ReadonlySet<string> }>;
  /**
   * Snapshots (by uid) whose take this process sent without an answer: a libvirtd that died
   * during it. The InProgress written before the take says the same, but the retry can come
   * before the watch brings that write back to the cache, and from that same copy the status
   * writer does not send the same InProgress again, so nothing else stops the retry's take
   * (virtual-machine-snapshot/reconcile.ts; test/integration/controllers/snapshot/libvirtd.test.ts,
   * 'survives libvirtd dying').
   */
  snapshotTakesCutShort: Set<string>;
  /**
   * The file this process made for each Volume (by uid: created, or finished copying), until
   * the cached status records its path: a pass working from an older cached status must not
   * take the finished copy for one a crash cut short and copy it again, nor a file made within
   * the Volume's creation second for one it did not make (volume/plan.ts ownsVolume).
   */
  filesMade: Map<string, string>;
  /**
   * What the last header read of each recorded qcow2 Volume's file (by uid) found, for the
   * file as libvirt described it then, or that a read is still under way: the header is read
   * again only when the file changed (volume/header-check.ts).
   */
  headerChecks: HeaderChecks;
  /**
   * The CPU model names the host's QEMU knows, by virtualization type (qemu, kvm), with when
   * they were read (virtual-machine/reconcile.ts knownCpuModels); undefined models: the driver
   * cannot tell (libvirt's test driver).
   */
  cpuModels: Map<string, { readAt: number; models: string[] | undefined }>;
  /**
   * What the host's QEMU offers for UEFI (a secure-boot build too) on q35 and an emulated TPM,
   * by virtualization type, with when it was read (virtual-machine/reconcile.ts
   * firmwareOnHost); undefined: the driver cannot tell.
   */
  firmware: Map<string, { readAt: number; offers: HostFirmware | undefined }>;
  /**
   * When this process last refreshed each StoragePool's libvirt pool (by uid), to tell a
   * removed directory (storage-pool/observe.ts refreshPool) without rescanning a busy pool's
   * files on every Volume change.
   */
  poolRefreshes: Map<string, number>;
  /**
   * The resourceVersion of each VirtualNetwork or StoragePool (by `kind/name`) whose summary
   * this agent, not selected by it, last judged from the Nodes the selector matches, and when
   * (shared/unselected.ts): an unchanged object is judged again only after JUDGED_TTL_MS, so
   * the kind's one-minute resync lists no Nodes. Dropped when the object is deleted.
   */
  summariesJudged: JudgedSummaries;
  /**
   * What this agent found when it looked up the Nodes of entries holding a summary back
   * (node-aggregate.ts NodeLookups; agent/kube-writes.ts counted).
   */
  nodesLookedUp: NodeLookups;
}

export function createHostState(): HostState {
  return {
    figures: new Map(),
    poolLocks: new Map(),
    imports: new Map(),
    restores: new Map(),
    restoreStops: new Set(),
    restoredRuns: new Map(),
    shutdowns: new Map(),
    interfacesAttached: new Map(),
    detachRetried: new Map(),
    restarts: new Map(),
    restartsUnrecordable: new Set(),
    recordFailuresLogged: new Map(),
    deferredDevices: new Map(),
    earlierLeases: new Map(),
    snapshotTakesCutShort: new Set(),
    filesMade: new Map(),
    headerChecks: new Map(),
    cpuModels: new Map(),
    firmware: new Map(),
    poolRefreshes: new Map(),
    summariesJudged: new Map(),
    nodesLookedUp: new Map(),
  };
}
