import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { ControlPlane } from '../../src/commands/local/control-plane.js';
import { startPrivateLibvirtd, type LibvirtDaemon } from '../../src/commands/local/libvirtd.js';
import { Connect } from '../../src/libvirt/index.js';
import { snapshotContext, type SnapshotContext } from './controller-context.js';
import { kube, type Kube } from './kube-objects.js';

export interface PrivateLibvirtd {
  daemon: LibvirtDaemon;
  /** Open on the daemon. restart() replaces it: read it again after one. */
  conn: Connect;
  /** The file's own temp directory (the agent's stateDir is its `state`), gone in afterAll. */
  tmp: string;
  k: Kube;
  /** One agent's context on the daemon; its libvirt() follows restart(). */
  ctx: SnapshotContext;
  /** Kills the daemon, starts it again on the same state and opens a new connection. */
  restart(): Promise<Connect>;
}

export interface PrivateLibvirtdOptions {
  controlPlane: () => ControlPlane;
  /** The node the context's agent runs as. */
  nodeName: string;
  /** Created before the tests when given. */
  namespace?: string;
  /** The temp directory's name before mkdtemp's random part, e.g. `lvo-pool-real-`. */
  tmpPrefix: string;
  /**
   * Runs once the temp directory exists, before the daemon starts: what the daemon must
   * inherit from this process (a PATH with a wrapper in front of a host command).
   */
  beforeStart?: (tmp: string) => Promise<void>;
  /**
   * Removes what the file's tests made on the daemon, even after a failed test; runs before
   * the connection closes. The daemon goes with its state afterwards anyway, but host files
   * and devices the objects point at do not.
   */
  cleanup?: (conn: Connect) => Promise<void>;
  /** libvirtd.conf for daemon settings a file needs; libvirt's defaults otherwise. */
  libvirtdConf?: string;
  /** Host paths the daemon must not see (startPrivateLibvirtd): a host lacking a package. */
  hide?: readonly string[];
}

/**
 * A private libvirtd (its own state and mount namespace, so that other files starting or
 * stopping the system daemon cannot disturb it) and an agent context on it, for the current
 * test file: started in beforeAll, taken down with the temp directory in afterAll. Call it
 * after useControlPlane, whose afterAll then runs after this one's. Call the getter inside
 * tests or hooks.
 */
export function usePrivateLibvirtd(opts: PrivateLibvirtdOptions): () => PrivateLibvirtd {
  let env: PrivateLibvirtd | undefined;
  let daemon: LibvirtDaemon | undefined;
  let conn: Connect | undefined;
  let tmp: string | undefined;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), opts.tmpPrefix));
    await opts.beforeStart?.(tmp);
    daemon = await startPrivateLibvirtd({ libvirtdConf: opts.libvirtdConf, hide: opts.hide });
    conn = await Connect.open(daemon.uri);
    const kubeConfig = opts.controlPlane().kubeConfig;
    const k = kube(kubeConfig);
    const ctx = snapshotContext({
      kubeConfig,
      conn,
      nodeName: opts.nodeName,
      stateDir: path.join(tmp, 'state'),
    });
    // After a restart the agent's passes use the new connection, as the agent's own would.
    Object.assign(ctx, { libvirt: () => env!.conn });
    if (opts.namespace !== undefined) await k.namespace(opts.namespace);
    const d = daemon;
    env = {
      daemon: d,
      conn,
      tmp,
      k,
      ctx,
      async restart() {
        await d.restart();
        await env!.conn.close().catch(() => undefined);
        conn = env!.conn = await Connect.open(d.uri);
        return conn;
      },
    };
  }, 120_000);
  afterAll(async () => {
    // A cleanup that throws still leaves no daemon, mount or temp directory behind.
    try {
      if (conn) await opts.cleanup?.(conn);
    } finally {
      await conn?.close().catch(() => undefined);
      try {
        await daemon?.stop();
      } finally {
        if (tmp) await rm(tmp, { recursive: true, force: true });
      }
    }
  }, 60_000);
  return () => {
    if (!env) throw new Error('the private libvirtd did not start; see the beforeAll error above');
    return env;
  };
}
