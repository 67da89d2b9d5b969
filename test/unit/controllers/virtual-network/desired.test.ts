import { describe, expect, it } from 'vitest';
import {
  defaultBridgeName,
  desiredNetwork,
  parseCidr,
  placementOn,
  unsupportedSpec,
  unusableAddress,
  wantedOn,
} from '../../../../src/controllers/virtual-network/desired.js';
import { buildNetworkXML, parseNetworkXML } from '../../../../src/libvirt/xml/network.js';
import { UID, exampleNat, vnet } from './fixtures.js';

describe('desiredNetwork', () => {
  it('turns the example NAT network into a stamped libvirt network with our UUID', () => {
    expect(desiredNetwork(exampleNat())).toEqual({
      name: 'lab',
      uuid: UID,
      stamp: { kind: 'VirtualNetwork', name: 'lab', uid: UID },
      forward: 'nat',
      bridge: { name: 'virbr-lab' },
      dns: { hosts: [{ ip: '192.168.150.10', hostnames: ['web-1.lab.internal'] }] },
      ips: [
        {
          address: '192.168.150.1',
          prefix: 24,
          dhcp: {
            ranges: [{ start: '192.168.150.100', end: '192.168.150.199' }],
            hosts: [{ mac: '52:54:00:15:00:01', ip: '192.168.150.10', name: 'web-1' }],
          },
        },
      ],
    });
  });

  it('round-trips through the XML codec unchanged', () => {
    const doc = desiredNetwork(exampleNat());
    expect(parseNetworkXML(buildNetworkXML(doc))).toEqual(doc);
  });

  it.each([
    [
      'isolated without addressing: a bridge only, no <forward>',
      { mode: 'isolated' as const },
      { forward: 'none', ips: [] },
    ],
    [
      'route with a /16 and MTU',
      { mode: 'route' as const, mtu: 9000, ipv4: { cidr: '10.20.0.1/16' } },
      { forward: 'route', mtu: 9000, ips: [{ address: '10.20.0.1', prefix: 16 }] },
    ],
    [
      'DNS switched off drops its records',
      {
        mode: 'nat' as const,
        ipv4: { cidr: '10.1.0.1/24' },
        dns: { enabled: false, hosts: [{ ipAddress: '10.1.0.5', hostnames: ['a'] }] },
      },
      { dns: { enable: false, hosts: [] } },
    ],
    [
      'bridge mode: the host bridge and nothing else',
      { mode: 'bridge' as const, bridge: 'br0' },
      { forward: 'bridge', bridge: { name: 'br0' }, ips: [] },
    ],
  ])('%s', (_name, spec, expected) => {
    const doc = desiredNetwork(vnet(spec));
    expect(doc).toMatchObject(expected);
    if (spec.mode === 'bridge') {
      expect(doc.dns).toBeUndefined();
      expect(doc.mtu).toBeUndefined();
    }
  });

  it('keeps an enabled DNS without records out of the document, as libvirt reads it back', () => {
    expect(
      desiredNetwork(vnet({ ipv4: { cidr: '10.1.0.1/24' }, dns: { enabled: true } })).dns,
    ).toBe(undefined);
  });

  it('escapes every user string through the codec', () => {
    const doc = desiredNetwork(vnet({ mode: 'isolated' }, "a'b<c>&d"));
    const xml = buildNetworkXML(doc);
    expect(xml).toContain('<name>a&apos;b&lt;c&gt;&amp;d</name>');
    expect(parseNetworkXML(xml).name).toBe("a'b<c>&d");
  });
});

describe('bridge names', () => {
  it("default to 'lvo' + 10 hex digits of the uid's hash: stable and within 15 characters", () => {
    const name = defaultBridgeName(UID);
    expect(name).toMatch(/^lvo[0-9a-f]{10}$/);
    expect(name.length).toBeLessThanOrEqual(15);
    expect(defaultBridgeName(UID)).toBe(name);
    expect(defaultBridgeName('00000000-0000-0000-0000-000000000000')).not.toBe(name);
    expect(desiredNetwork(vnet({ mode: 'isolated' })).bridge).toEqual({ name });
  });

  it('use spec.bridge when given', () => {
    expect(desiredNetwork(vnet({ mode: 'isolated', bridge: 'br-x' })).bridge).toEqual({
      name: 'br-x',
    });
  });
});

