// Byte figures that move by themselves (a pool's free space, a volume's allocation as the
// guest writes) are shown fresh at most once a minute per object. Every status write is a
// watch event that wakes the object's reconcile again; showing live figures would turn a
// busy disk into a loop of status writes. Held in this process only (the agent's HostState):
// after an agent restart the first pass shows fresh figures.

/** The figure last shown per object key, and when. */
export type ShownFigures = Map<string, { value: unknown; atMs: number }>;

const FIGURES_INTERVAL_MS = 60_000;

/** `value` if the figure for `key` was last refreshed `intervalMs` ago or more, else the last shown one. */
export function steadyFigure<T>(
  shown: ShownFigures,
  key: string,
  value: T,
  nowMs: number,
  intervalMs = FIGURES_INTERVAL_MS,
): T {
  const last = shown.get(key);
  if (last && nowMs - last.atMs < intervalMs && nowMs >= last.atMs) return last.value as T;
  shown.set(key, { value, atMs: nowMs });
  return value;
}

/** Drops the figures of a deleted object. */
export function forgetFigures(shown: ShownFigures, key: string): void {
  shown.delete(key);
}
