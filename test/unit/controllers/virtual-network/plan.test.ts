import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import type { OursNetwork } from '../../../../src/controllers/virtual-network/observe.js';
import {
  pendingRestart,
  planAbsent,
  planPresent,
  dhcpHostChanges,
  dnsHostChanges,
  ownNetworkChanges,
  planCreate,
  planRemoval,
  planUpdate,
  prefixOf,
  restartFields,
  type NetworkStep,
} from '../../../../src/controllers/virtual-network/plan.js';
import type { Network } from '../../../../src/libvirt/network.js';
import { parseNetworkXML, type NetworkDocument } from '../../../../src/libvirt/xml/network.js';
import { exampleNat, vnet } from './fixtures.js';

// How libvirtd 9.0 reads a NAT network back: <nat><port>, a generated <mac>, stp/delay on the
// bridge, a netmask for our prefix, a lease time. None of it is ours.
const libvirtdReadBack = parseNetworkXML(
  readFileSync(new URL('./lab-libvirtd.xml', import.meta.url), 'utf8'),
);

function ours(current: NetworkDocument, over: Partial<OursNetwork> = {}): OursNetwork {
  return {
    state: 'ours',
    network: undefined as unknown as Network, // a handle; the plan never touches it
    uuid: current.uuid,
    active: true,
    persistent: true,
    autostart: true,
    current,
    config: current,
    ...over,
  };
}

const ops = (steps: NetworkStep[]) =>
  steps.map((s) => ('command' in s ? `${s.op}:${s.command}:${s.scope}` : s.op));

function edited(doc: NetworkDocument, edit: (d: NetworkDocument) => void): NetworkDocument {
  const copy = structuredClone(doc);
  edit(copy);
  return copy;
}

describe('planCreate', () => {
  it('defines, marks autostart, then starts', () => {
    const desired = desiredNetwork(exampleNat());
    expect(ops(planCreate(desired, true).steps)).toEqual(['define', 'setAutostart', 'start']);
    expect(ops(planCreate(desired, false).steps)).toEqual(['define', 'start']);
    expect(planCreate(desired, true).steps[0]).toEqual({ op: 'define', doc: desired });
  });
});

