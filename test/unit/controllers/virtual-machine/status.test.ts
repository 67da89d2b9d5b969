import { describe, expect, it } from 'vitest';
import type { VirtualMachine, VirtualMachineStatus } from '../../../../src/api/generated/types.js';
import { defaultMacAddress } from '../../../../src/api/names.js';
import {
  balloonMoving,
  balloonTarget,
  conditionEvents,
  kibQuantity,
  machineStatus,
  nameConflict,
  restartCountOf,
  retryDelayMs,
  stepEvents,
  type StatusInput,
} from '../../../../src/controllers/virtual-machine/status.js';
import {
  firstStartDue,
  planMachine,
  powerPlan,
  ranUnderAgent,
  restartBegun,
  shutdownRequest,
} from '../../../../src/controllers/virtual-machine/plan.js';
import { desired, NOW, observed, ours, runningStatus, UID, variant, vm } from './machines.js';

const LATER = new Date(NOW.getTime() + 3_600_000);
const machine = vm({
  memory: '256Mi',
  maxMemory: '1Gi',
  vcpus: 1,
  maxVcpus: 4,
  interfaces: [
    { name: 'eth0', network: 'lab', model: 'virtio' },
    { name: 'eth1', network: 'lab', model: 'virtio' },
    { name: 'eth2', network: 'lab', model: 'virtio' },
  ],
});
const doc = desired(machine);
const [mac0, mac1, mac2] = ['eth0', 'eth1', 'eth2'].map((n) => defaultMacAddress(UID, n));

function input(over: Partial<StatusInput> = {}): StatusInput {
  return {
    vm: machine,
    nodeName: 'node-a',
    now: NOW,
    observed: ours({ config: doc, memoryActualKiB: 262144 }),
    problem: undefined,
    shutdown: undefined,
    started: undefined,
    pending: [],
    ...over,
  };
}

const conditionOf = (status: VirtualMachineStatus, type: string) =>
  status.conditions?.find((c) => c.type === type);

describe('kibQuantity', () => {
  it.each([
    [262144, '256Mi'],
    [1048576, '1Gi'],
    [1572864, '1536Mi'],
    [100, '100Ki'],
    [1536, '1536Ki'],
    [0, '0Ki'],
  ])('%i KiB -> %s', (kib, q) => expect(kibQuantity(kib)).toBe(q));
});

