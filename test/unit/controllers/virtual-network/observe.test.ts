// What observeNetwork asks libvirt for an active persistent network's saved definition, against
// a state-based fake of a connection: libvirt's test driver refuses the INACTIVE flag, and a
// connection that refused it once is not asked with it again (one refused call a pass before).
import { describe, expect, it } from 'vitest';
import { desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import { observeNetwork } from '../../../../src/controllers/virtual-network/observe.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { NetworkXMLFlags } from '../../../../src/libvirt/constants.js';
import { ErrorCode, ErrorDomain, LibvirtError } from '../../../../src/libvirt/errors.js';
import { buildNetworkXML } from '../../../../src/libvirt/xml/network.js';
import { exampleNat } from './fixtures.js';

const net = exampleNat();
const XML = buildNetworkXML(desiredNetwork(net));

/** What the test driver answers the flag (libvirt 9.0, testNetworkGetXMLDesc). */
const refused = () =>
  new LibvirtError('unsupported flags (0x1) in function testNetworkGetXMLDesc', {
    code: ErrorCode.VIR_ERR_INVALID_ARG,
    domain: ErrorDomain.VIR_FROM_NETWORK,
    level: 2,
  });

/** A connection to a driver holding the network, active and persistent; the flags it was asked. */
function host(takesInactive: boolean) {
  const asked: number[] = [];
  const network = {
    getXMLDesc: (flags = 0) => {
      asked.push(flags);
      if (flags & NetworkXMLFlags.INACTIVE && !takesInactive) return Promise.reject(refused());
      return Promise.resolve(XML);
    },
    isActive: () => Promise.resolve(true),
    isPersistent: () => Promise.resolve(true),
    getAutostart: () => Promise.resolve(true),
  };
  const conn = { lookupNetworkByUUIDString: () => Promise.resolve(network) } as unknown as Connect;
  const inactiveAsks = () => asked.filter((f) => f & NetworkXMLFlags.INACTIVE).length;
  return { conn, inactiveAsks };
}

describe('observeNetwork: the persistent definition of an active network', () => {
  it('asks a connection that refused the INACTIVE flag once, then reads without it', async () => {
    const { conn, inactiveAsks } = host(false);
    const first = await observeNetwork(conn, net);
    expect(first).toMatchObject({ state: 'ours', active: true, config: undefined });
    for (let pass = 0; pass < 3; pass++) expect(await observeNetwork(conn, net)).toEqual(first);
    expect(inactiveAsks()).toBe(1);
  });

  it('asks another connection again, and reads it each pass where the driver takes it', async () => {
    const refusing = host(false);
    await observeNetwork(refusing.conn, net);
    const taking = host(true);
    for (let pass = 0; pass < 2; pass++) {
      const seen = await observeNetwork(taking.conn, net);
      expect(seen).toMatchObject({ state: 'ours', config: desiredNetwork(net) });
    }
    // The saved definition can change between passes (a redefine): not remembered.
    expect(taking.inactiveAsks()).toBe(2);
  });
});
