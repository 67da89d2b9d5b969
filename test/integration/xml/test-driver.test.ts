// The golden documents against libvirt itself, through the project's binding on the
// in-process test driver: libvirt accepts each one, and parsing what libvirt reads back
// recovers every owned field. Also pins down the libvirt quirks the documents rely on.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  NetworkUpdateCommand,
  NetworkUpdateFlags,
  NetworkUpdateSection,
  type StoragePool,
} from '../../../src/libvirt/index.js';
import {
  buildDhcpHostXML,
  buildDomainXML,
  buildNetworkXML,
  changedDomainFields,
  changedNetworkFields,
  changedPoolFields,
  changedVolumeFields,
  parseDhcpHostXML,
  parseDnsHostXML,
  parseDomainXML,
  parseNetworkXML,
  parsePoolXML,
  parseVolumeXML,
  type DomainDocument,
  type NetworkDocument,
  type PoolDocument,
  type VolumeDocument,
} from '../../../src/libvirt/xml/index.js';
import { identityOf, stampOf } from '../../../src/ownership/metadata.js';
import {
  domainCases,
  minimalDomain,
  natNetwork,
  networkCases,
  poolCases,
  volumeCases,
} from '../../fixtures/xml/cases.js';

const FIXTURES = join(import.meta.dirname, '../../fixtures/xml');
const golden = (name: string) => readFileSync(join(FIXTURES, `${name}.xml`), 'utf8');
const { LIVE, CONFIG } = NetworkUpdateFlags;

// One connection for the file: the test driver's state lives as long as a connection to
// it in this process, and each test file runs in its own process.
let conn: Connect;
let defaultPool: StoragePool;

beforeAll(async () => {
  conn = await Connect.open('test:///default');
  defaultPool = await conn.lookupStoragePoolByName('default-pool');
});

afterAll(async () => {
  await conn?.close();
});

describe.each(domainCases)('$name', (c) => {
  const doc = c.doc as DomainDocument;

  it('is defined by libvirt and reads back with every owned field', async () => {
    const dom = await conn.defineDomainXML(golden(c.name));
    const xml = await dom.getXMLDesc();
    expect(changedDomainFields(doc, parseDomainXML(xml))).toEqual([]);
    expect(stampOf(xml)).toStrictEqual(doc.stamp);
    expect(identityOf(xml)).toStrictEqual({
      root: 'domain',
      name: doc.name,
      uuid: doc.uuid,
      stamp: doc.stamp,
    });
  });

  it('still matches once running (live XML)', async () => {
    const dom = await conn.lookupDomainByUUIDString(doc.uuid);
    await dom.create();
    expect(changedDomainFields(doc, parseDomainXML(await dom.getXMLDesc()))).toEqual([]);
  });
});

describe.each(networkCases)('$name', (c) => {
  const doc = c.doc as NetworkDocument;

  it('is defined by libvirt and reads back with every owned field', async () => {
    const net = await conn.defineNetworkXML(golden(c.name));
    const xml = await net.getXMLDesc();
    expect(changedNetworkFields(doc, parseNetworkXML(xml))).toEqual([]);
    expect(stampOf(xml)).toStrictEqual(doc.stamp);
  });

  it('still matches once started', async () => {
    const net = await conn.lookupNetworkByUUIDString(doc.uuid);
    await net.create();
    expect(changedNetworkFields(doc, parseNetworkXML(await net.getXMLDesc()))).toEqual([]);
  });
});

describe('virNetworkUpdate snippets', () => {
  const doc: NetworkDocument = {
    ...natNetwork,
    name: 'snippets',
    uuid: '5d2e0c3a-8b1f-4e6d-9c7a-2f4b6d8e0010',
    bridge: { name: 'lvosnippets' },
  };
  const dhcpHostXML = golden('network-dhcp-host');
  const dnsHostXML = golden('network-dns-host');

  it('adds and removes a DHCP host and a DNS host, live and in the config', async () => {
    const net = await conn.defineNetworkXML(buildNetworkXML(doc));
    await net.create();
    const add = NetworkUpdateCommand.ADD_LAST;
    await net.update(add, NetworkUpdateSection.IP_DHCP_HOST, -1, dhcpHostXML, LIVE | CONFIG);
    await net.update(add, NetworkUpdateSection.DNS_HOST, -1, dnsHostXML, LIVE | CONFIG);

    const updated = parseNetworkXML(await net.getXMLDesc());
    expect(updated.ips[0]?.dhcp?.hosts).toContainEqual(parseDhcpHostXML(dhcpHostXML));
    expect(updated.dns?.hosts).toContainEqual(parseDnsHostXML(dnsHostXML));
    expect(changedNetworkFields(doc, updated)).toEqual(
      expect.arrayContaining(['ips[0].dhcpHosts', 'dnsHosts']),
    );

    const del = NetworkUpdateCommand.DELETE;
    await net.update(del, NetworkUpdateSection.IP_DHCP_HOST, -1, dhcpHostXML, LIVE | CONFIG);
    await net.update(del, NetworkUpdateSection.DNS_HOST, -1, dnsHostXML, LIVE | CONFIG);
    expect(changedNetworkFields(doc, parseNetworkXML(await net.getXMLDesc()))).toEqual([]);
  });
});