describe('machineStatus', () => {
  it('reports a running machine completely', () => {
    const status = machineStatus(
      input({
        observed: ours({
          config: doc,
          memoryActualKiB: 200000,
          addresses: new Map([[mac0!, ['192.168.150.10', '10.0.0.2']]]),
        }),
        started: 'initial',
      }),
    );
    const t = '2026-03-01T12:00:00Z';
    expect(status).toEqual({
      phase: 'Running',
      uuid: UID,
      domainName: 'prod_web',
      nodeName: 'node-a',
      observedGeneration: 3,
      restartCount: 0,
      state: { state: 'running', reason: 'booted' },
      vcpus: { current: 1, max: 4 },
      memory: { target: '256Mi', actual: '200000Ki' },
      interfaces: [
        { name: 'eth0', macAddress: mac0, ipAddresses: ['10.0.0.2', '192.168.150.10'] },
        { name: 'eth1', macAddress: mac1 },
        { name: 'eth2', macAddress: mac2 },
      ],
      startedAt: t,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Running',
          message: 'the domain is running',
          lastTransitionTime: t,
          observedGeneration: 3,
        },
        {
          type: 'Synced',
          status: 'True',
          reason: 'Synced',
          message: "the domain's definition matches the spec",
          lastTransitionTime: t,
          observedGeneration: 3,
        },
        {
          type: 'RestartRequired',
          status: 'False',
          reason: 'UpToDate',
          message: 'no restart-time change is pending',
          lastTransitionTime: t,
          observedGeneration: 3,
        },
        {
          type: 'Paused',
          status: 'False',
          reason: 'NotPaused',
          message: 'the domain is not paused',
          lastTransitionTime: t,
          observedGeneration: 3,
        },
        {
          type: 'Reconciling',
          status: 'False',
          reason: 'Ready',
          message: 'the observed generation is converged',
          lastTransitionTime: t,
          observedGeneration: 3,
        },
        {
          type: 'Stalled',
          status: 'False',
          reason: 'Ready',
          message: 'the observed generation is converged',
          lastTransitionTime: t,
          observedGeneration: 3,
        },
      ],
    });
  });

  it('is deterministic: fed its own output, a later pass builds the same status (so no write)', () => {
    const first = machineStatus(input({ started: 'initial' }));
    const again = machineStatus(input({ vm: { ...machine, status: first }, now: LATER }));
    expect(again).toEqual(first);
  });

  it('keeps lastTransitionTime while a condition holds and moves it when it flips', () => {
    const first = machineStatus(input());
    const later = machineStatus(
      input({ vm: { ...machine, status: first }, now: LATER, pending: ['spec.disks'] }),
    );
    expect(conditionOf(later, 'Ready')).toMatchObject({
      status: 'True',
      lastTransitionTime: '2026-03-01T12:00:00Z',
    });
    expect(conditionOf(later, 'RestartRequired')).toMatchObject({
      status: 'True',
      lastTransitionTime: '2026-03-01T13:00:00Z',
    });
  });

  it('is not Ready while the definition is not synced, even when the power state is right', () => {
    const problem = { reason: 'MemoryChangeFailed', message: 'no' };
    const status = machineStatus(input({ problem }));
    expect(status.phase).toBe('Running');
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', ...problem });
    expect(conditionOf(status, 'Synced')).toMatchObject({ status: 'False', ...problem });
  });

  it('reports the balloon target we set, not the running currentMemory (the actual size on QEMU)', () => {
    const live = variant(doc, (d) => (d.currentMemoryKiB = 1048576));
    const d = ours({ config: doc, live, memoryActualKiB: 1048576 });
    expect(balloonTarget(d)).toBe(262144);
    expect(machineStatus(input({ observed: d })).memory).toEqual({
      target: '256Mi',
      actual: '1Gi',
    });
  });

  it('reports a target that is not whole 4 KiB pages as the balloon reaches it', () => {
    // 500M is 488281.25 KiB, 488282 KiB in the definition; QEMU's balloon, which moves 4 KiB
    // pages, settles at 488284 KiB.
    const odd = vm({ ...machine.spec, memory: '500M' }, { status: runningStatus() });
    const config = desired(odd);
    expect(config.currentMemoryKiB).toBe(488282);
    const d = ours({ config, memoryActualKiB: 488284 });
    const status = machineStatus(input({ vm: odd, observed: d }));
    expect(status.memory).toEqual({ target: '488284Ki', actual: '488284Ki' });
    // Nothing left to wait for once the boot's minute is over.
    const later = new Date(Date.parse(status.startedAt!) + 120_000);
    expect(balloonMoving({ ...odd, status }, status, [], later)).toBe(false);
    // Stopped, it shows the same target.
    const off = machineStatus(input({ vm: odd, observed: ours({ active: false, config }) }));
    expect(off.memory).toEqual({ target: '488284Ki' });
  });

  it('caps the target at the running maximum while a larger memory waits for a restart', () => {
    const config = variant(doc, (d) => {
      d.memoryKiB = 4194304;
      d.currentMemoryKiB = 2097152;
    });
    const live = variant(doc, (d) => (d.currentMemoryKiB = 262144));
    expect(balloonTarget(ours({ config, live }))).toBe(1048576);
  });

  it('reports a stopped machine from its persistent definition, without actual memory', () => {
    const status = machineStatus(
      input({
        vm: vm({ ...machine.spec, runStrategy: 'Halted' }, { status: runningStatus() }),
        observed: ours({ active: false, config: doc, memoryActualKiB: 1 }),
      }),
    );
    expect(status).toMatchObject({
      phase: 'Stopped',
      state: { state: 'shutoff', reason: 'shutdown' },
      memory: { target: '256Mi' },
      startedAt: '2026-03-01T11:00:00Z',
    });
    expect(status.memory?.actual).toBeUndefined();
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True', reason: 'Halted' });
  });

  it('leaves out interfaces the domain does not have yet', () => {
    const fewer = variant(doc, (d) => d.devices.interfaces.splice(1, 1));
    expect(
      machineStatus(input({ observed: ours({ config: fewer }) })).interfaces?.map((i) => i.name),
    ).toEqual(['eth0', 'eth2']);
  });

  // The IP printer column reads .status.interfaces[0].ipAddresses[0].
  it("lists an interface's IPv4 addresses before its IPv6 ones, all of them", () => {
    const addresses = new Map([[mac0!, ['2001:db8::5', '203.0.113.5', '10.0.0.2', 'fd00::7']]]);
    const status = machineStatus(input({ observed: ours({ config: doc, addresses }) }));
    expect(status.interfaces?.[0]?.ipAddresses).toEqual([
      '10.0.0.2',
      '203.0.113.5',
      '2001:db8::5',
      'fd00::7',
    ]);
  });

  describe('startedAt and restartCount', () => {
    it('keeps startedAt while the domain keeps running', () => {
      const status = machineStatus(input({ vm: { ...machine, status: runningStatus() } }));
      expect(status.startedAt).toBe('2026-03-01T11:00:00Z');
    });

    it('sets it when this pass started the domain, counting a restart', () => {
      const status = machineStatus(
        input({
          vm: { ...machine, status: runningStatus({ restartCount: 2 }) },
          started: 'restart',
        }),
      );
      expect(status.startedAt).toBe('2026-03-01T12:00:00Z');
      expect(status.restartCount).toBe(3);
    });

    it('does not count a start the user asked for', () => {
      const status = machineStatus(
        input({
          vm: { ...machine, status: runningStatus({ restartCount: 2 }) },
          started: 'requested',
        }),
      );
      expect(status.restartCount).toBe(2);
    });

    it('counts on from a restart count this process gave and the previous status lacks', () => {
      const status = (cached: number, counted: number, started?: 'restart') =>
        machineStatus(
          input({
            vm: { ...machine, status: runningStatus({ restartCount: cached }) },
            restartsCounted: counted,
            ...(started ? { started } : {}),
          }),
        ).restartCount;
      expect(status(2, 3)).toBe(3);
      expect(status(2, 3, 'restart')).toBe(4);
      // A status that already shows more (another pass wrote it) is never taken back.
      expect(status(5, 3)).toBe(5);
    });

    it('sets it when it sees the domain running after it was off', () => {
      const previous = runningStatus({ state: { state: 'shutoff', reason: 'shutdown' } });
      expect(machineStatus(input({ vm: { ...machine, status: previous } })).startedAt).toBe(
        '2026-03-01T12:00:00Z',
      );
    });
  });

  describe('phase and Ready', () => {
    const foreign = {
      state: 'foreign' as const,
      clash: 'name' as const,
      name: 'prod_web',
      uuid: 'x',
      stamp: undefined,
    };
    it.each<[string, Partial<StatusInput>, string, string, string]>([
      [
        'a name clash',
        { observed: foreign, problem: nameConflict(foreign, 'node-a') },
        'Failed',
        'False',
        'NameConflict',
      ],
      [
        'waiting for a Volume',
        { observed: { state: 'absent' }, problem: { reason: 'VolumeNotReady', message: 'm' } },
        'Pending',
        'False',
        'VolumeNotReady',
      ],
      [
        'a define that may pass on a retry (Reconciling)',
        { observed: { state: 'absent' }, problem: { reason: 'DefineFailed', message: 'm' } },
        'Pending',
        'False',
        'DefineFailed',
      ],
      [
        'a refused definition (Stalled)',
        { observed: { state: 'absent' }, problem: { reason: 'DefineRefused', message: 'm' } },
        'Failed',
        'False',
        'DefineRefused',
      ],
      [
        'a crash',
        { observed: ours({ config: doc, power: { state: 'crashed', reason: 'panicked' } }) },
        'Failed',
        'False',
        'Crashed',
      ],
      [
        'shutting down',
        { observed: ours({ config: doc, power: { state: 'shutdown', reason: 'user' } }) },
        'Stopping',
        'False',
        'NotRunning',
      ],
      [
        'paused',
        { observed: ours({ config: doc, power: { state: 'paused', reason: 'user' } }) },
        'Paused',
        'False',
        'Paused',
      ],
      [
        'a start that may pass on a retry (Reconciling)',
        {
          observed: ours({ active: false, config: doc }),
          problem: { reason: 'StartFailed', message: 'qemu says no' },
        },
        'Starting',
        'False',
        'StartFailed',
      ],
      [
        'a first start under runStrategy Manual that may pass on a retry',
        {
          vm: vm({ runStrategy: 'Manual' }),
          observed: ours({ active: false, config: doc }),
          problem: { reason: 'StartFailed', message: 'qemu says no' },
        },
        'Starting',
        'False',
        'StartFailed',
      ],
      [
        'a start refused for the definition (Stalled)',
        {
          observed: ours({ active: false, config: doc }),
          problem: { reason: 'StartRefused', message: 'qemu says no' },
        },
        'Failed',
        'False',
        'StartRefused',
      ],
      [
        'restarting to apply changes',
        { observed: ours({ active: false, config: doc }), shutdown: 'RestartToApplyChanges' },
        'Starting',
        'False',
        'Restarting',
      ],
      [
        'stopping for Halted',
        { vm: vm({ runStrategy: 'Halted' }), shutdown: 'RunStrategyHalted' },
        'Stopping',
        'False',
        'Stopping',
      ],
      [
        'Manual, stopped',
        {
          vm: vm({ runStrategy: 'Manual' }, { status: runningStatus() }),
          observed: ours({ active: false, config: doc }),
        },
        'Stopped',
        'True',
        'ManualPower',
      ],
      [
        'RerunOnFailure after the guest shut down',
        {
          vm: vm({ runStrategy: 'RerunOnFailure' }, { status: runningStatus() }),
          observed: ours({ active: false, config: doc }),
        },
        'Stopped',
        'True',
        'GuestShutdown',
      ],
      [
        'a running machine with a bad Volume reference',
        { problem: { reason: 'VolumeNotReady', message: 'm' } },
        'Running',
        'False',
        'VolumeNotReady',
      ],
    ])('%s', (_what, over, phase, ready, reason) => {
      const status = machineStatus(input(over));
      expect(status.phase).toBe(phase);
      expect(conditionOf(status, 'Ready')).toMatchObject({ status: ready, reason });
    });

    // libvirt's test driver cannot put a domain in pmsuspended, so only this tier sees it.
    it('reports a guest suspended to RAM by its OS as Paused, not Running, and says why', () => {
      const suspended = ours({ config: doc, power: { state: 'pmsuspended', reason: 'unknown' } });
      const status = machineStatus(input({ observed: suspended }));
      expect(status.phase).toBe('Paused');
      const why = expect.stringContaining('suspended itself to RAM (pmsuspended)');
      for (const type of ['Ready', 'Paused']) {
        expect(conditionOf(status, type)).toMatchObject({
          status: type === 'Ready' ? 'False' : 'True',
          reason: 'GuestSuspended',
          message: why,
        });
      }
      // It wakes up by itself: waiting (kstatus InProgress), not a fault only a user fixes.
      expect(conditionOf(status, 'Stalled')?.status).toBe('False');
    });
  });

  it('names the pending fields and how they will apply in RestartRequired', () => {
    const manual = machineStatus(input({ pending: ['spec.maxMemory', 'spec.disks'] }));
    expect(conditionOf(manual, 'RestartRequired')).toMatchObject({
      status: 'True',
      reason: 'PendingChanges',
      message:
        'pending: spec.maxMemory, spec.disks; they apply at the next start of the machine ' +
        '(updatePolicy Manual; libvirt-operator vm restart restarts it now, updatePolicy ' +
        'Restart lets the operator do so)',
    });
    const restart = machineStatus(
      input({ vm: vm({ ...machine.spec, updatePolicy: 'Restart' }), pending: ['spec.firmware'] }),
    );
    expect(conditionOf(restart, 'RestartRequired')?.message).toContain('updatePolicy Restart');
  });

  it('keeps ShutdownRequested (and its time) while a stop runs, drops it when the plan does', () => {
    const requestedAt = '2026-03-01T11:59:30Z';
    const previous = runningStatus({
      conditions: [
        {
          type: 'ShutdownRequested',
          status: 'True',
          reason: 'RunStrategyHalted',
          message: 'm',
          lastTransitionTime: requestedAt,
        },
      ],
    });
    const halted = vm({ ...machine.spec, runStrategy: 'Halted' }, { status: previous });
    const stopping = machineStatus(input({ vm: halted, shutdown: 'RunStrategyHalted' }));
    expect(conditionOf(stopping, 'ShutdownRequested')).toMatchObject({
      status: 'True',
      reason: 'RunStrategyHalted',
      lastTransitionTime: requestedAt,
      message: expect.stringContaining('destroyed if it still runs 60s after the request'),
    });
    const done = machineStatus(input({ vm: halted, shutdown: undefined }));
    expect(conditionOf(done, 'ShutdownRequested')).toBeUndefined();
  });

  it('keeps a Halted request runStrategy Always no longer asks for on record, not as a stop', () => {
    const sentAt = new Date(NOW.getTime() - 2_000);
    const halted = vm({ ...machine.spec, runStrategy: 'Halted' });
    const asked = machineStatus(
      input({ vm: halted, now: sentAt, shutdown: 'RunStrategyHalted', shutdownSentAt: sentAt }),
    );
    const always = vm({ ...machine.spec, runStrategy: 'Always' }, { status: asked });
    const status = machineStatus(input({ vm: always, shutdown: 'RunStrategyHalted' }));
    // Running as runStrategy asks: not Stopping, and nothing is destroyed.
    expect(status.phase).toBe('Running');
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True', reason: 'Running' });
    const kept = conditionOf(status, 'ShutdownRequested');
    expect(kept).toMatchObject({ status: 'True', reason: 'RunStrategyHalted' });
    expect(kept?.message).toContain('which runStrategy Always no longer asks for');
    expect(kept?.message).not.toContain('destroyed if');
    // The request's time and run stay readable for the next pass.
    expect(shutdownRequest(vm(always.spec, { status }))?.sentAt).toEqual(sentAt);
  });

  it('records when the ACPI request was sent, to the millisecond, and keeps it while the stop runs', () => {
    const sentAt = new Date(NOW.getTime() + 437);
    const halted = vm({ ...machine.spec, runStrategy: 'Halted' });
    const first = machineStatus(
      input({ vm: halted, shutdown: 'RunStrategyHalted', shutdownSentAt: sentAt }),
    );
    expect(conditionOf(first, 'ShutdownRequested')).toMatchObject({
      lastTransitionTime: '2026-03-01T12:00:00Z',
      message: expect.stringContaining('requested at 2026-03-01T12:00:00.437Z'),
    });
    // What a later pass (or a restarted agent) reads back from status.
    const later = vm({ ...machine.spec, runStrategy: 'Halted' }, { status: first });
    expect(shutdownRequest(later)?.sentAt).toEqual(sentAt);
    const next = machineStatus(input({ vm: later, now: LATER, shutdown: 'RunStrategyHalted' }));
    expect(conditionOf(next, 'ShutdownRequested')).toEqual(conditionOf(first, 'ShutdownRequested'));
  });
});

