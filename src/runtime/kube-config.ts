// What the transport needs from a kubeconfig: the server and, per request, TLS options and
// credentials. Importing @kubernetes/client-node's KubeConfig loads the whole generated API
// (every model class): measured, +65 MB of RSS in the agent, a third of its footprint at 1,000
// VMs, for reading one YAML file. The common kubeconfigs (client certificates, a token or a
// token file, basic auth, the in-cluster service account) are read here; one whose user needs
// an exec plugin or an auth provider, or that goes through a proxy, is handed to client-node,
// loaded only then.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { parse } from 'yaml';

/** The part of client-node's KubeConfig the runtime uses; a KubeConfig is one. */
export interface KubeAccess {
  getCurrentCluster(): { server: string; proxyUrl?: string } | null;
  /** Sets ca/cert/key/rejectUnauthorized/servername, headers.Authorization or auth. */
  applyToHTTPSOptions(options: Record<string, unknown>): Promise<void>;
}

const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';
// client-node re-reads a token file at most once a minute; so do we (bound tokens rotate).
const TOKEN_FILE_TTL_MS = 60_000;

interface Named<T> {
  name: string;
  [key: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}

interface RawCluster {
  server?: string;
  'certificate-authority-data'?: string;
  'certificate-authority'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
  'proxy-url'?: string;
}

interface RawUser {
  'client-certificate-data'?: string;
  'client-certificate'?: string;
  'client-key-data'?: string;
  'client-key'?: string;
  token?: string;
  tokenFile?: string;
  username?: string;
  password?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
}

interface Light {
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecure?: boolean;
  serverName?: string;
  token?: string;
  tokenFile?: string;
  basic?: string;
}

function lightAccess(c: Light): KubeAccess {
  let cached: { token: string; readAt: number } | undefined;
  const token = (): string | undefined => {
    if (c.token) return c.token;
    if (!c.tokenFile) return undefined;
    const now = Date.now();
    if (!cached || now - cached.readAt > TOKEN_FILE_TTL_MS) {
      cached = { token: readFileSync(c.tokenFile, 'utf8').trim(), readAt: now };
    }
    return cached.token;
  };
  return {
    getCurrentCluster: () => ({ server: c.server }),
    applyToHTTPSOptions(options) {
      if (c.ca) options.ca = c.ca;
      if (c.cert) options.cert = c.cert;
      if (c.key) options.key = c.key;
      if (c.insecure) options.rejectUnauthorized = false;
      if (c.serverName) options.servername = c.serverName;
      const bearer = token();
      if (bearer) {
        options.headers = {
          ...(options.headers as Record<string, string> | undefined),
          Authorization: `Bearer ${bearer}`,
        };
      } else if (c.basic) {
        options.auth = c.basic;
      }
      return Promise.resolve();
    },
  };
}

function dataOrFile(data: string | undefined, file: string | undefined, base: string) {
  if (data) return Buffer.from(data, 'base64');
  if (file) return readFileSync(isAbsolute(file) ? file : join(base, file));
  return undefined;
}

function pick<T>(list: unknown, name: string | undefined, key: 'cluster' | 'user' | 'context') {
  const found = (Array.isArray(list) ? (list as Named<T>[]) : []).find((e) => e?.name === name);
  return found?.[key];
}

/** A kubeconfig file; throws with the reason when it cannot be used. */
export async function loadKubeAccessFromFile(path: string): Promise<KubeAccess> {
  const doc = (parse(readFileSync(path, 'utf8')) ?? {}) as Record<string, unknown>;
  const contextName = doc['current-context'] as string | undefined;
  const context = pick<{ cluster?: string; user?: string }>(doc.contexts, contextName, 'context');
  const cluster = pick<RawCluster>(doc.clusters, context?.cluster, 'cluster');
  if (!cluster?.server) throw new Error(`kubeconfig ${path} names no current cluster`);
  const user = pick<RawUser>(doc.users, context?.user, 'user') ?? {};
  if (user.exec || user['auth-provider'] || cluster['proxy-url']) {
    // Exec plugins, auth providers and proxies: client-node knows them all.
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    return kc;
  }
  const base = dirname(path);
  return lightAccess({
    server: cluster.server,
    ca: dataOrFile(cluster['certificate-authority-data'], cluster['certificate-authority'], base),
    cert: dataOrFile(user['client-certificate-data'], user['client-certificate'], base),
    key: dataOrFile(user['client-key-data'], user['client-key'], base),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    serverName: cluster['tls-server-name'],
    token: user.token,
    tokenFile: user.tokenFile
      ? isAbsolute(user.tokenFile)
        ? user.tokenFile
        : join(base, user.tokenFile)
      : undefined,
    basic: user.username !== undefined ? `${user.username}:${user.password ?? ''}` : undefined,
  });
}

/** The namespace the kubeconfig's current context names (kubectl's default for -n). */
export function kubeconfigNamespace(path: string): string | undefined {
  const doc = (parse(readFileSync(path, 'utf8')) ?? {}) as Record<string, unknown>;
  const contextName = doc['current-context'] as string | undefined;
  return pick<{ namespace?: string }>(doc.contexts, contextName, 'context')?.namespace;
}

/** The pod's service account, as client-node's loadFromCluster reads it. */
export function loadKubeAccessInCluster(
  env: NodeJS.ProcessEnv = process.env,
  dir = SERVICE_ACCOUNT,
): KubeAccess {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new Error('KUBERNETES_SERVICE_HOST/PORT are not set');
  const ca = readFileSync(join(dir, 'ca.crt'));
  const tokenFile = join(dir, 'token');
  readFileSync(tokenFile); // fail now, not at the first request
  const h = host.includes(':') ? `[${host}]` : host;
  return lightAccess({ server: `https://${h}:${port}`, ca, tokenFile });
}
