// Status conditions in the metav1.Condition shape, with the semantics of apimachinery's
// meta.SetStatusCondition: lastTransitionTime moves only when the status changes. All pure: a
// new list is returned, the input is never changed, and the clock is passed in.
import type { Condition } from './generated/types.js';

export type { Condition } from './generated/types.js';

/** The condition types the API documents (api-v1alpha1.md). */
export const ConditionType = {
  Ready: 'Ready',
  Synced: 'Synced',
  RestartRequired: 'RestartRequired',
} as const;

export type ConditionStatus = Condition['status'];

/** What a controller decides; setCondition adds lastTransitionTime. */
export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
}

// The CRD schema's limits (those of metav1.Condition); a condition outside them would make the
// whole status patch fail, so they are enforced where conditions are made.
const REASON = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;
const TYPE =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/;
const MAX_MESSAGE = 32768;
const MAX_REASON = 1024;

/**
 * RFC 3339 in whole seconds, as metav1.Time is stored: a millisecond timestamp would read back
 * different from what was written and make every status comparison see a change.
 */
export function conditionTime(now: Date): string {
  return now.toISOString().replace(/\.\d+Z$/, 'Z');
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(
  conditions: readonly Condition[] | undefined,
  type: string,
): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

/**
 * The list with `update` set: replacing the condition of the same type (keeping its
 * lastTransitionTime when the status is unchanged) or appending it. Throws on a type or reason
 * the API server would refuse; a message longer than the schema allows is shortened.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  update: ConditionUpdate,
  now: Date,
): Condition[] {
  if (!TYPE.test(update.type) || update.type.length > 316) {
    throw new TypeError(
      `condition type '${update.type}' is not a CamelCase name the API server accepts`,
    );
  }
  if (!REASON.test(update.reason) || update.reason.length > MAX_REASON) {
    throw new TypeError(
      `condition reason '${update.reason}' must be CamelCase letters, digits, '_', ',' or ':'`,
    );
  }
  const message =
    update.message.length > MAX_MESSAGE
      ? `${update.message.slice(0, MAX_MESSAGE - 3)}...`
      : update.message;
  const list = conditions ?? [];
  const previous = findCondition(list, update.type);
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message,
    lastTransitionTime:
      previous && previous.status === update.status
        ? previous.lastTransitionTime
        : conditionTime(now),
    ...(update.observedGeneration === undefined
      ? {}
      : { observedGeneration: update.observedGeneration }),
  };
  return previous ? list.map((c) => (c.type === update.type ? next : c)) : [...list, next];
}

export function removeCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition[] {
  return (conditions ?? []).filter((c) => c.type !== type);
}

/** Whether two condition lists say the same thing (order of types does not matter). */
export function sameConditions(
  a: readonly Condition[] | undefined,
  b: readonly Condition[] | undefined,
): boolean {
  const x = a ?? [];
  const y = b ?? [];
  if (x.length !== y.length) return false;
  return x.every((c) => {
    const d = findCondition(y, c.type);
    return (
      d !== undefined &&
      d.status === c.status &&
      d.reason === c.reason &&
      d.message === c.message &&
      d.lastTransitionTime === c.lastTransitionTime &&
      d.observedGeneration === c.observedGeneration
    );
  });
}
