// Two ways to act as the agent of one node against the test control plane: impersonation (the
// admin token may impersonate any user, group and user extra), and a real ServiceAccount token
// bound to a Pod on that node, minted by the API server itself, which is what a DaemonSet pod
// presents in a cluster and the only proof that the node claim the policy relies on is real.
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { ControlPlane, KubectlOptions } from '../../../src/commands/local/control-plane.js';
import { kubectlOk } from '../../harness/kubectl.js';

export const AGENT_NAMESPACE = 'libvirt-operator';
export const AGENT_SERVICE_ACCOUNT = 'libvirt-operator-agent';
export const AGENT_USER = `system:serviceaccount:${AGENT_NAMESPACE}:${AGENT_SERVICE_ACCOUNT}`;
export const AGENT_GROUPS = [
  'system:serviceaccounts',
  `system:serviceaccounts:${AGENT_NAMESPACE}`,
  'system:authenticated',
];
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

/** kubectl as the agent; with a node, as the agent's pod-bound token on that node would be. */
export function kubectlAsAgent(
  cp: ControlPlane,
  node: string | undefined,
  args: string[],
  opts: KubectlOptions = {},
) {
  const extra = node === undefined ? [] : [`--as-user-extra=${NODE_NAME_EXTRA}=${node}`];
  return cp.kubectl([...extra, ...args], { ...opts, asUser: AGENT_USER, asGroups: AGENT_GROUPS });
}

/** The DaemonSet's pod template from `kubectl kustomize manifests/`. */
export async function agentPodTemplate(cp: ControlPlane, manifestsDir: string) {
  const docs = parseAllDocuments(await kubectlOk(cp, ['kustomize', manifestsDir])).map(
    (d) => d.toJS() as { kind: string; spec?: { template?: { spec: object } } },
  );
  const ds = docs.find((d) => d.kind === 'DaemonSet');
  if (!ds?.spec?.template) throw new Error(`no DaemonSet with a pod template in ${manifestsDir}`);
  return ds.spec.template;
}

/**
 * A token the API server issues for the agent's ServiceAccount, bound to a Pod that runs the
 * DaemonSet's template on `node` (there is no scheduler: spec.nodeName is set directly).
 * Creates the Node and the Pod when missing.
 */
export async function boundAgentToken(
  cp: ControlPlane,
  manifestsDir: string,
  node: string,
): Promise<string> {
  const template = await agentPodTemplate(cp, manifestsDir);
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `agent-${node}`, namespace: AGENT_NAMESPACE },
    spec: { ...template.spec, nodeName: node },
  };
  const nodeObject = { apiVersion: 'v1', kind: 'Node', metadata: { name: node } };
  await kubectlOk(cp, ['apply', '-f', '-'], { input: JSON.stringify(nodeObject) });
  await kubectlOk(cp, ['apply', '-f', '-'], { input: JSON.stringify(pod) });
  const token = await kubectlOk(cp, [
    'create',
    'token',
    AGENT_SERVICE_ACCOUNT,
    `--namespace=${AGENT_NAMESPACE}`,
    '--bound-object-kind=Pod',
    `--bound-object-name=agent-${node}`,
    '--duration=1h',
  ]);
  return token.trim();
}

/** A client-node KubeConfig for the same API server that authenticates with `token`. */
export function kubeConfigWithToken(cp: ControlPlane, token: string): KubeConfig {
  const cluster = cp.kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error('the control plane kubeconfig has no current cluster');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [cluster],
    users: [{ name: 'agent', token }],
    contexts: [{ name: 'agent', cluster: cluster.name, user: 'agent' }],
    currentContext: 'agent',
  });
  return kc;
}
