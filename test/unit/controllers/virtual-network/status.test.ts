import { describe, expect, it } from 'vitest';
import type {
  VirtualNetwork,
  VirtualNetworkStatusNode,
} from '../../../../src/api/generated/types.js';
import { desiredNetwork } from '../../../../src/controllers/virtual-network/desired.js';
import type {
  ObservedNetwork,
  OursNetwork,
} from '../../../../src/controllers/virtual-network/observe.js';
import { inUse, nameConflict } from '../../../../src/controllers/virtual-network/plan.js';
import {
  conditionEvents,
  leavingEntry,
  nextAction,
  nodeStatus,
  retryDelayMs,
  stepEvents,
} from '../../../../src/controllers/virtual-network/status.js';
import type { Network } from '../../../../src/libvirt/network.js';
import { UID, exampleNat } from './fixtures.js';

const T0 = new Date('2025-01-01T10:00:00.000Z');
const T1 = new Date('2025-01-01T10:05:00.000Z');
const NODE = 'node-1';

function ours(over: Partial<OursNetwork> = {}): OursNetwork {
  const doc = desiredNetwork(exampleNat());
  return {
    state: 'ours',
    network: undefined as unknown as Network,
    uuid: UID,
    active: true,
    persistent: true,
    autostart: true,
    current: doc,
    config: doc,
    ...over,
  };
}
const foreign: ObservedNetwork = { state: 'foreign', name: 'lab', uuid: 'dd8f', stamp: undefined };

function withEntry(entry: VirtualNetworkStatusNode | undefined): VirtualNetwork {
  const obj = exampleNat();
  return entry ? { ...obj, status: { nodes: [entry] } } : obj;
}

describe('nodeStatus', () => {
  it('reports an active network of ours as Ready with its bridge and UUID', () => {
    const entry = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: ours(),
      restartFields: [],
      now: T0,
    });
    expect(entry).toEqual({
      nodeName: NODE,
      active: true,
      bridge: 'virbr-lab',
      uuid: UID,
      observedGeneration: 1,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Active',
          message: "libvirt network 'lab' is active on bridge virbr-lab",
          lastTransitionTime: '2025-01-01T10:00:00Z',
        },
        {
          type: 'RestartRequired',
          status: 'False',
          reason: 'UpToDate',
          message: 'the running network matches the spec',
          lastTransitionTime: '2025-01-01T10:00:00Z',
        },
      ],
    });
  });

  it('is identical on the next pass: transition times stay, so the write is skipped', () => {
    const first = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: ours(),
      restartFields: [],
      now: T0,
    });
    const second = nodeStatus({
      vnet: withEntry(first),
      nodeName: NODE,
      observed: ours(),
      restartFields: [],
      now: T1,
    });
    expect(second).toEqual(first);
  });

  it('does not speak of a running network when ours is not running', () => {
    // Seen on libvirtd 9.0: a network whose start was refused (BridgeInUse) read
    // 'RestartRequired=False: the running network matches the spec' while nothing ran.
    const entry = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: ours({ active: false }),
      restartFields: [],
      problem: { reason: 'BridgeInUse', message: 'bridge taken' },
      now: T0,
    });
    expect(entry.conditions?.find((c) => c.type === 'RestartRequired')).toMatchObject({
      status: 'False',
      reason: 'UpToDate',
      message: 'the network is not running on this node; it starts as the spec says',
    });
  });

  it('names the pending fields in RestartRequired and keeps Ready', () => {
    const entry = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: ours(),
      restartFields: ['spec.mtu', 'spec.ipv4.cidr'],
      now: T0,
    });
    const restart = entry.conditions?.find((c) => c.type === 'RestartRequired');
    expect(restart).toMatchObject({ status: 'True', reason: 'PendingRestart' });
    expect(restart?.message).toContain('spec.mtu, spec.ipv4.cidr');
    expect(entry.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
  });

  it('does not claim a pending change is saved when a problem kept it from being saved', () => {
    const entry = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: ours(),
      restartFields: ['spec.ipv4.cidr'],
      problem: { reason: 'SubnetConflict', message: 'spec.ipv4.cidr 10.0.0.0/24 overlaps …' },
      now: T0,
    });
    const restart = entry.conditions?.find((c) => c.type === 'RestartRequired');
    expect(restart).toMatchObject({ status: 'True', reason: 'PendingRestart' });
    expect(restart?.message).not.toContain('is saved');
    expect(restart?.message).toContain('SubnetConflict');
  });

  it('reports a foreign network with our name as NameConflict, without its UUID as ours', () => {
    const problem = nameConflict(foreign, NODE);
    const entry = nodeStatus({
      vnet: exampleNat(),
      nodeName: NODE,
      observed: foreign,
      restartFields: [],
      problem,
      now: T0,
    });
    expect(entry).toMatchObject({ nodeName: NODE, active: false });
    expect(entry.uuid).toBeUndefined();
    expect(entry.conditions).toEqual([
      expect.objectContaining({ type: 'Ready', status: 'False', reason: 'NameConflict' }),
    ]);
    expect(problem?.message).toContain("libvirt network 'lab'");
    expect(problem?.message).toContain('left untouched');
  });

  it('names the owner of a stamped network from another object', () => {
    const other: ObservedNetwork = {
      state: 'foreign',
      name: 'lab',
      uuid: 'u2',
      stamp: { kind: 'VirtualNetwork', name: 'lab', uid: 'u2' },
    };
    expect(nameConflict(other, NODE)?.message).toContain('VirtualNetwork lab with uid u2');
    expect(nameConflict(ours(), NODE)).toBeUndefined();
    expect(nameConflict({ state: 'absent' }, NODE)).toBeUndefined();
  });

  it('drops conditions it does not own and RestartRequired when the network is not ours', () => {
    const before: VirtualNetworkStatusNode = {
      nodeName: NODE,
      conditions: [
        {
          type: 'Stale',
          status: 'True',
          reason: 'X',
          message: '',
          lastTransitionTime: '2024-01-01T00:00:00Z',
        },
        {
          type: 'RestartRequired',
          status: 'True',
          reason: 'PendingRestart',
          message: 'm',
          lastTransitionTime: '2024-01-01T00:00:00Z',
        },
      ],
    };
    const entry = nodeStatus({
      vnet: withEntry(before),
      nodeName: NODE,
      observed: { state: 'absent' },
      restartFields: [],
      now: T0,
    });
    expect(entry.conditions?.map((c) => c.type)).toEqual(['Ready']);
  });
});

