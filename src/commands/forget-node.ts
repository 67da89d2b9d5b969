// libvirt-operator forget-node NODE: for a host retired for good. Each agent takes its own
// finalizers off once its host is clean, and the admission policy lets it touch no other
// node's (docs/deploy.md), so the objects a retired host held - its finalizer on every
// VirtualNetwork, StoragePool and VirtualMachineSnapshot, the host finalizers of the machines
// and Volumes bound to it - would wait for it for ever when deleted. Run with the cluster
// admin's credentials once the Node object is gone: it removes exactly those, and the
// retired node's status.nodes entries, with JSON patches that test what they remove. A
// VirtualMachineRestore holds no finalizer: its claim is status.nodeName, and while that names
// the retired node no other agent may write or delete it (a re-created machine's agent would be
// refused for ever), so that claim goes too.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import type { VirtKind } from '../api/generated/crds.js';
import { resourceOf } from '../agent/kube-writes.js';
import { DEFAULT_LEASE_NAMESPACE } from '../agent/config.js';
import {
  HOST_FINALIZER,
  nodeFinalizer,
  VOLUME_PROTECTION_FINALIZER,
} from '../controllers/context.js';
import {
  CONTENT_TYPE,
  createKubeClient,
  isNotFound,
  type KubeClient,
} from '../runtime/kube-client.js';
import { resourcePath } from '../runtime/resource.js';
import {
  command,
  REQUEST_TIMEOUT_HELP,
  requestTimeoutMs,
  kubeconfigPath,
  pathSegmentProblem,
  unreachableServer,
  UsageError,
} from './flags.js';
import { loadKubeConfig } from './run.js';

const HELP = `usage: libvirt-operator forget-node NODE [--dry-run] [--kubeconfig PATH] [--lease-namespace NS]

For a host retired for good, after its Node object was deleted: removes what only its agent
would have removed, so deleting the objects it held no longer waits for it:
  - its finalizer (node.virt.dev/NODE) on VirtualNetworks, StoragePools and
    VirtualMachineSnapshots, and its entry in the networks' and pools' status.nodes;
  - the agent's finalizers on the VirtualMachines and Volumes whose spec.nodeName is NODE
    (their files and domains went with the host; the objects stay until you delete them);
  - status.nodeName NODE on VirtualMachineRestores (the node's claim), so that the agent of
    their machine, deleted or recreated on another node, may write or delete them.
Refused while the Node exists or its agent still renews its Lease. Needs a kubeconfig that may
patch those objects (the cluster admin's; an agent's may not).

  --dry-run              print what would be removed, change nothing
  --kubeconfig PATH      (env KUBECONFIG; default ~/.kube/config, else in-cluster)
  --lease-namespace NS   where the agents' Leases are (default ${DEFAULT_LEASE_NAMESPACE})
  --request-timeout DURATION
                         ${REQUEST_TIMEOUT_HELP}`;

/** The kinds an agent puts its finalizers on, and which of them are its node's. */
const NODE_FINALIZED: readonly VirtKind[] = [
  'VirtualNetwork',
  'StoragePool',
  'VirtualMachineSnapshot',
];
const BOUND_TO_NODE: readonly VirtKind[] = ['VirtualMachine', 'Volume'];
const AGENT_FINALIZERS = [HOST_FINALIZER, VOLUME_PROTECTION_FINALIZER];
/** The kinds a node claims with status.nodeName (the admission policy's restoreClaim). */
const CLAIMED_IN_STATUS: readonly VirtKind[] = ['VirtualMachineRestore'];
/** Every kind forget-node looks at, in the order it does. */
export const FORGET_KINDS: readonly VirtKind[] = [
  ...NODE_FINALIZED,
  ...BOUND_TO_NODE,
  ...CLAIMED_IN_STATUS,
];

interface Listed {
  metadata: { name: string; namespace?: string; finalizers?: string[] };
  spec?: { nodeName?: string };
  status?: { nodes?: Array<{ nodeName?: string }>; nodeName?: string };
}

