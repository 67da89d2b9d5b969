// When its libvirt connection is back, the agent looks at every object again: what changed
// while the daemon was down reaches it by no event. One look at once is not enough. A daemon
// that starts again serves clients while its QEMU driver is still reconnecting to the guests
// it had (a thread per guest, qemuProcessReconnect); a guest whose QEMU died meanwhile reads
// as running until that thread fails to reach its monitor and marks it shut off, and that
// change sends no event either. A look inside that window finds nothing to do, and the guest
// waits for the 10-minute resync. One CI run of test/e2e/chaos/libvirtd-down.test.ts (1 of 28
// on this machine) waited 60 s for a restart that never came, as such a look would make it
// (the run kept no daemon log to tell more). So the look is repeated once the daemon has had
// time to settle, and again later for a host with many guests to reconnect to. A look at a
// converged object writes nothing.

/** Delays after a reconnect at which every object is looked at again. */
export const SETTLE_LOOKS_MS: readonly number[] = [5_000, 30_000];

export interface ReconnectLooks {
  /** The connection is open again: look now, and again after each settle delay. */
  opened(): void;
  /** The connection is gone (or closed for good): the pending looks are dropped. */
  dropped(): void;
}

export function reconnectLooks(
  lookAtEverything: () => void,
  delays: readonly number[] = SETTLE_LOOKS_MS,
): ReconnectLooks {
  let pending: ReturnType<typeof setTimeout>[] = [];
  const dropped = () => {
    for (const t of pending) clearTimeout(t);
    pending = [];
  };
  return {
    opened() {
      dropped();
      lookAtEverything();
      pending = delays.map((ms) => {
        const t = setTimeout(() => {
          pending = pending.filter((p) => p !== t);
          lookAtEverything();
        }, ms);
        // Never what keeps the agent alive: stop() closes the connection, which drops them.
        t.unref();
        return t;
      });
    },
    dropped,
  };
}
