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
  /** kstatus: the operator is still converging the observed generation (InProgress). */
  Reconciling: 'Reconciling',
  /** kstatus: only a user can fix what stops the operator (Failed). */
  Stalled: 'Stalled',
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

/**
 * Every Ready=False reason the controllers use, classified once: `stalled` when only a user can
 * fix it (the spec or something on the host outside the operator's objects must change), so
 * kstatus reports Failed instead of waiting for a deadline; `transient` when the operator is
 * still working or waiting on something that resolves by itself (retried with backoff), so
 * kstatus reports InProgress. A reason not listed counts as transient: the safe side, since a
 * Stalled verdict makes GitOps tools stop waiting.
 */
export const REASON_CLASSES: Readonly<Record<string, 'stalled' | 'transient'>> = {
  // Something else on the host holds the object's identity; never adopted or touched.
  NameConflict: 'stalled',
  UUIDConflict: 'stalled',
  PathConflict: 'stalled',
  // spec.path inside or around another pool's directory (one would list the other as a volume).
  PathNested: 'stalled',
  PathNotDirectory: 'stalled',
  PathForbidden: 'stalled',
  // spec.path would be made on a read-only file system.
  PathReadOnly: 'stalled',
  // A pool's directory was on a mounted file system that is not mounted now: someone mounts it.
  NotMounted: 'stalled',
  MACAddressInUse: 'stalled',
  // A writable disk on a Volume that others are layered on: the user attaches it read-only.
  VolumeHasOverlays: 'stalled',
  // The spec asks for what this host or libvirt cannot do, or is inconsistent with it.
  Unsupported: 'stalled',
  InvalidAddress: 'stalled',
  BridgeNotFound: 'stalled',
  SubnetConflict: 'stalled',
  BridgeInUse: 'stalled',
  // spec.nodeSelector selects none of the cluster's Nodes: no agent will ever act on it.
  NoMatchingNodes: 'stalled',
  // A machine's network whose spec.nodeSelector does not select the machine's node.
  NetworkNotOnNode: 'stalled',
  // A machine's network that its agent reports Stalled on the machine's node (DefineRefused,
  // StartRefused, BridgeInUse, ...): the network needs a user before the machine can start.
  NetworkFailed: 'stalled',
  // A machine's Volume, or a Volume's clone or backing source, on another node: spec.nodeName
  // is immutable on both.
  VolumeNotOnNode: 'stalled',
  SourceNotOnNode: 'stalled',
  // A Volume's pool whose spec.nodeSelector does not select the Volume's node.
  PoolNotOnNode: 'stalled',
  // A Volume created in a pool being deleted: the pool's deletion waits for the Volume and the
  // Volume for the pool, so nothing moves until a user deletes the Volume.
  PoolDeleting: 'stalled',
  // A deleted machine's restore claimed by another node's agent (a host that died and was not
  // forgotten): the policy refuses this agent its delete, so only an admin ends the wait.
  RestoreClaimedElsewhere: 'stalled',
  // A guest libvirt paused on a disk error, a watchdog or a panic: nothing resumes it.
  PausedByError: 'stalled',
  // A machine whose virt.dev/paused value is neither "true" nor "false": left as it is.
  InvalidAnnotation: 'stalled',
  // A guest that crashed under runStrategy Manual: nothing starts it again.
  StoppedByCrash: 'stalled',
  // A start that failed under runStrategy Manual (libvirt's shut-off reason `failed`): nothing
  // tries again.
  StoppedByFailedStart: 'stalled',
  ResizeUnsupported: 'stalled',
  // A grow qemu-img refuses for the file as it is (a qcow2 v2 image holding internal
  // snapshots): retried with backoff, but only a user deleting the snapshots or upgrading the
  // image helps.
  ResizeRefused: 'stalled',
  // A Volume's spec.capacity beyond the largest file its pool's file system takes: capacity
  // cannot shrink, so only re-creating the Volume (smaller, or in another pool) helps.
  CapacityTooLarge: 'stalled',
  ShrinkUnsupported: 'stalled',
  // A snapshot is taken once and a restore runs once: a failed one is final (Failed phase),
  // and only deleting and re-creating the object gets another try.
  SnapshotFailed: 'stalled',
  SnapshotMissing: 'stalled',
  RevertFailed: 'stalled',
  // A restore whose domain was removed mid-revert: whether it reverted cannot be told.
  DomainMissing: 'stalled',
  // A restore naming another machine's snapshot: both names are immutable.
  SnapshotOfAnotherMachine: 'stalled',
  // The downloaded image is not the one the spec pins: retrying fetches the same bytes.
  ChecksumMismatch: 'stalled',
  FormatMismatch: 'stalled',
  // A machine whose start libvirt refuses for its definition (a configuration this host's
  // QEMU cannot run): retried with backoff, but only a change of the spec or the host helps.
  StartRefused: 'stalled',
  // The same refusal at define: the host's libvirt or QEMU cannot take this definition (more
  // vCPUs than its machine type allows, a network or pool name too long for libvirt's files,
  // say). Retried with backoff, like StartRefused. Networks and pools use both too (a network
  // start that dnsmasq refuses for its configuration is StartRefused).
  DefineRefused: 'stalled',
  // A StoragePool's spec.path with a segment longer than the node's file system takes (255
  // bytes): libvirt cannot make or open the directory, and spec.path is immutable.
  PathTooLong: 'stalled',
  // An image that is not self-contained or is cut short, though its digest is the pinned one.
  InvalidImage: 'stalled',
  // A base Volume's file gone from under overlays that have files: a new blank file would
  // become their backing file, so only a user putting it back or deleting them helps.
  BaseFileMissing: 'stalled',
  // The import's server answers a 4xx other than 408/429: it refuses that URL, and will until
  // someone publishes the image there or re-creates the Volume (retried with backoff meanwhile).
  SourceRefused: 'stalled',
  // Waiting on other objects, on libvirt or on the guest: resolves without a user.
  NotCreated: 'transient',
  Creating: 'transient',
  Importing: 'transient',
  // A transfer that may pass by itself (5xx, 408, 429, refused connection, cut stream) and a
  // file libvirt could not make for a reason that may (no space left): retried with backoff.
  ImportFailed: 'transient',
  CreateFailed: 'transient',
  ResizeFailed: 'transient',
  // A grow of a file running machines hold read-only: made once they stop or detach it.
  ReadOnlyInUse: 'transient',
  BuildFailed: 'transient',
  DefineFailed: 'transient',
  StartFailed: 'transient',
  CloudInitFailed: 'transient',
  VolumeNotReady: 'transient',
  NetworkNotReady: 'transient',
  PoolNotReady: 'transient',
  SourceNotReady: 'transient',
  // The source of a copy is a running machine's disk: waits for the machine to stop.
  SourceInUse: 'transient',
  // libvirt is still filling the file an earlier agent process started copying into.
  CopyInProgress: 'transient',
  // A checkpoint waiting for room for the guest's memory in its disk's file system: freeing
  // space ends it, without a user changing any object.
  InsufficientSpace: 'transient',
  // An imported image is in the file; it is grown to spec.capacity in the next pass.
  Resizing: 'transient',
  NodeUnknown: 'transient',
  Inactive: 'transient',
  NotRunning: 'transient',
  Stopping: 'transient',
  // A VirtualMachine being deleted whose domain is still there: the removal goes on by itself.
  Deleting: 'transient',
  Restarting: 'transient',
  Crashed: 'transient',
  Paused: 'transient',
  // A guest suspended to RAM by its OS: it wakes by itself (a timer, a key, Wake-on-LAN).
  GuestSuspended: 'transient',
  InUse: 'transient',
  VolumesRemain: 'transient',
  NodesNotReady: 'transient',
  NoNodes: 'transient',
  VirtualMachineNotDefined: 'transient',
  // A snapshot or restore of a machine that does not exist (yet): a GitOps tool may apply it
  // a moment before the machine, and Stalled would fail its health check for good.
  VirtualMachineNotFound: 'transient',
  SnapshotInProgress: 'transient',
  SnapshotNotFound: 'transient',
  SnapshotNotReady: 'transient',
  AnotherRestoreInProgress: 'transient',
  // A snapshot waits for a restore of its machine to finish.
  RestoreInProgress: 'transient',
  // A snapshot of a machine that has not run yet waits for the start its runStrategy makes.
  WaitingForFirstStart: 'transient',
  Reverting: 'transient',
  // Synced=False of a running machine while the guest has not released a detached device
  // (Reconciling comes from Synced there, Ready stays True): the detach is retried.
  Detaching: 'transient',
  DetachPending: 'transient',
};

