// The offline demo that `up --examples` applies: the project's tiny guest (a Debian cloud
// kernel and a busybox initramfs, built from Debian packages by scripts/build-tiny-guest.sh)
// imported into a pool through Volume http sources served from loopback, and booted under
// QEMU with a NIC on a NAT network. No image download, no placeholder checksum: the digests
// are those of the files served.
import { networkInterfaces } from 'node:os';
import type {
  StoragePoolManifest,
  VirtManifest,
  VirtualMachine,
  VirtualMachineManifest,
  VirtualNetworkManifest,
  VolumeManifest,
} from '../api/generated/types.js';
import { customResources, type VirtKind } from '../api/generated/crds.js';
import { vmVolumeNames } from '../controllers/indexes.js';
import type { KubeObject } from '../runtime/resource.js';
import { TINY_GUEST_CMDLINE } from './local/tiny-guest.js';

export interface DemoInput {
  /** Prefix of every object's name ('demo': VirtualMachine default/demo, network demo-net ...). */
  name: string;
  nodeName: string;
  /** The loopback server's base URL; the kernel is at /vmlinuz, the initrd at /initrd.img. */
  base: string;
  sha256: { kernel: string; initrd: string };
  /** The network's IPv4 prefix, host address form (e.g. 192.168.150.1/24). */
  cidr: string;
  /** The pool's directory on the node. */
  poolPath: string;
}

export const DEMO_NAMESPACE = 'default';

/** The label every demo object carries: what up may delete and make anew is only these. */
export const DEMO_LABEL = { key: 'app.kubernetes.io/part-of', value: 'libvirt-operator-demo' };

export interface DemoNames {
  network: string;
  pool: string;
  kernel: string;
  initrd: string;
  vm: string;
}

export function demoNames(name: string): DemoNames {
  return {
    network: `${name}-net`,
    pool: `${name}-pool`,
    kernel: `${name}-kernel`,
    initrd: `${name}-initrd`,
    vm: name,
  };
}

/** The demo's objects, in the order they are applied. Pure. */
export function demoManifests(d: DemoInput): VirtManifest[] {
  const n = demoNames(d.name);
  const [host] = d.cidr.split('/') as [string];
  const prefix = host.split('.').slice(0, 3).join('.');
  const labels = { [DEMO_LABEL.key]: DEMO_LABEL.value };
  const network: VirtualNetworkManifest = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualNetwork',
    metadata: { name: n.network, labels },
    spec: {
      mode: 'nat',
      ipv4: {
        cidr: d.cidr,
        dhcp: { rangeStart: `${prefix}.100`, rangeEnd: `${prefix}.199` },
      },
    },
  };
  const pool: StoragePoolManifest = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'StoragePool',
    metadata: { name: n.pool, labels },
    spec: { type: 'dir', path: d.poolPath },
  };
  const volume = (name: string, file: string, sha256: string): VolumeManifest => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name, namespace: DEMO_NAMESPACE, labels },
    spec: {
      nodeName: d.nodeName,
      pool: n.pool,
      format: 'raw',
      source: { http: { url: `${d.base}/${file}`, sha256 } },
    },
  });
  const vm: VirtualMachineManifest = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: {
      name: n.vm,
      namespace: DEMO_NAMESPACE,
      labels,
      // The serial console goes to a file in the agent's state dir: the guest's boot is visible.
      annotations: { 'virt.dev/console-log': 'true' },
    },
    spec: {
      nodeName: d.nodeName,
      // Software emulation: works on every host, including ones without usable KVM.
      domainType: 'qemu',
      vcpus: 1,
      memory: '256Mi',
      // Headroom for the README's day-2 patch (memory 384Mi, vcpus 2), applied live: the schema
      // refuses more than maxMemory and maxVcpus; raising those waits for a restart.
      maxVcpus: 2,
      maxMemory: '512Mi',
      terminationGracePeriodSeconds: 30,
      boot: {
        kernel: { volume: n.kernel },
        initrd: { volume: n.initrd },
        cmdline: TINY_GUEST_CMDLINE,
      },
      interfaces: [{ name: 'eth0', network: n.network }],
    },
  };
  return [
    network,
    pool,
    volume(n.kernel, 'vmlinuz', d.sha256.kernel),
    volume(n.initrd, 'initrd.img', d.sha256.initrd),
    vm,
  ];
}