describe('planUpdate', () => {
  const desired = desiredNetwork(exampleNat());

  it('plans nothing for a converged network as libvirtd reads it back', () => {
    expect(planUpdate(desired, true, ours(libvirtdReadBack)).steps).toEqual([]);
    expect(restartFields(desired, libvirtdReadBack)).toEqual([]);
  });

  it('plans nothing where the driver cannot show the persistent definition', () => {
    expect(planUpdate(desired, true, ours(libvirtdReadBack, { config: undefined })).steps).toEqual(
      [],
    );
  });

  it('starts a stopped network (drift) without redefining an unchanged one', () => {
    const observed = ours(libvirtdReadBack, { active: false });
    expect(ops(planUpdate(desired, true, observed).steps)).toEqual(['start']);
  });

  it('redefines a stopped network whose definition is stale, then starts it', () => {
    const stale = edited(libvirtdReadBack, (d) => (d.mtu = 1400));
    expect(ops(planUpdate(desired, true, ours(stale, { active: false })).steps)).toEqual([
      'define',
      'start',
    ]);
  });

  it('follows autostart both ways', () => {
    expect(planUpdate(desired, true, ours(libvirtdReadBack, { autostart: false })).steps).toEqual([
      { op: 'setAutostart', autostart: true },
    ]);
    expect(planUpdate(desired, false, ours(libvirtdReadBack)).steps).toEqual([
      { op: 'setAutostart', autostart: false },
    ]);
  });

  it('redefines a transient network of ours to make it persistent', () => {
    const observed = ours(libvirtdReadBack, {
      persistent: false,
      autostart: false,
      config: undefined,
    });
    expect(ops(planUpdate(desired, true, observed).steps)).toEqual(['define', 'setAutostart']);
  });

  it('changes a DHCP host in both definitions with one update when they agree', () => {
    const want = desiredNetwork(
      vnet(
        {
          ...exampleNat().spec,
          ipv4: {
            ...exampleNat().spec.ipv4!,
            dhcp: {
              ...exampleNat().spec.ipv4!.dhcp!,
              hosts: [
                { macAddress: '52:54:00:15:00:01', ipAddress: '192.168.150.11', hostname: 'web-1' },
              ],
            },
          },
        },
        'lab',
      ),
    );
    const steps = planUpdate(want, true, ours(libvirtdReadBack)).steps;
    expect(steps).toEqual([
      {
        op: 'dhcpHost',
        command: 'modify',
        host: { mac: '52:54:00:15:00:01', ip: '192.168.150.11', name: 'web-1' },
        scope: 'liveAndConfig',
      },
    ]);
  });

  it('patches only the running network when the persistent definition already has the change', () => {
    const want = edited(desired, (d) =>
      d.ips[0]!.dhcp!.hosts.push({ mac: '52:54:00:15:00:02', ip: '192.168.150.12' }),
    );
    const observed = ours(libvirtdReadBack, { config: want });
    expect(ops(planUpdate(want, true, observed).steps)).toEqual(['dhcpHost:add:live']);
  });

  it('redefines and patches live when the definitions disagree', () => {
    const want = edited(desired, (d) =>
      d.ips[0]!.dhcp!.hosts.push({ mac: '52:54:00:15:00:02', ip: '192.168.150.12' }),
    );
    const config = edited(libvirtdReadBack, (d) => (d.ips[0]!.dhcp!.hosts = []));
    expect(ops(planUpdate(want, true, ours(libvirtdReadBack, { config })).steps)).toEqual([
      'define',
      'dhcpHost:add:live',
    ]);
  });

  it('redefines for a restart-time change and leaves the running network alone', () => {
    const want = edited(desired, (d) => (d.mtu = 9000));
    const observed = ours(libvirtdReadBack);
    expect(ops(planUpdate(want, true, observed).steps)).toEqual(['define']);
    expect(restartFields(want, libvirtdReadBack)).toEqual(['spec.mtu']);
    // Once libvirtd holds the new persistent definition, nothing is left to write.
    expect(planUpdate(want, true, ours(libvirtdReadBack, { config: want })).steps).toEqual([]);
  });

  it('brings DHCP hosts along with a restart when the subnet changes', () => {
    const spec = exampleNat().spec;
    const want = desiredNetwork(
      vnet(
        {
          ...spec,
          ipv4: {
            cidr: '10.9.0.1/24',
            dhcp: {
              rangeStart: '10.9.0.100',
              rangeEnd: '10.9.0.199',
              hosts: [{ macAddress: '52:54:00:15:00:01', ipAddress: '10.9.0.10' }],
            },
          },
        },
        'lab',
      ),
    );
    const observed = ours(libvirtdReadBack, { config: want });
    expect(planUpdate(want, true, observed).steps).toEqual([]);
    expect(restartFields(want, libvirtdReadBack)).toEqual(['spec.ipv4.cidr', 'spec.ipv4.dhcp']);
  });
});

describe('restartFields', () => {
  const desired = desiredNetwork(exampleNat());
  it.each<[string, (d: NetworkDocument) => void, string[]]>([
    ['mode', (d) => (d.forward = 'route'), ['spec.mode']],
    ['bridge', (d) => (d.bridge = { name: 'other' }), ['spec.bridge']],
    ['MTU added', (d) => (d.mtu = 9000), ['spec.mtu']],
    ['DNS off', (d) => (d.dns = { enable: false, hosts: [] }), ['spec.dns.enabled']],
    ['prefix', (d) => (d.ips[0]!.prefix = 16), ['spec.ipv4.cidr']],
    ['DHCP range', (d) => (d.ips[0]!.dhcp!.ranges[0]!.end = '192.168.150.150'), ['spec.ipv4.dhcp']],
    ['DHCP removed', (d) => delete d.ips[0]!.dhcp, ['spec.ipv4.dhcp']],
    ['only hosts', (d) => (d.ips[0]!.dhcp!.hosts = []), []],
  ])('%s', (_name, edit, expected) => {
    expect(restartFields(edited(desired, edit), libvirtdReadBack)).toEqual(expected);
  });
});

