// libvirt-operator vm pause|unpause|restart NAME [-n NS]: power actions on a VirtualMachine.
// They are annotations, not spec fields, so a GitOps tool that owns the spec never fights
// them; the agent on the machine's node acts on them (see controllers/virtual-machine/plan.ts).
// One JSON merge patch of metadata.annotations under this command's own field manager.
import { homedir } from 'node:os';
import { existsSync } from 'node:fs';
import { PAUSED_ANNOTATION, RESTART_ANNOTATION } from '../controllers/virtual-machine/plan.js';
import { CONTENT_TYPE, createKubeClient, isNotFound } from '../runtime/kube-client.js';
import { kubeconfigNamespace } from '../runtime/kube-config.js';
import { notFoundError } from './crd-missing.js';
import { command, kubeconfigPath, UsageError } from './flags.js';
import { loadKubeConfig } from './run.js';

const VM_FIELD_MANAGER = 'libvirt-operator-vm';

const HELP = `usage: libvirt-operator vm pause|unpause|restart NAME [-n NAMESPACE] [--kubeconfig PATH]

Power actions on a VirtualMachine, written as annotations the machine's agent acts on:
  pause     sets virt.dev/paused: "true": the guest is suspended (status phase Paused)
  unpause   removes virt.dev/paused: the guest resumes
  restart   sets virt.dev/restart-requested-at to the current time: one graceful restart
            (ACPI shutdown, destroyed after terminationGracePeriodSeconds, started again)

  -n, --namespace NS   the machine's namespace (default: the kubeconfig context's, else default)
  --kubeconfig PATH    (env KUBECONFIG; default ~/.kube/config, else in-cluster)`;

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
  } as const;
  return command('vm', argv, flags, HELP, run, { positionals: true });
}

async function run(
  values: { namespace?: string; kubeconfig?: string },
  positionals: string[],
): Promise<number> {
  const [action, name, ...extra] = positionals;
  if (!ACTIONS.includes(action as Action)) {
    throw new UsageError(
      `vm: ${action === undefined ? 'an action is required' : `unknown action '${action}'`} (pause, unpause, restart); see 'vm --help'`,
    );
  }
  if (name === undefined || extra.length > 0) {
    throw new UsageError(`vm ${action}: exactly one machine NAME is required`);
  }
  // The same reading as run and console: a kubeconfig that cannot be used is named.
  const path = kubeconfigPath(values.kubeconfig, process.env, homedir(), existsSync);
  const kc = await loadKubeConfig(path);
  const namespace = values.namespace ?? (path ? kubeconfigNamespace(path) : undefined) ?? 'default';
  const client = createKubeClient(kc, { userAgent: 'libvirt-operator-vm' });
  const patch = annotationPatch(action as Action, new Date());
  try {
    await client.request({
      method: 'PATCH',
      path: `/apis/virt.dev/v1alpha1/namespaces/${encodeURIComponent(namespace)}/virtualmachines/${encodeURIComponent(name)}`,
      query: { fieldManager: VM_FIELD_MANAGER },
      contentType: CONTENT_TYPE.mergePatch,
      body: { metadata: { annotations: patch } },
    });
  } catch (err) {
    if (isNotFound(err))
      throw await notFoundError(
        client,
        'VirtualMachine',
        `virtualmachine ${namespace}/${name}`,
        err,
      );
    throw err;
  }
  const value = patch[RESTART_ANNOTATION];
  console.log(
    action === 'restart'
      ? `virtualmachine ${namespace}/${name}: restart requested (${RESTART_ANNOTATION}=${value})`
      : `virtualmachine ${namespace}/${name}: ${action === 'pause' ? 'pause' : 'unpause'} requested`,
  );
  return 0;
}
