// The optional finalizer policy (manifests/components/finalizer-at-admission) on a local
// control plane: `up`'s own, the benchmark's, and the tests' that measure and check it.
import { join } from 'node:path';
import { HOST_FINALIZER } from '../../controllers/context.js';
import type { KubeClient } from '../../runtime/kube-client.js';
import type { ControlPlane } from './control-plane.js';
import { packageRoot } from './package-root.js';

export const FINALIZER_POLICY_DIR = join(
  packageRoot(),
  'manifests',
  'components',
  'finalizer-at-admission',
);

/**
 * Applies the policy, labels the existing Node `node` as the DaemonSet's nodes are labelled,
 * and waits until the API server applies the policy: it takes up a new policy and binding a
 * moment after they are written, so a dry-run create on `node` must come back with the
 * finalizer.
 */
export async function installFinalizerPolicy(
  cp: ControlPlane,
  client: KubeClient,
  node: string,
  timeoutMs = 30_000,
): Promise<void> {
  for (const args of [
    ['apply', '-k', FINALIZER_POLICY_DIR],
    ['label', '--overwrite', 'node', node, 'virt.dev/libvirt-host=true'],
  ]) {
    const res = await cp.kubectl(args);
    if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr}`);
  }
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    // A 503 "kind not found" can come while the API server's CRD handler settles: retried.
    const probe = await client
      .request<{ metadata: { finalizers?: string[] } }>({
        method: 'POST',
        path: '/apis/virt.dev/v1alpha1/namespaces/default/virtualmachines',
        query: { dryRun: 'All' },
        body: {
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'VirtualMachine',
          metadata: { name: 'finalizer-policy-probe' },
          spec: { nodeName: node, vcpus: 1, memory: '64Mi' },
        },
      })
      .catch((err: unknown) => void (last = err));
    if (probe?.metadata.finalizers?.includes(HOST_FINALIZER)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `the finalizer policy was not in force on node ${node} after ${timeoutMs} ms` +
          (last ? `; last probe: ${String(last)}` : '; probes came back without the finalizer'),
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
