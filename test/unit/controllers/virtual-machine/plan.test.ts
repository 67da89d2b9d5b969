import { describe, expect, it } from 'vitest';
import type {
  VirtualMachine,
  VirtualMachineSpec,
  VirtualMachineStatus,
} from '../../../../src/api/generated/types.js';
import {
  configSteps,
  planMachine,
  planRemoval,
  nextLookMs,
  powerPlan,
  requestMarker,
  heldMarker,
  restartBegun,
  restartPending,
  restoredRun,
  type RestoredRun,
  runMarker,
  shutdownAfterSteps,
  shutdownRequest,
  type MachineStep,
  ownLifecycleChanges,
} from '../../../../src/controllers/virtual-machine/plan.js';
import {
  DomainEventDefinedDetail,
  DomainEventResumedDetail,
  DomainEventStartedDetail,
  DomainEventSuspendedDetail,
  DomainEventType,
  domainEventDetailName,
  domainEventName,
} from '../../../../src/libvirt/index.js';
import { lifecycleChange } from '../../../../src/controllers/kit.js';
import { balloonTarget, kibQuantity } from '../../../../src/controllers/virtual-machine/status.js';
import { desired, NOW, observed, ours, runningStatus, variant, vm } from './machines.js';

const base = vm({ memory: '256Mi', maxMemory: '1Gi', vcpus: 1, maxVcpus: 4 });
const want = desired(base);
const upVcpus = desired(vm({ memory: '256Mi', maxMemory: '1Gi', vcpus: 3, maxVcpus: 4 }));
type DomainDoc = typeof want;

/** A status whose ShutdownRequested condition says the operator asked `secondsAgo` ago. */
function requested(
  reason: string,
  secondsAgo: number,
  extra: Partial<VirtualMachineStatus> = {},
  message = 'm',
): VirtualMachineStatus {
  return runningStatus({
    ...extra,
    conditions: [
      {
        type: 'ShutdownRequested',
        status: 'True',
        reason,
        message,
        lastTransitionTime: new Date(NOW.getTime() - secondsAgo * 1000)
          .toISOString()
          .replace(/\.\d+Z$/, 'Z'),
      },
    ],
  });
}

const running = { active: true, state: 'running', reason: 'booted' };
const off = (reason: string) => ({ active: false, state: 'shutoff', reason });

describe('configSteps', () => {
  it('plans nothing when the domain matches the spec, whatever libvirt added', () => {
    const observedDoc = variant(want, (d) => {
      d.os.machine = 'pc-q35-7.2';
      d.clock = { offset: 'utc' };
      d.devices.consoles = [{ source: { type: 'pty' }, targetType: 'serial', port: 0 }];
      d.devices.serials = [{ source: { type: 'pty' }, port: 0 }];
    });
    expect(configSteps(want, ours({ config: observedDoc }))).toEqual([]);
    expect(configSteps(want, ours({ active: false, config: observedDoc }))).toEqual([]);
  });

  it('never calls SetMemory for a balloon the guest ignores (running currentMemory = actual)', () => {
    const live = variant(want, (d) => (d.currentMemoryKiB = 1048576));
    expect(configSteps(want, ours({ config: want, live }))).toEqual([]);
  });

  it.each<[string, Parameters<typeof ours>[0], MachineStep[], DomainDoc?]>([
    [
      'memory on a running domain: live and config at once',
      { config: variant(want, (d) => (d.currentMemoryKiB = 131072)) },
      [{ op: 'setMemory', kib: 262144, live: true, config: true }],
    ],
    [
      'memory on a stopped domain: config only',
      { active: false, config: variant(want, (d) => (d.currentMemoryKiB = 131072)) },
      [{ op: 'setMemory', kib: 262144, live: false, config: true }],
    ],
    [
      'more vcpus on a running domain: hot-plugged live and written to the config',
      {
        config: variant(upVcpus, (d) => (d.vcpu.current = 1)),
        live: variant(upVcpus, (d) => (d.vcpu.current = 1)),
      },
      [{ op: 'setVcpus', count: 3, live: true, config: true }],
      upVcpus,
    ],
    [
      'fewer vcpus on a running domain: the config only (never a live unplug)',
      { config: variant(want, (d) => (d.vcpu.current = 2)) },
      [{ op: 'setVcpus', count: 1, live: false, config: true }],
    ],
    [
      'vcpus that only the running domain lacks (unplugged behind our back)',
      { config: upVcpus, live: variant(upVcpus, (d) => (d.vcpu.current = 2)) },
      [{ op: 'setVcpus', count: 3, live: true, config: false }],
      upVcpus,
    ],
    [
      'vcpus that only the running domain has (plugged behind our back): left to a restart',
      { config: want, live: variant(want, (d) => (d.vcpu.current = 3)) },
      [],
    ],
    [
      'a restart-time change: redefine, no live call',
      { config: variant(want, (d) => (d.memoryKiB = 524288)) },
      [{ op: 'define', doc: want, created: false }],
    ],
    [
      'a restart-time change with memory: live memory first, then the define writes the config',
      {
        config: variant(want, (d) => {
          d.memoryKiB = 524288;
          d.currentMemoryKiB = 131072;
        }),
      },
      [
        { op: 'setMemory', kib: 262144, live: true, config: false },
        { op: 'define', doc: want, created: false },
      ],
    ],
    [
      'memory beyond the running maximum: only the define (a restart applies it)',
      {
        config: variant(want, (d) => (d.memoryKiB = 131072)),
        live: variant(want, (d) => {
          d.memoryKiB = 131072;
          d.currentMemoryKiB = 131072;
        }),
      },
      [{ op: 'define', doc: want, created: false }],
    ],
    [
      'a transient domain: define makes it persistent again',
      { config: undefined, live: want },
      [{ op: 'define', doc: want, created: false }],
    ],
  ])('%s', (_what, domain, steps, target = want) => {
    expect(configSteps(target, ours(domain))).toEqual(steps);
  });
});

