// libvirt 9.0 enum values used as flags and states, named without their C prefix
// (VIR_DOMAIN_XML_INACTIVE is DomainXMLFlags.INACTIVE). Taken from the libvirt headers.

/** Connect.open flags. */
export const ConnectFlags = {
  RO: 1,
  NO_ALIASES: 2,
} as const;

/** Why a connection closed (close callback). */
export const ConnectCloseReason = {
  ERROR: 0,
  EOF: 1,
  KEEPALIVE: 2,
  CLIENT: 3,
} as const;

/** Filters for listAllDomains. */
export const ConnectListAllDomainsFlags = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  RUNNING: 16,
  PAUSED: 32,
  SHUTOFF: 64,
  OTHER: 128,
  MANAGEDSAVE: 256,
  NO_MANAGEDSAVE: 512,
  AUTOSTART: 1024,
  NO_AUTOSTART: 2048,
  HAS_SNAPSHOT: 4096,
  NO_SNAPSHOT: 8192,
  HAS_CHECKPOINT: 16384,
  NO_CHECKPOINT: 32768,
} as const;

/** Filters for listAllNetworks. */
export const ConnectListAllNetworksFlags = {
  INACTIVE: 1,
  ACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  AUTOSTART: 16,
  NO_AUTOSTART: 32,
} as const;

/** Filters for listAllStoragePools. */
export const ConnectListAllStoragePoolsFlags = {
  INACTIVE: 1,
  ACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  AUTOSTART: 16,
  NO_AUTOSTART: 32,
  DIR: 64,
  FS: 128,
  NETFS: 256,
  LOGICAL: 512,
  DISK: 1024,
  ISCSI: 2048,
  SCSI: 4096,
  MPATH: 8192,
  RBD: 16384,
  SHEEPDOG: 32768,
  GLUSTER: 65536,
  ZFS: 131072,
  VSTORAGE: 262144,
  ISCSI_DIRECT: 524288,
} as const;

/** Domain states (getState, getInfo). */
export const DomainState = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;

export const DomainNostateReason = {
  UNKNOWN: 0,
} as const;

export const DomainRunningReason = {
  UNKNOWN: 0,
  BOOTED: 1,
  MIGRATED: 2,
  RESTORED: 3,
  FROM_SNAPSHOT: 4,
  UNPAUSED: 5,
  MIGRATION_CANCELED: 6,
  SAVE_CANCELED: 7,
  WAKEUP: 8,
  CRASHED: 9,
  POSTCOPY: 10,
  POSTCOPY_FAILED: 11,
} as const;

export const DomainBlockedReason = {
  UNKNOWN: 0,
} as const;

export const DomainPausedReason = {
  UNKNOWN: 0,
  USER: 1,
  MIGRATION: 2,
  SAVE: 3,
  DUMP: 4,
  IOERROR: 5,
  WATCHDOG: 6,
  FROM_SNAPSHOT: 7,
  SHUTTING_DOWN: 8,
  SNAPSHOT: 9,
  CRASHED: 10,
  STARTING_UP: 11,
  POSTCOPY: 12,
  POSTCOPY_FAILED: 13,
} as const;

export const DomainShutdownReason = {
  UNKNOWN: 0,
  USER: 1,
} as const;

export const DomainShutoffReason = {
  UNKNOWN: 0,
  SHUTDOWN: 1,
  DESTROYED: 2,
  CRASHED: 3,
  MIGRATED: 4,
  SAVED: 5,
  FAILED: 6,
  FROM_SNAPSHOT: 7,
  DAEMON: 8,
} as const;

export const DomainCrashedReason = {
  UNKNOWN: 0,
  PANICKED: 1,
} as const;

export const DomainPMSuspendedReason = {
  UNKNOWN: 0,
} as const;

/** Domain getXMLDesc flags. */
export const DomainXMLFlags = {
  SECURE: 1,
  INACTIVE: 2,
  UPDATE_CPU: 4,
  MIGRATABLE: 8,
} as const;

/** Live/config selector shared by many domain calls. */
export const DomainModificationImpact = {
  CURRENT: 0,
  LIVE: 1,
  CONFIG: 2,
} as const;