describe.each(poolCases)('$name', (c) => {
  const doc = c.doc as PoolDocument;

  it('is defined by libvirt and reads back with every owned field', async () => {
    const pool = await conn.defineStoragePoolXML(golden(c.name));
    const observed = parsePoolXML(await pool.getXMLDesc());
    expect(changedPoolFields(doc, observed)).toEqual([]);
    // Nothing in a pool's XML but its UUID can say it is ours.
    expect(stampOf(await pool.getXMLDesc())).toBeUndefined();
  });
});

describe.each(volumeCases)('$name', (c) => {
  const doc = c.doc as VolumeDocument;

  it('is created by libvirt and reads back with every owned field', async () => {
    const vol = await defaultPool.createVolumeXML(golden(c.name));
    const observed = parseVolumeXML(await vol.getXMLDesc());
    expect(changedVolumeFields(doc, observed)).toEqual([]);
    expect(observed.path).toBe(`/default-pool/${doc.name}`);
  });
});

describe('libvirt quirks the documents rely on (libvirt 9.0 test driver)', () => {
  it("keeps type='kvm' and 'qemu' as given; only its built-in domain is type='test'", async () => {
    for (const type of ['kvm', 'qemu'] as const) {
      const doc = {
        ...minimalDomain,
        type,
        name: `quirk-${type}`,
        uuid: `0b4c2f7e-3f51-4c2a-9a9e-7d1f6f0a01${type === 'kvm' ? '01' : '02'}`,
      };
      const dom = await conn.defineDomainXML(buildDomainXML(doc));
      expect(parseDomainXML(await dom.getXMLDesc()).type).toBe(type);
    }
    const builtIn = await (await conn.lookupDomainByName('test')).getXMLDesc();
    expect(() => parseDomainXML(builtIn)).toThrow(
      /domain@type: "test" is not one of 'kvm', 'qemu'/,
    );
    expect(identityOf(builtIn)).toMatchObject({ root: 'domain', name: 'test', stamp: undefined });
  });

  it('writes a CR in text raw, so a CR LF reads back as LF', async () => {
    const doc = {
      ...minimalDomain,
      name: 'quirk-crlf',
      uuid: '0b4c2f7e-3f51-4c2a-9a9e-7d1f6f0a0103',
      description: 'one\r\ntwo',
    };
    const dom = await conn.defineDomainXML(buildDomainXML(doc));
    const xml = await dom.getXMLDesc();
    expect(xml).toContain('one\r\ntwo');
    expect(parseDomainXML(xml).description).toBe('one\ntwo');
  });

  it('writes DHCP host names unescaped, after which virNetworkUpdate on that network fails', async () => {
    const doc: NetworkDocument = {
      ...natNetwork,
      stamp: undefined,
      name: 'quirk-dhcp-name',
      uuid: '5d2e0c3a-8b1f-4e6d-9c7a-2f4b6d8e0011',
      bridge: { name: 'lvoquirk' },
      ips: [
        {
          address: '10.55.0.1',
          prefix: 24,
          dhcp: { ranges: [], hosts: [{ mac: '52:54:00:00:55:01', ip: '10.55.0.5', name: 'a&b' }] },
        },
      ],
    };
    const net = await conn.defineNetworkXML(buildNetworkXML(doc));
    expect(await net.getXMLDesc()).toContain(`name='a&b'`);
    await net.create();
    const host = buildDhcpHostXML({ mac: '52:54:00:00:55:02', ip: '10.55.0.6', name: 'plain' });
    await expect(
      net.update(NetworkUpdateCommand.ADD_LAST, NetworkUpdateSection.IP_DHCP_HOST, -1, host, LIVE),
    ).rejects.toThrow(/EntityRef/);
  });
});