describe('restartPending', () => {
  it('is empty when the running domain matches, or differs only in live fields', () => {
    expect(restartPending(want, want)).toEqual([]);
    expect(
      restartPending(
        want,
        variant(want, (d) => (d.currentMemoryKiB = 1)),
      ),
    ).toEqual([]);
    expect(
      restartPending(
        variant(want, (d) => (d.vcpu.current = 4)),
        want,
      ),
    ).toEqual([]);
  });

  it('does not name spec.maxMemory for the whole MiB QEMU rounds a running domain up to', () => {
    // 512M = 500000 KiB; libvirt's QEMU driver starts the domain with 500736 KiB (489 MiB),
    // measured on libvirt 9.0. A difference only the alignment explains is no change.
    const spec = { memory: '512M', updatePolicy: 'Restart' as const };
    const asked = desired(vm(spec));
    expect(asked.memoryKiB).toBe(500000);
    const booted = variant(asked, (d) => {
      d.memoryKiB = 500736;
      d.currentMemoryKiB = 500736;
    });
    expect(restartPending(asked, booted)).toEqual([]);
    const plan = planMachine({
      vm: vm(spec, { status: runningStatus() }),
      desired: asked,
      cloudInit: undefined,
      observed: observed(ours({ config: asked, live: booted })),
      now: NOW,
    });
    expect(plan.steps).toEqual([]);
    // A real change still counts: 501000 KiB boots as 501760.
    expect(
      restartPending(
        variant(asked, (d) => (d.memoryKiB = 501000)),
        booted,
      ),
    ).toEqual(['spec.maxMemory']);
  });

  it('names spec.vcpus when fewer vCPUs are wanted than run (no live unplug)', () => {
    expect(
      restartPending(
        want,
        variant(want, (d) => (d.vcpu.current = 4)),
      ),
    ).toEqual(['spec.vcpus']);
  });

  it.each<[string, (d: ReturnType<typeof desired>) => void, string[]]>([
    ['maxMemory', (d) => (d.memoryKiB = 524288), ['spec.maxMemory']],
    ['maxVcpus', (d) => (d.vcpu.max = 2), ['spec.maxVcpus']],
    // kvm without a CPU mode is another CPU than qemu's default model.
    ['domainType', (d) => (d.type = 'kvm'), ['spec.domainType', 'spec.cpu']],
    ['firmware', (d) => (d.os.firmware = 'efi'), ['spec.firmware']],
    ['kernel', (d) => (d.os.kernel = '/k'), ['spec.boot']],
    [
      'a removed sata disk (no live detach on sata)',
      (d) =>
        d.devices.disks.push({
          device: 'disk',
          source: { type: 'file', file: '/x' },
          target: { dev: 'sda', bus: 'sata' },
          readonly: false,
        }),
      ['spec.disks (removed x)'],
    ],
    [
      'nothing for a removed virtio disk (detached live)',
      (d) =>
        d.devices.disks.push({
          device: 'disk',
          source: { type: 'file', file: '/x' },
          target: { dev: 'vda', bus: 'virtio' },
          readonly: false,
        }),
      [],
    ],
    [
      'cloud-init',
      (d) =>
        d.devices.disks.push({
          device: 'cdrom',
          source: {
            type: 'file',
            file: '/state/cloud-init/0b5c7d3e-1111-4222-8333-944445555666-0123abcd.iso',
          },
          target: { dev: 'sda', bus: 'sata' },
          readonly: true,
        }),
      ['spec.cloudInit'],
    ],
    [
      'nothing for a removed interface (detached live)',
      (d) => d.devices.interfaces.push({ source: { network: 'lab' }, mac: '52:54:00:00:00:01' }),
      [],
    ],
    [
      'the console log',
      (d) => (d.devices.serials = [{ source: { type: 'file', path: '/l' } }]),
      [`metadata.annotations['virt.dev/console-log']`],
    ],
    ['operator defaults', (d) => (d.onCrash = 'preserve'), ['operator domain defaults']],
    [
      'memory and vcpus beyond the running maximums',
      (d) => {
        d.memoryKiB = 131072;
        d.vcpu.max = 0;
      },
      ['spec.maxMemory', 'spec.maxVcpus', 'spec.memory', 'spec.vcpus'],
    ],
  ])('names %s', (_what, change, fields) => {
    expect(restartPending(want, variant(want, change))).toEqual(fields);
  });
});

