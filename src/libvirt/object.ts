// What the facade classes have in common, written once: the handle and its connection, the
// per-call timeout, and the calls every kind (or every defined kind) answers alike. Each class
// names its kind's table of native calls (`native.domain`, `native.network`, …) and what
// free() leaves behind.
import { HANDLE, type CallOptions, type DefinedCalls, type ObjectCalls } from './addon.js';
import type { Connect } from './connection.js';

export interface Kind<H, C extends ObjectCalls<H>> {
  calls: C;
  /** The stand-in handle after free(): every call on it rejects as freed. */
  freed: H;
}

export abstract class LibvirtObject<H, C extends ObjectCalls<H>> {
  [HANDLE]: H;

  /** @internal handles come from Connect or from the object that made them */
  constructor(
    readonly connect: Connect,
    handle: H,
  ) {
    this[HANDLE] = handle;
  }

  /** The class's kind; a getter on the prototype, so instances carry nothing more than the handle. */
  protected abstract get kind(): Kind<H, C>;

  protected get calls(): C {
    return this.kind.calls;
  }

  /** The call's `timeoutMs`, else the connection's `callTimeoutMs`. */
  protected timeout(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  /** `fn(handle, ...args, timeout)`: a native call on this object, bounded by the call's timeout. */
  protected call<A extends unknown[], R>(
    fn: (h: H, ...rest: [...A, number | undefined]) => R,
    opts: CallOptions | undefined,
    ...args: A
  ): R {
    return fn(this[HANDLE], ...args, this.timeout(opts));
  }

  getName(): string {
    return this.calls.getName(this[HANDLE]);
  }

  /** Drops the libvirt reference now instead of at garbage collection; later calls reject. */
  free(): void {
    this.calls.free(this[HANDLE]);
    this[HANDLE] = this.kind.freed;
  }

  /** flags: the kind's XMLFlags (INACTIVE for the persistent definition, where there is one). */
  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return this.calls.getXMLDesc(this[HANDLE], flags, this.timeout(opts));
  }
}

/** Domains, networks and storage pools: identified by UUID, persistent or transient. */
export abstract class DefinedObject<H, C extends DefinedCalls<H>> extends LibvirtObject<H, C> {
  getUUIDString(): string {
    return this.calls.getUUIDString(this[HANDLE]);
  }

  getUUID(): Buffer {
    return this.calls.getUUID(this[HANDLE]);
  }

  isActive(opts?: CallOptions): Promise<boolean> {
    return this.calls.isActive(this[HANDLE], this.timeout(opts));
  }

  isPersistent(opts?: CallOptions): Promise<boolean> {
    return this.calls.isPersistent(this[HANDLE], this.timeout(opts));
  }

  getAutostart(opts?: CallOptions): Promise<boolean> {
    return this.calls.getAutostart(this[HANDLE], this.timeout(opts));
  }

  setAutostart(autostart: boolean, opts?: CallOptions): Promise<void> {
    return this.calls.setAutostart(this[HANDLE], autostart, this.timeout(opts));
  }
}

type Stop<H> = Record<'destroy' | 'undefine', (h: H, t: number | undefined) => Promise<void>>;

/** Networks and storage pools, which libvirt stops and undefines without flags (domains take flags). */
export abstract class FlaglessLifecycle<
  H,
  C extends DefinedCalls<H> & Stop<H>,
> extends DefinedObject<H, C> {
  /** Stops it; a transient one is gone afterwards. */
  destroy(opts?: CallOptions): Promise<void> {
    return this.calls.destroy(this[HANDLE], this.timeout(opts));
  }

  /** Removes the persistent definition. */
  undefine(opts?: CallOptions): Promise<void> {
    return this.calls.undefine(this[HANDLE], this.timeout(opts));
  }
}
