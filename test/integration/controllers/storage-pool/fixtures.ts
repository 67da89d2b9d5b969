// Shared by the StoragePool and Volume reconcile tests: objects in the real API server, and a
// view of the libvirt host that tells whether a pass changed anything there.
import type { Connect } from '../../../../src/libvirt/connection.js';
import { sleep } from '../../../harness/kube-objects.js';

/**
 * Everything the test driver holds for pools and volumes, as text: equal before and after a
 * pass means the pass changed nothing on the host (no define, start, autostart, volume create,
 * delete or resize took effect).
 */
export async function hostSnapshot(conn: Connect): Promise<string[]> {
  const lines: string[] = [];
  for (const pool of await conn.listAllStoragePools()) {
    const active = await pool.isActive();
    lines.push(
      `pool ${pool.getName()} ${pool.getUUIDString()} active=${active} persistent=${await pool.isPersistent()} autostart=${await pool.getAutostart()}`,
      await pool.getXMLDesc(0),
    );
    if (!active) continue;
    for (const vol of await pool.listAllVolumes()) lines.push(await vol.getXMLDesc(0));
  }
  return lines.sort();
}

/** Pool lifecycle events (defined, started, stopped, undefined, ...) as "name eventName". */
export async function recordPoolEvents(
  conn: Connect,
): Promise<{ events: string[]; stop(): Promise<void> }> {
  const events: string[] = [];
  const id = await conn.storagePoolEventLifecycleRegister((e) =>
    events.push(`${e.pool.getName()} ${e.eventName}`),
  );
  return { events, stop: () => conn.storagePoolEventDeregister(id) };
}

/**
 * Reconciles `key` with a fresh snapshot until `until()` holds, whatever the passes return:
 * for states that requeue by design (a problem retried with backoff), where converge() would
 * wait for a final `done`.
 */
export async function reconcileUntil(
  ctx: { refresh(): Promise<void> },
  reconcile: (key: string, ctx: never) => Promise<unknown>,
  key: string,
  until: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    await ctx.refresh();
    try {
      await reconcile(key, ctx as never);
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (await until()) return;
    await sleep(50);
  }
  throw new Error(
    `${key}: condition not reached in ${timeoutMs} ms${lastError ? `; last error: ${String(lastError)}` : ''}`,
  );
}