describe('parseCidr', () => {
  it('splits the host address and the prefix length', () => {
    expect(parseCidr('192.168.150.1/24')).toEqual({ address: '192.168.150.1', prefix: 24 });
  });
  it('names the field when the value is not a CIDR', () => {
    expect(() => parseCidr('192.168.150.1')).toThrow(/spec\.ipv4\.cidr/);
  });
});

describe('unsupportedSpec', () => {
  it.each([
    [{ mode: 'nat' as const, mtu: 9000, ipv4: { cidr: '10.0.0.1/24' } }, undefined],
    [{ mode: 'bridge' as const, bridge: 'br0' }, undefined],
    [{ mode: 'bridge' as const, bridge: 'br0', dns: { enabled: false } }, undefined],
    [{ mode: 'bridge' as const, bridge: 'br0', mtu: 9000 }, /spec\.mtu/],
    [
      {
        mode: 'bridge' as const,
        bridge: 'br0',
        dns: { hosts: [{ ipAddress: '1.2.3.4', hostnames: ['a'] }] },
      },
      /spec\.dns\.hosts/,
    ],
    // Measured on libvirtd 9.0: the kernel takes no IPv6 address on a link below 1280 bytes,
    // so such a network never starts ("Failed to add IP address fd00:173::1/64").
    [
      { mode: 'isolated' as const, mtu: 600, ipv6: { cidr: 'fd00:173::1/64' } },
      /spec\.mtu 600 .*1280.*spec\.ipv6/,
    ],
    [{ mode: 'isolated' as const, mtu: 1280, ipv6: { cidr: 'fd00:173::1/64' } }, undefined],
    [{ mode: 'nat' as const, mtu: 600, ipv4: { cidr: '10.0.0.1/24' } }, undefined],
    // Without an address libvirt runs no dnsmasq: the network starts and the records serve
    // nothing.
    [
      { mode: 'isolated' as const, dns: { hosts: [{ ipAddress: '1.2.3.4', hostnames: ['a'] }] } },
      /spec\.dns\.hosts .*spec\.ipv4 or spec\.ipv6/,
    ],
    [
      {
        mode: 'isolated' as const,
        ipv6: { cidr: 'fd00:173::1/64' },
        dns: { hosts: [{ ipAddress: '1.2.3.4', hostnames: ['a'] }] },
      },
      undefined,
    ],
  ])('%j -> %s', (spec, expected) => {
    const problem = unsupportedSpec(vnet(spec));
    if (expected === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(expected);
  });
});

describe('placementOn', () => {
  const node = (labels: Record<string, string>) => ({ metadata: { labels } });
  it.each([
    ['no selector: every node, even one not in the cache', undefined, undefined, 'selected'],
    ['empty selector: every node', {}, undefined, 'selected'],
    ['matching labels', { matchLabels: { zone: 'a' } }, node({ zone: 'a' }), 'selected'],
    ['other labels', { matchLabels: { zone: 'a' } }, node({ zone: 'b' }), 'notSelected'],
    [
      'an expression',
      { matchExpressions: [{ key: 'gpu', operator: 'Exists' as const }] },
      node({}),
      'notSelected',
    ],
    ['a selector and no Node to judge it by', { matchLabels: { zone: 'a' } }, undefined, 'unknown'],
  ])('%s', (_name, nodeSelector, n, expected) => {
    const obj = vnet({ mode: 'isolated', ...(nodeSelector ? { nodeSelector } : {}) });
    expect(placementOn(obj, n)).toBe(expected);
  });
});

describe('wantedOn', () => {
  it('is absent everywhere once the object is being deleted, whatever the selector says', () => {
    const obj = vnet({ mode: 'isolated' });
    expect(wantedOn(obj, undefined)).toBe('present');
    obj.metadata.deletionTimestamp = new Date().toISOString();
    expect(wantedOn(obj, undefined)).toBe('absent');
  });
  it('follows the selector otherwise', () => {
    const obj = vnet({ mode: 'isolated', nodeSelector: { matchLabels: { a: 'b' } } });
    expect(wantedOn(obj, { metadata: { labels: { a: 'b' } } })).toBe('present');
    expect(wantedOn(obj, { metadata: { labels: {} } })).toBe('absent');
    expect(wantedOn(obj, undefined)).toBe('unknown');
  });
});

describe('unusableAddress', () => {
  it.each<[string, string | undefined]>([
    ['192.168.150.1/24', undefined],
    ['10.1.2.1/8', undefined],
    ['127.0.0.2/8', '127.0.0.0/8 (loopback)'],
    ['126.0.0.1/7', '127.0.0.0/8 (loopback)'],
    ['169.254.10.1/24', '169.254.0.0/16 (link-local)'],
    ['224.0.0.1/24', '224.0.0.0/4 (multicast)'],
    ['0.1.2.1/24', '0.0.0.0/8'],
  ])('%s', (cidr, named) => {
    const problem = unusableAddress(vnet({ mode: 'nat', ipv4: { cidr } }));
    if (named === undefined) expect(problem).toBeUndefined();
    else expect(problem).toContain(`spec.ipv4.cidr ${cidr} overlaps ${named}`);
  });
});

describe('unusableAddress: addresses inside the subnet that cannot serve', () => {
  // Measured on libvirtd 9.0: a DHCP range from the network address was refused at define
  // (DefineFailed, retried for ever, kstatus InProgress); a host address that is the broadcast
  // address, and a fixed lease on the host's own address, started and went Ready.
  const dhcp = { rangeStart: '192.168.174.10', rangeEnd: '192.168.174.20' };
  it.each<[string, NonNullable<Parameters<typeof vnet>[0]['ipv4']>, string | undefined]>([
    ['a usable network', { cidr: '192.168.174.1/24', dhcp }, undefined],
    [
      'the host address is the broadcast address',
      { cidr: '192.168.174.255/24' },
      'spec.ipv4.cidr 192.168.174.255/24: the host address is the broadcast address',
    ],
    [
      'a DHCP range from the network address',
      { cidr: '192.168.174.1/24', dhcp: { ...dhcp, rangeStart: '192.168.174.0' } },
      'spec.ipv4.dhcp.rangeStart 192.168.174.0 is the network address of 192.168.174.0/24',
    ],
    [
      'a DHCP range up to the broadcast address',
      { cidr: '192.168.174.1/24', dhcp: { ...dhcp, rangeEnd: '192.168.174.255' } },
      'spec.ipv4.dhcp.rangeEnd 192.168.174.255 is the broadcast address of 192.168.174.0/24',
    ],
    [
      // libvirt: "range 10.0.0.2 - 10.255.255.254 is too large (> 65535)", at define.
      'a DHCP range of more than 65535 addresses',
      { cidr: '10.0.0.1/8', dhcp: { rangeStart: '10.0.0.2', rangeEnd: '10.1.0.2' } },
      'spec.ipv4.dhcp: the range 10.0.0.2 - 10.1.0.2 holds 65537 addresses; libvirt serves at most 65534',
    ],
    [
      'a DHCP range of 65535 addresses (libvirt refuses it too)',
      { cidr: '10.0.0.1/8', dhcp: { rangeStart: '10.0.0.2', rangeEnd: '10.1.0.0' } },
      'holds 65535 addresses',
    ],
    [
      'a DHCP range of 65534 addresses',
      { cidr: '10.0.0.1/8', dhcp: { rangeStart: '10.0.0.2', rangeEnd: '10.0.255.255' } },
      undefined,
    ],
    [
      "a fixed lease on the host's own address",
      {
        cidr: '192.168.174.0/24',
        dhcp: { ...dhcp, hosts: [{ macAddress: '52:54:00:00:00:01', ipAddress: '192.168.174.1' }] },
      },
      'spec.ipv4.dhcp.hosts[52:54:00:00:00:01].ipAddress 192.168.174.1 is the host address',
    ],
  ])('%s', (_name, ipv4, message) => {
    const problem = unusableAddress(vnet({ mode: 'nat', ipv4 }));
    if (message === undefined) expect(problem).toBeUndefined();
    else expect(problem).toContain(message);
  });
});

it('an IPv6 DHCP range across two 16-bit blocks is InvalidAddress (libvirt refuses it at define)', () => {
  // Measured on libvirt 9.0: fd00:1::1:0 - fd00:1::1:ffff defines; fd00:1::10 - fd00:1::1:ffff
  // (fewer addresses) is "too large (> 65535)".
  const spec = (rangeStart: string, rangeEnd: string) => ({
    mode: 'isolated' as const,
    ipv6: { cidr: 'fd00:1::1/64', dhcp: { rangeStart, rangeEnd } },
  });
  expect(unusableAddress(vnet(spec('fd00:1::1:0', 'fd00:1::1:ffff')))).toBeUndefined();
  expect(unusableAddress(vnet(spec('fd00:1::10', 'fd00:1::1:ffff')))).toContain(
    'spec.ipv6.dhcp: the range fd00:1::10 - fd00:1::1:ffff spans more than one block',
  );
});
