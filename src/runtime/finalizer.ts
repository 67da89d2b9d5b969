// Finalizers: the 2x2 table of (has our finalizer, is being deleted), and the patches that walk it.
//
//                      | not deleting                 | deleting
//   ---------------------------------------------------------------------------------------
//   no finalizer       | add it, then wait for the    | nothing to do: we never added it,
//                      | change it causes (no apply   | so we never acted on the object, or
//                      | before it is there)          | our cleanup already ran
//   has finalizer      | apply                        | cleanup; when it is done, remove it
//
// The agent's kinds walk it with withFinalizer (src/controllers/kit.ts), which goes on with
// the object the add returned instead of waiting, through these patches
// (src/agent/kube-writes.ts); tests of the bare runtime use test/harness/finalizer.ts.
//
// Concurrency: both patches are JSON patches with a `test` op on the finalizers they change
// (kube-rs's approach). Testing metadata.resourceVersion instead would conflict on every
// unrelated write, such as other agents' status updates of a cluster-scoped object. A failed
// test is a FinalizerConflict, thrown, so the key is retried with backoff from a fresher cache.
// A delete racing the add: without finalizers the object is gone at once (our add gets 404,
// taken as done) and `apply` never ran; with other finalizers the API server refuses new
// finalizers on a deleting object (422), the retry then finds "deleting, no finalizer".
import { CONTENT_TYPE, KubeApiError, type KubeClient } from './kube-client.js';
import { objectKey, keyPath, type KubeObject, type ResourceDescription } from './resource.js';

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
