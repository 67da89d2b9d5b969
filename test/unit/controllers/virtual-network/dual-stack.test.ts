// The network form of ipv4.cidr, and ipv6 (dual stack): schema verdicts offline, the desired
// document, what libvirt reads back, and the restart-time comparison.
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../../../src/api/validate.js';
import {
  canonicalIpv6,
  desiredNetwork,
  ipv4HostAddress,
  ipv6HostAddress,
  unusableAddress,
} from '../../../../src/controllers/virtual-network/desired.js';
import { restartFields } from '../../../../src/controllers/virtual-network/plan.js';
import {
  buildNetworkXML,
  changedNetworkFields,
  parseNetworkXML,
} from '../../../../src/libvirt/xml/network.js';
import { vnet } from './fixtures.js';

const manifest = (spec: object) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualNetwork',
  metadata: { name: 'net-a' },
  spec,
});
const problems = (spec: object) =>
  validateManifest(manifest(spec)).map((p) => `${p.field}: ${p.message}`);

describe('ipv4.cidr in the network form', () => {
  it('is accepted offline like the host-address form', () => {
    expect(problems({ mode: 'nat', ipv4: { cidr: '192.168.150.0/24' } })).toEqual([]);
    expect(problems({ mode: 'nat', ipv4: { cidr: '192.168.150.1/24' } })).toEqual([]);
  });

  it('gives the host the first usable address', () => {
    const doc = desiredNetwork(
      vnet({
        mode: 'nat',
        ipv4: {
          cidr: '192.168.150.0/24',
          dhcp: { rangeStart: '192.168.150.100', rangeEnd: '192.168.150.199' },
        },
      }),
    );
    expect(doc.ips).toEqual([
      {
        address: '192.168.150.1',
        prefix: 24,
        dhcp: { ranges: [{ start: '192.168.150.100', end: '192.168.150.199' }], hosts: [] },
      },
    ]);
  });

  it.each([
    ['192.168.150.0/24', '192.168.150.1'],
    ['192.168.150.1/24', '192.168.150.1'],
    ['192.168.150.7/24', '192.168.150.7'],
    ['10.0.0.0/8', '10.0.0.1'],
    ['172.16.4.0/22', '172.16.4.1'],
  ])('%s -> host %s', (cidr, host) => {
    expect(ipv4HostAddress(cidr).address).toBe(host);
  });

  it('is compared by the host address, so the network form does not look like drift', () => {
    const net = vnet({ mode: 'nat', ipv4: { cidr: '192.168.150.0/24' } });
    const doc = desiredNetwork(net);
    const readBack = parseNetworkXML(buildNetworkXML(doc));
    expect(restartFields(doc, readBack)).toEqual([]);
    // Switching between the two forms of the same network changes nothing.
    const hostForm = desiredNetwork(vnet({ mode: 'nat', ipv4: { cidr: '192.168.150.1/24' } }));
    expect(restartFields(hostForm, readBack)).toEqual([]);
  });
});