/**
 * The demo objects to apply: those not there yet (`existing` holds `Kind/name`). An object an
 * earlier run made is the user's from then on: applied again under up's forced field manager,
 * the machine would take back its memory and vCPUs (the README's day-2 patch undone by a mere
 * restart of `npm start`, the live guest's balloon shrunk) and a Volume its immutable source
 * (a new loopback port each run). Pure.
 */
export function demoToApply(
  manifests: readonly VirtManifest[],
  existing: ReadonlySet<string>,
): VirtManifest[] {
  return manifests.filter((m) => !existing.has(`${m.kind}/${String(m.metadata.name)}`));
}

/** What up finds of an object an earlier run applied. */
export interface EarlierDemoObject {
  kind: VirtManifest['kind'];
  name: string;
  /** It carries DEMO_LABEL: an earlier run applied it, not a user under the same name. */
  demo: boolean;
  /** Its deletion has begun (metadata.deletionTimestamp): it is on its way out. */
  deleting: boolean;
  /** A Volume's: its import finished (condition Imported=True). */
  imported?: boolean;
  /** A Volume's: the digest of its http source. */
  sha256?: string;
  /**
   * A Volume's users that are not the demo's (demoDeletionHold), as its status lists them, and
   * still holding it as read now (holdsDemoVolume: a status no agent has written since may
   * list one gone, or changed not to use it).
   */
  usedByOthers?: DemoObjectRef[];
  /** metadata.uid: a replaced one's copies are not the new object's. */
  uid?: string;
}

/** An earlier run's object that this run deletes, waits for, and applies anew; `why` says why. */
export interface DemoReplacement {
  kind: VirtManifest['kind'];
  name: string;
  why: string;
}

/**
 * The earlier run's demo objects to delete and make anew, in the order to delete them (the
 * machine first: it holds the Volumes and the network; Volumes before their pool). A Volume
 * goes when it is not imported (its server, an earlier run's port, is gone) or holds another
 * guest build. An object being deleted (a user's delete waiting on the machine that uses it,
 * or one the agent had not finished when up was stopped) is gone soon whatever up does: left
 * alone it was reported as kept, was not applied again, and the demo never came up. What
 * depends on one that goes goes with it: the machine with its Volumes or network (whose
 * deletion waits for it), the Volumes with their pool (whose deletion waits for them). Only
 * the demo's own objects (`demo`) go: up stops before this at any other (notTheDemos). Pure.
 */
export function demoToReplace(
  manifests: readonly VirtManifest[],
  found: readonly EarlierDemoObject[],
): DemoReplacement[] {
  const key = (kind: string, name: string) => `${kind}/${name}`;
  const wanted = new Map(manifests.map((m) => [key(m.kind, String(m.metadata.name)), m]));
  const ours = found.filter((f) => f.demo && wanted.has(key(f.kind, f.name)));
  const why = new Map<string, string>();
  for (const f of ours) {
    const m = wanted.get(key(f.kind, f.name))!;
    if (f.deleting) why.set(key(f.kind, f.name), 'being deleted');
    else if (m.kind === 'Volume' && !f.imported) why.set(key(f.kind, f.name), 'not imported');
    else if (m.kind === 'Volume' && f.sha256 !== m.spec.source?.http?.sha256)
      why.set(key(f.kind, f.name), 'another guest build');
  }
  const going = (kind: string) =>
    manifests.some((m) => m.kind === kind && why.has(key(kind, String(m.metadata.name))));
  // Volumes before the machine: a machine goes with the Volumes its pool takes along.
  for (const f of ours) {
    const k = key(f.kind, f.name);
    if (f.kind === 'Volume' && !why.has(k) && going('StoragePool'))
      why.set(k, 'its pool is replaced');
  }
  for (const f of ours) {
    const k = key(f.kind, f.name);
    if (f.kind === 'VirtualMachine' && !why.has(k) && (going('Volume') || going('VirtualNetwork')))
      why.set(k, 'it uses what is replaced');
  }
  const order = [...manifests].reverse().map((m) => key(m.kind, String(m.metadata.name)));
  return ours
    .filter((f) => why.has(key(f.kind, f.name)))
    .sort((a, b) => order.indexOf(key(a.kind, a.name)) - order.indexOf(key(b.kind, b.name)))
    .map((f) => ({ kind: f.kind, name: f.name, why: why.get(key(f.kind, f.name))! }));
}