describe('nameConflict', () => {
  it('says whose the domain is and what to do', () => {
    expect(
      nameConflict(
        { state: 'foreign', clash: 'name', name: 'prod_web', uuid: 'u-1', stamp: undefined },
        'node-a',
      ),
    ).toEqual({
      reason: 'NameConflict',
      message:
        "node node-a already has a libvirt domain named 'prod_web' (uuid u-1); the operator did not create it, so it is left untouched. Remove or rename it on the node, or rename this object.",
    });
    const stamped = nameConflict(
      {
        state: 'foreign',
        clash: 'uuid',
        name: 'old_web',
        uuid: 'u-2',
        stamp: { kind: 'VirtualMachine', namespace: 'old', name: 'web', uid: 'u-9' },
      },
      'node-a',
    );
    expect(stamped.reason).toBe('UUIDConflict');
    expect(stamped.message).toContain('it belongs to VirtualMachine old/web (uid u-9)');
    expect(stamped.message).toContain('set another spec.uuid');
  });
});

describe('events', () => {
  it('warns when Synced turns False, once per reason and message', () => {
    const good = machineStatus(input());
    const bad = machineStatus(
      input({ vm: { ...machine, status: good }, problem: { reason: 'StartFailed', message: 'x' } }),
    );
    expect(conditionEvents(good, bad)).toEqual([
      { type: 'Warning', reason: 'StartFailed', message: 'x' },
    ]);
    expect(conditionEvents(bad, bad)).toEqual([]);
    const worse = machineStatus(
      input({ vm: { ...machine, status: bad }, problem: { reason: 'StartFailed', message: 'y' } }),
    );
    expect(conditionEvents(bad, worse)).toHaveLength(1);
  });

  it('tells about RestartRequired when the pending fields change', () => {
    const a = machineStatus(input({ pending: ['spec.disks'] }));
    expect(conditionEvents(undefined, a)).toEqual([
      { type: 'Normal', reason: 'RestartRequired', message: expect.stringContaining('spec.disks') },
    ]);
    expect(conditionEvents(a, a)).toEqual([]);
  });

  it('makes no Event of a new machine defined and started in the same pass: its status tells it', () => {
    const events = stepEvents(
      [
        { op: 'define', doc, created: true },
        { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } },
      ],
      machine,
      'node-a',
      0,
    );
    expect(events).toEqual([]);
  });

  it('still tells of a new definition that was not started with it', () => {
    const events = stepEvents([{ op: 'define', doc, created: true }], machine, 'node-a', 0);
    expect(events).toEqual([
      {
        type: 'Normal',
        reason: 'Created',
        message: `defined libvirt domain prod_web (uuid ${UID}) on node node-a`,
      },
    ]);
  });

  it('names restart-time changes in an Updated Event only when some are pending', () => {
    const define = [{ op: 'define' as const, doc, created: false }];
    expect(stepEvents(define, machine, 'node-a', 0)).toEqual([
      { type: 'Normal', reason: 'Updated', message: 'saved the new definition of domain prod_web' },
    ]);
    expect(stepEvents(define, machine, 'node-a', 0, ['spec.maxMemory', 'spec.cpu'])).toEqual([
      {
        type: 'Normal',
        reason: 'Updated',
        message:
          'saved the new definition of domain prod_web; it applies at the next start ' +
          '(pending: spec.maxMemory, spec.cpu; updatePolicy Manual)',
      },
    ]);
    const restarting = vm({ ...machine.spec, updatePolicy: 'Restart' });
    expect(stepEvents(define, restarting, 'node-a', 0, ['spec.maxMemory'])[0]?.message).toBe(
      'saved the new definition of domain prod_web; a graceful restart applies it now ' +
        '(pending: spec.maxMemory; updatePolicy Restart)',
    );
  });

  it('names what each step did; a restart is a Warning with the count', () => {
    const events = stepEvents(
      [
        { op: 'define', doc, created: true },
        { op: 'setMemory', kib: 524288, live: true, config: true },
        { op: 'setMemory', kib: 524288, live: false, config: true },
        { op: 'start', kind: 'restart', after: { state: 'shutoff', reason: 'destroyed' } },
        { op: 'destroy', why: 'gracePeriodExpired' },
      ],
      machine,
      'node-a',
      4,
    );
    expect(events.map((e) => `${e.type} ${e.reason}`)).toEqual([
      'Normal Created',
      'Normal MemoryChanged',
      'Warning Restarted',
      'Warning GracePeriodExpired',
    ]);
    expect(events[2]?.message).toContain('shutoff (destroyed)');
    expect(events[2]?.message).toContain('restart 4');
    expect(events[3]?.message).toContain('within 60s');
  });
});