/** Domain setMemoryFlags flags. */
export const DomainMemoryModFlags = {
  CURRENT: 0,
  LIVE: 1,
  CONFIG: 2,
  MAXIMUM: 4,
} as const;

/** Domain setVcpusFlags / getVcpusFlags flags. */
export const DomainVcpuFlags = {
  CURRENT: 0,
  LIVE: 1,
  CONFIG: 2,
  MAXIMUM: 4,
  GUEST: 8,
  HOTPLUGGABLE: 16,
} as const;

/** virVcpuState: what a vCPU is doing (getVcpus). */
export const VcpuState = {
  OFFLINE: 0,
  RUNNING: 1,
  BLOCKED: 2,
} as const;

/** Domain undefine flags. */
export const DomainUndefineFlags = {
  MANAGED_SAVE: 1,
  SNAPSHOTS_METADATA: 2,
  NVRAM: 4,
  KEEP_NVRAM: 8,
  CHECKPOINTS_METADATA: 16,
  TPM: 32,
  KEEP_TPM: 64,
} as const;

/** Domain shutdown flags. */
export const DomainShutdownFlags = {
  DEFAULT: 0,
  ACPI_POWER_BTN: 1,
  GUEST_AGENT: 2,
  INITCTL: 4,
  SIGNAL: 8,
  PARAVIRT: 16,
} as const;

/** Domain reboot flags. */
export const DomainRebootFlags = {
  DEFAULT: 0,
  ACPI_POWER_BTN: 1,
  GUEST_AGENT: 2,
  INITCTL: 4,
  SIGNAL: 8,
  PARAVIRT: 16,
} as const;

/** Domain destroy flags. */
export const DomainDestroyFlags = {
  DEFAULT: 0,
  GRACEFUL: 1,
  REMOVE_LOGS: 2,
} as const;

/** Domain create / createDomainXML flags. */
export const DomainCreateFlags = {
  NONE: 0,
  START_PAUSED: 1,
  START_AUTODESTROY: 2,
  START_BYPASS_CACHE: 4,
  START_FORCE_BOOT: 8,
  START_VALIDATE: 16,
  START_RESET_NVRAM: 32,
} as const;

/** defineDomainXML flags. */
export const DomainDefineFlags = {
  VALIDATE: 1,
} as const;

/** Where interfaceAddresses looks. */
export const DomainInterfaceAddressesSource = {
  LEASE: 0,
  AGENT: 1,
  ARP: 2,
} as const;

/** getMetadata / setMetadata type. */
export const DomainMetadataType = {
  DESCRIPTION: 0,
  TITLE: 1,
  ELEMENT: 2,
} as const;

/** attach/detach/updateDeviceFlags flags. */
export const DomainDeviceModifyFlags = {
  CURRENT: 0,
  LIVE: 1,
  CONFIG: 2,
  FORCE: 4,
} as const;

/** blockResize flags. */
export const DomainBlockResizeFlags = {
  BYTES: 1,
} as const;

/** Domain event families (LIFECYCLE, REBOOT and DEVICE_REMOVED are delivered). */
export const DomainEventID = {
  LIFECYCLE: 0,
  REBOOT: 1,
  RTC_CHANGE: 2,
  WATCHDOG: 3,
  IO_ERROR: 4,
  GRAPHICS: 5,
  IO_ERROR_REASON: 6,
  CONTROL_ERROR: 7,
  BLOCK_JOB: 8,
  DISK_CHANGE: 9,
  TRAY_CHANGE: 10,
  PMWAKEUP: 11,
  PMSUSPEND: 12,
  BALLOON_CHANGE: 13,
  PMSUSPEND_DISK: 14,
  DEVICE_REMOVED: 15,
  BLOCK_JOB_2: 16,
  TUNABLE: 17,
  AGENT_LIFECYCLE: 18,
  DEVICE_ADDED: 19,
  MIGRATION_ITERATION: 20,
  JOB_COMPLETED: 21,
  DEVICE_REMOVAL_FAILED: 22,
  METADATA_CHANGE: 23,
  BLOCK_THRESHOLD: 24,
  MEMORY_FAILURE: 25,
  MEMORY_DEVICE_SIZE_CHANGE: 26,
} as const;

/** Domain lifecycle event types. */
export const DomainEventType = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

