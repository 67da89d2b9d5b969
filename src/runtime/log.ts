// Structured JSON logs. One root logger per runtime; every controller, informer and reconcile
// gets a child carrying what it is about (controller name, object key), so each line can be
// filtered by object without parsing messages.
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Defaults to stdout. Tests pass a stream to read the lines back. */
  destination?: DestinationStream;
  /** Fields on every line, e.g. { node: 'host-a' }. */
  base?: Record<string, unknown>;
}

export function createLogger(opts: LogOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** An error as a log field: message and Kubernetes status when there is one, no stack noise. */
export function errorFields(err: unknown): Record<string, unknown> {
  // Duck-typed, not instanceof: errors from another realm (vm contexts, test runners) count too.
  if (typeof err === 'object' && err !== null && typeof (err as Error).message === 'string') {
    const { name, message, status } = err as Error & { status?: unknown };
    return {
      error: { type: name || 'Error', message, ...(status !== undefined ? { status } : {}) },
    };
  }
  return { error: { message: String(err) } };
}
