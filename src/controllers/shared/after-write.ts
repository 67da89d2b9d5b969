// Events that tell what a status write records (a condition that turned bad) are decided by
// comparing with the stored status, so they follow the write: a refused one is retried at the
// error pace and would send them again at each retry. But a write that failed without a refusal
// (no answer in time, the connection cut, a 5xx) may have been applied all the same: the next
// pass then compares with a stored status that already records the condition and never sends
// them. Those failures tell them too (at worst once more), so none is lost.
import { fieldsNotInSchema, KubeApiError } from '../../runtime/kube-client.js';

/**
 * Marks an error thrown after the status write it follows was applied (kube-writes: the node
 * entry written, its summary failing).
 */
export function afterStatusWritten<E>(err: E): E {
  if (err instanceof Error) Object.assign(err, { statusWritten: true });
  return err;
}

/**
 * False only when the API server answered that it refused the write: a 4xx, or the 500 of an
 * apply its CRD's schema cannot take (an agent newer than the installed CRDs, as such or as the
 * agent's OutdatedCrdError around it: crd-skew.ts), refused whole and at every retry.
 */
export function mayHaveApplied(err: unknown): boolean {
  if (err instanceof Error && (err as { statusWritten?: boolean }).statusWritten) return true;
  const answer = err instanceof Error && err.cause instanceof KubeApiError ? err.cause : err;
  if (fieldsNotInSchema(answer).length > 0) return false;
  return !(err instanceof KubeApiError && err.status < 500);
}

/**
 * Runs `write`, then `tell`; when `write` fails, `tell` too unless the write was refused.
 * `skipUnwritten`, for a write that answers undefined when it sent nothing (applyStatus): then
 * nothing is told either. Either the stored status already says it all, or this writer's last
 * write, made from the same cached copy, did and was told (a pass run again before the watch
 * brought that write back would otherwise tell its Warnings twice).
 */
export async function tellAfterWrite<T>(
  write: () => Promise<T>,
  tell: () => void,
  opts: { skipUnwritten?: boolean } = {},
): Promise<T> {
  let written: T;
  try {
    written = await write();
  } catch (err) {
    if (mayHaveApplied(err)) tell();
    throw err;
  }
  if (written !== undefined || !opts.skipUnwritten) tell();
  return written;
}
