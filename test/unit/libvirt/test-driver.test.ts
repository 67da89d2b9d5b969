import { describe, expect, it } from 'vitest';
import { networkHasIP, networkInterfaceNetworks } from '../../../src/libvirt/test-driver.js';

describe('the test driver guard, reading definitions', () => {
  it("lists the networks of a domain's network interfaces only", () => {
    const xml = `<domain type='test'><name>d</name><devices>
      <interface type='network'><source network='lab'/></interface>
      <interface type='bridge'><source bridge='br0'/></interface>
      <disk type='file' device='disk'/>
      <interface type='network'><source network='host'/></interface>
    </devices></domain>`;
    expect(networkInterfaceNetworks(xml)).toEqual(['lab', 'host']);
    expect(networkInterfaceNetworks(`<domain><name>d</name></domain>`)).toEqual([]);
    expect(
      networkInterfaceNetworks(
        `<domain><devices><interface type='network'><source network='one'/></interface></devices></domain>`,
      ),
    ).toEqual(['one']);
  });

  it('tells a network with an <ip> (IPv4 or IPv6) from one without', () => {
    expect(
      networkHasIP(`<network><name>n</name><forward mode='bridge'/><bridge name='br0'/></network>`),
    ).toBe(false);
    expect(
      networkHasIP(`<network><name>n</name><ip address='10.0.0.1' prefix='24'/></network>`),
    ).toBe(true);
    expect(
      networkHasIP(
        `<network><name>n</name><ip family='ipv6' address='fd00::1' prefix='64'/><ip address='10.0.0.1' prefix='24'/></network>`,
      ),
    ).toBe(true);
  });
});