describe('powerPlan', () => {
  type Row = [
    string,
    Partial<VirtualMachineSpec>,
    VirtualMachineStatus | undefined,
    { active: boolean; state: string; reason: string },
    { steps: MachineStep[]; shutdown?: string; waitMs?: number },
  ];
  const start = (kind: string, state = 'shutoff', reason = 'unknown') => ({
    op: 'start' as const,
    kind,
    after: { state, reason },
  });
  const wasOff = runningStatus({ state: { state: 'shutoff', reason: 'shutdown' } });

  it.each<Row>([
    ['Always: running stays', {}, runningStatus(), running, { steps: [] }],
    [
      'Always: first start',
      {},
      undefined,
      off('unknown'),
      { steps: [start('initial') as MachineStep] },
    ],
    [
      'Always: destroyed behind our back -> restart',
      {},
      runningStatus(),
      off('destroyed'),
      { steps: [start('restart', 'shutoff', 'destroyed') as MachineStep] },
    ],
    [
      'Always: guest shut down -> restart',
      {},
      runningStatus(),
      off('shutdown'),
      { steps: [start('restart', 'shutoff', 'shutdown') as MachineStep] },
    ],
    [
      'Always: host rebooted -> restart',
      {},
      runningStatus(),
      off('unknown'),
      { steps: [start('restart') as MachineStep] },
    ],
    [
      'Always: reverted to a snapshot of the stopped machine -> started, not a restart',
      {},
      runningStatus(),
      off('from_snapshot'),
      { steps: [start('requested', 'shutoff', 'from_snapshot') as MachineStep] },
    ],
    [
      'Always after Halted: a requested start, not a restart',
      {},
      requested('RunStrategyHalted', 100, { state: { state: 'shutoff', reason: 'shutdown' } }),
      off('shutdown'),
      { steps: [start('requested', 'shutoff', 'shutdown') as MachineStep] },
    ],
    [
      'Always: a crashed active domain is destroyed first',
      {},
      runningStatus(),
      { active: true, state: 'crashed', reason: 'panicked' },
      { steps: [{ op: 'destroy', why: 'crashed' }], waitMs: 500 },
    ],
    [
      // The guest has had the ACPI request: it is not destroyed, but a stop of it until the
      // grace period is over is the operator's (started as asked for, not counted).
      'Always while a Halted stop was under way: not carried on, remembered for its grace period',
      {},
      requested('RunStrategyHalted', 5),
      running,
      { steps: [], shutdown: 'RunStrategyHalted', waitMs: 56_000 },
    ],
    [
      'Always after a Halted stop the guest ignored for its grace period: forgotten',
      {},
      requested('RunStrategyHalted', 61),
      running,
      { steps: [] },
    ],
    [
      'Always: the run the Halted stop was asked of stopped meanwhile -> a requested start',
      {},
      requested('RunStrategyHalted', 5, {}, 'ACPI shutdown (runStrategy Halted) (run 4)'),
      off('shutdown'),
      { steps: [start('requested', 'shutoff', 'shutdown') as MachineStep] },
    ],
    [
      'Halted: ACPI shutdown first',
      { runStrategy: 'Halted' },
      runningStatus(),
      running,
      {
        steps: [{ op: 'shutdown', reason: 'RunStrategyHalted' }],
        shutdown: 'RunStrategyHalted',
        waitMs: 2000,
      },
    ],
    [
      'Halted: within the grace period, wait',
      { runStrategy: 'Halted' },
      requested('RunStrategyHalted', 10),
      running,
      { steps: [], shutdown: 'RunStrategyHalted', waitMs: 2000 },
    ],
    [
      'Halted: the last second of the grace period, wait for it',
      { runStrategy: 'Halted' },
      requested('RunStrategyHalted', 60),
      running,
      { steps: [], shutdown: 'RunStrategyHalted', waitMs: 1000 },
    ],
    [
      'Halted: grace period over, destroy',
      { runStrategy: 'Halted' },
      requested('RunStrategyHalted', 61),
      running,
      {
        steps: [{ op: 'destroy', why: 'gracePeriodExpired' }],
        shutdown: 'RunStrategyHalted',
        waitMs: 500,
      },
    ],
    [
      'Halted with grace period 0: destroy at once',
      { runStrategy: 'Halted', terminationGracePeriodSeconds: 0 },
      runningStatus(),
      running,
      {
        steps: [{ op: 'destroy', why: 'gracePeriodExpired' }],
        shutdown: 'RunStrategyHalted',
        waitMs: 500,
      },
    ],
    [
      'Halted: stopped stays stopped, remembering who stopped it',
      { runStrategy: 'Halted' },
      requested('RunStrategyHalted', 100),
      off('shutdown'),
      { steps: [], shutdown: 'RunStrategyHalted' },
    ],
    [
      'Halted: created stopped, never started',
      { runStrategy: 'Halted' },
      undefined,
      off('unknown'),
      { steps: [] },
    ],
    [
      'Manual: started once at creation',
      { runStrategy: 'Manual' },
      undefined,
      off('unknown'),
      { steps: [start('initial') as MachineStep] },
    ],
    ['Manual: not after that', { runStrategy: 'Manual' }, wasOff, off('shutdown'), { steps: [] }],
    [
      'Manual: not even after a crash',
      { runStrategy: 'Manual' },
      runningStatus(),
      off('crashed'),
      { steps: [] },
    ],
    ['Manual: running stays', { runStrategy: 'Manual' }, runningStatus(), running, { steps: [] }],
    [
      'RerunOnFailure: not after the guest shut down',
      { runStrategy: 'RerunOnFailure' },
      runningStatus(),
      off('shutdown'),
      { steps: [] },
    ],
    [
      'RerunOnFailure: after a crash',
      { runStrategy: 'RerunOnFailure' },
      runningStatus(),
      off('crashed'),
      { steps: [start('restart', 'shutoff', 'crashed') as MachineStep] },
    ],
    [
      'RerunOnFailure: after a destroy behind our back',
      { runStrategy: 'RerunOnFailure' },
      runningStatus(),
      off('destroyed'),
      { steps: [start('restart', 'shutoff', 'destroyed') as MachineStep] },
    ],
    [
      'RerunOnFailure: a host reboot after the guest had shut down does not start it',
      { runStrategy: 'RerunOnFailure' },
      wasOff,
      off('unknown'),
      { steps: [] },
    ],
    [
      'RerunOnFailure after Halted: start',
      { runStrategy: 'RerunOnFailure' },
      requested('RunStrategyHalted', 100, { state: { state: 'shutoff', reason: 'shutdown' } }),
      off('shutdown'),
      { steps: [start('requested', 'shutoff', 'shutdown') as MachineStep] },
    ],
  ])('%s', (_what, spec, status, power, expected) => {
    const plan = powerPlan(vm(spec, status ? { status } : {}), power, [], NOW);
    expect(plan).toEqual({ shutdown: undefined, waitMs: undefined, ...expected });
  });

  it('asks a run started after a Halted stop to shut down, instead of destroying it at once', () => {
    // The domain was shut down long ago (run 3), and a restore's revert to a checkpoint (or a
    // start outside the operator) runs it again as run 7: that run was never asked.
    const long = requested(
      'RunStrategyHalted',
      100,
      { state: { state: 'shutoff', reason: 'shutdown' } },
      'the operator shut the domain down (runStrategy Halted) (run 3)',
    );
    const halted = vm({ runStrategy: 'Halted' }, { status: long });
    expect(powerPlan(halted, { ...running, id: 7 }, [], NOW)).toEqual({
      steps: [{ op: 'shutdown', reason: 'RunStrategyHalted' }],
      shutdown: 'RunStrategyHalted',
      waitMs: 2000,
    });
    // The run that was asked still runs after the grace period: destroyed, as before.
    expect(powerPlan(halted, { ...running, id: 3 }, [], NOW).steps).toEqual([
      { op: 'destroy', why: 'gracePeriodExpired' },
    ]);
  });

  it('does not restart a checkpoint a restore brought back until the spec changes', () => {
    const spec = { updatePolicy: 'Restart' as const };
    const restored = {
      ...running,
      reason: 'from_snapshot',
      id: 7,
      restoredRun: { run: 7, generation: 3 },
    };
    const status = { ...runningStatus(), observedGeneration: 3 };
    // The restore put back the snapshot's definition; the spec (generation 3) is as it was.
    expect(powerPlan(vm(spec, { status }), restored, ['spec.maxMemory'], NOW).steps).toEqual([]);
    // The user changes the spec: restarted for it, as the policy says.
    expect(
      powerPlan(vm(spec, { status, generation: 4 }), restored, ['spec.maxMemory'], NOW).steps,
    ).toEqual([{ op: 'shutdown', reason: 'RestartToApplyChanges' }]);
    // Also once a pass after the edit (which did not restart: a Volume not Ready yet) has
    // written observedGeneration 4: the edit is judged against the restore's generation.
    const later = { ...status, observedGeneration: 4 };
    expect(
      powerPlan(vm(spec, { status: later, generation: 4 }), restored, ['spec.maxMemory'], NOW)
        .steps,
    ).toEqual([{ op: 'shutdown', reason: 'RestartToApplyChanges' }]);
    // A run the restore did not bring back is restarted at once.
    expect(powerPlan(vm(spec, { status }), running, ['spec.maxMemory'], NOW).steps).toEqual([
      { op: 'shutdown', reason: 'RestartToApplyChanges' },
    ]);
  });

  it('holds the restored run once its reason is gone: resumed, by memory or by status', () => {
    const spec = { updatePolicy: 'Restart' as const };
    const status = { ...runningStatus(), observedGeneration: 3 };
    const resumed = { active: true, id: 7, power: { state: 'running', reason: 'unpaused' } };
    const held = (conditions: VirtualMachineStatus['conditions'], generation = 3) =>
      vm(spec, { status: { ...status, observedGeneration: generation, conditions }, generation });
    const required = (message: string) => [
      {
        type: 'RestartRequired',
        status: 'True' as const,
        reason: 'PendingChanges',
        message,
        lastTransitionTime: '2026-03-01T12:00:00Z',
      },
    ];
    const named = required(
      `pending: spec.maxMemory; ${heldMarker({ run: 7, generation: 2 })} with its own definition`,
    );
    const at = (run: number, generation: number) => ({ run, generation });
    const recorded = (startedUnder: number) => ({ ...resumed, live: { startedUnder } });
    type Running = typeof resumed & { live?: { startedUnder: number } };
    const cases: Array<[string, VirtualMachine, Running, unknown, RestoredRun?]> = [
      [
        'the reason names it, under the generation the status last observed',
        vm(spec, { status: { ...status, observedGeneration: 5 }, generation: 5 }),
        { ...resumed, power: { state: 'running', reason: 'from_snapshot' } },
        at(7, 5),
      ],
      [
        // Edited while the restore ran, when this controller stood aside: the user's change.
        'the reason names it, the spec edited since the status last observed it',
        vm(spec, { status, generation: 5 }),
        { ...resumed, power: { state: 'running', reason: 'from_snapshot' } },
        at(7, 3),
      ],
      [
        'the reason, but remembered under an earlier generation',
        vm(spec, { status, generation: 5 }),
        { ...resumed, power: { state: 'running', reason: 'from_snapshot' } },
        at(7, 3),
        at(7, 3),
      ],
      ['resumed, remembered', vm(spec, { status }), resumed, at(7, 3), at(7, 3)],
      [
        'resumed, remembered, its record the same',
        vm(spec, { status }),
        recorded(3),
        at(7, 3),
        at(7, 3),
      ],
      // It took a later spec on live (plan.ts runCaughtUp): judged as any run from then on.
      [
        'resumed, remembered, its record newer',
        vm(spec, { status }),
        recorded(4),
        undefined,
        at(7, 3),
      ],
      ['named in status, its record newer', held(named, 4), recorded(4), undefined],
      [
        'the reason, its record newer than the status observed',
        vm(spec, { status, generation: 5 }),
        { ...recorded(5), power: { state: 'running', reason: 'from_snapshot' } },
        undefined,
      ],
      ['resumed, named in status', held(named, 4), resumed, at(7, 2)],
      ['a later run', held(named), { ...resumed, id: 8 }, undefined, at(7, 3)],
      [
        'shut off',
        held(named),
        { active: false, id: -1, power: { state: 'shutoff', reason: 'shutdown' } },
        undefined,
        at(7, 3),
      ],
      [
        'another message naming a run',
        held(required('pending: spec.maxMemory; the operator restarts (run 7)')),
        resumed,
        undefined,
      ],
    ];
    for (const [what, machine, domain, want, remembered] of cases) {
      expect(restoredRun(machine, domain, remembered), what).toEqual(want);
    }
    // That run is not restarted for the fields the checkpoint lacks, unless the spec changes.
    const power = { active: true, state: 'running', reason: 'unpaused', id: 7 };
    const restoredRun3 = { ...power, restoredRun: at(7, 3) };
    expect(powerPlan(vm(spec, { status }), restoredRun3, ['spec.maxMemory'], NOW).steps).toEqual(
      [],
    );
    expect(
      powerPlan(vm(spec, { status, generation: 4 }), restoredRun3, ['spec.maxMemory'], NOW).steps,
    ).toEqual([{ op: 'shutdown', reason: 'RestartToApplyChanges' }]);
  });

  it('restarts gracefully to apply pending changes with updatePolicy Restart, then starts again', () => {
    const spec = { updatePolicy: 'Restart' as const, runStrategy: 'Manual' as const };
    expect(
      powerPlan(vm(spec, { status: runningStatus() }), running, ['spec.maxMemory'], NOW),
    ).toEqual({
      steps: [{ op: 'shutdown', reason: 'RestartToApplyChanges' }],
      shutdown: 'RestartToApplyChanges',
      waitMs: 2000,
    });
    // Stopped by that request: started again even under Manual, and the request is done.
    const stopped = requested('RestartToApplyChanges', 3, {
      state: { state: 'running', reason: 'booted' },
    });
    expect(powerPlan(vm(spec, { status: stopped }), off('shutdown'), [], NOW)).toEqual({
      steps: [start('requested', 'shutoff', 'shutdown')],
      shutdown: undefined,
      waitMs: undefined,
    });
  });

  it('starts a machine a restore powered off under Always and RerunOnFailure, not as a restart', () => {
    const stopped = { ...off('destroyed'), restoreStopped: true };
    for (const runStrategy of ['Always', 'RerunOnFailure'] as const) {
      expect(
        powerPlan(vm({ runStrategy }, { status: runningStatus() }), stopped, [], NOW).steps,
      ).toEqual([start('requested', 'shutoff', 'destroyed')]);
    }
    expect(
      powerPlan(vm({ runStrategy: 'Manual' }, { status: runningStatus() }), stopped, [], NOW).steps,
    ).toEqual([]);
  });

  it('leaves pending changes alone with updatePolicy Manual', () => {
    expect(
      powerPlan(vm({}, { status: runningStatus() }), running, ['spec.disks'], NOW).steps,
    ).toEqual([]);
  });
});