describe('retryDelayMs', () => {
  const since = (seconds: number, type = 'Synced'): VirtualMachineStatus => ({
    conditions: [
      {
        type,
        status: 'False',
        reason: 'R',
        message: 'm',
        lastTransitionTime: new Date(NOW.getTime() - seconds * 1000).toISOString(),
      },
    ],
  });
  it.each([
    [0, 1_000],
    [0.5, 1_000],
    [30, 30_000],
    [3_600, 300_000],
  ])('failing for %ss -> %ims', (seconds, ms) =>
    expect(retryDelayMs(since(seconds), NOW)).toBe(ms),
  );

  it('falls back to Ready when Synced holds', () => {
    expect(retryDelayMs(since(20, 'Ready'), NOW)).toBe(20_000);
  });
});

describe('a stopped machine: phase and Ready say what the plan does', () => {
  // libvirt keeps no reason for an inactive domain across a libvirtd restart or a host reboot:
  // every one is then shut off with reason `unknown`.
  const seen = (state: string, reason: string) => runningStatus({ state: { state, reason } });
  const cases = [
    ['the guest shut itself down, then libvirtd restarted', seen('shutoff', 'shutdown'), 'unknown'],
    ['the guest shut itself down', seen('shutoff', 'shutdown'), 'shutdown'],
    ['the guest shut down while the agent was away', seen('running', 'booted'), 'shutdown'],
    ['the host rebooted while it ran', seen('running', 'booted'), 'unknown'],
    ['it crashed while the agent was away', seen('running', 'booted'), 'crashed'],
    ['stopped by a user before, then libvirtd restarted', seen('shutoff', 'destroyed'), 'unknown'],
    ['stopped by a user before', seen('shutoff', 'destroyed'), 'destroyed'],
    ['never started yet', undefined, 'unknown'],
  ] as const;
  const strategies = ['Always', 'RerunOnFailure', 'Manual', 'Halted'] as const;

  it.each(strategies.flatMap((s) => cases.map(([what, st, r]) => [s, what, st, r] as const)))(
    '%s: %s',
    (runStrategy, _what, previous, reason) => {
      const machine = vm({ runStrategy }, previous ? { status: previous } : {});
      const power = { active: false, state: 'shutoff', reason };
      const starts = powerPlan(machine, power, [], NOW).steps.some((s) => s.op === 'start');
      // The status of a pass whose planned start did not run (held back, or refused) and of one
      // that planned none: Starting exactly when a start is coming.
      const status = machineStatus(
        input({ vm: machine, observed: ours({ active: false, config: doc, power }) }),
      );
      expect(status.phase).toBe(starts ? 'Starting' : 'Stopped');
      // Not Ready without a start coming only where a user must act: a crash under Manual,
      // which nothing starts again (Stalled, not waiting for a start).
      const crashLeftOff = !starts && runStrategy === 'Manual' && reason === 'crashed';
      expect(conditionOf(status, 'Ready')?.status).toBe(starts || crashLeftOff ? 'False' : 'True');
      expect(conditionOf(status, 'Stalled')?.status).toBe(crashLeftOff ? 'True' : 'False');
    },
  );

  it('after a libvirtd restart, still says the guest shut itself down (RerunOnFailure)', () => {
    const machine = vm({ runStrategy: 'RerunOnFailure' }, { status: seen('shutoff', 'shutdown') });
    const power = { state: 'shutoff', reason: 'unknown' };
    const status = machineStatus(
      input({ vm: machine, observed: ours({ active: false, config: doc, power }) }),
    );
    expect(status.phase).toBe('Stopped');
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True', reason: 'GuestShutdown' });
  });

  it.each([
    ['shutdown', 'GuestShutdown'],
    ['destroyed', 'StoppedBeforeRerun'],
  ])(
    'after a libvirtd restart, keeps the recorded reason %s across passes (no status write)',
    (recorded, why) => {
      const power = { state: 'shutoff', reason: 'unknown' };
      const observed = ours({ active: false, config: doc, power });
      const first = machineStatus(
        input({
          vm: vm({ runStrategy: 'RerunOnFailure' }, { status: seen('shutoff', recorded) }),
          observed,
        }),
      );
      expect(first.state).toEqual({ state: 'shutoff', reason: recorded });
      expect(conditionOf(first, 'Ready')).toMatchObject({ status: 'True', reason: why });
      // The next pass reads the status the first one wrote.
      const second = machineStatus(
        input({ vm: vm({ runStrategy: 'RerunOnFailure' }, { status: first }), observed }),
      );
      expect(conditionOf(second, 'Ready')).toMatchObject({ status: 'True', reason: why });
      expect(second).toEqual(first);
    },
  );

  it('starts a restart begun before a libvirtd restart, and says it is Starting', () => {
    // A crash's restart whose start failed recorded restart 3; libvirtd restarted since.
    const machine = vm(
      { runStrategy: 'RerunOnFailure' },
      {
        status: runningStatus({ state: { state: 'shutoff', reason: 'crashed' }, restartCount: 2 }),
      },
    );
    const power = { state: 'shutoff', reason: 'unknown' };
    const stopped = ours({ active: false, config: { ...doc, restarts: 3 }, power });
    const plan = powerPlan(machine, { active: false, ...power, restartBegun: true }, [], NOW);
    expect(plan.steps).toMatchObject([{ op: 'start', kind: 'restart' }]);
    expect(machineStatus(input({ vm: machine, observed: stopped })).phase).toBe('Starting');
  });
});

