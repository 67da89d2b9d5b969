// `kubectl apply -k manifests/` against a real kube-apiserver: what a user runs on a cluster.
// There is no kubelet or scheduler, so the DaemonSet's pods never run; the API server still
// validates every object, the admission policy's CEL and the pod template.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, boundAgentToken } from './agent-identity.js';

const MANIFESTS = join(packageRoot(), 'manifests');

const EXPECTED = [
  ['customresourcedefinition', 'virtualmachines.virt.dev', ''],
  ['customresourcedefinition', 'volumes.virt.dev', ''],
  ['customresourcedefinition', 'virtualnetworks.virt.dev', ''],
  ['customresourcedefinition', 'storagepools.virt.dev', ''],
  ['customresourcedefinition', 'virtualmachinesnapshots.virt.dev', ''],
  ['customresourcedefinition', 'virtualmachinerestores.virt.dev', ''],
  ['namespace', AGENT_NAMESPACE, ''],
  ['serviceaccount', AGENT_SERVICE_ACCOUNT, AGENT_NAMESPACE],
  ['clusterrole', 'libvirt-operator-agent', ''],
  ['clusterrolebinding', 'libvirt-operator-agent', ''],
  ['role', 'libvirt-operator-agent-leases', AGENT_NAMESPACE],
  ['rolebinding', 'libvirt-operator-agent-leases', AGENT_NAMESPACE],
  ['validatingadmissionpolicy', 'libvirt-operator-agent-node-scope', ''],
  ['validatingadmissionpolicybinding', 'libvirt-operator-agent-node-scope', ''],
  ['daemonset', 'libvirt-operator-agent', AGENT_NAMESPACE],
] as const;

describe('kubectl apply -k manifests/', () => {
  // The harness installs the CRDs; the kustomization applies them again, as on a cluster.
  const cp = useControlPlane();

  it('renders with kubectl kustomize: the CRDs, the agent objects, no examples', async () => {
    const res = await cp().kubectl(['kustomize', MANIFESTS]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const kinds = [...res.stdout.matchAll(/^kind: (\w+)$/gm)].map((m) => m[1]);
    expect(kinds.sort()).toEqual(
      [
        ...Array<string>(6).fill('CustomResourceDefinition'),
        'ClusterRole',
        'ClusterRoleBinding',
        'DaemonSet',
        'Namespace',
        'ResourceQuota',
        'Role',
        'RoleBinding',
        'ServiceAccount',
        'ValidatingAdmissionPolicy',
        'ValidatingAdmissionPolicyBinding',
      ].sort(),
    );
  });

  // A server-side dry run cannot create the namespace for the objects that follow it, so on a
  // cluster without the namespace the namespaced objects fail with NotFound (a kubectl
  // limitation, see docs/deploy.md). With the namespace present, as with Argo CD's
  // CreateNamespace or on an upgrade, the whole kustomization must pass the server's checks.
  it('--dry-run=server succeeds once the namespace exists, and persists nothing', async () => {
    const ns = await cp().kubectl(['create', 'namespace', AGENT_NAMESPACE]);
    expect(ns.code, ns.stderr).toBe(0);
    const res = await cp().kubectl(['apply', '-k', MANIFESTS, '--dry-run=server']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr.replace(/^Warning: .*last-applied-configuration.*\n/gm, '')).toBe('');
    expect(res.stdout).toMatch(
      /daemonset\.apps\/libvirt-operator-agent created \(server dry run\)/,
    );
    expect(res.stdout).toMatch(
      /validatingadmissionpolicy\.admissionregistration\.k8s\.io\/libvirt-operator-agent-node-scope created \(server dry run\)/,
    );
    for (const [kind, name, namespace] of EXPECTED.filter(
      ([k]) => k !== 'namespace' && k !== 'customresourcedefinition',
    )) {
      const args = ['get', kind, name];
      if (namespace) args.push(`--namespace=${namespace}`);
      expect((await cp().kubectl(args)).stderr, `${kind} ${name} persisted`).toMatch(/NotFound/);
    }
  });

  it('applies for real and creates every object', async () => {
    const res = await cp().kubectl(['apply', '-k', MANIFESTS]);
    expect(res.code, res.stderr).toBe(0);
    for (const [kind, name, namespace] of EXPECTED) {
      const args = ['get', kind, name, '-o', 'name'];
      if (namespace) args.push(`--namespace=${namespace}`);
      const got = await cp().kubectl(args);
      expect(got.code, `${kind} ${name}: ${got.stderr}`).toBe(0);
    }
  });

  it('is idempotent: a second apply changes nothing', async () => {
    const res = await cp().kubectl(['apply', '-k', MANIFESTS]);
    expect(res.code, res.stderr).toBe(0);
    const changed = res.stdout.split('\n').filter((l) => l && !l.endsWith(' unchanged'));
    expect(changed).toEqual([]);
  });

  it('a server-side dry run over the installed release also succeeds (an upgrade)', async () => {
    const res = await cp().kubectl(['apply', '-k', MANIFESTS, '--dry-run=server']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(
      /daemonset\.apps\/libvirt-operator-agent unchanged \(server dry run\)/,
    );
  });

  it("a token for a pod of the DaemonSet's template carries the node name the policy reads", async () => {
    const token = await boundAgentToken(cp(), MANIFESTS, 'node-a');
    const res = await cp().kubectl(['auth', 'whoami', `--token=${token}`, '-o', 'json']);
    expect(res.code, res.stderr).toBe(0);
    const review = JSON.parse(res.stdout) as {
      status: { userInfo: { username: string; extra?: Record<string, string[]> } };
    };
    expect(review.status.userInfo.username).toBe(
      `system:serviceaccount:${AGENT_NAMESPACE}:${AGENT_SERVICE_ACCOUNT}`,
    );
    expect(review.status.userInfo.extra?.['authentication.kubernetes.io/node-name']).toEqual([
      'node-a',
    ]);
  });
});
