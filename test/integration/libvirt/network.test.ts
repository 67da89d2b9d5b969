import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  ConnectListAllNetworksFlags,
  ErrorCode,
  LibvirtError,
  NetworkUpdateCommand,
  NetworkUpdateFlags,
  NetworkUpdateSection,
  NetworkXMLFlags,
  isAlreadyExists,
  isInvalidXML,
  isNotFound,
  isUnsupported,
  type Network,
} from '../../../src/libvirt/index.js';
import { TEST_URI, dhcpHostXML, dnsHostXML, networkXML, uniqueName } from './fixtures.js';

let conn: Connect;
const created: Network[] = [];

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
});

afterAll(async () => {
  for (const n of created) {
    await n.destroy().catch(() => undefined);
    await n.undefine().catch(() => undefined);
  }
  await conn?.close();
});

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof LibvirtError) return err;
    throw err;
  }
  throw new Error('expected the promise to reject');
}

async function defined(name: string, uuid?: string): Promise<Network> {
  const n = await conn.defineNetworkXML(networkXML(name, { uuid }));
  created.push(n);
  return n;
}

describe('Network', () => {
  it('finds the shipped network by name, UUID string and raw UUID', async () => {
    const byName = await conn.lookupNetworkByName('default');
    const uuid = byName.getUUIDString();
    expect((await conn.lookupNetworkByUUID(uuid)).getName()).toBe('default');
    expect((await conn.lookupNetworkByUUIDString(uuid)).getName()).toBe('default');
    expect((await conn.lookupNetworkByUUID(byName.getUUID())).getName()).toBe('default');
    expect(await byName.getBridgeName()).toBe('virbr0');
  });

  it('defines, starts, autostarts, destroys and undefines a network', async () => {
    const name = uniqueName('net');
    const uuid = randomUUID();
    const n = await defined(name, uuid);
    expect(n.getName()).toBe(name);
    expect(n.getUUIDString()).toBe(uuid);
    expect(await n.isActive()).toBe(false);
    expect(await n.isPersistent()).toBe(true);
    expect(
      (await conn.listAllNetworks(ConnectListAllNetworksFlags.INACTIVE)).map((x) => x.getName()),
    ).toContain(name);
    await n.create();
    expect(await n.isActive()).toBe(true);
    expect(await n.getAutostart()).toBe(false);
    await n.setAutostart(true);
    expect(await n.getAutostart()).toBe(true);
    expect(await n.getXMLDesc()).toContain(`<name>${name}</name>`);
    expect(await n.getXMLDesc()).toContain('<dhcp>');
    // The test driver knows no XML flags for networks.
    expect(isUnsupported(await rejection(n.getXMLDesc(NetworkXMLFlags.INACTIVE)))).toBe(true);
    await n.destroy();
    expect(await n.isActive()).toBe(false);
    await n.setAutostart(false);
    await n.undefine();
    expect(isNotFound(await rejection(conn.lookupNetworkByUUID(uuid)), 'network')).toBe(true);
  });

  it('creates a transient network from XML', async () => {
    const name = uniqueName('tnet');
    const n = await conn.createNetworkXML(networkXML(name));
    expect(await n.isActive()).toBe(true);
    expect(await n.isPersistent()).toBe(false);
    await n.destroy();
    expect(isNotFound(await rejection(conn.lookupNetworkByName(name)), 'network')).toBe(true);
  });

  it('adds and removes a DHCP host and a DNS host with update()', async () => {
    const n = await defined(uniqueName('upd'));
    await n.create();
    const host = dhcpHostXML('52:54:00:aa:bb:cc', '192.168.240.50', 'vm-a');
    const both = NetworkUpdateFlags.LIVE | NetworkUpdateFlags.CONFIG;
    await n.update(NetworkUpdateCommand.ADD_LAST, NetworkUpdateSection.IP_DHCP_HOST, 0, host, both);
    expect(await n.getXMLDesc()).toContain("mac='52:54:00:aa:bb:cc'");
    expect(await n.getXMLDesc()).toContain("ip='192.168.240.50'");
    const dns = dnsHostXML('192.168.240.51', 'vm-b');
    await n.update(NetworkUpdateCommand.ADD_LAST, NetworkUpdateSection.DNS_HOST, -1, dns, both);
    expect(await n.getXMLDesc()).toContain('<hostname>vm-b</hostname>');
    await n.update(NetworkUpdateCommand.DELETE, NetworkUpdateSection.IP_DHCP_HOST, 0, host, both);
    expect(await n.getXMLDesc()).not.toContain('52:54:00:aa:bb:cc');
    // Deleting it again is refused: it is no longer there.
    const again = await rejection(
      n.update(NetworkUpdateCommand.DELETE, NetworkUpdateSection.IP_DHCP_HOST, 0, host, both),
    );
    expect(again.codeName).toBe('VIR_ERR_OPERATION_INVALID');
    expect(again.message).toContain("couldn't locate a matching dhcp host entry");
    await n.destroy();
  });

  it('reports DHCP leases as unsupported on the test driver', async () => {
    const n = await conn.lookupNetworkByName('default');
    expect(isUnsupported(await rejection(n.getDHCPLeases()))).toBe(true);
  });

  it('reports network ports as unsupported on the test driver', async () => {
    const n = await conn.lookupNetworkByName('default');
    expect(isUnsupported(await rejection(n.listPortUUIDs()))).toBe(true);
  });

  it('rejects bad XML, duplicates and missing networks', async () => {
    expect(isInvalidXML(await rejection(conn.defineNetworkXML('<network><name>x')))).toBe(true);
    const name = uniqueName('dup');
    await defined(name);
    expect(isAlreadyExists(await rejection(conn.defineNetworkXML(networkXML(name))))).toBe(true);
    const missing = await rejection(conn.lookupNetworkByName(uniqueName('none')));
    expect(missing.code).toBe(ErrorCode.VIR_ERR_NO_NETWORK);
    expect(isNotFound(missing, 'network')).toBe(true);
    expect(isNotFound(missing, 'domain')).toBe(false);
  });
});
