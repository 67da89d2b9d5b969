// Storage operations in one pool run one at a time, by design: libvirt refuses some pool
// operations while a volume is being built ("pool has asynchronous jobs running", "volume is
// still being allocated"), and comparable tools fail when users create many volumes at once.
// The lock is per process (the agent's HostState) and keyed by pool name; different pools
// proceed in parallel.

/** Per pool, the promise the last queued operation settles. */
export type PoolLocks = Map<string, Promise<void>>;

/** Runs `operation` once every earlier operation on `pool` has settled; FIFO order. */
export async function withPoolLock<T>(
  tails: PoolLocks,
  pool: string,
  operation: () => Promise<T>,
): Promise<T> {
  const previous = tails.get(pool) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => (release = resolve));
  const tail = previous.then(() => mine);
  tails.set(pool, tail);
  await previous;
  try {
    return await operation();
  } finally {
    release();
    // The last holder forgets the pool so the map does not grow with every pool ever seen.
    if (tails.get(pool) === tail) tails.delete(pool);
  }
}

/** Pools with an operation running or waiting (for tests and metrics). */
export function lockedPools(tails: PoolLocks): string[] {
  return [...tails.keys()];
}