/** "Volume default/demo-kernel", "StoragePool demo-pool": as up's lines name a demo object. */
export function demoObjectName(kind: VirtKind, name: string): string {
  return customResources[kind].scope === 'Namespaced'
    ? `${kind} ${DEMO_NAMESPACE}/${name}`
    : `${kind} ${name}`;
}

/**
 * What up says, and stops at, when an object under a demo name is not the demo's (no
 * DEMO_LABEL): a user's own, in a cluster up was given with --kubeconfig. up deletes and makes
 * anew demo objects it finds broken or being deleted, with what depends on them; a user's
 * network being deleted took their machine of the demo's name with it, a user's pool their
 * Volumes. Nor would the demo work on objects not made for it. Undefined when all are the
 * demo's. Pure.
 */
export function notTheDemos(found: readonly EarlierDemoObject[]): string | undefined {
  const foreign = found.filter((f) => !f.demo);
  if (foreign.length === 0) return undefined;
  const named = foreign.map((f) => demoObjectName(f.kind, f.name));
  return (
    `examples: ${named.join(', ')} ${foreign.length === 1 ? 'is' : 'are'} not the demo's ` +
    `(no label ${DEMO_LABEL.key}=${DEMO_LABEL.value}): up neither uses nor replaces ` +
    'objects it did not make; choose another --examples-name'
  );
}

/**
 * What up says, and stops at, when a demo object it is to replace is used by a user's own
 * objects (a Volume their machine or snapshot uses): its deletion would wait for them for
 * ever. Checked before anything is deleted, as far as the status the agent wrote shows; up's
 * wait for each deletion checks again (the agent may list a user added while no agent ran
 * only once up's own has looked). Undefined when none is. Pure.
 */
export function demoHeldByOthers(
  replace: readonly DemoReplacement[],
  found: readonly EarlierDemoObject[],
): string | undefined {
  for (const r of replace) {
    const f = found.find((o) => o.kind === r.kind && o.name === r.name);
    if (f?.usedByOthers?.length) return usedByOthersMessage(r.kind, r.name, f.usedByOthers);
  }
  return undefined;
}

/** The words of demoHeldByOthers, also for a user found during up's wait for a deletion. */
export function usedByOthersMessage(
  kind: VirtKind,
  name: string,
  others: readonly DemoObjectRef[],
): string {
  const named = others.map((o) => demoObjectName(o.kind, o.name)).join(', ');
  return (
    `examples: ${demoObjectName(kind, name)} of an earlier run is to be made anew, but ` +
    `${named} ${others.length === 1 ? 'uses' : 'use'} it, which up did not make and does not ` +
    'delete: delete or change that, or choose another --examples-name'
  );
}

/**
 * The demo machine's address once `vm` shows it booted: Running, Ready=True, with an address;
 * not a copy of one up replaced (`replaced`: their uids; the informer may still hold the last
 * copy of a machine just deleted, which was Running) nor one being deleted. Pure.
 */
export function demoBootedAddress(
  vm: VirtualMachine,
  name: string,
  replaced: ReadonlySet<string>,
): string | undefined {
  const { metadata, status } = vm;
  if (metadata.name !== name || metadata.namespace !== DEMO_NAMESPACE) return undefined;
  if (metadata.deletionTimestamp || replaced.has(String(metadata.uid))) return undefined;
  const ip = status?.interfaces?.flatMap((i) => i.ipAddresses ?? [])[0];
  const ready = status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  return ready && status?.phase === 'Running' ? ip : undefined;
}

/**
 * How up's boot line says when the demo machine came up: one it found Running already was
 * booted by an earlier run; one this run applied came up so long after the apply; one an
 * earlier run made that this run only watched start (runStrategy patched meanwhile) was not
 * applied now, so the time counts from this run's start. Pure.
 */
export function bootedWhen(found: 'running' | 'applied' | 'kept', seconds: string): string {
  if (found === 'running') return 'booted by an earlier run';
  return found === 'applied' ? `${seconds} s after apply` : `${seconds} s after this run started`;
}

/**
 * A 192.168.X.1/24 for the demo network that no interface of this host uses (a NAT network on
 * a used subnet does not start). `taken` lists the host's IPv4 addresses; `keep` is the
 * network's current cidr from an earlier run, kept so re-applying changes nothing. Pure.
 */
export function demoCidr(taken: readonly string[], keep?: string): string {
  if (keep) return keep;
  for (let x = 150; x <= 199; x++) {
    if (!taken.some((a) => a.startsWith(`192.168.${x}.`))) return `192.168.${x}.1/24`;
  }
  throw new Error('no free 192.168.150-199.0/24 subnet on this host for the demo network');
}