/** Whether a Ready=False reason needs a user (kstatus Stalled) rather than time. */
export function isStalledReason(reason: string): boolean {
  return REASON_CLASSES[reason] === 'stalled';
}

/**
 * The kstatus conditions that go with a Ready condition, for every kind (one function so new
 * kinds get the same semantics): Ready=True -> neither Reconciling nor Stalled; Ready=False
 * with a stalled reason -> Stalled=True; any other Ready=False -> Reconciling=True. Both types
 * are always present (False when they do not apply) and carry Ready's reason and message when
 * True, so `kubectl wait --for=condition=Stalled` and Argo CD read the cause directly.
 */
export function progressConditions(
  ready: Pick<ConditionUpdate, 'status' | 'reason' | 'message' | 'observedGeneration'>,
): [ConditionUpdate, ConditionUpdate] {
  const gen =
    ready.observedGeneration === undefined ? {} : { observedGeneration: ready.observedGeneration };
  const stalled = ready.status === 'False' && isStalledReason(ready.reason);
  const reconciling = ready.status !== 'True' && !stalled;
  const done = {
    reason: ready.status === 'True' ? 'Ready' : ready.reason,
    message: ready.status === 'True' ? 'the observed generation is converged' : ready.message,
  };
  return [
    {
      type: ConditionType.Reconciling,
      status: reconciling ? 'True' : 'False',
      ...(reconciling ? { reason: ready.reason, message: ready.message } : done),
      ...gen,
    },
    {
      type: ConditionType.Stalled,
      status: stalled ? 'True' : 'False',
      ...(stalled ? { reason: ready.reason, message: ready.message } : done),
      ...gen,
    },
  ];
}

/** `conditions` with Reconciling and Stalled set from its Ready condition (if it has one). */
export function withProgressConditions(conditions: readonly Condition[], now: Date): Condition[] {
  const ready = findCondition(conditions, ConditionType.Ready);
  if (!ready) return [...conditions];
  let out = [...conditions];
  for (const u of progressConditions(ready)) out = setCondition(out, u, now);
  return out;
}
