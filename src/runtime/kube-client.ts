// The HTTP transport to the API server. @kubernetes/client-node is used only for what it is
// good at: reading a kubeconfig and producing TLS options and auth headers (including exec
// and token-file auth, re-applied per request so rotated tokens are picked up). Requests and
// watch streams are plain node:http(s), so every timeout, abort and error is ours to handle.
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
  type RequestOptions,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type AgentOptions } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { KubeAccess } from './kube-config.js';

export interface KubeRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Default application/json; patches must say which kind they are. */
  contentType?: string;
  /** Abort when no response has arrived within this time. Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface KubeClient {
  server: string;
  request<T = unknown>(req: KubeRequest): Promise<T>;
  /**
   * Opens a streaming GET and yields one parsed JSON document per line. Resolves once the
   * response headers arrived with 200 (so a 410 or 403 is thrown here, not mid-stream).
   */
  stream(
    req: Omit<KubeRequest, 'method' | 'body' | 'contentType'>,
  ): Promise<AsyncIterable<unknown>>;
}

export const CONTENT_TYPE = {
  json: 'application/json',
  jsonPatch: 'application/json-patch+json',
  mergePatch: 'application/merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

/** A non-2xx answer, carrying the metav1.Status the API server sent. */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
  }
}

export const isNotFound = (err: unknown): boolean =>
  err instanceof KubeApiError && err.status === 404;
export const isForbidden = (err: unknown): boolean =>
  err instanceof KubeApiError && err.status === 403;
export const isConflict = (err: unknown): boolean =>
  err instanceof KubeApiError && err.status === 409;
export const isGone = (err: unknown): boolean => err instanceof KubeApiError && err.status === 410;
/**
 * Marks an error a writer raised without asking the server, because the cached copy it was
 * given predates the writer's own last write to the object: the server would refuse it for
 * certain. The watch event of that write is still to come and wakes the object's key again,
 * so a controller need not schedule a retry of its own (see src/agent/agent.ts).
 */
export function ownWriteUnseen<E extends Error>(err: E): E {
  return Object.assign(err, { ownWriteUnseen: true });
}
export const isOwnWriteUnseen = (err: unknown): boolean =>
  err instanceof Error && (err as { ownWriteUnseen?: boolean }).ownWriteUnseen === true;

/**
 * The fields a server-side apply named that the object's schema does not declare: the API
 * server refuses such an apply as a whole (HTTP 500 "failed to create typed patch object
 * (...): .status.x: field not declared in schema", one line per field when there are several)
 * where an update or merge patch would silently prune them. Seen when the installed CRD is
 * older than the writer. List keys are dropped (`.status.nodes[nodeName="a"].x` is
 * `.status.nodes[].x`), so one missing field reads the same for every object. Empty: not that.
 */
export function fieldsNotInSchema(err: unknown): string[] {
  if (!(err instanceof KubeApiError) || !err.message.includes('failed to create typed patch'))
    return [];
  const fields = [...err.message.matchAll(/(\.\S+?): field not declared in schema/g)].map((m) =>
    (m[1] ?? '').replace(/\[[^\]]*\]/g, '[]'),
  );
  return [...new Set(fields)].sort();
}

/**
 * Marks an error its raiser has already logged, with what to do, at error level: the
 * controller's retry logs it at debug level only, so a lasting cause (an outdated CRD) is said
 * once, not at every retry. It is still counted as a reconcile error.
 */
export function alreadyReported<E extends Error>(err: E): E {
  return Object.assign(err, { alreadyReported: true });
}
export const isAlreadyReported = (err: unknown): boolean =>
  err instanceof Error && (err as { alreadyReported?: boolean }).alreadyReported === true;

export const isAlreadyExists = (err: unknown): boolean =>
  err instanceof KubeApiError && err.status === 409 && err.reason === 'AlreadyExists';

export interface KubeClientOptions {
  userAgent?: string;
  defaultTimeoutMs?: number;
}

/** What a connection's TLS depends on; a change of any of it needs a new agent. */
export type TlsIdentity = Pick<
  AgentOptions,
  'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'
>;

// The kubeconfig's certificates are compared, not hashed, per request: the agent's own reader
// hands back the same Buffers every time (an identity check), client-node new ones (a memcmp).
export function sameTlsIdentity(a: TlsIdentity, b: TlsIdentity): boolean {
  return (
    samePem(a.ca, b.ca) &&
    samePem(a.cert, b.cert) &&
    samePem(a.key, b.key) &&
    a.rejectUnauthorized === b.rejectUnauthorized &&
    a.servername === b.servername
  );
}

function samePem(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((item, i) => samePem(item, b[i]));
  // A key given as { pem, passphrase }: rare, compared by content.
  return typeof a === 'object' && typeof b === 'object' && JSON.stringify(a) === JSON.stringify(b);
}