describe('conditionEvents', () => {
  const ready = nodeStatus({
    vnet: exampleNat(),
    nodeName: NODE,
    observed: ours(),
    restartFields: [],
    now: T0,
  });
  const conflict = nodeStatus({
    vnet: exampleNat(),
    nodeName: NODE,
    observed: foreign,
    restartFields: [],
    problem: nameConflict(foreign, NODE),
    now: T0,
  });
  const pending = nodeStatus({
    vnet: exampleNat(),
    nodeName: NODE,
    observed: ours(),
    restartFields: ['spec.mtu'],
    now: T0,
  });

  it.each<[string, VirtualNetworkStatusNode | undefined, VirtualNetworkStatusNode, string[]]>([
    ['first pass, Ready', undefined, ready, []],
    ['Ready stays Ready', ready, ready, []],
    ['turns into a name conflict', ready, conflict, ['Warning NameConflict']],
    ['first pass already in conflict', undefined, conflict, ['Warning NameConflict']],
    ['stays in conflict', conflict, conflict, []],
    ['a restart becomes pending', ready, pending, ['Warning RestartRequired']],
    ['still pending', pending, pending, []],
  ])('%s', (_name, before, after, expected) => {
    expect(conditionEvents(before, after).map((e) => `${e.type} ${e.reason}`)).toEqual(expected);
  });
});

