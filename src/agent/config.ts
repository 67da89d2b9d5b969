// The agent's configuration: flags first, then environment variables (the DaemonSet sets
// NODE_NAME from the downward API), then defaults. Pure, so every rule has a table test.
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';

export interface AgentConfig {
  nodeName: string;
  libvirtUri: string;
  /** undefined = in-cluster configuration */
  kubeconfig: string | undefined;
  metricsAddr: HostPort | undefined;
  healthAddr: HostPort | undefined;
  stateDir: string;
  leaseNamespace: string;
  /**
   * Who holds the node's Lease: the pod's name under a DaemonSet (POD_NAME), so a container
   * restarted after a crash takes its Lease back at once, while a new pod of a rolling update
   * waits for the old one; undefined = host, pid and a random part.
   */
  leaseIdentity: string | undefined;
  /**
   * How long the node's Lease lasts unrenewed, in seconds; its renew deadline and retry
   * period follow from it (5/8 and 1/4 of it). undefined = the agent's default, 40 s.
   */
  leaseDurationSeconds: number | undefined;
  logLevel: string;
}

export interface HostPort {
  host: string;
  port: number;
}

export interface ConfigInput {
  flags: Partial<
    Record<
      | 'node-name'
      | 'libvirt-uri'
      | 'kubeconfig'
      | 'metrics-addr'
      | 'health-addr'
      | 'state-dir'
      | 'lease-namespace'
      | 'lease-duration'
      | 'log-level',
      string
    >
  >;
  env: Record<string, string | undefined>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Where the agent takes its per-node Lease unless told otherwise (the DaemonSet's namespace). */
export const DEFAULT_LEASE_NAMESPACE = 'libvirt-operator';

export const LOCAL_LIBVIRT_SOCKET = '/var/run/libvirt/libvirt-sock';

/** The local libvirtd when its socket exists, else libvirt's in-process test driver. */
export function defaultLibvirtUri(socketExists: (p: string) => boolean = existsSync): string {
  return socketExists(LOCAL_LIBVIRT_SOCKET) ? 'qemu:///system' : 'test:///default';
}

/** `source` names where the value came from (default the flag `--${flag}`). */
export function parseHostPort(flag: string, value: string, source = `--${flag}`): HostPort {
  const m = /^(.*):(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(
      `${source} must be HOST:PORT (e.g. 127.0.0.1:8080 or :8080), got '${value}'`,
    );
  }
  const host = m[1] === '' ? '0.0.0.0' : m[1]!.replace(/^\[(.*)\]$/, '$1');
  return { host, port };
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function agentConfig(
  input: ConfigInput,
  defaults: { hostname: () => string; libvirtUri: () => string } = {
    hostname,
    libvirtUri: () => defaultLibvirtUri(),
  },
): AgentConfig {
  const { flags, env } = input;
  // An error names what the user set: the flag, else the variable it fell back to.
  const source = (flag: keyof ConfigInput['flags'], variable: string) =>
    flags[flag] !== undefined ? `--${flag}` : variable;
  const nodeName = flags['node-name'] ?? env.NODE_NAME ?? defaults.hostname().toLowerCase();
  if (nodeName.length > 253 || !NODE_NAME.test(nodeName)) {
    throw new ConfigError(
      `node name '${nodeName}' is not a valid Kubernetes node name (lower-case DNS subdomain); set --node-name or NODE_NAME`,
    );
  }
  const metrics = flags['metrics-addr'] ?? env.METRICS_ADDR;
  const health = flags['health-addr'] ?? env.HEALTH_ADDR;
  const logLevel = flags['log-level'] ?? env.LOG_LEVEL ?? 'info';
  if (!LOG_LEVELS.includes(logLevel))
    throw new ConfigError(
      `${source('log-level', 'LOG_LEVEL')} must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`,
    );
  const leaseDuration = flags['lease-duration'] ?? env.LEASE_DURATION;
  const leaseDurationSeconds =
    leaseDuration === undefined ? undefined : Number(leaseDuration.trim() || NaN);
  // Below 4 s the retry period (a quarter) would be under a second: renewals every few hundred
  // ms on every node; above an hour a crashed node's machines wait that long for a new agent.
  if (
    leaseDurationSeconds !== undefined &&
    (!Number.isInteger(leaseDurationSeconds) ||
      leaseDurationSeconds < 4 ||
      leaseDurationSeconds > 3600)
  ) {
    throw new ConfigError(
      `${source('lease-duration', 'LEASE_DURATION')} must be whole seconds from 4 to 3600 (default 40), got '${leaseDuration}'`,
    );
  }
  return {
    nodeName,
    libvirtUri: flags['libvirt-uri'] ?? env.LIBVIRT_URI ?? defaults.libvirtUri(),
    kubeconfig: flags.kubeconfig ?? (env.KUBECONFIG || undefined),
    metricsAddr:
      metrics === undefined || metrics === '0'
        ? undefined
        : parseHostPort('metrics-addr', metrics, source('metrics-addr', 'METRICS_ADDR')),
    healthAddr:
      health === undefined || health === '0'
        ? undefined
        : parseHostPort('health-addr', health, source('health-addr', 'HEALTH_ADDR')),
    stateDir: flags['state-dir'] ?? env.STATE_DIR ?? '/var/lib/libvirt-operator',
    leaseNamespace: flags['lease-namespace'] ?? env.POD_NAMESPACE ?? DEFAULT_LEASE_NAMESPACE,
    leaseIdentity: env.POD_NAME || undefined,
    leaseDurationSeconds,
    logLevel,
  };
}