describe('a stopped machine whose status was lost: no start the user did not ask for', () => {
  // A status restored from a backup without it, wiped by a tool, or a write that was lost:
  // the status alone reads as a machine never started. The domain's persistent definition
  // keeps the record of the agent's last start (lvorun:run) unless the agent never started it.
  const planOf = (machine: VirtualMachine, domain: ReturnType<typeof ours>) =>
    planMachine({
      vm: machine,
      desired: doc,
      cloudInit: undefined,
      observed: observed(domain),
      now: NOW,
    });
  const record = (startedUnder: number | undefined) =>
    startedUnder === undefined ? doc : { ...doc, startedUnder };
  const cases = [
    // [what, status, run record in the persistent definition, libvirt's reason, starts by strategy]
    ['never started', undefined, undefined, 'unknown', { Manual: true, RerunOnFailure: true }],
    [
      'status lost, a user stopped it',
      undefined,
      3,
      'destroyed',
      { Manual: false, RerunOnFailure: false },
    ],
    [
      'status lost, the guest shut down',
      undefined,
      2,
      'shutdown',
      { Manual: false, RerunOnFailure: false },
    ],
    [
      'status lost, libvirtd restarted',
      undefined,
      0,
      'unknown',
      { Manual: false, RerunOnFailure: false },
    ],
    [
      'started by an older agent (no record)',
      undefined,
      undefined,
      'destroyed',
      { Manual: true, RerunOnFailure: true },
    ],
    [
      'status kept, a user stopped it',
      runningStatus({ state: { state: 'shutoff', reason: 'destroyed' } }),
      3,
      'destroyed',
      { Manual: false, RerunOnFailure: false },
    ],
    [
      'status kept, it crashed',
      runningStatus(),
      3,
      'crashed',
      { Manual: false, RerunOnFailure: true },
    ],
  ] as const;

  it.each(
    (['Manual', 'RerunOnFailure'] as const).flatMap((strategy) =>
      cases.map(
        ([what, status, run, reason, starts]) =>
          [strategy, what, status, run, reason, starts[strategy]] as const,
      ),
    ),
  )('%s: %s', (runStrategy, _what, status, run, reason, starts) => {
    const machine = vm({ runStrategy }, status ? { status } : {});
    const power = { state: 'shutoff', reason };
    const domain = ours({ active: false, config: record(run), power });
    const plan = planOf(machine, domain);
    const start = plan.steps.find((s) => s.op === 'start');
    expect(start !== undefined).toBe(starts);
    if (start?.op === 'start' && !status) expect(start.kind).toBe('initial');
    const written = machineStatus(input({ vm: machine, observed: domain }));
    expect(written.phase).toBe(starts ? 'Starting' : 'Stopped');
    // A crash under Manual, which nothing starts again, waits for a user (Stalled).
    const crashLeftOff = !starts && reason === 'crashed';
    expect(conditionOf(written, 'Ready')?.status).toBe(starts || crashLeftOff ? 'False' : 'True');
    if (!starts && !crashLeftOff && runStrategy === 'Manual') {
      expect(conditionOf(written, 'Ready')?.reason).toBe('ManualPower');
    }
  });

  it('takes no restart count the definition keeps for a restart begun (RerunOnFailure)', () => {
    // Any restart leaves its count in the definition (kept across defines); against a lost
    // status's 0 it looked like a restart whose start had failed, and was started.
    const machine = vm({ runStrategy: 'RerunOnFailure' });
    const domain = ours({
      active: false,
      config: { ...doc, startedUnder: 4, restarts: 2 },
      power: { state: 'shutoff', reason: 'unknown' },
    });
    expect(restartBegun(domain, machine)).toBe(false);
    const plan = planOf(machine, domain);
    expect(plan.steps.find((s) => s.op === 'start')).toBeUndefined();
    expect(machineStatus(input({ vm: machine, observed: domain })).phase).toBe('Stopped');
  });

  it('retries a first start that failed (no record: it is written after the start)', () => {
    const machine = vm({ runStrategy: 'Manual' });
    const domain = ours({
      active: false,
      config: doc,
      power: { state: 'shutoff', reason: 'unknown' },
    });
    const plan = planOf(machine, domain);
    expect(plan.steps).toMatchObject([{ op: 'start', kind: 'initial' }]);
    expect(firstStartDue(machine, { ranBefore: ranUnderAgent(domain) })).toBe(true);
    expect(ranUnderAgent(ours({ active: false, config: { ...doc, startedUnder: 0 } }))).toBe(true);
  });
});