describe('prefixOf', () => {
  it.each([
    ['255.255.255.0', 24],
    ['255.255.0.0', 16],
    ['255.255.255.252', 30],
    ['255.0.0.0', 8],
  ])('%s -> /%i', (netmask, prefix) => {
    expect(prefixOf({ address: '10.0.0.1', netmask })).toBe(prefix);
  });
});

describe('dhcpHostChanges', () => {
  const a = { mac: '52:54:00:00:00:0a', ip: '10.0.0.10', name: 'a' };
  const b = { mac: '52:54:00:00:00:0b', ip: '10.0.0.11', name: 'b' };
  const c = { mac: '52:54:00:00:00:0c', ip: '10.0.0.12' };
  it.each<[string, object[], object[], string[]]>([
    ['nothing changed', [a, b], [b, a], []],
    ['added', [a], [a, c], ['add 52:54:00:00:00:0c']],
    ['removed', [a, b], [a], ['delete 52:54:00:00:00:0b']],
    ['new IP', [a], [{ ...a, ip: '10.0.0.20' }], ['modify 52:54:00:00:00:0a']],
    ['name dropped', [a], [{ mac: a.mac, ip: a.ip }], ['modify 52:54:00:00:00:0a']],
    [
      'two hosts swap addresses: delete both, then add both',
      [a, b],
      [
        { ...a, ip: b.ip },
        { ...b, ip: a.ip },
      ],
      [
        'delete 52:54:00:00:00:0a',
        'delete 52:54:00:00:00:0b',
        'add 52:54:00:00:00:0a',
        'add 52:54:00:00:00:0b',
      ],
    ],
    [
      "a host takes a removed host's address: deletion first",
      [a, b],
      [{ ...a, ip: b.ip }],
      ['delete 52:54:00:00:00:0b', 'modify 52:54:00:00:00:0a'],
    ],
  ])('%s', (_name, observed, desired, expected) => {
    const changes = dhcpHostChanges(observed as never, desired as never);
    expect(changes.map((c) => `${c.command} ${c.host.mac}`)).toEqual(expected);
  });

  it('deletes with the entry exactly as libvirt holds it', () => {
    expect(dhcpHostChanges([a], [])).toEqual([{ command: 'delete', host: a }]);
  });
});

describe('dnsHostChanges', () => {
  const x = { ip: '10.0.0.10', hostnames: ['x.lab', 'x'] };
  it.each<[string, object[], object[], string[]]>([
    ['same names in another order', [x], [{ ...x, hostnames: ['x', 'x.lab'] }], []],
    ['added', [], [x], ['add 10.0.0.10']],
    ['removed', [x], [], ['delete 10.0.0.10']],
    [
      'renamed: libvirt cannot modify, so delete then add',
      [x],
      [{ ...x, hostnames: ['y'] }],
      ['delete 10.0.0.10', 'add 10.0.0.10'],
    ],
  ])('%s', (_name, observed, desired, expected) => {
    const changes = dnsHostChanges(observed as never, desired as never);
    expect(changes.map((c) => `${c.command} ${c.host.ip}`)).toEqual(expected);
  });

  it('deletes by IP alone, since libvirt matches a record by IP or any of its names', () => {
    expect(dnsHostChanges([x], [])).toEqual([
      { command: 'delete', host: { ip: x.ip, hostnames: [] } },
    ]);
  });
});

describe('planRemoval', () => {
  const doc = desiredNetwork(exampleNat());
  it.each<[string, Partial<OursNetwork>, string[]]>([
    ['running and persistent', {}, ['destroy', 'undefine']],
    ['stopped', { active: false }, ['undefine']],
    ['running and transient', { persistent: false }, ['destroy']],
  ])('%s', (_name, over, expected) => {
    expect(ops(planRemoval(ours(doc, over)).steps)).toEqual(expected);
  });
});

