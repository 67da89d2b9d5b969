import {
  FREED,
  HANDLE,
  native,
  type CallOptions,
  type NetworkCalls,
  type NetworkHandle,
  type RawLease,
} from './addon.js';
import { FlaglessLifecycle, type Kind } from './object.js';

export type NetworkDHCPLease = RawLease;

/**
 * A libvirt virtual network (virNetworkPtr). Obtained from a Connect lookup, listAllNetworks,
 * defineNetworkXML/createNetworkXML or an event; released by the garbage collector or free().
 */
export class Network extends FlaglessLifecycle<NetworkHandle, NetworkCalls> {
  protected get kind(): Kind<NetworkHandle, NetworkCalls> {
    return NETWORK;
  }

  getBridgeName(opts?: CallOptions): Promise<string> {
    return native.network.getBridgeName(this[HANDLE], this.timeout(opts));
  }

  /** Starts a defined network. */
  create(opts?: CallOptions): Promise<void> {
    return native.network.create(this[HANDLE], this.timeout(opts));
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
    return this.call(native.network.update, opts, command, section, parentIndex, xml, flags);
  }

  /** Leases handed out by the network's dnsmasq, optionally only those of one MAC address. */
  getDHCPLeases(mac: string | null = null, opts?: CallOptions): Promise<NetworkDHCPLease[]> {
    return native.network.getDHCPLeases(this[HANDLE], mac, 0, this.timeout(opts));
  }

  /**
   * The UUIDs of the network's ports (virNetworkListAllPorts): one per guest interface plugged
   * into the running network. A running domain's interface names its port (`portid`); libvirt
   * deletes every port when the network stops, and a restarted network has none of the old.
   */
  async listPortUUIDs(opts?: CallOptions): Promise<string[]> {
    const uuids = await native.network.listAllPorts(this[HANDLE], 0, this.timeout(opts));
    return uuids.filter((u): u is string => u !== null);
  }
}

const NETWORK: Kind<NetworkHandle, NetworkCalls> = { calls: native.network, freed: FREED.network };
