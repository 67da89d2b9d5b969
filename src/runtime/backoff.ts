// Retry delays. Pure: the random source and the clock are passed in.

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** Growth per failure. Default 2. */
  factor?: number;
  /**
   * Spread: each delay is drawn from [d * (1 - jitter), d]. Without it, every watch on a
   * restarted API server comes back in the same millisecond.
   */
  jitter?: number;
}

/** The delay before retry number `attempt` (0 = the first retry). */
export function backoffDelay(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const factor = policy.factor ?? 2;
  // Cap the exponent first: factor ** 1000 is Infinity and Infinity * 0 is NaN.
  const exp = Math.min(attempt, 64);
  const raw = Math.min(policy.maxMs, policy.initialMs * factor ** exp);
  const jitter = policy.jitter ?? 0;
  return Math.max(0, raw * (1 - jitter * random()));
}

/**
 * A token bucket: `ratePerSecond` tokens flow in, at most `burst` are kept. `reserve` takes a
 * token now or books a future one and says how long to wait for it, so callers delay work
 * instead of dropping it.
 */
export interface TokenBucket {
  reserve(now: number): number;
  /** Takes a token if one is available now; false means "over the limit". */
  tryTake(now: number): boolean;
}

export function tokenBucket(ratePerSecond: number, burst: number): TokenBucket {
  if (!(ratePerSecond > 0) || !(burst >= 1)) {
    throw new Error(
      `token bucket needs ratePerSecond > 0 and burst >= 1, got ${ratePerSecond}/${burst}`,
    );
  }
  let tokens = burst;
  let last: number | undefined;
  const refill = (now: number) => {
    if (last !== undefined && now > last)
      tokens = Math.min(burst, tokens + ((now - last) / 1000) * ratePerSecond);
    last = last === undefined ? now : Math.max(last, now);
  };
  return {
    reserve(now) {
      refill(now);
      tokens -= 1;
      return tokens >= 0 ? 0 : (-tokens / ratePerSecond) * 1000;
    },
    tryTake(now) {
      refill(now);
      if (tokens < 1) return false;
      tokens -= 1;
      return true;
    },
  };
}
