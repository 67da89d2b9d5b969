// What observeDomain reports of a running domain's network ports, against a state-based fake
// of the libvirt objects it reads: a domain that stops while it is being observed.
import { describe, expect, it } from 'vitest';
import { observeDomain } from '../../../../src/controllers/virtual-machine/observe.js';
import { unpluggedInterfaces } from '../../../../src/controllers/virtual-machine/plan.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { buildDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { desired, vm } from './machines.js';

const PORT = 'f57b8b5b-4ed6-4b37-89a3-c3c9834b3152';

/**
 * One host: a domain running on network `lab` with its port plugged in, until `stop()`, which
 * does what libvirt's stop does in that order: the network's ports are released first, the
 * domain reads as shut off a moment later (`finishStop()`).
 */
function host(machine: ReturnType<typeof vm>) {
  const xml = buildDomainXML(desired(machine)).replace(
    /<source network="lab"\/>/,
    `<source network="lab" portid="${PORT}"/>`,
  );
  if (!xml.includes(PORT)) throw new Error('fixture: no interface on network lab');
  const state = { active: true, ports: [PORT], stopAtPortList: false };
  const network = {
    getDHCPLeases: () => Promise.resolve([]),
    listPortUUIDs: () => {
      // The stop ran just before this list was read: its ports are gone, and so is the run.
      if (state.stopAtPortList) Object.assign(state, { ports: [], active: false });
      return Promise.resolve([...state.ports]);
    },
  };
  const domain = {
    getXMLDesc: () => Promise.resolve(xml),
    getState: () =>
      Promise.resolve(
        state.active
          ? { state: 1, reason: 1, stateName: 'running', reasonName: 'booted' }
          : { state: 5, reason: 1, stateName: 'shutoff', reasonName: 'shutdown' },
      ),
    isActive: () => Promise.resolve(state.active),
    isPersistent: () => Promise.resolve(false),
    getID: () => 7,
    memoryStats: () => Promise.resolve({}),
    interfaceAddresses: () => Promise.resolve([]),
    connect: { lookupNetworkByName: () => Promise.resolve(network) },
  };
  const conn = {
    lookupDomainByUUIDString: () => Promise.resolve(domain),
  } as unknown as Connect;
  return { conn, state };
}

describe('observeDomain: network ports', () => {
  const machine = vm({ interfaces: [{ name: 'eth0', network: 'lab', model: 'virtio' }] });

  it('reports the ports of a running domain, its own among them', async () => {
    const { conn } = host(machine);
    const seen = await observeDomain(conn, machine);
    if (seen.state !== 'ours' || !seen.live) throw new Error(`not ours and running: ${seen.state}`);
    expect(seen.networkPorts?.get('lab')).toEqual(new Set([PORT]));
    expect(unpluggedInterfaces(seen.live, seen.networkPorts ?? new Map())).toEqual([]);
  });

  // Seen on qemu:///system: a machine being stopped (runStrategy Halted) got a Warning
  // RestartRequired "unplugged: network ... was restarted" though no network had restarted.
  it('does not take the ports a stopping domain released for an unplugged interface', async () => {
    const { conn, state } = host(machine);
    state.stopAtPortList = true;
    const seen = await observeDomain(conn, machine);
    if (seen.state !== 'ours' || !seen.live) throw new Error(`not ours and running: ${seen.state}`);
    expect(unpluggedInterfaces(seen.live, seen.networkPorts ?? new Map())).toEqual([]);
  });

  it('still reports an interface whose port a running network lacks', async () => {
    const { conn, state } = host(machine);
    state.ports = [];
    const seen = await observeDomain(conn, machine);
    if (seen.state !== 'ours' || !seen.live) throw new Error(`not ours and running: ${seen.state}`);
    const cut = unpluggedInterfaces(seen.live, seen.networkPorts ?? new Map());
    expect(cut).toHaveLength(1);
    expect(cut[0]).toContain('unplugged: network lab was restarted');
  });
});
