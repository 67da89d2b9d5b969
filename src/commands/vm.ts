// libvirt-operator vm pause|unpause|restart NAME [-n NS]: power actions on a VirtualMachine.
// They are annotations, not spec fields, so a GitOps tool that owns the spec never fights
// them; the agent on the machine's node acts on them (see controllers/virtual-machine/plan.ts).
// One JSON merge patch of metadata.annotations under this command's own field manager.
import { homedir } from 'node:os';
import { existsSync } from 'node:fs';
import { findCondition } from '../api/conditions.js';
import type { VirtualMachine } from '../api/generated/types.js';
import { saysHostLacks } from '../controllers/virtual-machine/desired.js';
import { PAUSED_ANNOTATION, RESTART_ANNOTATION } from '../controllers/virtual-machine/plan.js';
import { saysReverting } from '../controllers/virtual-machine/status.js';
import {
  CONTENT_TYPE,
  createKubeClient,
  isConflict,
  isNotFound,
  type KubeClient,
} from '../runtime/kube-client.js';
import { kubeconfigNamespace } from '../runtime/kube-config.js';
import { notFoundError } from './crd-missing.js';
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

const VM_FIELD_MANAGER = 'libvirt-operator-vm';

const HELP = `usage: libvirt-operator vm pause|unpause|restart NAME [-n NAMESPACE] [--kubeconfig PATH]

Power actions on a VirtualMachine, written as annotations the machine's agent acts on:
  pause     sets virt.dev/paused: "true": the guest is suspended (status phase Paused)
  unpause   removes virt.dev/paused: the guest resumes
  restart   sets virt.dev/restart-requested-at to the current time: one graceful restart
            (ACPI shutdown, destroyed after terminationGracePeriodSeconds, started again);
            refused (exit 1) for a machine whose status says it is not running; said
            to wait where its status says the node cannot start it as its spec asks, or a
            restore is reverting it
Each is refused (exit 1) for a machine being deleted. Starting and stopping is
spec.runStrategy (Always, Halted), e.g. with kubectl patch.

  -n, --namespace NS   the machine's namespace (default: the kubeconfig context's, else default)
  --kubeconfig PATH    (env KUBECONFIG; default ~/.kube/config, else in-cluster)
  --request-timeout DURATION
                       ${REQUEST_TIMEOUT_HELP}`;

const ACTIONS = ['pause', 'unpause', 'restart'] as const;
type Action = (typeof ACTIONS)[number];

/** The annotation changes of an action; null removes an annotation (merge patch). */
function annotationPatch(action: Action, now: Date): Record<string, string | null> {
  switch (action) {
    case 'pause':
      return { [PAUSED_ANNOTATION]: 'true' };
    case 'unpause':
      return { [PAUSED_ANNOTATION]: null };
    case 'restart':
      return { [RESTART_ANNOTATION]: now.toISOString() };
  }
}

export async function main(argv: string[]): Promise<number> {
  const flags = {
    namespace: { type: 'string', short: 'n' },
    kubeconfig: { type: 'string' },
    'request-timeout': { type: 'string' },
  } as const;
  return command('vm', argv, flags, HELP, run, { positionals: true });
}

async function run(
  values: { namespace?: string; kubeconfig?: string; 'request-timeout'?: string },
  positionals: string[],
): Promise<number> {
  const [action, name, ...extra] = positionals;
  const instead = action === undefined ? undefined : powerStateHint(action, name, values.namespace);
  if (instead) throw new UsageError(instead);
  if (!ACTIONS.includes(action as Action)) {
    throw new UsageError(
      `vm: ${action === undefined ? 'an action is required' : `unknown action '${action}'`} (pause, unpause, restart); see 'vm --help'`,
    );
  }
  if (name === undefined || extra.length > 0) {
    throw new UsageError(`vm ${action}: exactly one machine NAME is required`);
  }
  const bad =
    pathSegmentProblem('NAME', name) ??
    (values.namespace === undefined
      ? undefined
      : pathSegmentProblem('namespace', values.namespace));
  if (bad) throw new UsageError(`vm ${action}: ${bad}`);
  const timeoutMs = requestTimeoutMs('vm', values['request-timeout']);
  // The same reading as run and console: a kubeconfig that cannot be used is named.
  const config = kubeconfigPath(values.kubeconfig, process.env, homedir(), existsSync);
  const kc = await loadKubeConfig(config);
  const namespace =
    values.namespace ?? (config ? kubeconfigNamespace(config) : undefined) ?? 'default';
  const client = createKubeClient(kc, {
    userAgent: 'libvirt-operator-vm',
    defaultTimeoutMs: timeoutMs,
  });
  const path = `/apis/virt.dev/v1alpha1/namespaces/${encodeURIComponent(namespace)}/virtualmachines/${encodeURIComponent(name)}`;
  const what = `virtualmachine ${namespace}/${name}`;
  const patch = annotationPatch(action as Action, new Date());
  const refusal =
    action === 'restart'
      ? (vm: VirtualMachine) => deletionRefusal(vm, what) ?? restartRefusal(vm, what)
      : (vm: VirtualMachine) => deletionRefusal(vm, what);
  let written: VirtualMachine;
  try {
    written = await patchUnlessRefused(client, path, patch, refusal);
  } catch (err) {
    if (isNotFound(err)) throw await notFoundError(client, 'VirtualMachine', what, err, namespace);
    throw unreachableServer(err, client.server, config) ?? err;
  }
  const value = patch[RESTART_ANNOTATION];
  const waits = action === 'restart' ? restartWait(written) : undefined;
  console.log(
    action === 'restart'
      ? `${what}: restart requested (${RESTART_ANNOTATION}=${value})${waits ? `, but it waits: ${waits}` : ''}`
      : `${what}: ${action === 'pause' ? 'pause' : 'unpause'} requested`,
  );
  return 0;
}