describe('stepEvents', () => {
  it.each<[string, ObservedNetwork, string[], string[]]>([
    ['created', { state: 'absent' }, ['define', 'setAutostart', 'start'], ['Created']],
    [
      'started after being stopped behind our back',
      ours({ active: false }),
      ['start'],
      ['Started'],
    ],
    ['hosts updated live', ours(), ['dhcpHost', 'dnsHost'], ['HostsUpdated']],
    ['redefined only', ours(), ['define'], []],
    ['removed', ours(), ['destroy', 'undefine'], ['Removed']],
  ])('%s', (_name, before, ops, expected) => {
    const steps = ops.map((op) =>
      op === 'dhcpHost'
        ? { op, command: 'add', host: { ip: '1.2.3.4' }, scope: 'live' }
        : op === 'dnsHost'
          ? { op, command: 'add', host: { ip: '1.2.3.4', hostnames: ['a'] }, scope: 'live' }
          : { op },
    );
    expect(stepEvents(before, steps as never, NODE).map((e) => e.reason)).toEqual(expected);
  });
});

describe('retryDelayMs', () => {
  const failingSince = (iso: string): VirtualNetworkStatusNode => ({
    nodeName: NODE,
    conditions: [
      {
        type: 'Ready',
        status: 'False',
        reason: 'StartFailed',
        message: '',
        lastTransitionTime: iso,
      },
    ],
  });
  it.each([
    ['just failed', '2025-01-01T10:05:00Z', 5_000],
    ['failing for 40 s', '2025-01-01T10:04:20Z', 40_000],
    ['failing for an hour', '2025-01-01T09:05:00Z', 300_000],
  ])('%s', (_name, since, expected) => {
    expect(retryDelayMs(failingSince(since), T1)).toBe(expected);
  });
  it('starts from the minimum the agent was given, and doubles from there as before', () => {
    expect(retryDelayMs(failingSince('2025-01-01T10:05:00Z'), T1, 1_000)).toBe(1_000);
    expect(retryDelayMs(failingSince('2025-01-01T10:04:52Z'), T1, 1_000)).toBe(8_000);
  });
});

describe('inUse', () => {
  it('lists the VirtualMachines holding the network', () => {
    expect(inUse(['ns/a', 'ns/b'], NODE)).toEqual({
      reason: 'InUse',
      message: expect.stringContaining('(ns/a, ns/b)'),
    });
  });
});

describe('leavingEntry', () => {
  const active = nodeStatus({
    vnet: exampleNat(),
    nodeName: NODE,
    observed: ours(),
    restartFields: [],
    now: T0,
  });
  it('replaces the entry of a node the selector dropped with an inactive NotSelected one', () => {
    const entry = leavingEntry(withEntry(active), NODE, T1);
    expect(entry).toMatchObject({ nodeName: NODE, active: false });
    expect(entry?.uuid).toBeUndefined();
    expect(entry?.conditions).toEqual([
      expect.objectContaining({ type: 'Ready', status: 'False', reason: 'NotSelected' }),
    ]);
  });
  it('writes nothing for a node that never had an entry, or for a deleted object', () => {
    expect(leavingEntry(exampleNat(), NODE, T1)).toBeUndefined();
    const deleting = withEntry(active);
    deleting.metadata.deletionTimestamp = T1.toISOString();
    expect(leavingEntry(deleting, NODE, T1)).toBeUndefined();
  });
});

describe('nextAction', () => {
  const at = (observed: ObservedNetwork, problem?: { reason: string; message: string }) =>
    nextAction(
      nodeStatus({
        vnet: exampleNat(),
        nodeName: NODE,
        observed,
        restartFields: [],
        problem,
        now: T1,
      }),
      problem,
      T1,
    );
  it.each<[string, ObservedNetwork, { reason: string; message: string } | undefined, object]>([
    ['Ready: done', ours(), undefined, { kind: 'done' }],
    ['a restart pending is still Ready: done', ours(), undefined, { kind: 'done' }],
    [
      'Unsupported waits for a spec change',
      { state: 'absent' },
      { reason: 'Unsupported', message: 'm' },
      { kind: 'done' },
    ],
    [
      'a name clash is retried with backoff',
      foreign,
      { reason: 'NameConflict', message: 'm' },
      { kind: 'requeueAfter', ms: 5_000 },
    ],
    [
      'not running without a reason: look again',
      ours({ active: false }),
      undefined,
      { kind: 'requeueAfter', ms: 5_000 },
    ],
  ])('%s', (_name, observed, problem, expected) => {
    expect(at(observed, problem)).toEqual(expected);
  });
});
