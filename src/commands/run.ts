import { agentConfig, ConfigError } from '../agent/config.js';
import {
  loadKubeAccessFromFile,
  loadKubeAccessInCluster,
  type KubeAccess,
} from '../runtime/kube-config.js';
import { startAgent } from '../agent/agent.js';
import { command, type Options, untilSignal, UsageError } from './flags.js';

const HELP = `usage: libvirt-operator run [flags]

Runs the agent for one node: it reconciles the VirtualMachines and Volumes whose
spec.nodeName is this node, and the VirtualNetworks and StoragePools whose nodeSelector
matches it, against the libvirt at --libvirt-uri.

  --node-name NAME          this node (env NODE_NAME; default: the host name)
  --libvirt-uri URI         libvirt to manage (env LIBVIRT_URI; default: qemu:///system when
                            /var/run/libvirt/libvirt-sock exists, else test:///default)
  --kubeconfig PATH         (env KUBECONFIG; default: in-cluster service account)
  --metrics-addr HOST:PORT  serve /metrics (env METRICS_ADDR; '0' = off)
  --health-addr HOST:PORT   serve /healthz, /readyz and /metrics (env HEALTH_ADDR; '0' = off)
  --state-dir DIR           files the agent owns, e.g. cloud-init ISOs (env STATE_DIR;
                            default /var/lib/libvirt-operator)
  --lease-namespace NS      namespace of the per-node Lease (env POD_NAMESPACE; default libvirt-operator)
  --lease-duration SECONDS  how long the Lease lasts unrenewed; it is retried every quarter of
                            that (env LEASE_DURATION; default 40)
  --log-level LEVEL         trace, debug, info, warn, error, fatal, silent (env LOG_LEVEL;
                            default info)`;

export async function loadKubeConfig(path: string | undefined): Promise<KubeAccess> {
  try {
    return path ? await loadKubeAccessFromFile(path) : loadKubeAccessInCluster();
  } catch (err) {
    throw new ConfigError(
      path
        ? `cannot read kubeconfig ${path}: ${(err as Error).message}`
        : `no --kubeconfig or KUBECONFIG given and not running in a cluster (no service account): ${(err as Error).message}`,
    );
  }
}

const FLAGS = {
  'node-name': { type: 'string' },
  'libvirt-uri': { type: 'string' },
  kubeconfig: { type: 'string' },
  'metrics-addr': { type: 'string' },
  'health-addr': { type: 'string' },
  'state-dir': { type: 'string' },
  'lease-namespace': { type: 'string' },
  'lease-duration': { type: 'string' },
  'log-level': { type: 'string' },
} satisfies Options;

export async function main(argv: string[]): Promise<number> {
  return command('run', argv, FLAGS, HELP, async (values) => {
    let cfg;
    try {
      cfg = agentConfig({ flags: values as Record<string, string>, env: process.env });
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(`run: ${err.message}`);
      throw err;
    }
    const kubeConfig = await loadKubeConfig(cfg.kubeconfig);
    const agent = await startAgent({
      nodeName: cfg.nodeName,
      libvirtUri: cfg.libvirtUri,
      kubeConfig,
      stateDir: cfg.stateDir,
      lease: {
        namespace: cfg.leaseNamespace,
        identity: cfg.leaseIdentity,
        leaseDurationSeconds: cfg.leaseDurationSeconds,
      },
      health: cfg.healthAddr,
      metrics: cfg.metricsAddr,
      log: { level: cfg.logLevel, name: 'libvirt-operator' },
    });
    // Listening before 'agent started' is logged: a supervisor that signals on reading it
    // must find the listener, not Node's default action (flags.ts listenForStop).
    const stopAsked = untilSignal(agent.runtime.stopped);
    agent.runtime.log.info(
      { node: cfg.nodeName, libvirt: cfg.libvirtUri, health: agent.runtime.health?.url },
      'agent started',
    );
    await stopAsked;
    await agent.stop();
    return 0;
  });
}
