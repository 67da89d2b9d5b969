import {
  FREED,
  HANDLE,
  native,
  type CallOptions,
  type NetworkHandle,
  type RawLease,
} from './addon.js';
import type { Connect } from './connection.js';

export type NetworkDHCPLease = RawLease;

/**
 * A libvirt virtual network (virNetworkPtr). Obtained from a Connect lookup, listAllNetworks,
 * defineNetworkXML/createNetworkXML or an event; released by the garbage collector or free().
 */
export class Network {
  [HANDLE]: NetworkHandle;

  /** @internal handles come from Connect */
  constructor(
    readonly connect: Connect,
    handle: NetworkHandle,
  ) {
    this[HANDLE] = handle;
  }

  #t(opts: CallOptions | undefined): number | undefined {
    return opts?.timeoutMs ?? this.connect.callTimeoutMs;
  }

  getName(): string {
    return native.networkGetName(this[HANDLE]);
  }

  getUUIDString(): string {
    return native.networkGetUUIDString(this[HANDLE]);
  }

  getUUID(): Buffer {
    return native.networkGetUUID(this[HANDLE]);
  }

  free(): void {
    native.networkFree(this[HANDLE]);
    this[HANDLE] = FREED.network;
  }

  /** flags: NetworkXMLFlags (INACTIVE for the persistent definition). */
  getXMLDesc(flags = 0, opts?: CallOptions): Promise<string> {
    return native.networkGetXMLDesc(this[HANDLE], flags, this.#t(opts));
  }

  getBridgeName(opts?: CallOptions): Promise<string> {
    return native.networkGetBridgeName(this[HANDLE], this.#t(opts));
  }

  getAutostart(opts?: CallOptions): Promise<boolean> {
    return native.networkGetAutostart(this[HANDLE], this.#t(opts));
  }

  setAutostart(autostart: boolean, opts?: CallOptions): Promise<void> {
    return native.networkSetAutostart(this[HANDLE], autostart, this.#t(opts));
  }

  isActive(opts?: CallOptions): Promise<boolean> {
    return native.networkIsActive(this[HANDLE], this.#t(opts));
  }

  isPersistent(opts?: CallOptions): Promise<boolean> {
    return native.networkIsPersistent(this[HANDLE], this.#t(opts));
  }

  /** Starts a defined network. */
  create(opts?: CallOptions): Promise<void> {
    return native.networkCreate(this[HANDLE], this.#t(opts));
  }

  destroy(opts?: CallOptions): Promise<void> {
    return native.networkDestroy(this[HANDLE], this.#t(opts));
  }

  undefine(opts?: CallOptions): Promise<void> {
    return native.networkUndefine(this[HANDLE], this.#t(opts));
  }

  /**
   * virNetworkUpdate: command NetworkUpdateCommand, section NetworkUpdateSection (IP_DHCP_HOST,
   * DNS_HOST, …), parentIndex the <ip> element index or -1, flags NetworkUpdateFlags.
   */
  update(
    command: number,
    section: number,
    parentIndex: number,
    xml: string,
    flags = 0,
    opts?: CallOptions,
  ): Promise<void> {
    return native.networkUpdate(
      this[HANDLE],
      command,
      section,
      parentIndex,
      xml,
      flags,
      this.#t(opts),
    );
  }

  /** Leases handed out by the network's dnsmasq, optionally only those of one MAC address. */
  getDHCPLeases(mac: string | null = null, opts?: CallOptions): Promise<NetworkDHCPLease[]> {
    return native.networkGetDHCPLeases(this[HANDLE], mac, 0, this.#t(opts));
  }
}
