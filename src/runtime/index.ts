// The controller runtime's public surface. Generic: it knows neither libvirt nor our kinds.
export {
  startRuntime,
  stopOnSignals,
  type Runtime,
  type RuntimeOptions,
  type InformerSelection,
} from './runtime.js';
export {
  createController,
  done,
  requeueAfter,
  PermanentError,
  specOrMetadataChanged,
  type Action,
  type Controller,
  type ControllerOptions,
  type Reconcile,
  type ReconcileContext,
  type UpdatePredicate,
} from './controller.js';
export { startInformer, type Informer, type ChangeHandler } from './informer.js';
export {
  createObjectCache,
  type ObjectCacheReader,
  type CacheChange,
  type IndexFunction,
} from './cache.js';
export { runReflector, DEFAULT_WATCH_BACKOFF, type ReflectorOptions } from './reflector.js';
export {
  createWorkQueue,
  DEFAULT_KEY_BACKOFF,
  type WorkQueue,
  type WorkQueueOptions,
} from './work-queue.js';
export { finalizerStep, FinalizerConflict, type FinalizerStep } from './finalizer.js';
export {
  createStatusWriter,
  nodeFieldManager,
  type StatusWriter,
  type StatusWriterOptions,
} from './status-writer.js';
export { settleTransitionTimes, type ListMapKeys, type Condition } from './status-diff.js';
export { createEventRecorder, type EventRecorder, type EventNote } from './events.js';
export { startLease, leaseDecision, type LeaseHandle, type LeaseOptions } from './lease.js';
export { createRuntimeMetrics, type RuntimeMetrics } from './metrics.js';
export {
  startHealthServer,
  createReadinessChecks,
  type HealthServer,
  type ReadinessCheck,
} from './health.js';
export { createLogger, errorFields, type Logger } from './log.js';
export {
  createKubeClient,
  KubeApiError,
  CONTENT_TYPE,
  isNotFound,
  isConflict,
  isGone,
  isAlreadyExists,
  type KubeClient,
} from './kube-client.js';
export {
  objectKey,
  parseKey,
  resourcePath,
  keyPath,
  apiVersionOf,
  referenceTo,
  type ResourceDescription,
  type KubeObject,
  type ObjectMeta,
  type ObjectReference,
} from './resource.js';
export { systemClock, sleep, type Clock } from './clock.js';