export const DomainEventDefinedDetail = {
  ADDED: 0,
  UPDATED: 1,
  RENAMED: 2,
  FROM_SNAPSHOT: 3,
} as const;

export const DomainEventUndefinedDetail = {
  REMOVED: 0,
  RENAMED: 1,
} as const;

export const DomainEventStartedDetail = {
  BOOTED: 0,
  MIGRATED: 1,
  RESTORED: 2,
  FROM_SNAPSHOT: 3,
  WAKEUP: 4,
} as const;

export const DomainEventSuspendedDetail = {
  PAUSED: 0,
  MIGRATED: 1,
  IOERROR: 2,
  WATCHDOG: 3,
  RESTORED: 4,
  FROM_SNAPSHOT: 5,
  API_ERROR: 6,
  POSTCOPY: 7,
  POSTCOPY_FAILED: 8,
} as const;

export const DomainEventResumedDetail = {
  UNPAUSED: 0,
  MIGRATED: 1,
  FROM_SNAPSHOT: 2,
  POSTCOPY: 3,
  POSTCOPY_FAILED: 4,
} as const;

export const DomainEventStoppedDetail = {
  SHUTDOWN: 0,
  DESTROYED: 1,
  CRASHED: 2,
  MIGRATED: 3,
  SAVED: 4,
  FAILED: 5,
  FROM_SNAPSHOT: 6,
} as const;

export const DomainEventShutdownDetail = {
  FINISHED: 0,
  GUEST: 1,
  HOST: 2,
} as const;

export const DomainEventPMSuspendedDetail = {
  MEMORY: 0,
  DISK: 1,
} as const;

export const DomainEventCrashedDetail = {
  PANICKED: 0,
  CRASHLOADED: 1,
} as const;

/** Address family in interfaceAddresses and DHCP leases. */
export const IPAddrType = {
  IPV4: 0,
  IPV6: 1,
} as const;

/** Network getXMLDesc flags. */
export const NetworkXMLFlags = {
  INACTIVE: 1,
} as const;

/** createNetworkXML flags. */
export const NetworkCreateFlags = {
  VALIDATE: 1,
} as const;

/** defineNetworkXML flags. */
export const NetworkDefineFlags = {
  VALIDATE: 1,
} as const;

/** Network update command. */
export const NetworkUpdateCommand = {
  NONE: 0,
  MODIFY: 1,
  DELETE: 2,
  ADD_LAST: 3,
  ADD_FIRST: 4,
} as const;

/** Network update section. */
export const NetworkUpdateSection = {
  NONE: 0,
  BRIDGE: 1,
  DOMAIN: 2,
  IP: 3,
  IP_DHCP_HOST: 4,
  IP_DHCP_RANGE: 5,
  FORWARD: 6,
  FORWARD_INTERFACE: 7,
  FORWARD_PF: 8,
  PORTGROUP: 9,
  DNS_HOST: 10,
  DNS_TXT: 11,
  DNS_SRV: 12,
} as const;

/** Network update flags. */
export const NetworkUpdateFlags = {
  CURRENT: 0,
  LIVE: 1,
  CONFIG: 2,
} as const;

export const NetworkEventID = {
  LIFECYCLE: 0,
} as const;

/** Network lifecycle event types. */
export const NetworkEventLifecycleType = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  STOPPED: 3,
} as const;

/** Storage pool states (getInfo). */
export const StoragePoolState = {
  INACTIVE: 0,
  BUILDING: 1,
  RUNNING: 2,
  DEGRADED: 3,
  INACCESSIBLE: 4,
} as const;

export const StoragePoolBuildFlags = {
  NEW: 0,
  REPAIR: 1,
  RESIZE: 2,
  NO_OVERWRITE: 4,
  OVERWRITE: 8,
} as const;

export const StoragePoolCreateFlags = {
  NORMAL: 0,
  WITH_BUILD: 1,
  WITH_BUILD_OVERWRITE: 2,
  WITH_BUILD_NO_OVERWRITE: 4,
} as const;

export const StoragePoolDeleteFlags = {
  NORMAL: 0,
  ZEROED: 1,
} as const;

export const StoragePoolDefineFlags = {
  VALIDATE: 1,
} as const;