/**
 * One object's patches: finalizers to remove (by index), its status.nodes entry (by index),
 * its status.nodeName claim.
 */
export interface Forgetting {
  kind: VirtKind;
  namespace?: string;
  name: string;
  finalizers: Array<{ index: number; value: string }>;
  statusEntry?: number;
  statusClaim?: true;
}

/** What forgetting `node` changes in `objects` of `kind`. Pure. */
export function forgetPlan(node: string, kind: VirtKind, objects: readonly Listed[]): Forgetting[] {
  const own = NODE_FINALIZED.includes(kind)
    ? [nodeFinalizer(node)]
    : BOUND_TO_NODE.includes(kind)
      ? AGENT_FINALIZERS
      : [];
  const plan: Forgetting[] = [];
  for (const obj of objects) {
    const bound = !BOUND_TO_NODE.includes(kind) || obj.spec?.nodeName === node;
    const finalizers = bound
      ? (obj.metadata.finalizers ?? [])
          .map((value, index) => ({ index, value }))
          .filter((f) => own.includes(f.value))
      : [];
    const entry = obj.status?.nodes?.findIndex((n) => n.nodeName === node) ?? -1;
    const claim = CLAIMED_IN_STATUS.includes(kind) && obj.status?.nodeName === node;
    if (finalizers.length === 0 && entry < 0 && !claim) continue;
    const change: Forgetting = { kind, name: obj.metadata.name, finalizers };
    if (obj.metadata.namespace) change.namespace = obj.metadata.namespace;
    if (entry >= 0) change.statusEntry = entry;
    if (claim) change.statusClaim = true;
    plan.push(change);
  }
  return plan;
}

/**
 * The JSON patch removing `change`'s finalizers, highest index first so the others stay where
 * the tests say; each removal is tested, so an object changed meanwhile is refused, not harmed.
 */
export function finalizerPatch(change: Forgetting): object[] {
  return [...change.finalizers]
    .sort((a, b) => b.index - a.index)
    .flatMap((f) => [
      { op: 'test', path: `/metadata/finalizers/${f.index}`, value: f.value },
      { op: 'remove', path: `/metadata/finalizers/${f.index}` },
    ]);
}

/** One line saying what `change` removes (or would). Pure. */
export function describeForgetting(node: string, change: Forgetting): string {
  const what = [
    ...change.finalizers.map((f) => `finalizer ${f.value}`),
    ...(change.statusEntry === undefined ? [] : [`status.nodes entry ${node}`]),
    ...(change.statusClaim ? [`status.nodeName ${node}`] : []),
  ];
  const name = change.namespace ? `${change.namespace}/${change.name}` : change.name;
  return `${change.kind} ${name}: ${what.join(', ')}`;
}

/**
 * Whether a Lease is held: it has a holder and was renewed within its duration, by the
 * caller's clock; how long ago, if so. A stopped agent releases its Lease (no holder, renewed
 * at the release), which is not held. Pure.
 */
export function leaseHeld(
  spec:
    | { holderIdentity?: string | null; renewTime?: string; leaseDurationSeconds?: number }
    | undefined,
  now: Date,
): number | undefined {
  if (!spec?.holderIdentity) return undefined;
  const renewed = Date.parse(spec?.renewTime ?? '');
  if (!Number.isFinite(renewed)) return undefined;
  const age = now.getTime() - renewed;
  return age < (spec?.leaseDurationSeconds ?? 0) * 1000 ? age : undefined;
}

export async function main(argv: string[]): Promise<number> {
  const flags = {
    'dry-run': { type: 'boolean' },
    kubeconfig: { type: 'string' },
    'lease-namespace': { type: 'string' },
    'request-timeout': { type: 'string' },
  } as const;
  return command('forget-node', argv, flags, HELP, run, { positionals: true });
}

