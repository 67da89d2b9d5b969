// The probe and metrics endpoint: /healthz says the process is alive (the event loop answers),
// /readyz runs every registered readiness check (caches synced, lease held, and whatever the
// controllers add, such as "libvirt connected"), /metrics serves the runtime's Registry.
// The answer format follows kube-apiserver's: 'ok', or one [+]/[-] line per check.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** Resolves true or a string saying why not; a throw counts as not ready. */
export type ReadinessCheck = () => boolean | string | Promise<boolean | string>;

export interface ReadinessChecks {
  add(name: string, check: ReadinessCheck): void;
  remove(name: string): void;
  run(): Promise<{ ready: boolean; lines: string[] }>;
}

export function createReadinessChecks(timeoutMs = 5_000): ReadinessChecks {
  const checks = new Map<string, ReadinessCheck>();
  return {
    add(name, check) {
      if (checks.has(name))
        throw new Error(`a readiness check named '${name}' is already registered`);
      checks.set(name, check);
    },
    remove: (name) => void checks.delete(name),
    async run() {
      const results = await Promise.all(
        [...checks].map(async ([name, check]) => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          try {
            const verdict = await Promise.race([
              Promise.resolve(check()),
              new Promise<string>(
                (resolve) =>
                  (timer = setTimeout(
                    () => resolve(`no answer within ${timeoutMs} ms`),
                    timeoutMs,
                  )),
              ),
            ]);
            return verdict === true
              ? { name, ok: true }
              : { name, ok: false, why: verdict === false ? 'not ready' : verdict };
          } catch (err) {
            return { name, ok: false, why: err instanceof Error ? err.message : String(err) };
          } finally {
            clearTimeout(timer);
          }
        }),
      );
      return {
        ready: results.every((r) => r.ok),
        lines: results.map((r) => (r.ok ? `[+]${r.name} ok` : `[-]${r.name} failed: ${r.why}`)),
      };
    },
  };
}

export interface HealthServer {
  /** The bound port (useful with port 0). */
  port: number;
  url: string;
  close(): Promise<void>;
}

export async function startHealthServer(opts: {
  host?: string;
  port: number;
  /** What the listener is called in errors (default health): a second one serves metrics. */
  name?: string;
  /**
   * When `port` is taken, serve on any free one instead of failing: for a port the user did
   * not choose. Deciding at listen time leaves no window for another process to take it.
   */
  anyPortIfTaken?: boolean;
  registry: Registry;
  /** Only `run` is needed: a second listener can serve the runtime's checks. */
  readiness: Pick<ReadinessChecks, 'run'>;
}): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const verbose = url.searchParams.has('verbose');
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    switch (url.pathname) {
      case '/healthz':
      case '/livez':
        return send(200, 'ok');
      case '/readyz':
        void opts.readiness.run().then(
          ({ ready, lines }) => {
            if (ready && !verbose) return send(200, 'ok');
            send(
              ready ? 200 : 503,
              `${lines.join('\n')}\nreadyz check ${ready ? 'passed' : 'failed'}\n`,
            );
          },
          (err: unknown) => send(500, `readiness checks failed to run: ${String(err)}\n`),
        );
        return;
      case '/metrics':
        void opts.registry.metrics().then(
          (text) => send(200, text, opts.registry.contentType),
          (err: unknown) => send(500, `metrics failed: ${String(err)}\n`),
        );
        return;
      default:
        return send(404, 'not found: try /healthz, /readyz or /metrics\n');
    }
  });
  /** undefined once listening, else the listen error. */
  const listen = (port: number) =>
    new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve);
      server.listen(port, opts.host ?? '0.0.0.0', () => {
        server.off('error', resolve);
        resolve(undefined);
      });
    });
  let err = await listen(opts.port);
  if (err?.code === 'EADDRINUSE' && opts.anyPortIfTaken) err = await listen(0);
  if (err) {
    throw new Error(
      err.code === 'EADDRINUSE'
        ? `${opts.name ?? 'health'} port ${opts.port} is already in use; choose another`
        : `cannot serve ${opts.name ?? 'health'} endpoints on ${opts.host ?? '0.0.0.0'}:${opts.port}: ${err.message}`,
      { cause: err },
    );
  }
  const { port } = server.address() as AddressInfo;
  const host = opts.host && opts.host !== '0.0.0.0' ? opts.host : '127.0.0.1';
  return {
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