/**
 * start and stop are what virsh and virtctl call them, but here the power state is the spec
 * (runStrategy), which GitOps owns, not an action: say so and give the command. Pure.
 */
export function powerStateHint(
  action: string,
  name: string | undefined,
  namespace: string | undefined,
): string | undefined {
  const strategy = { start: 'Always', stop: 'Halted' }[action];
  if (strategy === undefined) return undefined;
  const ns = namespace === undefined ? '' : ` -n ${namespace}`;
  return `vm ${action}: a machine's power state is its spec.runStrategy, not an action; to ${action} it: kubectl patch vm ${name ?? 'NAME'}${ns} --type=merge -p '{"spec":{"runStrategy":"${strategy}"}}' (vm pause|unpause|restart are the actions)`;
}

function patchAnnotations(
  client: KubeClient,
  path: string,
  annotations: Record<string, string | null>,
  resourceVersion?: string,
): Promise<unknown> {
  return client.request({
    method: 'PATCH',
    path,
    query: { fieldManager: VM_FIELD_MANAGER },
    contentType: CONTENT_TYPE.mergePatch,
    body: { metadata: { annotations, ...(resourceVersion ? { resourceVersion } : {}) } },
  });
}

/**
 * A request the agent would record and not act on (a restart of a machine that is not
 * running, anything for a machine being deleted) while the command said "requested": the
 * machine is read first, and the patch carries its resourceVersion, so a machine that started,
 * stopped or began its deletion meanwhile is read again.
 */
async function patchUnlessRefused(
  client: KubeClient,
  path: string,
  patch: Record<string, string | null>,
  refusal: (vm: VirtualMachine) => string | undefined,
): Promise<VirtualMachine> {
  for (let attempt = 1; ; attempt++) {
    const vm = await client.request<VirtualMachine>({ method: 'GET', path });
    const why = refusal(vm);
    if (why) throw new Error(why);
    try {
      await patchAnnotations(client, path, patch, vm.metadata.resourceVersion);
      // The machine as the patch found it (the resourceVersion matched): its status is what
      // the agent had last said when the request was written.
      return vm;
    } catch (err) {
      if (!isConflict(err) || attempt === 3) throw err;
    }
  }
}

/**
 * Why no power action applies to `vm`: it is being deleted, so its agent is removing the
 * domain and acts on nothing else; undefined otherwise. Pure.
 */
export function deletionRefusal(vm: VirtualMachine, what: string): string | undefined {
  const since = vm.metadata.deletionTimestamp;
  if (!since) return undefined;
  const waiting = vm.metadata.finalizers?.length
    ? `; it waits for its finalizers (${vm.metadata.finalizers.join(', ')})`
    : '';
  return `${what} is being deleted (since ${since}): its agent removes the domain and acts on nothing else, and no request was written${waiting}`;
}

/**
 * Why a restart written now waits, as `vm`'s status already says (undefined when it says
 * nothing of it): a restore is reverting the domain (its agent stands aside), or the node
 * lacks what the spec asks (a CPU model, OVMF, its secure-boot build, swtpm), so stopping the
 * guest would leave it down: the agent keeps it running and restarts it once that is fixed.
 * A problem reported for an older generation is not taken: the spec changed since. Pure.
 */
export function restartWait(vm: VirtualMachine): string | undefined {
  const conditions = vm.status?.conditions;
  const synced = findCondition(conditions, 'Synced');
  if (synced && saysReverting(synced)) {
    return `a restore is reverting the domain; the restart waits until it has finished (Synced=False ${synced.reason}: ${synced.message})`;
  }
  const current = (c: { observedGeneration?: number }) =>
    c.observedGeneration === undefined || c.observedGeneration === vm.metadata.generation;
  const lack = ['Ready', 'Synced']
    .map((type) => findCondition(conditions, type))
    .find(
      (c) =>
        c?.status === 'False' &&
        c.reason === 'Unsupported' &&
        current(c) &&
        saysHostLacks(c.message),
    );
  if (!lack) return undefined;
  return `the node cannot start the machine as its spec asks, so the guest is not stopped; it is restarted once that is fixed (${lack.type}=False ${lack.reason}: ${lack.message})`;
}

/**
 * Why a restart of `vm` would do nothing, judged from its status: its domain is not running
 * (status.state shut off, or no domain yet), and what happens instead. Undefined when it runs,
 * or when no agent has reported on it yet (then the request is written, as before). Pure.
 */
export function restartRefusal(vm: VirtualMachine, what: string): string | undefined {
  const status = vm.status;
  if (!status?.phase) return undefined;
  const state = status.state?.state;
  if (state !== undefined && state !== 'shutoff') return undefined;
  return `${what} is not running (phase ${status.phase}): there is nothing to restart, and no request was written; ${whatStartsIt(vm)}`;
}

/**
 * For a machine that is not running: what will start it, its agent (runStrategy Always, with
 * its Ready condition saying why it has not yet) or the user (the command to do it). Pure.
 */
export function whatStartsIt(vm: VirtualMachine): string {
  const strategy = vm.spec.runStrategy ?? 'Always';
  const ready = findCondition(vm.status?.conditions, 'Ready');
  const startPatch = `kubectl patch vm ${String(vm.metadata.name)} -n ${String(vm.metadata.namespace)} --type=merge -p '{"spec":{"runStrategy":"Always"}}'`;
  return strategy === 'Always'
    ? `runStrategy Always starts it by itself${ready ? ` (Ready=${ready.status} ${ready.reason}: ${ready.message})` : ''}`
    : `runStrategy ${strategy} keeps it stopped; to start it: ${startPatch}`;
}