describe('planMachine', () => {
  it('defines and starts an absent domain', () => {
    const plan = planMachine({
      vm: base,
      desired: want,
      cloudInit: undefined,
      observed: observed({ state: 'absent' }),
      now: NOW,
    });
    expect(plan.steps).toEqual([
      { op: 'define', doc: want, created: true },
      { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } },
    ]);
  });

  it('restarts under updatePolicy Restart for a device the running domain refused to attach', () => {
    const spec = {
      updatePolicy: 'Restart' as const,
      disks: [{ name: 'data', volume: 'data', readOnly: false }],
    };
    const inputs = {
      volumes: new Map([['data', { path: '/pool/prod_data', format: 'qcow2' as const }]]),
      cloudInit: undefined,
      consoleLog: undefined,
    };
    const machine = vm(spec, { status: runningStatus() });
    const asked = desired(machine, inputs);
    const booted = desired(vm({}), inputs);
    const plan = (deferred: string[], policy: 'Restart' | 'Manual' = 'Restart') =>
      planMachine({
        vm: vm({ ...spec, updatePolicy: policy }, { status: runningStatus() }),
        desired: asked,
        cloudInit: undefined,
        observed: observed(ours({ config: asked, live: booted })),
        now: NOW,
        deferred,
      });
    // Not known to be refused yet: the attach is tried.
    expect(plan([]).steps.map((s) => s.op)).toEqual(['attachDevice']);
    expect(plan([]).shutdown).toBeUndefined();
    // Refused by this run: restart-time, applied by a graceful restart.
    expect(plan(['spec.disks[data]'])).toMatchObject({
      steps: [{ op: 'shutdown', reason: 'RestartToApplyChanges' }],
      shutdown: 'RestartToApplyChanges',
    });
    // Manual waits, and does not ask this run for the attach again (it would be refused on
    // every pass); a refusal of a device the spec no longer differs in is forgotten.
    expect(plan(['spec.disks[data]'], 'Manual')).toMatchObject({ steps: [], shutdown: undefined });
    expect(plan(['spec.disks[gone]']).shutdown).toBeUndefined();
    expect(plan(['spec.disks[gone]']).steps.map((s) => s.op)).toEqual(['attachDevice']);
  });

  it('defines but does not start an absent Halted machine', () => {
    const halted = vm({ runStrategy: 'Halted' });
    const plan = planMachine({
      vm: halted,
      desired: desired(halted),
      cloudInit: undefined,
      observed: observed({ state: 'absent' }),
      now: NOW,
    });
    expect(plan.steps.map((s) => s.op)).toEqual(['define']);
  });

  it('does nothing to a foreign domain, nor without a desired document for an absent one', () => {
    const foreign = observed({
      state: 'foreign',
      clash: 'name',
      name: 'prod_web',
      uuid: 'u',
      stamp: undefined,
    });
    expect(
      planMachine({ vm: base, desired: want, cloudInit: undefined, observed: foreign, now: NOW })
        .steps,
    ).toEqual([]);
    expect(
      planMachine({
        vm: base,
        desired: undefined,
        cloudInit: undefined,
        observed: observed({ state: 'absent' }),
        now: NOW,
      }).steps,
    ).toEqual([]);
  });

  it('still follows runStrategy when references do not resolve (no config steps)', () => {
    const machine = vm({}, { status: runningStatus() });
    const plan = planMachine({
      vm: machine,
      desired: undefined,
      cloudInit: undefined,
      observed: observed(
        ours({
          active: false,
          power: { state: 'shutoff', reason: 'destroyed' },
          config: variant(want, (d) => (d.memoryKiB = 1)),
        }),
      ),
      now: NOW,
    });
    expect(plan.steps.map((s) => s.op)).toEqual(['start']);
  });

  it('writes memory and vCPU changes only to the config of a machine it is stopping', () => {
    const halted = vm(
      { memory: '128Mi', maxMemory: '1Gi', vcpus: 1, maxVcpus: 4, runStrategy: 'Halted' },
      { status: runningStatus() },
    );
    const running = variant(desired(halted), (d) => {
      d.currentMemoryKiB = 262144;
      d.vcpu.current = 2;
    });
    const plan = planMachine({
      vm: halted,
      desired: desired(halted),
      cloudInit: undefined,
      observed: observed(ours({ config: running, live: running })),
      now: NOW,
    });
    // The memory waits for the stop: the persistent target is the running guest's until then
    // (status reports it from there).
    expect(plan.steps).toEqual([
      { op: 'setVcpus', count: 1, live: false, config: true },
      { op: 'shutdown', reason: 'RunStrategyHalted' },
    ]);
  });

  it("keeps the running guest's balloon target in the saved definition during a stop", () => {
    // updatePolicy Restart, maxMemory and memory raised in one apply: the define and the
    // restart's ACPI request come in one pass, then the guest takes its time to shut down.
    const raised = vm(
      { memory: '768Mi', maxMemory: '2Gi', updatePolicy: 'Restart' },
      { status: runningStatus() },
    );
    const running = variant(desired(raised), (d) => {
      d.memoryKiB = 1024 * 1024;
      d.currentMemoryKiB = 256 * 1024;
    });
    const first = planMachine({
      vm: raised,
      desired: desired(raised),
      cloudInit: undefined,
      observed: observed(ours({ config: running, live: running })),
      now: NOW,
    });
    expect(first.steps.map((s) => s.op)).toEqual(['define', 'shutdown']);
    const defined = first.steps[0]!.op === 'define' ? first.steps[0]!.doc : want;
    expect(defined.memoryKiB).toBe(2 * 1024 * 1024);
    expect(defined.currentMemoryKiB).toBe(256 * 1024);
    // Status, while the guest shuts down, shows the target it runs with.
    const stopping = ours({
      config: defined,
      live: running,
      power: { state: 'shutdown', reason: 'user' },
    });
    expect(kibQuantity(balloonTarget(stopping))).toBe('256Mi');
    // A later pass of the stop writes nothing.
    const waiting = vm(raised.spec, {
      status: requested('RestartToApplyChanges', 5, {}, `m ${runMarker(7)}`),
    });
    const again = planMachine({
      vm: waiting,
      desired: desired(raised),
      cloudInit: undefined,
      observed: observed(stopping),
      now: NOW,
    });
    expect(again.steps).toEqual([]);
    // Once it is off, the new target is saved before the start.
    const after = planMachine({
      vm: waiting,
      desired: desired(raised),
      cloudInit: undefined,
      observed: observed(
        ours({ active: false, config: defined, power: { state: 'shutoff', reason: 'shutdown' } }),
      ),
      now: NOW,
    });
    expect(after.steps).toEqual([
      { op: 'setMemory', kib: 768 * 1024, live: false, config: true },
      {
        op: 'start',
        kind: 'requested',
        after: { state: 'shutoff', reason: 'shutdown' },
      },
    ]);
  });

  it('writes a missing cloud-init ISO first and removes ISOs nothing uses any more', () => {
    const image = { path: '/s/cloud-init/u-new.iso', files: { 'user-data': '' } };
    const live = variant(want, (d) =>
      d.devices.disks.push({
        device: 'cdrom',
        source: { type: 'file', file: '/s/cloud-init/u-live.iso' },
        target: { dev: 'sda', bus: 'sata' },
        readonly: true,
      }),
    );
    const plan = planMachine({
      vm: vm({}, { status: runningStatus() }),
      desired: want,
      cloudInit: image,
      observed: observed(ours({ config: want, live }), [
        '/s/cloud-init/u-live.iso',
        '/s/cloud-init/u-old.iso',
      ]),
      now: NOW,
    });
    expect(plan.steps).toEqual([
      { op: 'writeCloudInit', image },
      { op: 'removeFiles', paths: ['/s/cloud-init/u-old.iso'] },
    ]);
  });

  it('keeps an earlier cloud-init ISO that a libvirt snapshot of the domain names', () => {
    // A snapshot taken before a cloudInit change: reverting to it opens the old ISO again.
    const image = { path: '/s/cloud-init/u-new.iso', files: { 'user-data': '' } };
    const plan = planMachine({
      vm: vm({}, { status: runningStatus() }),
      desired: want,
      cloudInit: image,
      observed: observed(
        ours({ config: want }),
        ['/s/cloud-init/u-new.iso', '/s/cloud-init/u-old.iso', '/s/cloud-init/u-older.iso'],
        ['/s/cloud-init/u-old.iso'],
      ),
      now: NOW,
    });
    expect(plan.steps).toEqual([{ op: 'removeFiles', paths: ['/s/cloud-init/u-older.iso'] }]);
  });

  it('plans nothing at all for a converged machine', () => {
    const machine = vm({}, { status: runningStatus() });
    const doc = desired(machine);
    const plan = planMachine({
      vm: machine,
      desired: doc,
      cloudInit: undefined,
      observed: observed(ours({ config: doc })),
      now: NOW,
    });
    expect(plan).toEqual({ steps: [], shutdown: undefined, waitMs: undefined });
  });
});

