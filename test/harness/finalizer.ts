// A finalizer pass over the runtime's patches, for the tests that drive the runtime without
// the agent (runtime/controller, runtime/quiet, deploy/agent-permissions). The operator's
// kinds go through withFinalizer (src/controllers/kit.ts) and the agent's writes instead.
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
import type { Action } from '../../src/runtime/controller.js';
import {
  addFinalizerPatch,
  finalizerStep,
  patchFinalizers,
  removeFinalizerPatch,
} from '../../src/runtime/finalizer.js';
import type { KubeClient } from '../../src/runtime/kube-client.js';
import type { KubeObject, ResourceDescription } from '../../src/runtime/resource.js';

export type FinalizerEvent<T extends KubeObject> =
  { kind: 'apply'; obj: T } | { kind: 'cleanup'; obj: T };

// A qualified name as Kubernetes requires for finalizers: an optional DNS prefix and a name.
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/**
 * Runs one reconcile pass through the finalizer table (src/runtime/finalizer.ts). `handle`
 * gets `apply` or `cleanup`; its Action is returned, except after adding the finalizer (the
 * patch itself wakes the key).
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
