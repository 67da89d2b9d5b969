import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  buildDhcpHostXML,
  buildDnsHostXML,
  buildNetworkXML,
  changedNetworkFields,
  parseDhcpHostXML,
  parseNetworkXML,
  type NetworkDocument,
} from '../../../src/libvirt/xml/network.js';
import { natNetwork } from '../../fixtures/xml/cases.js';

const LIBVIRT = join(import.meta.dirname, '../../fixtures/xml/libvirt');

const network = (body: string) => `<network><name>n</name><uuid>u</uuid>${body}</network>`;

describe('parseNetworkXML', () => {
  it("reads the test driver's default network", () => {
    expect(
      parseNetworkXML(readFileSync(join(LIBVIRT, 'test-driver-network-default.xml'), 'utf8')),
    ).toStrictEqual({
      name: 'default',
      uuid: 'dd8fe884-6c02-601e-7551-cca97df1c5df',
      forward: 'nat',
      bridge: { name: 'virbr0', stp: true, delay: 0 },
      ips: [
        {
          address: '192.168.122.1',
          netmask: '255.255.255.0',
          dhcp: { ranges: [{ start: '192.168.122.2', end: '192.168.122.254' }], hosts: [] },
        },
      ],
    });
  });

  it('reads no <forward> as isolated and <forward> without a mode as NAT', () => {
    expect(parseNetworkXML(network('')).forward).toBe('none');
    expect(parseNetworkXML(network('<forward/>')).forward).toBe('nat');
    expect(parseNetworkXML(network(`<forward mode='route' dev='eth0'/>`)).forward).toBe('route');
  });

  it('ignores what libvirt adds: NAT port range, bridge MAC, IPv6 flags, DHCP leases', () => {
    const doc = parseNetworkXML(
      network(`<forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
        <bridge name='virbr1' stp='on' delay='0'/><mac address='52:54:00:11:22:33'/>
        <domain name='lab'/>
        <ip address='10.0.0.1' prefix='24' localPtr='yes'><dhcp><range start='10.0.0.2' end='10.0.0.9'><lease expiry='1' unit='hours'/></range></dhcp></ip>
        <ip family='ipv6' address='fd00::1' prefix='64'/>`),
    );
    expect(doc.ips).toStrictEqual([
      {
        address: '10.0.0.1',
        prefix: 24,
        dhcp: { ranges: [{ start: '10.0.0.2', end: '10.0.0.9' }], hosts: [] },
      },
      { family: 'ipv6', address: 'fd00::1', prefix: 64 },
    ]);
  });

  it.each([
    [
      `<forward mode='passthrough'/>`,
      `network/forward@mode: "passthrough" is not one of 'nat', 'route', 'bridge'`,
    ],
    [`<bridge name='b' stp='maybe'/>`, 'network/bridge@stp: "maybe" is neither yes/no nor on/off'],
    [`<mtu/>`, 'network/mtu@size: is missing'],
    [
      `<ip address='10.0.0.1'><dhcp><host mac='52:54:00:00:00:01'/></dhcp></ip>`,
      'network/ip[0]/dhcp/host[0]@ip: is missing',
    ],
    [`<ip address='1.1.1.1'/><ip prefix='24'/>`, 'network/ip[1]@address: is missing'],
    [`<dns><host><hostname>a</hostname></host></dns>`, 'network/dns/host[0]@ip: is missing'],
  ])('refuses %s, naming the field', (body, message) => {
    expect(() => parseNetworkXML(network(body))).toThrow(message);
  });
});

describe('virNetworkUpdate snippets', () => {
  it('writes a DHCP host without the optional parts it lacks', () => {
    expect(buildDhcpHostXML({ mac: '52:54:00:00:00:01', ip: '10.0.0.5' })).toBe(
      '<host mac="52:54:00:00:00:01" ip="10.0.0.5"/>\n',
    );
    expect(parseDhcpHostXML(`<host ip='10.0.0.5' name='by-name'/>`)).toStrictEqual({
      ip: '10.0.0.5',
      name: 'by-name',
    });
  });

  it('escapes a hostile host name in both snippets', () => {
    const xml = buildDnsHostXML({ ip: '10.0.0.5', hostnames: [`a"/><ip>`, 'b&c'] });
    expect(xml).toContain('<hostname>a&quot;/&gt;&lt;ip&gt;</hostname>');
    expect(buildDhcpHostXML({ ip: '1.1.1.1', name: `x' ip='2.2.2.2` })).toBe(
      `<host name="x&apos; ip=&apos;2.2.2.2" ip="1.1.1.1"/>\n`,
    );
  });
});

describe('changedNetworkFields', () => {
  const observed = parseNetworkXML(buildNetworkXML(natNetwork));
  const change = (edit: (d: NetworkDocument) => void): string[] => {
    const desired = structuredClone(natNetwork);
    edit(desired);
    return changedNetworkFields(desired, observed);
  };

  it('finds nothing when the owned fields agree', () => {
    expect(change(() => {})).toEqual([]);
  });

  it('separates DHCP and DNS host changes (live) from the rest (restart)', () => {
    expect(change((d) => d.ips[0]!.dhcp!.hosts.pop())).toEqual(['ips[0].dhcpHosts']);
    expect(change((d) => (d.dns!.hosts[0]!.hostnames = ['web-1']))).toEqual([
      'dnsHosts[0].hostnames',
    ]);
    expect(change((d) => (d.forward = 'route'))).toEqual(['forward']);
    expect(change((d) => (d.mtu = undefined))).toEqual(['mtu']);
    expect(change((d) => (d.ips[0]!.prefix = 16))).toEqual(['ips[0].prefix']);
  });

  it('leaves the bridge name, STP, delay and the stamp to libvirt when unset', () => {
    expect(
      change((d) => {
        d.bridge = undefined;
        d.stamp = undefined;
      }),
    ).toEqual([]);
  });

  it('treats no <dns> like a <dns> without records, and MACs without case', () => {
    const plain: NetworkDocument = { ...natNetwork, dns: undefined };
    expect(changedNetworkFields(plain, { ...plain, dns: { hosts: [] } })).toEqual([]);
    const upper = structuredClone(natNetwork);
    upper.ips[0]!.dhcp!.hosts[0]!.mac = '52:54:00:6B:3C:01';
    expect(changedNetworkFields(upper, observed)).toEqual([]);
  });
});
