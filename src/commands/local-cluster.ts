import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULT_LEASE_NAMESPACE } from '../agent/config.js';
import { startControlPlane } from '../harness/control-plane.js';
import { createKubeClient } from '../runtime/index.js';
import { parseFlags, untilSignal, UsageError, withOneLineErrors } from './flags.js';
import { ensureNamespace } from './namespaces.js';

const HELP = `usage: libvirt-operator local-cluster [--dir DIR] [--port PORT] [--no-crds]

Starts etcd and kube-apiserver on loopback with TLS and RBAC, installs the CRDs from crds/,
creates the namespace of the agents' Leases (${DEFAULT_LEASE_NAMESPACE}), writes
DIR/kubeconfig (admin), prints 'ready: kubeconfig=<path>' and runs until SIGINT or
SIGTERM, then stops everything it started. Builds the binaries on first use (~10 min) unless
KUBEBUILDER_ASSETS names a folder with kube-apiserver, etcd and kubectl.

  --dir DIR     keep state and the kubeconfig here (default: a temp dir removed on exit)
  --port PORT   kube-apiserver's secure port (default: a free one)
  --no-crds     do not install the CRDs`;

export async function main(argv: string[]): Promise<number> {
  return withOneLineErrors('local-cluster', async () => {
    const { values, help } = parseFlags(
      'local-cluster',
      argv,
      { dir: { type: 'string' }, port: { type: 'string' }, 'no-crds': { type: 'boolean' } },
      HELP,
    );
    if (help) return 0;
    let port: number | undefined;
    if (values.port !== undefined) {
      port = Number(values.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new UsageError(
          `local-cluster: --port must be a port number from 1 to 65535, got '${values.port}'`,
        );
      }
    }
    const dir = values.dir === undefined ? undefined : resolve(values.dir);
    if (dir) mkdirSync(dir, { recursive: true });

    const cp = await startControlPlane({
      dir,
      port,
      installCRDs: !values['no-crds'],
      provision: true,
    });
    // `libvirt-operator run` against this cluster takes its Lease there: without the
    // namespace it would wait forever without reconciling anything.
    await ensureNamespace(createKubeClient(cp.kubeConfig), DEFAULT_LEASE_NAMESPACE);
    console.log(`ready: kubeconfig=${cp.kubeconfigPath}`);
    await untilSignal();
    await cp.stop();
    return 0;
  });
}