export function createKubeClient(kubeConfig: KubeAccess, opts: KubeClientOptions = {}): KubeClient {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster (check current-context)');
  const server = cluster.server.replace(/\/+$/, '');
  const secure = server.startsWith('https:');
  const send = secure ? httpsRequest : httpRequest;
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? 30_000;
  let shared: { tls: TlsIdentity; agent: HttpAgent } | undefined;

  // client-node makes a new Agent per call, so every request would pay a TCP and TLS
  // handshake (a lease renewal every 2 s per node adds up on the API server). One keep-alive
  // agent per TLS identity instead; a new one when the kubeconfig's certificates change.
  // Keep-alive also turns on TCP keepalive, which notices a peer host that vanished.
  // The agent's sockets share one SecureContext: without it every new connection parsed the
  // CA and the client key again (a fresh agent opens ~30 in its first burst of status writes;
  // bench/README.md, issue 17).
  const agentFor = (options: AgentOptions & { agent?: unknown }): HttpAgent | undefined => {
    if (cluster.proxyUrl) return options.agent as HttpAgent | undefined;
    const tls: TlsIdentity = {
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      rejectUnauthorized: options.rejectUnauthorized,
      servername: options.servername,
    };
    if (!shared || !sameTlsIdentity(shared.tls, tls)) {
      const keepAlive = { keepAlive: true, keepAliveMsecs: 30_000 };
      shared = {
        tls,
        agent: secure
          ? new HttpsAgent({
              ...keepAlive,
              secureContext: createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key }),
              rejectUnauthorized: tls.rejectUnauthorized,
              servername: tls.servername,
            })
          : new HttpAgent(keepAlive),
      };
    }
    return shared.agent;
  };

  const open = async (req: KubeRequest, accept: string): Promise<IncomingMessage> => {
    const options: RequestOptions & Record<string, unknown> = {};
    await kubeConfig.applyToHTTPSOptions(options);
    const url = new URL(server + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    const headers: Record<string, string> = {
      ...(options.headers as Record<string, string> | undefined),
      accept,
      'user-agent': opts.userAgent ?? 'libvirt-operator-runtime',
    };
    if (body !== undefined) {
      headers['content-type'] = req.contentType ?? CONTENT_TYPE.json;
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    if (typeof options.auth === 'string') {
      headers.authorization = `Basic ${Buffer.from(options.auth).toString('base64')}`;
    }
    const timeoutMs = req.timeoutMs ?? defaultTimeoutMs;
    const agent = agentFor(options as AgentOptions & { agent?: unknown });
    return new Promise<IncomingMessage>((resolve, reject) => {
      const r = send(url, { method: req.method, headers, agent, signal: req.signal }, (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      // A stopped or overloaded server accepts the TCP connection and then says nothing: only
      // a deadline on the response headers notices.
      const timer = setTimeout(
        () => r.destroy(new Error(`${req.method} ${req.path}: no response within ${timeoutMs} ms`)),
        timeoutMs,
      );
      r.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      r.end(body);
    });
  };

  const readBody = (res: IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve(text));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });

  const failure = async (req: KubeRequest, res: IncomingMessage): Promise<KubeApiError> => {
    const text = await readBody(res).catch(() => '');
    let reason = res.statusMessage ?? 'Error';
    let message = text.slice(0, 500);
    try {
      const status = JSON.parse(text) as { reason?: string; message?: string };
      reason = status.reason ?? reason;
      message = status.message ?? message;
    } catch {
      /* not a Status object: keep the raw text */
    }
    return new KubeApiError(res.statusCode ?? 0, reason, message, req.method, req.path);
  };

  return {
    server,
    async request<T>(req: KubeRequest): Promise<T> {
      const res = await open(req, CONTENT_TYPE.json);
      const status = res.statusCode ?? 0;
      if (status < 200 || status >= 300) throw await failure(req, res);
      const text = await readBody(res);
      return (text ? JSON.parse(text) : undefined) as T;
    },
    async stream(req) {
      const full: KubeRequest = { ...req, method: 'GET' };
      const res = await open(full, CONTENT_TYPE.json);
      if (res.statusCode !== 200) throw await failure(full, res);
      return jsonLines(res);
    },
  };
}

/** Splits a chunked response into JSON documents, one per line. */
async function* jsonLines(res: IncomingMessage): AsyncIterable<unknown> {
  res.setEncoding('utf8');
  let pending = '';
  try {
    for await (const chunk of res as AsyncIterable<string>) {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line) yield JSON.parse(line);
      }
    }
    if (pending.trim()) yield JSON.parse(pending);
  } finally {
    res.destroy();
  }
}
