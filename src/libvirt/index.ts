// libvirt-operator/libvirt: an asynchronous, typed binding to libvirt's C API.
// See src/libvirt/README.md for the API reference.
import './events.js';

export { Connect } from './connection.js';
export type {
  ConnectionClosedEvent,
  DomainDeviceRemovedEvent,
  DomainLifecycleEvent,
  DomainRebootEvent,
  NetworkLifecycleEvent,
  NodeInfo,
  OpenOptions,
  StoragePoolLifecycleEvent,
  StoragePoolRefreshEvent,
} from './connection.js';
export { Domain } from './domain.js';
export type {
  DomainInfo,
  DomainInterface,
  DomainMemoryStats,
  DomainStateInfo,
  VcpuImpact,
  VcpuInfo,
} from './domain.js';
export type {
  DomainStatsBalloon,
  DomainStatsBlock,
  DomainStatsCpu,
  DomainStatsInterface,
  DomainStatsRecord,
  DomainStatsState,
  DomainStatsVcpu,
} from './stats.js';
export { DomainSnapshot } from './snapshot.js';
export { Network } from './network.js';
export type { NetworkDHCPLease } from './network.js';
export { StoragePool, StorageVol } from './storage.js';
export type { StoragePoolInfo, StorageVolInfo, TransferOptions } from './storage.js';
export { Stream } from './stream.js';
export { ReconnectingConnection } from './reconnecting.js';
export type { ConnectionState, ReconnectOptions, StateChange } from './reconnecting.js';
export { backoffDelay, defaultBackoff } from './backoff.js';
export type { Backoff } from './backoff.js';
export type { CallOptions, Impact } from './addon.js';
export {
  ErrorCode,
  ErrorDomain,
  ErrorLevel,
  LibvirtError,
  isAlreadyExists,
  isConnectionError,
  isInvalidXML,
  isLibvirtError,
  isNotFound,
  isOperationInvalid,
  isTimeout,
  isUnsupported,
} from './errors.js';
export type { LibvirtErrorDetails, ObjectKind } from './errors.js';
export * from './constants.js';
export {
  closeReasonName,
  domainEventDetailName,
  domainEventName,
  domainStateName,
  domainStateReasonName,
  networkEventName,
  storagePoolEventName,
  storagePoolStateName,
  storageVolTypeName,
  vcpuStateName,
} from './names.js';
export { bindingStats, getLibVersion, setThreadPoolSize } from './binding.js';