/** This host's IPv4 addresses (for demoCidr). */
export function hostIPv4Addresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .flatMap((a) => (a && a.family === 'IPv4' ? [a.address] : []));
}

/** What an earlier demo object's deletion waits for, as its status tells (demoDeletionHold). */
export interface DemoDeletionHold {
  /**
   * The message of a DeletionBlocked=True condition, top level or a node entry's; a network's
   * node entry's Ready=False, reason InUse (its removal waits for running guests).
   */
  message?: string;
  /**
   * A Volume's users (status.usedBy) that are not the demo's own objects: a user's machine or
   * snapshot using the demo's disk, which up will not delete and which never lets go by itself.
   */
  foreign: DemoObjectRef[];
}

/** An object in the demo's namespace (or cluster-scoped), by kind and name. */
export interface DemoObjectRef {
  kind: VirtKind;
  name: string;
}

/**
 * Why the deletion of an earlier demo object (demoToReplace) has not ended yet, from the object
 * as read: up says the message once, and gives up at once when only a user can end it (a
 * user's own object using a demo Volume), instead of waiting out its timeout without a word.
 * Pure.
 */
export function demoDeletionHold(
  obj: { status?: object },
  manifests: readonly VirtManifest[],
): DemoDeletionHold {
  type Condition = { type?: string; status?: string; reason?: string; message?: string };
  // Any kind's status: conditions, a cluster-scoped kind's node entries, a Volume's usedBy.
  const status = (obj.status ?? {}) as Record<string, unknown>;
  const nodes = (status.nodes as Array<{ conditions?: Condition[] }> | undefined) ?? [];
  const conditions = [
    ...((status.conditions as Condition[] | undefined) ?? []),
    ...nodes.flatMap((n) => n.conditions ?? []),
  ];
  // A VirtualNetwork has no DeletionBlocked: its node entry says its removal waits for
  // running guests as Ready=False, reason InUse (virtual-network/plan.ts, inUse).
  const blocked =
    conditions.find((c) => c.type === 'DeletionBlocked' && c.status === 'True') ??
    conditions.find((c) => c.type === 'Ready' && c.status === 'False' && c.reason === 'InUse');
  const demo = new Set(manifests.map((m) => `${m.kind}/${String(m.metadata.name)}`));
  const usedBy = (status.usedBy as DemoObjectRef[] | undefined) ?? [];
  return {
    ...(blocked?.message ? { message: blocked.message } : {}),
    foreign: usedBy
      .filter((u) => !demo.has(`${u.kind}/${u.name}`))
      .map((u) => ({ kind: u.kind, name: u.name })),
  };
}

/** A user's object as up reads it (holdsDemoVolume): what it names of the demo's Volumes. */
export interface DemoVolumeUser extends KubeObject {
  spec?: {
    disks?: Array<{ volume: string }>;
    boot?: { kernel?: { volume: string }; initrd?: { volume: string } };
    source?: { clone?: { volume: string }; backingVolume?: { volume: string } };
  };
  status?: { path?: string; disks?: Array<{ volume?: string }> };
}

/**
 * Whether a user's object that a demo Volume's status.usedBy lists (`kind`; `user` as read now,
 * undefined when gone) still holds that Volume (`volume`) as volume/users.ts counts it: there,
 * not being deleted, and naming it (a machine's disks, kernel or initrd; a Volume layered on
 * it, or copied from it until the copy is made; a snapshot's disks). The status says what the
 * agent saw when it last wrote it: a machine changed while no agent ran is still listed, and up
 * stopped, telling the user to change what they had already changed. Pure.
 */
export function holdsDemoVolume(
  kind: VirtKind,
  user: DemoVolumeUser | undefined,
  volume: string,
): boolean {
  if (!user || user.metadata.deletionTimestamp) return false;
  switch (kind) {
    case 'VirtualMachine':
      return vmVolumeNames(user).includes(volume);
    case 'Volume': {
      const source = user.spec?.source;
      if (source?.backingVolume?.volume === volume) return true;
      return source?.clone?.volume === volume && !user.status?.path;
    }
    case 'VirtualMachineSnapshot':
      // Its disks' internal snapshots live inside the Volumes' files (indexes.ts).
      return (user.status?.disks ?? []).some((d) => d.volume === volume);
    default:
      // No other kind is listed today: taken at the status's word.
      return true;
  }
}