describe('ipv6', () => {
  const dual = (ipv6: object) => ({
    mode: 'nat',
    ipv4: { cidr: '192.168.150.1/24' },
    ipv6,
  });

  it.each([
    [{ cidr: 'fd00:10:1::1/64' }, []],
    [{ cidr: 'fd00:10:1::/64' }, []],
    [{ cidr: 'FD00:10:1::1/64' }, []],
    [
      {
        cidr: 'fd00:10:1::1/112',
        dhcp: { rangeStart: 'fd00:10:1::100', rangeEnd: 'fd00:10:1::1ff' },
      },
      [],
    ],
    [{ cidr: 'fd00:10:1::1/48' }, ['spec.ipv6.cidr']],
    [{ cidr: 'fd00:10:1::1/127' }, ['spec.ipv6.cidr']],
    [{ cidr: '192.168.1.1/24' }, ['spec.ipv6.cidr']],
    [{ cidr: 'fe80::1/64' }, ['spec.ipv6.cidr']],
    [{ cidr: 'ff02::1/64' }, ['spec.ipv6.cidr']],
    [{ cidr: '::1/64' }, ['spec.ipv6.cidr']],
    [{ cidr: 'fd00::1::2/64' }, ['spec.ipv6.cidr']],
    [{ cidr: 'fd00:10:1::1' }, ['spec.ipv6.cidr']],
    [
      { cidr: 'fd00:10:1::1/64', dhcp: { rangeStart: 'fd00:10:2::1', rangeEnd: 'fd00:10:1::9' } },
      ['spec.ipv6.dhcp.rangeStart'],
    ],
    [
      { cidr: 'fd00:10:1::1/64', dhcp: { rangeStart: 'fd00:10:1::1', rangeEnd: '10.0.0.1' } },
      ['spec.ipv6.dhcp.rangeEnd'],
    ],
    [
      { cidr: 'fd00:10:1::1/64', dhcp: { rangeStart: 'fd00:10:1::1' } },
      ['spec.ipv6.dhcp.rangeEnd'],
    ],
  ] as const)('%j -> problems at %j', (ipv6, fields) => {
    const found = problems(dual(ipv6)).map((p) => p.split(':')[0]);
    expect([...new Set(found)]).toEqual(fields);
  });

  it('is refused with mode bridge, naming the field', () => {
    expect(problems({ mode: 'bridge', bridge: 'br0', ipv6: { cidr: 'fd00:10:1::1/64' } })).toEqual([
      "spec.ipv6: ipv6 cannot be set when mode is bridge (the host bridge's own network applies)",
    ]);
  });

  it('becomes a second <ip family="ipv6"> with the host address and a DHCPv6 range', () => {
    const doc = desiredNetwork(
      vnet({
        mode: 'nat',
        ipv4: { cidr: '192.168.150.1/24' },
        ipv6: {
          cidr: 'FD00:0010:0001:0000::/64',
          dhcp: { rangeStart: 'fd00:10:1:0::0100', rangeEnd: 'fd00:10:1::01ff' },
        },
      }),
    );
    expect(doc.ips[1]).toEqual({
      family: 'ipv6',
      address: 'fd00:10:1::1',
      prefix: 64,
      dhcp: { ranges: [{ start: 'fd00:10:1::100', end: 'fd00:10:1::1ff' }], hosts: [] },
    });
    expect(buildNetworkXML(doc)).toContain(`<ip family="ipv6" address="fd00:10:1::1" prefix="64">`);
  });

  it('an isolated network may be IPv6 only', () => {
    const doc = desiredNetwork(vnet({ mode: 'isolated', ipv6: { cidr: 'fd00:10:1::1/64' } }));
    expect(doc.ips).toEqual([{ family: 'ipv6', address: 'fd00:10:1::1', prefix: 64 }]);
  });

  it('matches what libvirt reads back, and a changed prefix or range is restart-time', () => {
    const spec = {
      mode: 'nat' as const,
      ipv4: { cidr: '192.168.150.1/24' },
      ipv6: {
        cidr: 'fd00:10:1::1/64',
        dhcp: { rangeStart: 'fd00:10:1::100', rangeEnd: 'fd00:10:1::1ff' },
      },
    };
    const doc = desiredNetwork(vnet(spec));
    // As libvirt 9.0 printed it for such a network (net-dumpxml).
    const live = parseNetworkXML(`<network>
  <name>net-a</name>
  <uuid>${doc.uuid}</uuid>
  <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
  <bridge name='${doc.bridge?.name}' stp='on' delay='0'/>
  <mac address='52:54:00:d1:23:09'/>
  <ip address='192.168.150.1' prefix='24'/>
  <ip family='ipv6' address='fd00:10:1::1' prefix='64'>
    <dhcp>
      <range start='fd00:10:1::100' end='fd00:10:1::1ff'/>
    </dhcp>
  </ip>
</network>`);
    expect(restartFields(doc, live)).toEqual([]);
    expect(changedNetworkFields(doc, live)).toEqual([]);
    const wider = desiredNetwork(
      vnet({ ...spec, ipv6: { ...spec.ipv6, cidr: 'fd00:10:1::1/112' } }),
    );
    expect(restartFields(wider, live)).toEqual(['spec.ipv6.cidr']);
    const range = desiredNetwork(
      vnet({
        ...spec,
        ipv6: { ...spec.ipv6, dhcp: { rangeStart: 'fd00:10:1::100', rangeEnd: 'fd00:10:1::2ff' } },
      }),
    );
    expect(restartFields(range, live)).toEqual(['spec.ipv6.dhcp']);
    const v4only = desiredNetwork(vnet({ mode: 'nat', ipv4: spec.ipv4 }));
    expect(restartFields(v4only, live)).toEqual(['spec.ipv6.cidr', 'spec.ipv6.dhcp']);
  });

  it('a reversed DHCPv6 range is the agent’s to refuse (CEL cannot order IPv6)', () => {
    const net = vnet({
      mode: 'isolated',
      ipv6: {
        cidr: 'fd00:10:1::1/64',
        dhcp: { rangeStart: 'fd00:10:1::1ff', rangeEnd: 'fd00:10:1::100' },
      },
    });
    expect(unusableAddress(net)).toBe(
      'spec.ipv6.dhcp.rangeEnd fd00:10:1::100 is lower than rangeStart fd00:10:1::1ff',
    );
  });

  it.each([
    ['fd00:10:1::/64', 'fd00:10:1::1'],
    ['fd00:10:1::1/64', 'fd00:10:1::1'],
    ['fd00:10:1::5/112', 'fd00:10:1::5'],
    ['fd00:10:1:0:0:0:1:0/112', 'fd00:10:1::1:1'],
  ])('host address of %s is %s', (cidr, host) => {
    expect(ipv6HostAddress(cidr).address).toBe(host);
  });

  it.each([
    ['FD00:0010:0001:0000:0000:0000:0000:0001', 'fd00:10:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['fd00:1:2:3:4:5:6:7', 'fd00:1:2:3:4:5:6:7'],
    ['fd00:0:1:2:3:4:5:6', 'fd00:0:1:2:3:4:5:6'],
    ['::', '::'],
    ['1::', '1::'],
    ['::2', '::2'],
  ])('%s is written as libvirt prints it: %s', (address, canonical) => {
    expect(canonicalIpv6(address)).toBe(canonical);
  });
});
