import { ErrorCode, ErrorDomain, ErrorLevel } from './error-codes.js';

export { ErrorCode, ErrorDomain, ErrorLevel };

/** What the addon copies out of libvirt's virError on the thread that made the call. */
export interface LibvirtErrorDetails {
  code: number;
  domain: number;
  level: number;
  str1?: string;
  str2?: string;
  str3?: string;
  int1?: number;
  int2?: number;
}

const codeNames = invert(ErrorCode);
const domainNames = invert(ErrorDomain);

function invert(table: Record<string, number>): Map<number, string> {
  return new Map(Object.entries(table).map(([name, value]) => [value, name]));
}

/**
 * A failed libvirt call, carrying libvirt's virError fields. `code` is a virErrorNumber
 * (ErrorCode.VIR_ERR_NO_DOMAIN is 42), `domain` the subsystem that raised it (virErrorDomain).
 * Timeouts of this binding use VIR_ERR_OPERATION_TIMEOUT; calls on a closed connection or a
 * freed handle use VIR_ERR_INVALID_CONN / VIR_ERR_INVALID_DOMAIN and friends, as libvirt does.
 */
export class LibvirtError extends Error {
  override name = 'LibvirtError';
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly str1: string | undefined;
  readonly str2: string | undefined;
  readonly str3: string | undefined;
  readonly int1: number;
  readonly int2: number;

  constructor(message: string, details: LibvirtErrorDetails) {
    super(message);
    this.code = details.code;
    this.domain = details.domain;
    this.level = details.level;
    this.str1 = details.str1;
    this.str2 = details.str2;
    this.str3 = details.str3;
    this.int1 = details.int1 ?? 0;
    this.int2 = details.int2 ?? 0;
  }

  /** libvirt's name for `code`, e.g. 'VIR_ERR_NO_DOMAIN'. */
  get codeName(): string {
    return codeNames.get(this.code) ?? `VIR_ERR_${this.code}`;
  }

  /** libvirt's name for `domain`, e.g. 'VIR_FROM_QEMU'. */
  get domainName(): string {
    return domainNames.get(this.domain) ?? `VIR_FROM_${this.domain}`;
  }
}

export function isLibvirtError(err: unknown): err is LibvirtError {
  return err instanceof LibvirtError;
}

export type ObjectKind = 'domain' | 'network' | 'storagePool' | 'storageVol' | 'domainSnapshot';

const notFoundCodes: Record<ObjectKind, number> = {
  domain: ErrorCode.VIR_ERR_NO_DOMAIN,
  network: ErrorCode.VIR_ERR_NO_NETWORK,
  storagePool: ErrorCode.VIR_ERR_NO_STORAGE_POOL,
  storageVol: ErrorCode.VIR_ERR_NO_STORAGE_VOL,
  domainSnapshot: ErrorCode.VIR_ERR_NO_DOMAIN_SNAPSHOT,
};

/** The object looked up (by UUID, name, key or path) does not exist; `kind` narrows it. */
export function isNotFound(err: unknown, kind?: ObjectKind): boolean {
  if (!isLibvirtError(err)) return false;
  if (kind !== undefined) return err.code === notFoundCodes[kind];
  return Object.values(notFoundCodes).includes(err.code);
}

// Raised on the client side when the transport is gone: the daemon closed the socket, the
// keepalive gave up, or no connection was made at all. A server-side error keeps the domain
// of the driver that raised it, so RPC/REMOTE domains here mean the link itself failed.
const connectionCodes = new Set<number>([
  ErrorCode.VIR_ERR_NO_CONNECT,
  ErrorCode.VIR_ERR_INVALID_CONN,
  ErrorCode.VIR_ERR_RPC,
  ErrorCode.VIR_ERR_AUTH_FAILED,
]);
const transportDomains = new Set<number>([ErrorDomain.VIR_FROM_RPC, ErrorDomain.VIR_FROM_REMOTE]);
const transportCodes = new Set<number>([
  ErrorCode.VIR_ERR_SYSTEM_ERROR,
  ErrorCode.VIR_ERR_INTERNAL_ERROR,
  ErrorCode.VIR_ERR_OPERATION_FAILED,
]);

/** The connection is unusable: reconnect before retrying. */
export function isConnectionError(err: unknown): boolean {
  if (!isLibvirtError(err)) return false;
  if (connectionCodes.has(err.code)) return true;
  return transportDomains.has(err.domain) && transportCodes.has(err.code);
}

/**
 * The driver or hypervisor does not implement this call or flag. libvirt's flag check
 * (virCheckFlags) reports an unknown flag as VIR_ERR_INVALID_ARG "unsupported flags (0x…)",
 * which is the same situation for a caller deciding whether to fall back.
 */