/** Pool getXMLDesc flags. */
export const StorageXMLFlags = {
  INACTIVE: 1,
} as const;

export const StoragePoolEventID = {
  LIFECYCLE: 0,
  REFRESH: 1,
} as const;

/** Storage pool lifecycle event types. */
export const StoragePoolEventLifecycleType = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  STOPPED: 3,
  CREATED: 4,
  DELETED: 5,
} as const;

/** Volume types (getInfo). */
export const StorageVolType = {
  FILE: 0,
  BLOCK: 1,
  DIR: 2,
  NETWORK: 3,
  NETDIR: 4,
  PLOOP: 5,
} as const;

export const StorageVolCreateFlags = {
  PREALLOC_METADATA: 1,
  REFLINK: 2,
  VALIDATE: 4,
} as const;

export const StorageVolDeleteFlags = {
  NORMAL: 0,
  ZEROED: 1,
  WITH_SNAPSHOTS: 2,
} as const;

export const StorageVolResizeFlags = {
  ALLOCATE: 1,
  DELTA: 2,
  SHRINK: 4,
} as const;

export const StorageVolUploadFlags = {
  SPARSE_STREAM: 1,
} as const;

export const StorageVolDownloadFlags = {
  SPARSE_STREAM: 1,
} as const;

/** virDomainStatsTypes: the groups virConnectGetAllDomainStats / virDomainListGetStats return. */
export const DomainStatsTypes = {
  STATE: 1,
  CPU_TOTAL: 2,
  BALLOON: 4,
  VCPU: 8,
  INTERFACE: 16,
  BLOCK: 32,
  PERF: 64,
  IOTHREAD: 128,
  MEMORY: 256,
  DIRTYRATE: 512,
  VM: 1024,
} as const;

/** virConnectGetAllDomainStatsFlags (the ListGetStats flags are the last four). */
export const ConnectGetAllDomainStatsFlags = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  RUNNING: 16,
  PAUSED: 32,
  SHUTOFF: 64,
  OTHER: 128,
  NOWAIT: 1 << 29,
  BACKING: 1 << 30,
  ENFORCE_STATS: 2 ** 31,
} as const;

/** virDomainSnapshotCreateXML flags. */
export const DomainSnapshotCreateFlags = {
  REDEFINE: 1,
  CURRENT: 2,
  NO_METADATA: 4,
  HALT: 8,
  DISK_ONLY: 16,
  REUSE_EXT: 32,
  QUIESCE: 64,
  ATOMIC: 128,
  LIVE: 256,
  VALIDATE: 512,
} as const;

/** virDomainSnapshotGetXMLDesc flags. */
export const DomainSnapshotXMLFlags = {
  SECURE: 1,
} as const;

/** Filters for listAllSnapshots and numOfSnapshots. DESCENDANTS shares ROOTS' bit (children calls). */
export const DomainSnapshotListFlags = {
  ROOTS: 1,
  DESCENDANTS: 1,
  METADATA: 2,
  LEAVES: 4,
  NO_LEAVES: 8,
  NO_METADATA: 16,
  INACTIVE: 32,
  ACTIVE: 64,
  DISK_ONLY: 128,
  INTERNAL: 256,
  EXTERNAL: 512,
  TOPOLOGICAL: 1024,
} as const;

/** virDomainRevertToSnapshot flags. */
export const DomainSnapshotRevertFlags = {
  RUNNING: 1,
  PAUSED: 2,
  FORCE: 4,
  RESET_NVRAM: 8,
} as const;

/** virDomainSnapshotDelete flags. */
export const DomainSnapshotDeleteFlags = {
  CHILDREN: 1,
  METADATA_ONLY: 2,
  CHILDREN_ONLY: 4,
} as const;

/** Connect.newStream flags (virStreamFlags). */
export const StreamFlags = {
  /** Required for receive() and send(): the binding drives the stream from libvirt's event loop. */
  NONBLOCK: 1,
} as const;

/** Domain.openConsole flags (virDomainConsoleFlags). */
export const DomainConsoleFlags = {
  /** Take over the console from another session, which is disconnected. */
  FORCE: 1,
  /** Fail instead of risking an unsafe console driver (without pty locking). */
  SAFE: 2,
} as const;
