// The finalizer helper: the 2x2 table of (has our finalizer, is being deleted).
//
//                      | not deleting                 | deleting
//   ---------------------------------------------------------------------------------------
//   no finalizer       | add it, then wait for the    | nothing to do: we never added it,
//                      | change it causes (no apply   | so we never acted on the object, or
//                      | before it is there)          | our cleanup already ran
//   has finalizer      | apply                        | cleanup; when it is done, remove it
//
// Guarantees (the same as kube-rs's finalizer()):
//  - `apply` runs only while our finalizer is on the object, so every object we acted on
//    gets a `cleanup` before it disappears;
//  - `cleanup` runs at least once, and possibly more than once (a crash or a conflict between
//    the cleanup and the finalizer's removal): it must be idempotent, and safe when `apply`
//    never ran or only half ran;
//  - the finalizer is removed only after `cleanup` returned `done`. A cleanup that returns
//    `requeueAfter` is not finished (e.g. waiting for a guest to shut down): the finalizer
//    stays and the key comes back. (kube-rs removes the finalizer after any Ok action.)
// Concurrency: both patches are JSON patches with a `test` op on the finalizers they change
// (kube-rs's approach). Testing metadata.resourceVersion instead would conflict on every
// unrelated write, such as other agents' status updates of a cluster-scoped object. A failed
// test is a FinalizerConflict, thrown, so the key is retried with backoff from a fresher cache.
// A delete racing the add: without finalizers the object is gone at once (our add gets 404,
// taken as done) and `apply` never ran; with other finalizers the API server refuses new
// finalizers on a deleting object (422), the retry then finds "deleting, no finalizer".
import type { Action } from './controller.js';
import { CONTENT_TYPE, KubeApiError, type KubeClient } from './kube-client.js';
import { objectKey, keyPath, type KubeObject, type ResourceDescription } from './resource.js';

export type FinalizerEvent<T extends KubeObject> =
  { kind: 'apply'; obj: T } | { kind: 'cleanup'; obj: T };

export type FinalizerStep = 'add' | 'apply' | 'cleanup' | 'nothing';

/** The table above as a pure function. */
export function finalizerStep(obj: KubeObject, finalizer: string): FinalizerStep {
  const has = (obj.metadata.finalizers ?? []).includes(finalizer);
  const deleting = Boolean(obj.metadata.deletionTimestamp);
  if (has) return deleting ? 'cleanup' : 'apply';
  return deleting ? 'nothing' : 'add';
}

type JsonPatchOp =
  { op: 'test' | 'add'; path: string; value: unknown } | { op: 'remove'; path: string };

export function addFinalizerPatch(obj: KubeObject, finalizer: string): JsonPatchOp[] {
  const current = obj.metadata.finalizers;
  if (!current || current.length === 0) {
    // `test` with null passes when the field is absent, and fails if someone added a list.
    return [
      { op: 'test', path: '/metadata/finalizers', value: null },
      { op: 'add', path: '/metadata/finalizers', value: [finalizer] },
    ];
  }
  // The API server does not de-duplicate finalizers: test the whole list so a concurrent add
  // of the same name fails instead of producing a duplicate.
  return [
    { op: 'test', path: '/metadata/finalizers', value: current },
    { op: 'add', path: '/metadata/finalizers/-', value: finalizer },
  ];
}

export function removeFinalizerPatch(obj: KubeObject, finalizer: string): JsonPatchOp[] {
  const index = (obj.metadata.finalizers ?? []).indexOf(finalizer);
  if (index < 0) return [];
  return [
    { op: 'test', path: `/metadata/finalizers/${index}`, value: finalizer },
    { op: 'remove', path: `/metadata/finalizers/${index}` },
  ];
}

export class FinalizerConflict extends Error {
  override name = 'FinalizerConflict';
}

// A qualified name as Kubernetes requires for finalizers: an optional DNS prefix and a name.
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/**
 * Runs one reconcile pass through the table above. `handle` gets `apply` or `cleanup`; its
 * Action is returned, except after adding the finalizer (the patch itself wakes the key).
 */
export async function reconcileWithFinalizer<T extends KubeObject>(
  client: KubeClient,
  resource: ResourceDescription,
  finalizer: string,
  obj: T,
  handle: (event: FinalizerEvent<T>) => Promise<Action>,
): Promise<Action> {
  if (!QUALIFIED_NAME.test(finalizer) || !finalizer.includes('/')) {
    throw new Error(
      `finalizer name '${finalizer}' must be a qualified name like 'example.com/cleanup'`,
    );
  }
  const step = finalizerStep(obj, finalizer);
  if (step === 'nothing') return { kind: 'done' };
  if (step === 'add') {
    await patchFinalizers(client, resource, obj, addFinalizerPatch(obj, finalizer), 'add');
    return { kind: 'done' };
  }
  if (step === 'apply') return handle({ kind: 'apply', obj });
  const action = await handle({ kind: 'cleanup', obj });
  if (action.kind !== 'done') return action;
  await patchFinalizers(client, resource, obj, removeFinalizerPatch(obj, finalizer), 'remove');
  return { kind: 'done' };
}

/**
 * Applies a finalizer patch from addFinalizerPatch/removeFinalizerPatch. Returns the patched
 * object, or undefined when there was nothing to patch or the object is gone (404).
 */
export async function patchFinalizers(
  client: KubeClient,
  resource: ResourceDescription,
  obj: KubeObject,
  patch: JsonPatchOp[],
  what: 'add' | 'remove',
): Promise<KubeObject | undefined> {
  if (patch.length === 0) return undefined;
  const key = objectKey(obj);
  try {
    return await client.request<KubeObject>({
      method: 'PATCH',
      path: keyPath(resource, key),
      body: patch,
      contentType: CONTENT_TYPE.jsonPatch,
    });
  } catch (err) {
    // The API server answers a failed JSON-patch `test` with a bare 422 Invalid.
    if (err instanceof KubeApiError && err.status === 422) {
      throw new FinalizerConflict(
        `could not ${what} the finalizer on ${resource.kind} ${key}: its finalizers changed since it was read (${err.message})`,
      );
    }
    // 404: the object is already gone; nothing was applied to it, or removal was the goal.
    if (err instanceof KubeApiError && err.status === 404) return undefined;
    throw err;
  }
}
