// Reconnect delays: exponential with a cap and jitter. Pure, so it is unit-tested alone.

export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Fraction of each delay randomised, so many agents do not reconnect in lockstep. */
  jitter: number;
}

export const defaultBackoff: Backoff = { initialMs: 250, maxMs: 10_000, factor: 2, jitter: 0.2 };

/** The delay before reconnect attempt `attempt` (0-based); `random` in [0, 1). */
export function backoffDelay(backoff: Backoff, attempt: number, random: number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** attempt);
  return Math.round(base * (1 - backoff.jitter + 2 * backoff.jitter * random));
}