describe('restartCountOf', () => {
  const withCount = (n: number) => ({ ...machine, status: { restartCount: n } });
  const running = (restarts?: number) =>
    ours({ config: doc, live: restarts === undefined ? doc : { ...doc, restarts } });

  it("adds this pass's restart to the larger of status and memory", () => {
    expect(restartCountOf({ vm: withCount(2), observed: running(), started: 'restart' })).toBe(3);
    expect(
      restartCountOf({
        vm: withCount(2),
        observed: running(),
        started: undefined,
        restartsCounted: 4,
      }),
    ).toBe(4);
  });

  it('is at least what the running domain recorded: a restart whose status write never came', () => {
    expect(restartCountOf({ vm: withCount(2), observed: running(3), started: undefined })).toBe(3);
    // The run this pass started recorded the count it makes: not counted twice.
    expect(restartCountOf({ vm: withCount(2), observed: running(3), started: 'restart' })).toBe(3);
    // An older record (a snapshot's definition, a run before the status caught up) lowers nothing.
    expect(restartCountOf({ vm: withCount(5), observed: running(3), started: undefined })).toBe(5);
    // A stopped domain's persistent record is for a start that may not have happened.
    const stopped = ours({ active: false, config: { ...doc, restarts: 9 } });
    expect(restartCountOf({ vm: withCount(2), observed: stopped, started: undefined })).toBe(2);
  });
});
