import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULT_LEASE_NAMESPACE } from '../agent/config.js';
import { startControlPlane } from './local/control-plane.js';
import { createKubeClient } from '../runtime/index.js';
import {
  checkNodeHost,
  createNodeNetwork,
  deleteNodeNetwork,
  DEFAULT_POD_SUBNET,
  ensureNodeBinaries,
  kubeletTokenUser,
  NODE_API_SERVER_PORT,
  startLocalNode,
} from './local/local-node.js';
import { hostname } from 'node:os';
import {
  command,
  listenForStop,
  notADirectory,
  type Options,
  runStoppable,
  statIfExists,
  type StopListener,
  UsageError,
} from './flags.js';
import { ensureNamespace } from './namespaces.js';

const HELP = `usage: libvirt-operator local-cluster [--dir DIR] [--port PORT] [--no-crds]
                                      [--node [--image FILE]... [--node-name NAME] [--pod-subnet CIDR]]

Starts etcd and kube-apiserver on loopback with TLS and RBAC, installs the CRDs from crds/,
creates the namespace of the agents' Leases (${DEFAULT_LEASE_NAMESPACE}), writes
DIR/kubeconfig (admin), prints 'ready: kubeconfig=<path>' and runs until SIGINT or
SIGTERM, then stops everything it started (exit 0; 130 or 143 when the signal came before
'ready:'). Builds the binaries on first use (~10 min) unless
KUBEBUILDER_ASSETS names a folder with kube-apiserver, etcd and kubectl.

  --dir DIR     keep state and the kubeconfig here (default: a temp dir removed on exit)
  --port PORT   kube-apiserver's secure port (default: a free one; ${NODE_API_SERVER_PORT} with --node)
  --no-crds     do not install the CRDs

With --node, this host also becomes a real node (root only): kube-controller-manager,
kube-scheduler, a private containerd, CNI (a bridge of its own on the pod subnet) and a
kubelet that registers the host as a Node labelled virt.dev/libvirt-host=true. The API server
then listens on the bridge's gateway address (the Node's InternalIP), where pods reach it.
'ready:' is printed once the Node is Ready. Built on first use (several minutes).

  --node             run a kubelet and a container runtime on this host
  --image FILE       load this image tarball (OCI layout, e.g. from 'npm run image') into the
                     runtime before ready; repeatable
  --node-name NAME   the Node's name (default: the host name)
  --pod-subnet CIDR  pods' addresses (default ${DEFAULT_POD_SUBNET}; must not overlap the host's)`;

const FLAGS = {
  dir: { type: 'string' },
  port: { type: 'string' },
  'no-crds': { type: 'boolean' },
  node: { type: 'boolean' },
  image: { type: 'string', multiple: true },
  'node-name': { type: 'string' },
  'pod-subnet': { type: 'string' },
} satisfies Options;

export async function main(argv: string[]): Promise<number> {
  return command('local-cluster', argv, FLAGS, HELP, async (values) => {
    let port: number | undefined;
    if (values.port !== undefined) {
      port = Number(values.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new UsageError(
          `local-cluster: --port must be a port number from 1 to 65535, got '${values.port}'`,
        );
      }
    }
    const withNode = values.node === true;
    for (const flag of ['image', 'node-name', 'pod-subnet'] as const)
      if (values[flag] !== undefined && !withNode)
        throw new UsageError(`local-cluster: --${flag} needs --node`);
    const images = (values.image ?? []).map((f) => resolve(f));
    for (const f of images)
      if (!existsSync(f))
        throw new UsageError(
          `local-cluster: --image ${f} does not exist (build the agent image with 'npm run image')`,
        );
    const nodeName = values['node-name'] ?? hostname().toLowerCase();
    if (withNode && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(nodeName))
      throw new UsageError(
        `local-cluster: --node-name must be a DNS subdomain (lower case), got '${nodeName}'`,
      );
    const dir = values.dir === undefined ? undefined : resolve(values.dir);
    const notDir = dir === undefined ? undefined : notADirectory('--dir', dir, statIfExists);
    if (notDir) throw new UsageError(`local-cluster: ${notDir}`);
    if (dir) mkdirSync(dir, { recursive: true });
    // Listening from here on, before anything is started (flags.ts listenForStop).
    const stop = listenForStop('local-cluster');
    return runStoppable('local-cluster', stop, () =>
      withNode
        ? clusterWithNode(stop, { dir, port, images, nodeName, values })
        : cluster(stop, { dir, port, installCRDs: !values['no-crds'] }),
    );
  });
}

async function cluster(
  stop: StopListener,
  opts: { dir: string | undefined; port: number | undefined; installCRDs: boolean },
): Promise<number> {
  console.log('local-cluster: starting etcd and kube-apiserver');
  const cp = await startControlPlane({ ...opts, provision: true, signal: stop.signal });
  try {
    // `libvirt-operator run` against this cluster takes its Lease there: without the
    // namespace it would wait forever without reconciling anything.
    await ensureNamespace(createKubeClient(cp.kubeConfig), DEFAULT_LEASE_NAMESPACE);
    stop.check();
    stop.running();
    console.log(`ready: kubeconfig=${cp.kubeconfigPath}`);
    await stop.until();
  } finally {
    await cp.stop();
  }
  return 0;
}

async function clusterWithNode(
  stop: StopListener,
  opts: {
    dir: string | undefined;
    port: number | undefined;
    images: string[];
    nodeName: string;
    values: { 'no-crds'?: boolean; 'pod-subnet'?: string };
  },
): Promise<number> {
  const { dir, port, images, nodeName, values } = opts;
  checkNodeHost();
  await ensureNodeBinaries(true);
  stop.check();
  const net = await createNodeNetwork(values['pod-subnet'] ?? DEFAULT_POD_SUBNET);
  const kubeletToken = randomBytes(24).toString('hex');
  let cp;
  try {
    cp = await startControlPlane({
      dir,
      port: port ?? NODE_API_SERVER_PORT,
      installCRDs: !values['no-crds'],
      provision: true,
      address: net.gateway,
      nodes: true,
      extraTokens: [{ token: kubeletToken, ...kubeletTokenUser(nodeName) }],
      signal: stop.signal,
    });
    await ensureNamespace(createKubeClient(cp.kubeConfig), DEFAULT_LEASE_NAMESPACE);
    stop.check();
  } catch (err) {
    await cp?.stop();
    await deleteNodeNetwork(net);
    throw err;
  }
  let node;
  try {
    node = await startLocalNode(cp, net, {
      nodeName,
      kubeletToken,
      images,
      log: (l) => console.log(l),
    });
    // startLocalNode does not heed the signal: a stop asked meanwhile is acted on here.
    if (stop.signal.aborted) {
      await node.stop();
      stop.check();
    }
  } catch (err) {
    await cp.stop();
    await deleteNodeNetwork(net);
    throw err;
  }
  console.log(
    `node: ${node.name} Ready at ${net.gateway} (pods ${net.subnet} on ${net.bridge}); logs in ${node.dir}`,
  );
  stop.running();
  console.log(`ready: kubeconfig=${cp.kubeconfigPath}`);
  await stop.until();
  await node.stop();
  // The API server listens on the bridge: it goes after the API server (local-node.ts).
  await cp.stop();
  await deleteNodeNetwork(net);
  return 0;
}