describe('planPresent', () => {
  const lab = exampleNat();
  const foreign = { state: 'foreign' as const, name: 'lab', uuid: 'dd8f', stamp: undefined };
  it.each<
    [
      string,
      ReturnType<typeof vnet>,
      Parameters<typeof planPresent>[1],
      string[],
      string | undefined,
    ]
  >([
    ['absent: create', lab, { state: 'absent' }, ['define', 'setAutostart', 'start'], undefined],
    ['converged: nothing', lab, ours(desiredNetwork(lab)), [], undefined],
    ['a foreign network with the name: nothing, NameConflict', lab, foreign, [], 'NameConflict'],
    [
      'a spec libvirt cannot express: nothing, Unsupported',
      vnet({ mode: 'bridge', bridge: 'br0', mtu: 9000 }),
      { state: 'absent' },
      [],
      'Unsupported',
    ],
    [
      'an address the host keeps for itself: nothing, InvalidAddress',
      vnet({ mode: 'nat', ipv4: { cidr: '127.0.0.2/8' } }),
      { state: 'absent' },
      [],
      'InvalidAddress',
    ],
  ])('%s', (_name, obj, observed, expectedOps, reason) => {
    const plan = planPresent(obj, observed, 'node-1');
    expect(ops(plan.steps)).toEqual(expectedOps);
    expect(plan.problem?.reason).toBe(reason);
  });

  it.each<[string, boolean | undefined, string[], string | undefined]>([
    ['the host has the bridge: create', true, ['define', 'setAutostart', 'start'], undefined],
    ['the host cannot tell: create', undefined, ['define', 'setAutostart', 'start'], undefined],
    ['the host lacks the bridge: nothing, BridgeNotFound', false, [], 'BridgeNotFound'],
  ])('mode bridge, %s', (_name, bridgeExists, expectedOps, reason) => {
    const plan = planPresent(
      vnet({ mode: 'bridge', bridge: 'br0' }),
      { state: 'absent' },
      'node-1',
      {
        bridgeExists,
      },
    );
    expect(ops(plan.steps)).toEqual(expectedOps);
    expect(plan.problem?.reason).toBe(reason);
    if (reason)
      expect(plan.problem?.message).toMatch(/spec\.bridge: node node-1 has no bridge 'br0'/);
  });
});

describe('planAbsent', () => {
  const doc = desiredNetwork(exampleNat());
  it.each<[string, Parameters<typeof planAbsent>[0], string[], string[], string | undefined]>([
    ['ours, unused: destroy and undefine', ours(doc), [], ['destroy', 'undefine'], undefined],
    ['ours, guests attached: wait', ours(doc), ['ns/vm'], [], 'InUse'],
    ['gone already: nothing to do', { state: 'absent' }, [], [], undefined],
    [
      'foreign: never touched',
      { state: 'foreign', name: 'lab', uuid: 'x', stamp: undefined },
      [],
      [],
      undefined,
    ],
  ])('%s', (_name, observed, users, expectedOps, reason) => {
    const plan = planAbsent(observed, users, 'node-1');
    expect(ops(plan.steps)).toEqual(expectedOps);
    expect(plan.problem?.reason).toBe(reason);
  });
});

describe('pendingRestart', () => {
  const lab = exampleNat();
  it('names the restart-time fields of a running network of ours', () => {
    const running = edited(desiredNetwork(lab), (d) => (d.mtu = 1400));
    expect(pendingRestart(lab, ours(running))).toEqual(['spec.mtu']);
  });
  it('is empty for a stopped, foreign or missing network', () => {
    const running = edited(desiredNetwork(lab), (d) => (d.mtu = 1400));
    expect(pendingRestart(lab, ours(running, { active: false }))).toEqual([]);
    expect(pendingRestart(lab, { state: 'absent' })).toEqual([]);
  });
});

describe('ownNetworkChanges', () => {
  it('names the lifecycle events a pass’s own calls make libvirt send', () => {
    const doc = desiredNetwork(exampleNat());
    expect(ownNetworkChanges(planCreate(doc, true).steps)).toEqual(['defined', 'started']);
    // A redefinition of an existing network sends 'defined' too.
    expect(ownNetworkChanges([{ op: 'define', doc }])).toEqual(['defined']);
    expect(ownNetworkChanges([{ op: 'destroy' }, { op: 'undefine' }])).toEqual([
      'stopped',
      'undefined',
    ]);
    expect(ownNetworkChanges([{ op: 'setAutostart', autostart: true }])).toEqual([]);
  });
});
