// A NAT network on the real libvirtd: bridge, dnsmasq and DHCP leases (none yet: no guest
// asks for one here, the call itself must work), live DHCP host updates.
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  Connect,
  NetworkUpdateCommand,
  NetworkUpdateFlags,
  NetworkUpdateSection,
  NetworkXMLFlags,
  isNotFound,
  type Network,
} from '../../../src/libvirt/index.js';
import { dhcpHostXML, natNetworkXML, uniqueBridge, uniqueName } from './fixtures.js';

let daemon: LibvirtDaemon;
let conn: Connect;
let net: Network | undefined;

beforeAll(async () => {
  daemon = await ensureLibvirtd();
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
});

afterAll(async () => {
  await net?.destroy().catch(() => undefined);
  await net?.undefine().catch(() => undefined);
  await conn?.close();
  await daemon?.stop();
});

/** Starts a NAT network on a random 10.x.y.0/24, retrying if that subnet is taken. */
async function startNatNetwork(
  name: string,
  bridge: string,
): Promise<{ net: Network; subnet: number }> {
  let last: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const subnet = randomInt(200 * 256, 250 * 256);
    const n = await conn.defineNetworkXML(natNetworkXML(name, bridge, subnet));
    try {
      await n.create();
      return { net: n, subnet };
    } catch (err) {
      last = err;
      await n.undefine();
    }
  }
  throw last;
}

describe('a NAT network on a real libvirtd', () => {
  it('starts with its bridge, returns DHCP leases, takes live host updates and goes away', async () => {
    const name = uniqueName('nat');
    const bridge = uniqueBridge();
    const started = await startNatNetwork(name, bridge);
    net = started.net;
    const prefix = `10.${started.subnet >> 8}.${started.subnet & 255}`;
    expect(await net.isActive()).toBe(true);
    expect(await net.getBridgeName()).toBe(bridge);

    const leases = await net.getDHCPLeases();
    expect(Array.isArray(leases)).toBe(true);
    expect(leases).toEqual([]);
    expect(await net.getDHCPLeases('52:54:00:00:00:01')).toEqual([]);
    // No guest is plugged in: no ports (a running guest's interface names its port's UUID).
    expect(await net.listPortUUIDs()).toEqual([]);

    const host = dhcpHostXML('52:54:00:12:34:56', `${prefix}.50`, 'vm-one');
    const both = NetworkUpdateFlags.LIVE | NetworkUpdateFlags.CONFIG;
    await net.update(
      NetworkUpdateCommand.ADD_LAST,
      NetworkUpdateSection.IP_DHCP_HOST,
      -1,
      host,
      both,
    );
    expect(await net.getXMLDesc()).toContain("mac='52:54:00:12:34:56'");
    expect(await net.getXMLDesc(NetworkXMLFlags.INACTIVE)).toContain(`ip='${prefix}.50'`);
    await net.update(
      NetworkUpdateCommand.DELETE,
      NetworkUpdateSection.IP_DHCP_HOST,
      -1,
      host,
      both,
    );
    expect(await net.getXMLDesc()).not.toContain('52:54:00:12:34:56');

    await net.destroy();
    expect(await net.isActive()).toBe(false);
    const uuid = net.getUUIDString();
    await net.undefine();
    net = undefined;
    expect(isNotFound(await conn.lookupNetworkByUUID(uuid).catch((e) => e), 'network')).toBe(true);
  });
});