describe('planRemoval', () => {
  const files = ['/s/cloud-init/u-1.iso', '/s/console/u.log'];

  it('asks the guest to shut down first', () => {
    expect(planRemoval(vm(), observed(ours({ config: want })), files, NOW)).toEqual({
      steps: [{ op: 'shutdown', reason: 'Deleting' }],
      shutdown: 'Deleting',
      waitMs: 2000,
    });
  });

  it('counts the grace period from the millisecond the request was sent, where status has it', () => {
    // Sent 0.6 s into the second that lastTransitionTime (whole seconds) names.
    const sentAt = new Date(NOW.getTime() - 1_400);
    const machine = (now: Date) =>
      planRemoval(
        vm(
          { terminationGracePeriodSeconds: 1 },
          { status: requested('Deleting', 2, {}, `ACPI shutdown ${requestMarker(sentAt)} (…)`) },
        ),
        observed(ours({ config: want })),
        files,
        now,
      );
    // 1 s after the request, not 1 s after the second that follows it.
    expect(machine(new Date(sentAt.getTime() + 999))).toEqual({
      steps: [],
      shutdown: 'Deleting',
      waitMs: 1,
    });
    expect(machine(new Date(sentAt.getTime() + 1_000)).steps).toEqual([
      { op: 'destroy', why: 'gracePeriodExpired' },
    ]);
  });

  it('ignores a request time before lastTransitionTime: whole seconds plus one', () => {
    const machine = vm(
      { terminationGracePeriodSeconds: 1 },
      {
        status: requested(
          'Deleting',
          1,
          {},
          `ACPI shutdown ${requestMarker(new Date(NOW.getTime() - 5_000))} (…)`,
        ),
      },
    );
    expect(shutdownRequest(machine)?.sentAt).toBeUndefined();
    expect(planRemoval(machine, observed(ours({ config: want })), files, NOW)).toEqual({
      steps: [],
      shutdown: 'Deleting',
      waitMs: 1_000,
    });
  });

  it('destroys once the grace period has passed, counting from an earlier Halted request', () => {
    const machine = vm({}, { status: requested('RunStrategyHalted', 61) });
    expect(planRemoval(machine, observed(ours({ config: want })), files, NOW).steps).toEqual([
      { op: 'destroy', why: 'gracePeriodExpired' },
    ]);
  });

  it.each([
    [false, 'bios', false],
    [true, 'uefi', false],
    [false, 'bios', true],
    [true, 'uefi', true],
  ] as const)(
    'undefines a stopped domain (nvram %s for %s, tpm %s), then removes the files',
    (nvram, firmware, tpm) => {
      const spec = { firmware, ...(tpm ? { tpm: { version: '2.0' as const } } : {}) };
      const doc = desired(vm(spec));
      expect(
        planRemoval(vm(spec), observed(ours({ active: false, config: doc })), files, NOW).steps,
      ).toEqual([
        { op: 'undefine', nvram, tpm },
        { op: 'removeFiles', paths: files },
      ]);
    },
  );

  it('only removes our files when the domain is gone or not ours', () => {
    const foreign = observed({
      state: 'foreign',
      clash: 'name',
      name: 'prod_web',
      uuid: 'u',
      stamp: undefined,
    });
    expect(planRemoval(vm(), foreign, files, NOW).steps).toEqual([
      { op: 'removeFiles', paths: files },
    ]);
    expect(planRemoval(vm(), observed({ state: 'absent' }), [], NOW).steps).toEqual([]);
  });

  it("removes the TPM state by the domain's UUID too, even when the definition lost its TPM", () => {
    // A TPM the spec dropped earlier: undefine's TPM flag only covers a TPM the definition has.
    const tpmState = ['/var/lib/libvirt/swtpm/u'];
    const doc = desired(vm());
    expect(
      planRemoval(vm(), observed(ours({ active: false, config: doc })), files, NOW, tpmState).steps,
    ).toEqual([
      { op: 'undefine', nvram: false, tpm: false },
      { op: 'removeFiles', paths: [...files, ...tpmState] },
    ]);
    expect(planRemoval(vm(), observed({ state: 'absent' }), [], NOW, tpmState).steps).toEqual([
      { op: 'removeFiles', paths: tpmState },
    ]);
    // Another domain's UUID: its TPM state is not ours to remove.
    const foreign = observed({
      state: 'foreign',
      clash: 'uuid',
      name: 'prod_web',
      uuid: 'u',
      stamp: undefined,
    });
    expect(planRemoval(vm(), foreign, files, NOW, tpmState).steps).toEqual([
      { op: 'removeFiles', paths: files },
    ]);
  });
});