async function run(
  values: {
    'dry-run'?: boolean;
    kubeconfig?: string;
    'lease-namespace'?: string;
    'request-timeout'?: string;
  },
  positionals: string[],
): Promise<number> {
  const [node, ...extra] = positionals;
  if (node === undefined || extra.length > 0)
    throw new UsageError(`forget-node: exactly one NODE is required; see 'forget-node --help'`);
  // '' or '..' made the Node's GET a list of all nodes, or /api/v1: "Node .. still exists".
  const bad = pathSegmentProblem('NODE', node);
  if (bad) throw new UsageError(`forget-node: ${bad}; see 'forget-node --help'`);
  const timeoutMs = requestTimeoutMs('forget-node', values['request-timeout']);
  const path = kubeconfigPath(values.kubeconfig, process.env, homedir(), existsSync);
  const client = createKubeClient(await loadKubeConfig(path), {
    userAgent: 'libvirt-operator-forget-node',
    defaultTimeoutMs: timeoutMs,
  });
  try {
    await refuseIfAlive(client, node, values['lease-namespace'] ?? DEFAULT_LEASE_NAMESPACE);
  } catch (err) {
    // Its first requests: past them, the server was there.
    throw unreachableServer(err, client.server, path) ?? err;
  }

  const dryRun = values['dry-run'] === true;
  let count = 0;
  for (const kind of FORGET_KINDS) {
    const list = await client.request<{ items: Listed[] }>({
      method: 'GET',
      path: resourcePath(resourceOf(kind)),
    });
    for (const change of forgetPlan(node, kind, list.items)) {
      if (!dryRun) await forget(client, node, change);
      console.log(`${dryRun ? 'would remove' : 'removed'}: ${describeForgetting(node, change)}`);
      count++;
    }
  }
  console.log(
    count === 0
      ? `nothing of node ${node} left on any object`
      : `${count} object${count === 1 ? '' : 's'} ${dryRun ? 'would no longer wait' : 'no longer wait'} for node ${node}`,
  );
  return 0;
}

async function refuseIfAlive(client: KubeClient, node: string, leaseNamespace: string) {
  const exists = await client
    .request({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(node)}` })
    .then(
      () => true,
      (err: unknown) => (isNotFound(err) ? false : Promise.reject(err)),
    );
  if (exists)
    throw new Error(
      `Node ${node} still exists: delete it (kubectl delete node ${node}) once the host is retired, then run this again`,
    );
  const lease = await client
    .request<{
      spec?: { holderIdentity?: string | null; renewTime?: string; leaseDurationSeconds?: number };
    }>({
      method: 'GET',
      path: `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(leaseNamespace)}/leases/libvirt-operator-${encodeURIComponent(node)}`,
    })
    .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
  const age = leaseHeld(lease?.spec, new Date());
  if (age !== undefined)
    throw new Error(
      `the agent of node ${node} renewed its Lease ${Math.round(age / 1000)} s ago: the host still runs it; stop it first`,
    );
}

async function forget(client: KubeClient, node: string, change: Forgetting): Promise<void> {
  const resource = resourceOf(change.kind);
  const where = { namespace: change.namespace, name: change.name };
  // The status entry first: once the last finalizer goes, an object being deleted is gone.
  if (change.statusEntry !== undefined) {
    await client.request({
      method: 'PATCH',
      path: resourcePath(resource, { ...where, subresource: 'status' }),
      contentType: CONTENT_TYPE.jsonPatch,
      body: [
        { op: 'test', path: `/status/nodes/${change.statusEntry}/nodeName`, value: node },
        { op: 'remove', path: `/status/nodes/${change.statusEntry}` },
      ],
    });
  }
  // Tested, so a restore another agent claimed meanwhile keeps its claim (the patch fails).
  if (change.statusClaim) {
    await client.request({
      method: 'PATCH',
      path: resourcePath(resource, { ...where, subresource: 'status' }),
      contentType: CONTENT_TYPE.jsonPatch,
      body: [
        { op: 'test', path: '/status/nodeName', value: node },
        { op: 'remove', path: '/status/nodeName' },
      ],
    });
  }
  if (change.finalizers.length > 0) {
    await client.request({
      method: 'PATCH',
      path: resourcePath(resource, where),
      contentType: CONTENT_TYPE.jsonPatch,
      body: finalizerPatch(change),
    });
  }
}
