// What observeDomain reports of a running domain's network ports, against a state-based fake
// of the libvirt objects it reads: a domain that stops while it is being observed.
import { describe, expect, it } from 'vitest';
import {
  addressesShownFor,
  currentLeases,
  earlierLeasesOf,
  leaseKey,
  observeDomain,
} from '../../../../src/controllers/virtual-machine/observe.js';
import type { NetworkDHCPLease } from '../../../../src/libvirt/network.js';
import {
  heldMarker,
  unpluggedInterfaces,
} from '../../../../src/controllers/virtual-machine/plan.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { buildDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { desired, vm } from './machines.js';

const PORT = 'f57b8b5b-4ed6-4b37-89a3-c3c9834b3152';

/**
 * One host: a domain running on network `lab` with its port plugged in, until `stop()`, which
 * does what libvirt's stop does in that order: the network's ports are released first, the
 * domain reads as shut off a moment later (`finishStop()`).
 */
function host(machine: ReturnType<typeof vm>, leases: NetworkDHCPLease[] = []) {
  const xml = buildDomainXML(desired(machine)).replace(
    /<source network="lab"\/>/,
    `<source network="lab" portid="${PORT}"/>`,
  );
  if (!xml.includes(PORT)) throw new Error('fixture: no interface on network lab');
  const state = { active: true, ports: [PORT], stopAtPortList: false, reason: 'booted' };
  const network = {
    getDHCPLeases: () => Promise.resolve(leases),
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
          ? { state: 1, reason: 1, stateName: 'running', reasonName: state.reason }
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

/**
 * What libvirt 9.0 listed for one guest (measured on hfw-net): its IPv6 range was changed and
 * the network restarted, the guest restarted and took an address in the new range, then IPv6
 * was removed from the network and the network restarted again.
 */
const MAC = '52:54:00:01:55:51';
const DUID = '00:04:f7:08:dc:f6:19:dd:43:c4:a5:b1:45:f3:34:8f:18:78';
function lease(ipaddr: string, over: Partial<NetworkDHCPLease>): NetworkDHCPLease {
  return {
    iface: 'lvoe6da8abea6',
    expiryTime: 1796549649,
    type: 0,
    mac: MAC,
    iaid: null,
    ipaddr,
    prefix: 24,
    hostname: null,
    clientid: `01:${MAC}`,
    ...over,
  };
}
const v4 = lease('10.231.0.135', {});
const oldV6 = lease('fd00:231::1fa', {
  type: 1,
  prefix: 64,
  clientid: DUID,
  iaid: '87377',
  expiryTime: 1796632187,
});
const newV6 = { ...oldV6, ipaddr: 'fd00:231::2fa', expiryTime: 1796632253 };

describe('currentLeases: the leases a guest can still hold', () => {
  it('keeps only the newest lease of one client and identity association', () => {
    expect(currentLeases([oldV6, v4, newV6]).map((l) => l.ipaddr)).toEqual([
      'fd00:231::2fa',
      '10.231.0.135',
    ]);
  });

  it('drops leases of a family the running network no longer has (prefix 0)', () => {
    const gone = [oldV6, newV6].map((l) => ({ ...l, prefix: 0 }));
    expect(currentLeases([...gone, v4]).map((l) => l.ipaddr)).toEqual(['10.231.0.135']);
  });

  it('keeps the leases of different clients and associations', () => {
    const other = { ...newV6, iaid: '1', ipaddr: 'fd00:231::2fb' };
    expect(currentLeases([newV6, other]).map((l) => l.ipaddr)).toEqual([
      'fd00:231::2fa',
      'fd00:231::2fb',
    ]);
  });

  it("through observeDomain: the status addresses are the guest's current ones", async () => {
    const machine = vm({
      interfaces: [{ name: 'eth0', network: 'lab', macAddress: MAC, model: 'virtio' }],
    });
    const { conn } = host(machine, [oldV6, v4, newV6]);
    // A run this process started, with no lease listed before it.
    const seen = await observeDomain(conn, machine, { keys: new Set() });
    expect(seen.state === 'ours' && seen.addresses.get(MAC)).toEqual([
      '10.231.0.135',
      'fd00:231::2fa',
    ]);
  });
});

describe('earlierLeasesOf: the leases of earlier runs', () => {
  const old = lease('10.231.0.150', { expiryTime: 1796549000 });
  const fresh = lease('10.231.0.151', { expiryTime: 1796549900 });
  const keys = (...l: NetworkDHCPLease[]) => new Set(l.map(leaseKey));

  it('keeps what was listed before a start this process made, for the run it sees', () => {
    const before = { keys: keys(old) };
    expect(earlierLeasesOf(8, before, [old], new Set())).toEqual({ run: 8, keys: keys(old) });
    expect(earlierLeasesOf(8, { run: 8, keys: keys(old) }, [fresh], new Set())).toEqual({
      run: 8,
      keys: keys(old),
    });
  });

  // A snapshot revert or `virsh start`: the agent did not start the run, it sees a new ID.
  it("counts every lease listed at a run's first look as an earlier run's", () => {
    const seen = { run: 7, keys: new Set<string>() };
    expect(earlierLeasesOf(9, seen, [old], new Set(['10.231.0.150']))).toEqual({
      run: 9,
      keys: keys(old),
    });
    expect(earlierLeasesOf(9, { run: -1, keys: new Set() }, [old], new Set())).toEqual({
      run: 9,
      keys: keys(old),
    });
  });

  // A revert to a memory checkpoint starts a new QEMU (new ID) whose guest memory still holds
  // the lease it had: libvirt's dnsmasq gave its MAC the same address, listed before the run.
  it("counts none as an earlier run's for a checkpoint a restore brought back", () => {
    const seen = { run: 7, keys: new Set<string>() };
    expect(earlierLeasesOf(9, seen, [old], new Set(), true)).toEqual({ run: 9, keys: new Set() });
    expect(earlierLeasesOf(9, undefined, [old], new Set(), true)).toEqual({
      run: 9,
      keys: new Set(),
    });
    // Known for this very run (a later look): what the first look decided stays.
    expect(earlierLeasesOf(9, { run: 9, keys: keys(old) }, [old], new Set(), true)).toEqual({
      run: 9,
      keys: keys(old),
    });
  });

  it('through observeDomain: a restored run shows the lease listed at its first look', async () => {
    const machine = vm({
      interfaces: [{ name: 'eth0', network: 'lab', macAddress: MAC, model: 'virtio' }],
    });
    const { conn, state } = host(machine, [v4]);
    const previous = { run: 3, keys: new Set<string>() };
    // `virsh start`: the lease listed at the new run's first look is the last run's.
    const started = await observeDomain(conn, machine, previous);
    expect(started.state === 'ours' && started.addresses.get(MAC)).toEqual(undefined);
    state.reason = 'from_snapshot';
    const restored = await observeDomain(conn, machine, previous);
    expect(restored.state === 'ours' && restored.addresses.get(MAC)).toEqual(['10.231.0.135']);
    // Resumed since (reason unpaused), with the run named held in RestartRequired.
    state.reason = 'unpaused';
    const held = {
      ...machine,
      status: {
        conditions: [
          {
            type: 'RestartRequired',
            status: 'True' as const,
            reason: 'PendingChanges',
            message: `pending: spec.maxMemory; ${heldMarker({ run: 7, generation: 1 })} with ...`,
            lastTransitionTime: '2026-03-01T12:00:00Z',
          },
        ],
      },
    };
    const resumed = await observeDomain(conn, held, previous);
    expect(resumed.state === 'ours' && resumed.addresses.get(MAC)).toEqual(['10.231.0.135']);
  });

  it('after an agent restart, keeps showing what the status showed for a run that was up', () => {
    expect(earlierLeasesOf(9, undefined, [fresh], new Set(['10.231.0.151']))).toEqual({
      run: 9,
      keys: new Set(),
    });
    // A guest paused since its start: the status showed no address, the lease is the last run's.
    expect(earlierLeasesOf(9, undefined, [old], new Set())).toEqual({ run: 9, keys: keys(old) });
  });

  it('takes the addresses shown only from a status written while the domain was up', () => {
    const shown = (state: string | undefined, ips: string[]) =>
      addressesShownFor({
        ...vm({}),
        status: {
          ...(state ? { state: { state, reason: 'x' } } : {}),
          interfaces: [{ name: 'eth0', macAddress: MAC, ipAddresses: ips }],
        },
      });
    expect(shown('running', ['10.0.0.5', 'fd00::5'])).toEqual(new Set(['10.0.0.5', 'fd00::5']));
    expect(shown('paused', ['10.0.0.5'])).toEqual(new Set(['10.0.0.5']));
    expect(shown('shutoff', ['10.0.0.5'])).toEqual(new Set());
    expect(shown(undefined, ['10.0.0.5'])).toEqual(new Set());
  });

  it('through observeDomain: a run seen first hides the lease its previous run left', async () => {
    const machine = vm({
      interfaces: [{ name: 'eth0', network: 'lab', macAddress: MAC, model: 'virtio' }],
    });
    const { conn } = host(machine, [old]);
    const seen = await observeDomain(conn, machine, { run: 3, keys: new Set() });
    if (seen.state !== 'ours') throw new Error(seen.state);
    expect(seen.addresses.get(MAC)).toBeUndefined();
    expect(seen.earlierLeases).toEqual({ run: 7, keys: keys(old) });
  });
});