describe('nextLookMs', () => {
  const at = (ms: number) => new Date(NOW.getTime() + ms);
  const waiting = { steps: [], shutdown: 'Deleting' as const, waitMs: 800 };
  const asked = {
    steps: [{ op: 'shutdown' as const, reason: 'Deleting' as const }],
    shutdown: 'Deleting' as const,
    waitMs: 1000,
  };

  it("counts the plan's wait from its now: the pass's own time is subtracted", () => {
    const end = { active: true, planned: NOW, now: at(300), graceMs: 1000 };
    expect(nextLookMs(waiting, end)).toBe(500);
    expect(nextLookMs(waiting, { ...end, now: at(900) })).toBe(0);
  });

  it('looks again at once when the domain already stopped', () => {
    expect(nextLookMs(waiting, { active: false, planned: NOW, now: at(100), graceMs: 1000 })).toBe(
      400,
    );
  });

  it('after a fresh ACPI request, looks exactly when the grace period since it ends', () => {
    // Observing took 400 ms before the request went out: the plan's 1 s would be 400 ms early.
    const end = { active: true, planned: NOW, now: at(450), shutdownSentAt: at(400) };
    expect(nextLookMs(asked, { ...end, graceMs: 1000 })).toBe(950);
    // A long grace period is still watched every STOP_POLL_MS.
    expect(nextLookMs(asked, { ...end, graceMs: 60_000 })).toBe(2000);
  });
});