export function isUnsupported(err: unknown): boolean {
  return hasCode(
    err,
    [
      ErrorCode.VIR_ERR_NO_SUPPORT,
      ErrorCode.VIR_ERR_ARGUMENT_UNSUPPORTED,
      ErrorCode.VIR_ERR_OPERATION_UNSUPPORTED,
    ],
    { code: ErrorCode.VIR_ERR_INVALID_ARG, says: 'unsupported flags' },
  );
}

/**
 * A running domain has no free PCI slot for a hot-plugged device (on q35 every one takes a free
 * PCIe root port). libvirt reports it under the generic VIR_ERR_INTERNAL_ERROR.
 */
export function isOutOfPciSlots(err: unknown): boolean {
  return hasCode(err, [], {
    code: ErrorCode.VIR_ERR_INTERNAL_ERROR,
    says: 'No more available PCI slots',
  });
}

/** The call did not finish within its `timeoutMs`. */
export function isTimeout(err: unknown): boolean {
  return isLibvirtError(err) && err.code === ErrorCode.VIR_ERR_OPERATION_TIMEOUT;
}

/** strerror(ENAMETOOLONG), as libvirt's virReportSystemError words it. */
const NAME_TOO_LONG = 'File name too long';

/**
 * libvirt or the hypervisor refuses what the definition asks for, so repeating the call changes
 * nothing until the definition or the host does: a configuration this QEMU or host cannot run
 * (VIR_ERR_CONFIG_UNSUPPORTED, e.g. "CPU mode 'host-passthrough' for x86_64 qemu domain ... is
 * not supported by hypervisor", raised at start, or "Maximum CPUs greater than specified machine
 * type limit 288", raised at define), a guest CPU the host CPU lacks features of,
 * invalid XML or arguments, an operation the driver lacks, and a name or path longer than the
 * host's file system takes (ENAMETOOLONG under the generic VIR_ERR_SYSTEM_ERROR: libvirt names
 * its files after the object, so a 248-character network or pool name fails at define with
 * "Failed to create file '/etc/libvirt/.../<name>.xml.new': File name too long"; measured on
 * libvirt 9.0). Failures of the moment (QEMU exiting early: INTERNAL_ERROR, a file or network
 * not there yet, a lock another machine holds, a full disk) are not.
 */
export function isRefusedDefinition(err: unknown): boolean {
  return (
    hasCode(err, [
      ErrorCode.VIR_ERR_CONFIG_UNSUPPORTED,
      ErrorCode.VIR_ERR_CPU_INCOMPATIBLE,
      // Any invalid argument, not only isUnsupported's "unsupported flags".
      ErrorCode.VIR_ERR_INVALID_ARG,
    ]) ||
    isInvalidXML(err) ||
    isUnsupported(err) ||
    isNameTooLong(err)
  );
}

/** A file libvirt would make has a name (or path segment) longer than the file system takes. */
export function isNameTooLong(err: unknown): boolean {
  return hasCode(err, [], { code: ErrorCode.VIR_ERR_SYSTEM_ERROR, says: NAME_TOO_LONG });
}

/** The XML given was malformed or invalid for the object. */
export function isInvalidXML(err: unknown): boolean {
  return hasCode(err, [
    ErrorCode.VIR_ERR_XML_ERROR,
    ErrorCode.VIR_ERR_XML_DETAIL,
    ErrorCode.VIR_ERR_XML_INVALID_SCHEMA,
  ]);
}

/**
 * An object with this name or UUID already exists. libvirt's object lists report most name
 * clashes as VIR_ERR_OPERATION_FAILED "… already exists …" rather than the *_EXIST codes, so
 * that message is recognised too.
 */
export function isAlreadyExists(err: unknown): boolean {
  return hasCode(
    err,
    [
      ErrorCode.VIR_ERR_DOM_EXIST,
      ErrorCode.VIR_ERR_NETWORK_EXIST,
      ErrorCode.VIR_ERR_STORAGE_VOL_EXIST,
    ],
    { code: ErrorCode.VIR_ERR_OPERATION_FAILED, says: 'already exists' },
  );
}

/**
 * A LibvirtError with one of `codes`, or with `also.code` and a message that says `also.says`
 * (for situations libvirt reports under a generic code).
 */
function hasCode(
  err: unknown,
  codes: readonly number[],
  also?: { code: number; says: string },
): boolean {
  if (!isLibvirtError(err)) return false;
  if (codes.includes(err.code)) return true;
  return also !== undefined && err.code === also.code && err.message.includes(also.says);
}

/** The call is not valid in the object's current state (e.g. destroying a stopped domain). */
export function isOperationInvalid(err: unknown): boolean {
  return isLibvirtError(err) && err.code === ErrorCode.VIR_ERR_OPERATION_INVALID;
}
