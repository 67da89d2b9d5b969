// For the VirtualNetwork reconcile tests: objects in the real API server, and a view of the
// libvirt test driver's networks that tells whether a pass changed anything there.
import type { Connect } from '../../../../src/libvirt/connection.js';

/**
 * Every network the test driver holds, as text (name, UUID, state, autostart, XML): equal
 * before and after a pass means the pass changed nothing there.
 */
export async function networksSnapshot(conn: Connect): Promise<string[]> {
  const lines: string[] = [];
  for (const n of await conn.listAllNetworks()) {
    const persistent = await n.isPersistent();
    lines.push(
      `${n.getName()} ${n.getUUIDString()} active=${await n.isActive()} persistent=${persistent} ` +
        `autostart=${persistent ? await n.getAutostart() : false}`,
      await n.getXMLDesc(),
    );
  }
  return lines.sort();
}

/** Network lifecycle events (defined, started, stopped, undefined) as "name eventName". */
export async function recordNetworkEvents(
  conn: Connect,
): Promise<{ events: string[]; stop(): Promise<void> }> {
  const events: string[] = [];
  const id = await conn.networkEventLifecycleRegister((e) =>
    events.push(`${e.network.getName()} ${e.eventName}`),
  );
  return { events, stop: () => conn.networkEventDeregister(id) };
}
