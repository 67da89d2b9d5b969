import { describe, expect, it } from 'vitest';
import { isStalledReason } from '../../../../src/api/conditions.js';
import { actNetwork } from '../../../../src/controllers/virtual-network/act.js';
import { bridgeName, desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import { parseHostRoutes } from '../../../../src/controllers/virtual-network/observe.js';
import type { OursNetwork } from '../../../../src/controllers/virtual-network/observe.js';
import { createsBridge, planPresent } from '../../../../src/controllers/virtual-network/plan.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';
import type { Network } from '../../../../src/libvirt/network.js';
import { vnet } from './fixtures.js';

// Measured on a Debian 12 host: eth0 with a default route, two libvirt bridges (netxa0 holds
// 10.203.1.0/24 and fd00:203:1::/64), lo's local and unreachable IPv6 entries.
const PROC_NET_ROUTE = [
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
  'netxa0\t0001CB0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
  'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
].join('\n');
const PROC_NET_IPV6_ROUTE = [
  'fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0',
  'fd000203000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   netxa0',
  '00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0',
  '00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001       lo',
  '00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo',
].join('\n');
const routes = parseHostRoutes(PROC_NET_ROUTE, PROC_NET_IPV6_ROUTE, true);

describe('the host routes a new network must not overlap', () => {
  it('keeps the routes to subnets: no default route, lo or reject entry', () => {
    expect(routes.map((r) => [r.iface, r.family, r.prefix])).toEqual([
      ['netxa0', 'ipv4', 24],
      ['eth0', 'ipv4', 24],
      ['eth0', 'ipv6', 64],
      ['netxa0', 'ipv6', 64],
    ]);
    expect(routes[0]?.network).toBe(0x0acb0100n); // 10.203.1.0
  });

  it.each<[string, Parameters<typeof vnet>[0], string | undefined]>([
    [
      'a subnet inside a host one',
      { ipv4: { cidr: '10.203.1.129/25' } },
      'spec.ipv4.cidr 10.203.1.128/25 overlaps 10.203.1.0/24 of interface netxa0',
    ],
    [
      'the same subnet',
      { ipv4: { cidr: '10.203.1.1/24' } },
      'spec.ipv4.cidr 10.203.1.0/24 overlaps 10.203.1.0/24 of interface netxa0',
    ],
    [
      'a subnet holding a host one',
      { ipv4: { cidr: '10.203.0.1/16' } },
      'spec.ipv4.cidr 10.203.0.0/16 overlaps 10.203.1.0/24 of interface netxa0',
    ],
    [
      'an IPv6 subnet inside a host one',
      { ipv4: { cidr: '10.203.2.1/24' }, ipv6: { cidr: 'fd00:203:1::8:0/112' } },
      'spec.ipv6.cidr fd00:203:1::8:0/112 overlaps fd00:203:1::/64 of interface netxa0',
    ],
    [
      'a free subnet',
      { ipv4: { cidr: '10.203.2.1/24' }, ipv6: { cidr: 'fd00:203:2::/64' } },
      undefined,
    ],
  ])('%s', (_name, spec, message) => {
    const plan = planPresent(vnet(spec), { state: 'absent' }, 'node-1', { routes });
    if (!message) {
      expect(plan.problem).toBeUndefined();
      return;
    }
    expect(plan.steps).toEqual([]);
    expect(plan.problem?.reason).toBe('SubnetConflict');
    expect(plan.problem?.message).toContain(`${message} on node node-1`);
    expect(isStalledReason('SubnetConflict')).toBe(true);
  });

  describe('a running network whose spec moves it to a subnet a host interface has', () => {
    // Seen on libvirtd 9.0: the agent reported only RestartRequired, the user restarted the
    // network as told, and it then stayed down with SubnetConflict, its guests cut off.
    const running = (spec: Parameters<typeof vnet>[0]): OursNetwork => ({
      state: 'ours',
      network: undefined as unknown as Network,
      uuid: '',
      active: true,
      persistent: true,
      autostart: true,
      current: desiredNetwork(vnet(spec)),
      config: desiredNetwork(vnet(spec)),
    });

    it('is SubnetConflict now, before a restart, and its saved definition is kept', () => {
      const now = running({ bridge: 'virbr9', ipv4: { cidr: '10.203.9.1/24' } });
      const moved = vnet({ bridge: 'virbr9', ipv4: { cidr: '10.203.1.1/24' } });
      const plan = planPresent(moved, now, 'node-1', { routes });
      expect(plan.steps).toEqual([]);
      expect(plan.problem?.reason).toBe('SubnetConflict');
      expect(plan.problem?.message).toContain(
        'spec.ipv4.cidr 10.203.1.0/24 overlaps 10.203.1.0/24 of interface netxa0 on node node-1',
      );
    });

    it('a new spec.bridge that a host device already has is BridgeInUse now, before a restart', () => {
      // Seen on libvirtd 9.0 with `ip link add hnetbr0 type bridge`: the define is accepted,
      // the agent said RestartRequired, and the restart it advised failed ("File exists").
      const now = running({ bridge: 'virbr9', ipv4: { cidr: '10.203.9.1/24' } });
      const renamed = vnet({ bridge: 'hnetbr0', ipv4: { cidr: '10.203.9.1/24' } });
      const plan = planPresent(renamed, now, 'node-1', { routes, bridgeTaken: true });
      expect(plan.steps).toEqual([]);
      expect(plan.problem?.reason).toBe('BridgeInUse');
      expect(plan.problem?.message).toContain("node node-1 already has a network device 'hnetbr0'");
    });

    it('a device with the derived bridge name is named as a leftover, not a spec.bridge to omit', () => {
      // No spec.bridge: the name comes from metadata.uid, so "omit spec.bridge" cannot help.
      const stopped = { ...running({ ipv4: { cidr: '10.203.9.1/24' } }), active: false };
      const spec = vnet({ ipv4: { cidr: '10.203.9.1/24' } });
      const bridge = bridgeName(spec);
      const plan = planPresent(spec, stopped, 'node-1', { routes, bridgeTaken: true });
      expect(plan.steps).toEqual([]);
      expect(plan.problem?.reason).toBe('BridgeInUse');
      expect(plan.problem?.message).toContain(`a network device '${bridge}', the bridge name`);
      expect(plan.problem?.message).toContain(`ip link del ${bridge}`);
      expect(plan.problem?.message).not.toContain('omit spec.bridge');
    });

    it("leaving mode bridge for a bridge of its own under the host bridge's name is judged too", () => {
      // Seen on libvirtd 9.0 with `ip link add virbr-hnet3 type bridge`: a mode-bridge network
      // on it patched to mode nat (spec.bridge kept) was saved as RestartRequired, and the
      // restart it advised failed ("error creating bridge interface virbr-hnet3: File exists"),
      // leaving the network down.
      const now = running({ mode: 'bridge', bridge: 'virbr-hnet3' });
      const natted = vnet({ mode: 'nat', bridge: 'virbr-hnet3', ipv4: { cidr: '10.203.9.1/24' } });
      expect(createsBridge(natted, now)).toBe(true);
      const plan = planPresent(natted, now, 'node-1', { routes, bridgeTaken: true });
      expect(plan.steps).toEqual([]);
      expect(plan.problem?.reason).toBe('BridgeInUse');
      expect(plan.problem?.message).toContain(
        "spec.bridge: spec.mode nat has libvirt create the bridge itself, but node node-1 already has a network device 'virbr-hnet3'",
      );
    });

    it('moving to mode bridge on the bridge libvirt made for it is BridgeNotFound now', () => {
      // Seen on libvirtd 9.0: an isolated network on virbr-hnet6 patched to mode bridge on
      // virbr-hnet6 was saved as RestartRequired; the restart removed the bridge with the old
      // network, and the new one then stayed down with BridgeNotFound, its guests cut off.
      const now = running({
        mode: 'isolated',
        bridge: 'virbr-hnet6',
        ipv4: { cidr: '10.203.9.1/24' },
      });
      const bridged = vnet({ mode: 'bridge', bridge: 'virbr-hnet6' });
      const plan = planPresent(bridged, now, 'node-1', { bridgeExists: true });
      expect(plan.steps).toEqual([]);
      expect(plan.problem?.reason).toBe('BridgeNotFound');
      expect(plan.problem?.message).toContain(
        "spec.bridge: 'virbr-hnet6' on node node-1 is the bridge libvirt made for this network",
      );
      // Attached to a host bridge already, or to another one: nothing to judge here.
      const attached = running({ mode: 'bridge', bridge: 'br0' });
      expect(
        planPresent(vnet({ mode: 'bridge', bridge: 'br0' }), attached, 'node-1', {
          bridgeExists: true,
        }).problem,
      ).toBeUndefined();
      const elsewhere = vnet({ mode: 'bridge', bridge: 'br0' });
      expect(planPresent(elsewhere, now, 'node-1', { bridgeExists: true }).problem).toBeUndefined();
    });

    it('a network that keeps its own bridge, or attaches to a host one, creates none', () => {
      const own = running({ bridge: 'virbr9', ipv4: { cidr: '10.203.9.1/24' } });
      expect(createsBridge(vnet({ bridge: 'virbr9', ipv4: { cidr: '10.203.8.1/24' } }), own)).toBe(
        false,
      );
      const attached = running({ mode: 'bridge', bridge: 'br0' });
      expect(createsBridge(vnet({ mode: 'bridge', bridge: 'br0' }), attached)).toBe(false);
      expect(createsBridge(vnet({ bridge: 'virbr9' }), { state: 'absent' })).toBe(false);
    });

    it('its current subnet, on its own (old) bridge, is no clash', () => {
      // The running network is on netxa0; the spec only renames the bridge.
      const now = running({ bridge: 'netxa0', ipv4: { cidr: '10.203.1.1/24' } });
      const renamed = vnet({ bridge: 'virbr9', ipv4: { cidr: '10.203.1.1/24' } });
      expect(planPresent(renamed, now, 'node-1', { routes }).problem).toBeUndefined();
    });
  });

  describe('routes through a gateway', () => {
    // Measured on libvirtd 9.0 with `ip route add 192.168.174.0/25 via 192.0.2.1`: a network on
    // 192.168.174.1/24 started, and its guests in .0-.127 were then reached through eth0's
    // gateway instead of the bridge. libvirt itself refuses only an equal route.
    const viaGateway = parseHostRoutes(
      [
        'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
        'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
        'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
        'eth0\t00AEA8C0\t010200C0\t0003\t0\t0\t0\t80FFFFFF\t0\t0\t0',
        'eth0\t0000000A\t010200C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0',
      ].join('\n'),
      '',
      true,
    );

    it('one inside the subnet takes part of it: SubnetConflict naming the route', () => {
      const plan = planPresent(
        vnet({ ipv4: { cidr: '192.168.174.1/24' } }),
        { state: 'absent' },
        'node-1',
        {
          routes: viaGateway,
        },
      );
      expect(plan.problem?.reason).toBe('SubnetConflict');
      expect(plan.problem?.message).toContain(
        'spec.ipv4.cidr 192.168.174.0/24 overlaps 192.168.174.0/25, routed through a gateway on interface eth0',
      );
    });

    it('one holding the subnet (the default route, 10.0.0.0/8) is no clash: the bridge is more specific', () => {
      for (const cidr of ['10.20.30.1/24', '192.168.175.1/24']) {
        const plan = planPresent(vnet({ ipv4: { cidr } }), { state: 'absent' }, 'node-1', {
          routes: viaGateway,
        });
        expect(plan.problem).toBeUndefined();
      }
    });
  });

  it("the network's own bridge is no clash", () => {
    const own = vnet({ bridge: 'netxa0', ipv4: { cidr: '10.203.1.1/24' } });
    expect(planPresent(own, { state: 'absent' }, 'node-1', { routes }).problem).toBeUndefined();
  });

  it("libvirt's refusal of an equal subnet is SubnetConflict too (an agent in a pod sees no host routes)", async () => {
    const refused = new LibvirtError(
      'internal error: Network is already in use by interface netxa0',
      { code: 1, domain: 19, level: 2 },
    );
    const network = {
      create: () => Promise.reject(refused),
    } as unknown as Network;
    const failure = await actNetwork({} as Connect, network, [{ op: 'start' }], {
      bridgeFromSpec: true,
    });
    expect(failure?.problem.reason).toBe('SubnetConflict');
    expect(failure?.problem.message).toMatch(/already in use by interface netxa0/);
  });

  it('a bridge another libvirt network has is BridgeInUse (Stalled), naming it', async () => {
    const refused = new LibvirtError("internal error: bridge name 'virbr7' already in use.", {
      code: 1,
      domain: 19,
      level: 2,
    });
    const conn = { defineNetworkXML: () => Promise.reject(refused) } as unknown as Connect;
    const doc = desiredNetwork(vnet({ bridge: 'virbr7', ipv4: { cidr: '10.203.2.1/24' } }));
    const failure = await actNetwork(conn, undefined, [{ op: 'define', doc }], {
      bridgeFromSpec: true,
    });
    expect(failure?.problem.reason).toBe('BridgeInUse');
    expect(failure?.problem.message).toContain("bridge name 'virbr7' already in use");
    expect(isStalledReason('BridgeInUse')).toBe(true);
  });

  it("a host device that already has the bridge's name is BridgeInUse (Stalled), naming it", async () => {
    // What libvirtd 9.0 answers when spec.bridge names a bridge made with `ip link add`: its
    // define checks only other libvirt networks' bridges, so the start is what fails.
    const refused = new LibvirtError('error creating bridge interface hnetbr0: File exists', {
      code: 38,
      domain: 0,
      level: 2,
    });
    const network = { create: () => Promise.reject(refused) } as unknown as Network;
    const failure = await actNetwork({} as Connect, network, [{ op: 'start' }], {
      bridgeFromSpec: true,
    });
    expect(failure?.problem.reason).toBe('BridgeInUse');
    expect(failure?.problem.message).toContain("the node already has a network device 'hnetbr0'");
    expect(failure?.problem.message).toContain('name another bridge or omit spec.bridge');
  });

  it('a refused start on the derived bridge name is named as a leftover, not a spec.bridge to omit', async () => {
    // No spec.bridge: the name comes from metadata.uid, so "omit spec.bridge" cannot help (the
    // same advice planPresent gives when its look before the start finds the device).
    const bridge = bridgeName(vnet({ ipv4: { cidr: '10.203.9.1/24' } }));
    const refused = new LibvirtError(`error creating bridge interface ${bridge}: File exists`, {
      code: 38,
      domain: 0,
      level: 2,
    });
    const network = { create: () => Promise.reject(refused) } as unknown as Network;
    const failure = await actNetwork({} as Connect, network, [{ op: 'start' }], {
      bridgeFromSpec: false,
    });
    expect(failure?.problem.reason).toBe('BridgeInUse');
    expect(failure?.problem.message).toContain(`a network device '${bridge}', the bridge name`);
    expect(failure?.problem.message).toContain(`ip link del ${bridge}`);
    expect(failure?.problem.message).not.toContain('omit');
  });
});