describe('the lifecycle changes a pass makes itself', () => {
  it('are the events libvirt sends for its define and its boot (QEMU: started, then unpaused), named as the agent names them', () => {
    const named = (event: number, detail: number) =>
      lifecycleChange(domainEventName(event), domainEventDetailName(event, detail));
    const want = desired(vm());
    expect(
      ownLifecycleChanges([
        { op: 'define', doc: want, created: true },
        { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } },
        { op: 'define', doc: want, created: false },
        { op: 'suspend' },
        { op: 'resume' },
        { op: 'shutdown', reason: 'RunStrategyHalted' },
      ]),
    ).toEqual([
      named(DomainEventType.DEFINED, DomainEventDefinedDetail.ADDED),
      named(DomainEventType.STARTED, DomainEventStartedDetail.BOOTED),
      named(DomainEventType.RESUMED, DomainEventResumedDetail.UNPAUSED),
      named(DomainEventType.DEFINED, DomainEventDefinedDetail.UPDATED),
      named(DomainEventType.SUSPENDED, DomainEventSuspendedDetail.PAUSED),
      named(DomainEventType.RESUMED, DomainEventResumedDetail.UNPAUSED),
    ]);
  });
});

describe('a machine whose writable disk others are layered on', () => {
  // Its guest would write the base image under the overlays (VolumeHasOverlays): the problem
  // keeps the desired document away, and the stopped domain must not be started either.
  it('is not started while that holds, and is once it no longer does', () => {
    const machine = vm({}, { status: { phase: 'Stopped' } });
    const stopped = observed(ours({ config: desired(machine), active: false }));
    const input = { vm: machine, desired: undefined, cloudInit: undefined, observed: stopped };
    const plan = (holdStart: boolean) => planMachine({ ...input, now: NOW, holdStart });
    expect(plan(false).steps.map((s) => s.op)).toEqual(['start']);
    expect(plan(true).steps).toEqual([]);
  });
});

describe('a requested restart whose start is held back (a network being deleted)', () => {
  // The restart stopped the domain; its start waits for the network. The request must stay
  // recorded (ShutdownRequested), or a Manual or RerunOnFailure machine is never started
  // again once the network is re-created.
  it.each(['Manual', 'RerunOnFailure', 'Always'] as const)(
    'keeps the request recorded under runStrategy %s, and starts once the hold ends',
    (runStrategy) => {
      const machine = vm(
        { runStrategy },
        {
          status: requested('RestartRequested', 5, {
            state: { state: 'shutoff', reason: 'shutdown' },
          }),
        },
      );
      const stopped = observed(
        ours({ config: desired(machine), active: false, power: off('shutdown') }),
      );
      const input = { vm: machine, desired: undefined, cloudInit: undefined, observed: stopped };
      const held = planMachine({ ...input, now: NOW, holdStart: true });
      expect(held.steps).toEqual([]);
      expect(held.shutdown).toBe('RestartRequested');
      const free = planMachine({ ...input, now: NOW, holdStart: false });
      expect(free.steps).toMatchObject([{ op: 'start', kind: 'requested' }]);
    },
  );
});

