// An agent newer than the installed CRDs (the image tag changed, the CRDs not re-applied: see
// docs/deploy.md, "Upgrading"). Every status apply that carries a field the old schema lacks is
// refused whole by the API server (HTTP 500 "field not declared in schema"), so those objects
// keep stale status until the CRDs are applied. What a user needs is the cause and the fix,
// said once, not a 500 at every retry of every object.
//
// Where it shows: the usual place for a lasting problem, a condition, is status, which is
// exactly what cannot be written. So, as operators on controller-runtime or kube-rs usually
// surface a cluster they cannot work with: one error log line per kind and field, the
// agent's readiness check failing with the same words (a rolling update of the DaemonSet
// stops at the first node instead of replacing every agent, and `kubectl get pods` shows
// it), and one Warning Event per object, which `kubectl describe` of the stale object shows.
import type { VirtKind } from '../api/generated/crds.js';
import { alreadyReported, fieldsNotInSchema } from '../runtime/kube-client.js';
import type { Logger } from '../runtime/log.js';
import type { KubeObject } from '../runtime/resource.js';

/** The reason of the Warning Event (the readiness check is named `crds`: agent.ts). */
export const CRD_OUTDATED = 'CRDOutdated';

/**
 * Longer than the per-key backoff's cap (5 min): an object still refused is retried, and
 * refused again, within it, so its problem does not lapse while it lasts. A deleted object is
 * dropped at once (forget); this is for a write nothing retries, should one be missed.
 */
const FORGET_AFTER_MS = 6 * 60_000;

/** Bounds the objects remembered as told; past it, some may get a second Event. */
const TOLD_LIMIT = 4096;

/** What the user reads: the kind, the fields and the fix. `newer` is who needs them. Pure. */
export function outdatedCrdMessage(
  kind: VirtKind,
  fields: readonly string[],
  newer = 'this agent',
): string {
  return `the installed CustomResourceDefinition for ${kind} is older than ${newer}: it lacks ${fields.join(', ')}; apply this version's CRDs: kubectl apply -k manifests/ (docs/deploy.md, Upgrading)`;
}

export class OutdatedCrdError extends Error {
  override name = 'OutdatedCrdError';
  constructor(
    readonly kind: VirtKind,
    readonly fields: readonly string[],
    options: ErrorOptions,
  ) {
    super(outdatedCrdMessage(kind, fields), options);
  }
}

export interface CrdSkew {
  /**
   * The error to throw for a failed write of obj by `writer` (a field manager: one object
   * takes several, e.g. a node's entry and the summary): an OutdatedCrdError, logged (once
   * per kind and fields) and recorded, when the CRD lacks fields the write carried; else err.
   */
  failed(kind: VirtKind, obj: KubeObject, writer: string, err: unknown): unknown;
  /**
   * A write of obj by `writer` went through, or was not needed (the object's status already
   * says what it would write): that write no longer holds the agent back.
   */
  written(obj: KubeObject, writer: string): void;
  /**
   * obj was deleted: its refused writes will never be made again, so they no longer hold the
   * agent back (without this, readiness waited for the lapse after the CRDs were applied).
   */
  forget(obj: KubeObject): void;
  /** The readiness check: true, or the outdated CRDs' messages. */
  readiness(): true | string;
}

export function createCrdSkew(opts: {
  log: Logger;
  /** A Warning Event on the object; called once per object and message. */
  event: (kind: VirtKind, obj: KubeObject, reason: string, message: string) => void;
  now?: () => number;
}): CrdSkew {
  const now = opts.now ?? Date.now;
  // message -> the writes (writer and object uid) whose last attempt it refused, and when it
  // last refused one.
  const refused = new Map<string, { writes: Set<string>; at: number }>();
  // The objects told about each message by an Event (message + uid).
  const told = new Set<string>();
  const lapse = () => {
    for (const [message, r] of refused)
      if (r.writes.size === 0 || now() - r.at > FORGET_AFTER_MS) refused.delete(message);
  };
  return {
    failed(kind, obj, writer, err) {
      const fields = fieldsNotInSchema(err);
      if (fields.length === 0) return err;
      const error = alreadyReported(new OutdatedCrdError(kind, fields, { cause: err }));
      lapse();
      let r = refused.get(error.message);
      if (!r) {
        r = { writes: new Set(), at: now() };
        refused.set(error.message, r);
        opts.log.error({ kind, fields }, error.message);
      }
      r.at = now();
      const uid = String(obj.metadata.uid);
      r.writes.add(`${writer}/${uid}`);
      if (!told.has(`${error.message}/${uid}`)) {
        if (told.size >= TOLD_LIMIT) told.clear();
        told.add(`${error.message}/${uid}`);
        opts.event(kind, obj, CRD_OUTDATED, error.message);
      }
      return error;
    },
    written(obj, writer) {
      const write = `${writer}/${String(obj.metadata.uid)}`;
      for (const r of refused.values()) r.writes.delete(write);
      lapse();
    },
    forget(obj) {
      const suffix = `/${String(obj.metadata.uid)}`;
      for (const r of refused.values())
        for (const write of r.writes) if (write.endsWith(suffix)) r.writes.delete(write);
      lapse();
    },
    readiness() {
      lapse();
      return refused.size === 0 ? true : [...refused.keys()].join('; ');
    },
  };
}
