// Readable names for libvirt's numeric states, reasons and event codes: the constant's name
// without its C prefix, lowercased (VIR_DOMAIN_SHUTOFF_DESTROYED -> 'destroyed'). A value
// newer than these tables reads as 'unknown(<n>)' rather than failing.
import {
  ConnectCloseReason,
  DomainBlockedReason,
  DomainCrashedReason,
  DomainEventCrashedDetail,
  DomainEventDefinedDetail,
  DomainEventPMSuspendedDetail,
  DomainEventResumedDetail,
  DomainEventShutdownDetail,
  DomainEventStartedDetail,
  DomainEventStoppedDetail,
  DomainEventSuspendedDetail,
  DomainEventType,
  DomainEventUndefinedDetail,
  DomainNostateReason,
  DomainPausedReason,
  DomainPMSuspendedReason,
  DomainRunningReason,
  DomainShutdownReason,
  DomainShutoffReason,
  DomainState,
  NetworkEventLifecycleType,
  StoragePoolEventLifecycleType,
  StoragePoolState,
  StorageVolType,
  VcpuState,
} from './constants.js';

type Table = Readonly<Record<string, number>>;

function namer(table: Table): (value: number) => string {
  const names = new Map<number, string>();
  for (const [key, value] of Object.entries(table)) {
    if (!names.has(value)) names.set(value, key.toLowerCase());
  }
  return (value) => names.get(value) ?? `unknown(${value})`;
}

export const domainStateName = namer(DomainState);

const reasonNamers: Record<number, (reason: number) => string> = {
  [DomainState.NOSTATE]: namer(DomainNostateReason),
  [DomainState.RUNNING]: namer(DomainRunningReason),
  [DomainState.BLOCKED]: namer(DomainBlockedReason),
  [DomainState.PAUSED]: namer(DomainPausedReason),
  [DomainState.SHUTDOWN]: namer(DomainShutdownReason),
  [DomainState.SHUTOFF]: namer(DomainShutoffReason),
  [DomainState.CRASHED]: namer(DomainCrashedReason),
  [DomainState.PMSUSPENDED]: namer(DomainPMSuspendedReason),
};

/** The reason code's meaning depends on the state it accompanies. */
export function domainStateReasonName(state: number, reason: number): string {
  const name = reasonNamers[state];
  return name ? name(reason) : `unknown(${reason})`;
}

export const domainEventName = namer(DomainEventType);

const detailNamers: Record<number, (detail: number) => string> = {
  [DomainEventType.DEFINED]: namer(DomainEventDefinedDetail),
  [DomainEventType.UNDEFINED]: namer(DomainEventUndefinedDetail),
  [DomainEventType.STARTED]: namer(DomainEventStartedDetail),
  [DomainEventType.SUSPENDED]: namer(DomainEventSuspendedDetail),
  [DomainEventType.RESUMED]: namer(DomainEventResumedDetail),
  [DomainEventType.STOPPED]: namer(DomainEventStoppedDetail),
  [DomainEventType.SHUTDOWN]: namer(DomainEventShutdownDetail),
  [DomainEventType.PMSUSPENDED]: namer(DomainEventPMSuspendedDetail),
  [DomainEventType.CRASHED]: namer(DomainEventCrashedDetail),
};

/** The detail code's meaning depends on the lifecycle event it accompanies. */
export function domainEventDetailName(event: number, detail: number): string {
  const name = detailNamers[event];
  return name ? name(detail) : `unknown(${detail})`;
}

export const networkEventName = namer(NetworkEventLifecycleType);
export const storagePoolEventName = namer(StoragePoolEventLifecycleType);
export const storagePoolStateName = namer(StoragePoolState);
export const storageVolTypeName = namer(StorageVolType);
export const closeReasonName = namer(ConnectCloseReason);
export const vcpuStateName = namer(VcpuState);