describe('a restart whose start failed', () => {
  // The restart stopped the domain, or found it stopped, and its start failed (QEMU exiting at
  // start, a lock not yet free). The status of that pass shows the domain shut off.
  const failedOff = (reason: string) =>
    runningStatus({ state: { state: 'shutoff', reason }, restartCount: 2 });
  const stoppedWith = (machine: VirtualMachine, recorded: number | undefined, reason: string) =>
    observed(
      ours({
        config: { ...desired(machine), ...(recorded === undefined ? {} : { restarts: recorded }) },
        active: false,
        power: off(reason),
      }),
    );
  const plan = (machine: VirtualMachine, recorded: number | undefined, reason: string) =>
    planMachine({
      vm: machine,
      desired: desired(machine),
      cloudInit: undefined,
      observed: stoppedWith(machine, recorded, reason),
      now: NOW,
    });

  it('is begun when the definition records a restart the status does not count', () => {
    const machine = vm({ runStrategy: 'RerunOnFailure' }, { status: failedOff('crashed') });
    const domain = (recorded?: number) =>
      ours({
        config: { ...want, ...(recorded === undefined ? {} : { restarts: recorded }) },
        active: false,
      });
    expect(restartBegun(domain(3), machine)).toBe(true);
    expect(restartBegun(domain(2), machine)).toBe(false);
    expect(restartBegun(domain(), machine)).toBe(false);
    // This process counted it already (a status write that failed): that run started.
    expect(restartBegun(domain(3), machine, 3)).toBe(false);
    expect(restartBegun({ ...domain(3), active: true }, machine)).toBe(false);
  });

  it.each(['crashed', 'failed', 'destroyed', 'unknown'])(
    'under RerunOnFailure, is tried again after a stop by %s, as the same counted restart',
    (reason) => {
      const machine = vm({ runStrategy: 'RerunOnFailure' }, { status: failedOff(reason) });
      expect(plan(machine, 3, reason).steps).toEqual([
        { op: 'start', kind: 'restart', after: { state: 'shutoff', reason } },
      ]);
      // Nothing begun: the status's shut-off state is a stop judged before (not started).
      expect(plan(machine, 2, reason).steps).toEqual([]);
    },
  );

  it('under RerunOnFailure, is not tried again once the guest shut itself down', () => {
    const machine = vm({ runStrategy: 'RerunOnFailure' }, { status: failedOff('shutdown') });
    // Given up: the record goes back to the status's count.
    expect(plan(machine, 3, 'shutdown').steps).toEqual([{ op: 'forgetRestart', restartCount: 2 }]);
  });

  it.each(['Manual', 'Halted'] as const)(
    'under %s, is given up: the definition gets the status count back, once',
    (runStrategy) => {
      // A later start (a user's virsh start) inherits the definition's count: a stale larger
      // one was counted as a restart the operator never made.
      const machine = vm({ runStrategy }, { status: failedOff('crashed') });
      expect(plan(machine, 3, 'crashed').steps).toEqual([{ op: 'forgetRestart', restartCount: 2 }]);
      expect(plan(machine, 2, 'crashed').steps).toEqual([]);
    },
  );

  it('is given up before a start that is not that restart (a requested one under Manual)', () => {
    const machine = vm(
      { runStrategy: 'Manual' },
      {
        status: requested('RestartRequested', 5, {
          state: { state: 'shutoff', reason: 'crashed' },
          restartCount: 2,
        }),
      },
    );
    expect(plan(machine, 3, 'crashed').steps).toMatchObject([
      { op: 'forgetRestart', restartCount: 2 },
      { op: 'start', kind: 'requested' },
    ]);
  });

  it('under Always, the start that works is the counted restart (one Restarted Event)', () => {
    const machine = vm({}, { status: failedOff('shutdown') });
    expect(plan(machine, 3, 'shutdown').steps).toEqual([
      { op: 'start', kind: 'restart', after: { state: 'shutoff', reason: 'shutdown' } },
    ]);
    expect(plan(machine, 2, 'shutdown').steps).toMatchObject([{ op: 'start', kind: 'requested' }]);
  });

  it.each(['RestartRequested', 'RestartToApplyChanges'] as const)(
    'keeps a %s recorded when its start did not run, under Manual, and starts it again',
    (reason) => {
      const machine = vm(
        { runStrategy: 'Manual' },
        { status: requested(reason, 5, { state: { state: 'shutoff', reason: 'shutdown' } }) },
      );
      const power = plan(machine, undefined, 'shutdown');
      expect(power.steps).toMatchObject([{ op: 'start', kind: 'requested' }]);
      expect(power.shutdown).toBeUndefined();
      const stopped = { active: false };
      expect(shutdownAfterSteps(machine, power, [], stopped)).toBe(reason);
      expect(shutdownAfterSteps(machine, power, power.steps, stopped)).toBeUndefined();
    },
  );

  it('under RerunOnFailure, a rerun held back (its network) is recorded as begun, once', () => {
    const machine = vm({ runStrategy: 'RerunOnFailure' }, { status: runningStatus() });
    const held = (recorded: number | undefined) =>
      planMachine({
        vm: machine,
        desired: undefined,
        cloudInit: undefined,
        observed: stoppedWith(machine, recorded, 'crashed'),
        now: NOW,
        holdStart: true,
      }).steps;
    expect(held(undefined)).toEqual([{ op: 'recordRestart' }]);
    // The pass after it finds the record: nothing more to write while the hold lasts.
    expect(held(1)).toEqual([]);
  });

  it('records nothing for a start that did not run when no restart asked for it', () => {
    const machine = vm({ runStrategy: 'Manual' }, { status: failedOff('destroyed') });
    const first = { steps: [{ op: 'start', kind: 'initial', after: off('unknown') }] };
    const power = { ...first, shutdown: undefined, waitMs: undefined } as Parameters<
      typeof shutdownAfterSteps
    >[1];
    expect(shutdownAfterSteps(machine, power, [], { active: false })).toBeUndefined();
  });
});
