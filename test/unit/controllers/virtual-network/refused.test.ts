// Which network failures no retry fixes (Stalled) and which pass (Reconciling). The dnsmasq
// messages are libvirt 9.0's own: exit status 1 measured with an IPv6 DHCP range on a /48
// (which the CRD keeps out); dnsmasq(8) keeps status 2 for network access, such as a
// listening address a leftover dnsmasq still holds.
import { describe, expect, it } from 'vitest';
import { isStalledReason } from '../../../../src/api/conditions.js';
import { actNetwork } from '../../../../src/controllers/virtual-network/act.js';
import { desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import { ErrorCode, LibvirtError } from '../../../../src/libvirt/errors.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import type { Network } from '../../../../src/libvirt/network.js';
import { vnet } from './fixtures.js';

const dnsmasqExit = (status: number, says: string) =>
  new LibvirtError(
    'internal error: Child process (VIR_BRIDGE_NAME=lvox1 /usr/sbin/dnsmasq ' +
      '--conf-file=/var/lib/libvirt/dnsmasq/lab.conf --leasefile-ro ' +
      `--dhcp-script=/usr/lib/libvirt/libvirt_leaseshelper) unexpected exit status ${status}: ` +
      `\ndnsmasq: ${says}\n`,
    { code: ErrorCode.VIR_ERR_INTERNAL_ERROR, domain: 0, level: 2 },
  );

async function startFailure(err: LibvirtError) {
  const network = { create: () => Promise.reject(err) } as unknown as Network;
  return (await actNetwork({} as Connect, network, [{ op: 'start' }], { bridgeFromSpec: true }))
    ?.problem;
}

describe('a network start that fails', () => {
  it('is StartRefused (Stalled) when dnsmasq rejects its configuration (exit status 1)', async () => {
    const problem = await startFailure(
      dnsmasqExit(1, 'prefix length must be at least 64 at line 15 of /var/lib/libvirt/x.conf'),
    );
    expect(problem?.reason).toBe('StartRefused');
    expect(problem?.message).toContain('prefix length must be at least 64');
    expect(isStalledReason('StartRefused')).toBe(true);
  });

  it('stays StartFailed (Reconciling) when dnsmasq finds its address taken (exit status 2)', async () => {
    const problem = await startFailure(
      dnsmasqExit(2, 'failed to create listening socket for 10.77.0.1: Address already in use'),
    );
    expect(problem?.reason).toBe('StartFailed');
    expect(problem?.message).toContain('Address already in use');
    expect(isStalledReason('StartFailed')).toBe(false);
  });

  it('stays StartFailed for an exit status that merely starts with 1 (e.g. 11)', async () => {
    expect((await startFailure(dnsmasqExit(11, 'something')))?.reason).toBe('StartFailed');
  });

  it('is StartRefused for a configuration libvirt itself refuses', async () => {
    const err = new LibvirtError('unsupported configuration: something this libvirt lacks', {
      code: ErrorCode.VIR_ERR_CONFIG_UNSUPPORTED,
      domain: 0,
      level: 2,
    });
    expect((await startFailure(err))?.reason).toBe('StartRefused');
  });
});

describe('a network define that fails', () => {
  const define = async (err: LibvirtError) => {
    const conn = { defineNetworkXML: () => Promise.reject(err) } as unknown as Connect;
    const doc = desiredNetwork(vnet({ ipv4: { cidr: '10.203.2.1/24' } }));
    return (await actNetwork(conn, undefined, [{ op: 'define', doc }], { bridgeFromSpec: true }))
      ?.problem;
  };

  it('is DefineRefused for invalid XML, and DefineFailed for a full disk', async () => {
    const invalid = new LibvirtError('XML error: invalid something', {
      code: ErrorCode.VIR_ERR_XML_ERROR,
      domain: 0,
      level: 2,
    });
    const full = new LibvirtError(
      "Failed to write file '/etc/libvirt/qemu/networks/lab.xml.new': No space left on device",
      { code: ErrorCode.VIR_ERR_SYSTEM_ERROR, domain: 0, level: 2 },
    );
    expect((await define(invalid))?.reason).toBe('DefineRefused');
    expect((await define(full))?.reason).toBe('DefineFailed');
    expect(isStalledReason('DefineFailed')).toBe(false);
  });
});
