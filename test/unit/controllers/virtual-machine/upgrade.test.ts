// A machine defined by an older operator, planned by this one (fixtures: see
// test/fixtures/xml/upgrade/README.md).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import type { MachineInputs } from '../../../../src/controllers/virtual-machine/desired.js';
import {
  deviceNames,
  passSettled,
  planMachine,
  restartPending,
  runCaughtUp,
  runRecord,
  runToRecord,
  type MachineStep,
} from '../../../../src/controllers/virtual-machine/plan.js';
import { withRunGeneration } from '../../../../src/controllers/virtual-machine/reconcile.js';
import {
  machineStatus,
  restartHoldOf,
  stepEvents,
} from '../../../../src/controllers/virtual-machine/status.js';
import {
  buildDomainXML,
  parseDomainXML,
  type DomainDocument,
} from '../../../../src/libvirt/xml/domain.js';
import { buildRunXML, RUN_NAMESPACE } from '../../../../src/ownership/metadata.js';
import {
  desired,
  noInputs,
  NOW,
  observed,
  ours,
  runningStatus,
  variant,
  vm as vmOf,
} from './machines.js';

const dir = join(import.meta.dirname, '../../../fixtures/xml/upgrade');
const fixture = (name: string) => readFileSync(join(dir, name), 'utf8');

describe('a machine whose scsi disks an older operator left on an LSI controller', () => {
  const vm = JSON.parse(fixture('6675db7-scsi9-vm.json')) as VirtualMachine;
  const live = parseDomainXML(fixture('6675db7-scsi9-live.xml'));
  const config = parseDomainXML(fixture('6675db7-scsi9-config.xml'));
  const pool = '/tmp/lvo-upg-U9GcUR/pool';
  const volume = (name: string, format: 'raw' | 'qcow2') => [
    `${name}-deef85`,
    { path: `${pool}/default_${name}-deef85`, format },
  ];
  const inputs: MachineInputs = {
    volumes: new Map([
      volume('k', 'raw'),
      volume('i', 'raw'),
      volume('cd', 'raw'),
      ...Array.from({ length: 9 }, (_, i) => volume(`s${i}`, 'qcow2')),
    ] as Array<[string, { path: string; format: 'raw' | 'qcow2' }]>),
    cloudInit: undefined,
    consoleLog: undefined,
  };
  const want = desired(vm, inputs);

  it('names those disks in RestartRequired, and nothing else', () => {
    // sdh, sdi and sdj (disks s6..s8) sit on the lsilogic card: a guest without its driver
    // does not see them. A restart puts them on the virtio-scsi controller.
    expect(restartPending(want, live, deviceNames(vm, want))).toEqual([
      'spec.disks[s6]',
      'spec.disks[s7]',
      'spec.disks[s8]',
    ]);
  });

  it('redefines the definition with every scsi disk on the virtio-scsi controller', () => {
    const domain = ours({ uuid: vm.metadata.uid!, name: 'default_run-deef85', config, live });
    const plan = planMachine({
      vm,
      desired: want,
      observed: observed(domain),
      cloudInit: undefined,
      now: NOW,
    });
    // One define and nothing else: no restart while the guest runs (updatePolicy Manual).
    expect(plan.steps.map((s) => s.op)).toEqual(['define']);
    const define = plan.steps[0];
    const units = define?.op === 'define' ? define.doc.devices.disks.map((d) => d.scsiUnit) : [];
    expect(units).toEqual([undefined, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

// An operator upgrade that changes the definition the agent renders (a new default device or
// attribute) leaves every running domain with a restart-time difference nobody's spec edit
// made: under updatePolicy Restart it is held, not applied by restarting every machine at once.
describe('a running domain whose definition an older agent rendered, under updatePolicy Restart', () => {
  type Spec = Parameters<typeof machineWith>[0];
  function machineWith(spec: { updatePolicy?: 'Manual' | 'Restart'; log?: boolean }) {
    return (generation: number, observedGeneration: number | undefined) =>
      vmOf(
        { updatePolicy: spec.updatePolicy ?? 'Restart' },
        {
          generation,
          status: runningStatus(observedGeneration === undefined ? {} : { observedGeneration }),
          ...(spec.log ? { annotations: { 'virt.dev/console-log': 'true' } } : {}),
        },
      );
  }
  const LOG = '/var/lib/lvo/console/x.log';
  /** What an older agent wrote: the same spec with another default (on_crash). */
  const older = (want: DomainDocument, startedUnder: number | undefined) =>
    variant(want, (d) => {
      d.onCrash = 'restart';
      d.devices.serials = d.devices.serials.map(({ log: _log, ...serial }) => serial);
      if (startedUnder === undefined) delete d.startedUnder;
      else d.startedUnder = startedUnder;
    });
  const RESTART = 'restart';
  const HELD = 'held';
  const rows: Array<
    [
      what: string,
      spec: Spec,
      generation: number,
      observedGeneration: number | undefined,
      startedUnder: number | undefined,
      extra: { restoredRun?: { run: number; generation: number }; deferred?: string[] },
      want: typeof RESTART | typeof HELD,
    ]
  > = [
    ['the spec unchanged since the run started: held', {}, 3, 3, 3, {}, HELD],
    ['the spec changed since the run started: restarted', {}, 4, 4, 3, {}, RESTART],
    ['changed, first pass after the edit: restarted', {}, 4, 3, 3, {}, RESTART],
    ['a run started while the spec did not resolve (0): restarted', {}, 3, 3, 0, {}, RESTART],
    [
      'no record (an older agent started it), status up to date: held',
      {},
      3,
      3,
      undefined,
      {},
      HELD,
    ],
    ['no record, the spec edited while no agent ran: restarted', {}, 4, 3, undefined, {}, RESTART],
    ['no record and no status ever written: restarted', {}, 3, undefined, undefined, {}, RESTART],
    [
      'a checkpoint a restore brought back (its older record aside): held',
      {},
      3,
      3,
      1,
      { restoredRun: { run: 7, generation: 3 } },
      HELD,
    ],
    [
      'a restored run whose spec changed since the restore: restarted',
      {},
      3,
      3,
      3,
      { restoredRun: { run: 7, generation: 2 } },
      RESTART,
    ],
    [
      'the console-log annotation asks for what the run lacks: restarted',
      { log: true },
      3,
      3,
      3,
      {},
      RESTART,
    ],
    [
      'a device change this run refused live: restarted',
      {},
      3,
      3,
      3,
      { deferred: ['spec.interfaces[eth1]'] },
      RESTART,
    ],
  ];

  it.each(rows)('%s', (_what, spec, generation, observedGeneration, startedUnder, extra, want) => {
    const machine = machineWith(spec)(generation, observedGeneration);
    const wanted = desired(machine, { ...noInputs, consoleLog: spec.log ? LOG : undefined });
    const live = older(wanted, startedUnder);
    const plan = planMachine({
      vm: machine,
      desired: wanted,
      observed: observed(ours({ config: older(wanted, undefined), live })),
      cloudInit: undefined,
      now: NOW,
      ...extra,
    });
    // The persistent definition is brought up to date either way: the next start applies it.
    expect(plan.steps[0]?.op).toBe('define');
    const restarting = plan.steps.some((s) => s.op === 'shutdown');
    expect(restarting ? RESTART : HELD).toBe(want);
    expect(plan.shutdown).toBe(restarting ? 'RestartToApplyChanges' : undefined);
  });

  it('never restarts under updatePolicy Manual, changed spec or not', () => {
    for (const generation of [3, 4]) {
      const machine = machineWith({ updatePolicy: 'Manual' })(generation, 3);
      const wanted = desired(machine);
      const plan = planMachine({
        vm: machine,
        desired: wanted,
        observed: observed(ours({ config: older(wanted, 3), live: older(wanted, 3) })),
        cloudInit: undefined,
        now: NOW,
      });
      expect(plan.steps.map((s) => s.op)).toEqual(['define']);
    }
  });

  it('says in RestartRequired why the held run is not restarted, and how it gets applied', () => {
    const machine = machineWith({})(3, 3);
    const wanted = desired(machine);
    // The run started under generation 3, its definition short of the agent's defaults.
    const runUnder = (vm: VirtualMachine) => ({
      vm,
      nodeName: 'node-a',
      now: NOW,
      observed: ours({ config: wanted, live: older(wanted, 3) }),
      problem: undefined,
      shutdown: undefined,
      started: undefined,
      pending: ['operator domain defaults'],
    });
    const runStatusUnder = (vm: VirtualMachine) => machineStatus(runUnder(vm));
    const status = runStatusUnder(machine);
    const required = status.conditions?.find((c) => c.type === 'RestartRequired');
    expect(required).toMatchObject({ status: 'True', reason: 'PendingChanges' });
    expect(required?.message).toBe(
      'pending: operator domain defaults; the running definition differs though the spec has ' +
        'not changed since generation 3, which this run (run 7) started under or took on live ' +
        "(e.g. the agent's " +
        'defaults changed), so updatePolicy Restart does not restart it for them; they apply ' +
        'at the next start, at once after a change of the spec or with ' +
        'virt.dev/restart-requested-at',
    );
    // The same judgement as data, for the Event (the message is not parsed back).
    expect(restartHoldOf(runUnder(machine))).toEqual({
      by: 'unchangedSpec',
      run: { run: 7, generation: 3 },
    });
    // The Updated Event of the definition saved for it says it waits too.
    const events = stepEvents(
      [{ op: 'define', doc: wanted, created: false }],
      machine,
      'node-a',
      0,
      ['operator domain defaults'],
      restartHoldOf(runUnder(machine))?.by,
    );
    expect(events.map((e) => e.message)).toEqual([
      'saved the new definition of domain prod_web; it applies at the next start: the run is ' +
        'not restarted for it, as the spec has not changed since the generation it reflects ' +
        '(pending: operator domain defaults; updatePolicy Restart, see RestartRequired)',
    ]);
    // The same run after a spec change: restarted, and the condition says so.
    const restarted = runStatusUnder(machineWith({})(4, 3));
    expect(restarted.conditions?.find((c) => c.type === 'RestartRequired')?.message).toBe(
      'pending: operator domain defaults; the operator restarts the machine gracefully to ' +
        'apply them (updatePolicy Restart)',
    );
    expect(restartHoldOf(runUnder(machineWith({})(4, 3)))).toBeUndefined();
    // Nor under updatePolicy Manual, whose message names no hold.
    expect(restartHoldOf(runUnder(machineWith({ updatePolicy: 'Manual' })(3, 3)))).toBeUndefined();
  });

  it('writes the generation a run without a record is judged against into it, once', () => {
    const machine = machineWith({})(3, 3);
    const wanted = desired(machine);
    const none = { steps: [], shutdown: undefined, waitMs: undefined };
    const running = (startedUnder: number | undefined) =>
      ours({ config: wanted, live: older(wanted, startedUnder) });
    // An older agent's run: the generation the status observed.
    expect(runToRecord(machine, running(undefined), none)).toEqual({
      op: 'recordRun',
      generation: 3,
    });
    // Edited while no agent ran: the older generation, so the edit still restarts it.
    expect(runToRecord(machineWith({})(4, 3), running(undefined), none)).toEqual({
      op: 'recordRun',
      generation: 3,
    });
    // No status ever written: unknown (0), restarted for whatever is pending.
    expect(runToRecord(machineWith({})(3, undefined), running(undefined), none)).toEqual({
      op: 'recordRun',
      generation: 0,
    });
    // A checkpoint a restore brought back: the generation it was brought back under, in place
    // of the snapshot's older record (or none), once.
    const restoredRun = { run: 7, generation: 3 };
    for (const snapshots of [undefined, 1])
      expect(runToRecord(machine, running(snapshots), none, { restoredRun })).toEqual({
        op: 'recordRun',
        generation: 3,
      });
    expect(runToRecord(machine, running(3), none, { restoredRun })).toBeUndefined();
    // Not again; not a run this pass stops, a stopped domain, nor on a driver that refused
    // domain metadata.
    expect(runToRecord(machine, running(3), none)).toBeUndefined();
    expect(runToRecord(machine, running(1), none)).toBeUndefined();
    const stopping = {
      steps: [{ op: 'shutdown', reason: 'RestartToApplyChanges' } as const],
      shutdown: 'RestartToApplyChanges' as const,
      waitMs: 2000,
    };
    expect(runToRecord(machine, running(undefined), stopping)).toBeUndefined();
    expect(runToRecord(machine, ours({ config: wanted, active: false }), none)).toBeUndefined();
    expect(runToRecord(machine, running(undefined), none, { unrecordable: true })).toBeUndefined();
  });

  it('moves a run edited live on to the generation it reflects, once nothing is pending', () => {
    const machine = machineWith({})(4, 4);
    const wanted = desired(machine);
    const running = (startedUnder: number | undefined) =>
      ours({ config: wanted, live: older(wanted, startedUnder) });
    const quiet = { resolved: true, pending: [], settled: true };
    // Into the persistent definition too: a `virsh start` from it inherits 4, not 3.
    const caughtUp = { op: 'recordRun', generation: 4, persistent: true };
    expect(runCaughtUp(machine, running(3), quiet)).toEqual(caughtUp);
    expect(runCaughtUp(machine, running(0), quiet)).toEqual(caughtUp);
    // Once; a run still pending keeps its record (the next spec change restarts it), and so
    // does a pass whose steps did not all take effect or whose spec did not resolve.
    expect(runCaughtUp(machine, running(4), quiet)).toBeUndefined();
    expect(runCaughtUp(machine, running(3), { ...quiet, pending: ['spec.cpu'] })).toBeUndefined();
    expect(runCaughtUp(machine, running(3), { ...quiet, settled: false })).toBeUndefined();
    expect(runCaughtUp(machine, running(3), { ...quiet, resolved: false })).toBeUndefined();
    // A checkpoint a restore brought back under 3 that took 4 on live: 4, as any run (kept at
    // 3, an upgrade's new default restarted it, the spec being newer than that); its record
    // current, nothing.
    const restoredRun = { run: 7, generation: 3 };
    expect(runCaughtUp(machine, running(3), { ...quiet, restoredRun })).toEqual(caughtUp);
    const current = { ...quiet, restoredRun: { run: 7, generation: 4 } };
    expect(runCaughtUp(machine, running(4), current)).toBeUndefined();
    // Left to runToRecord: a run without a record; and not on a driver that refused domain
    // metadata, nor for a stopped domain.
    expect(runCaughtUp(machine, running(undefined), quiet)).toBeUndefined();
    expect(runCaughtUp(machine, running(3), { ...quiet, unrecordable: true })).toBeUndefined();
    expect(runCaughtUp(machine, ours({ config: wanted, active: false }), quiet)).toBeUndefined();
    // What it is for: with its record moved on, an upgrade's new default holds the run.
    const plan = planMachine({
      vm: machine,
      desired: wanted,
      observed: observed(ours({ config: older(wanted, undefined), live: older(wanted, 4) })),
      cloudInit: undefined,
      now: NOW,
    });
    expect(plan.steps.some((s) => s.op === 'shutdown')).toBe(false);
  });

  it('writes one record a pass: the generation the run reflects wins over a missing one', () => {
    const none = { steps: [], shutdown: undefined, waitMs: undefined };
    const quiet = { resolved: true, pending: [], settled: true };
    const record = (generation: number, persistent?: true) => ({
      op: 'recordRun',
      generation,
      ...(persistent ? { persistent } : {}),
    });
    const rows: Array<
      [
        what: string,
        generation: number,
        observedGeneration: number,
        startedUnder: number | undefined,
        pass: Parameters<typeof runRecord>[4],
        want: ReturnType<typeof record> | undefined,
      ]
    > = [
      // The first pass after an upgrade whose status lags an edit the run takes live: the
      // spec's generation, in both definitions, and not the status's older one before it.
      ['no record, the status lagging, caught up', 4, 3, undefined, quiet, record(4, true)],
      ['no record, status up to date', 4, 4, undefined, quiet, record(4)],
      [
        'no record, something still pending: the older one',
        4,
        3,
        undefined,
        { ...quiet, pending: ['spec.cpu'] },
        record(3),
      ],
      [
        'no record, the pass not settled: the older one',
        4,
        3,
        undefined,
        { ...quiet, settled: false },
        record(3),
      ],
      ['a record, caught up', 4, 4, 3, quiet, record(4, true)],
      ['a record, not caught up', 4, 4, 3, { ...quiet, pending: ['spec.cpu'] }, undefined],
      ['the record current', 4, 4, 4, quiet, undefined],
      [
        'no record, a driver without metadata',
        4,
        3,
        undefined,
        { ...quiet, unrecordable: true },
        undefined,
      ],
      [
        'a restored run: its restore generation',
        4,
        4,
        1,
        { ...quiet, restoredRun: { run: 7, generation: 4 } },
        record(4),
      ],
      [
        'a restored run that took a later edit on live: the spec generation, in both',
        5,
        5,
        4,
        { ...quiet, restoredRun: { run: 7, generation: 4 } },
        record(5, true),
      ],
      [
        // Edited while the restore ran: the snapshot's record goes in the same one write.
        'a restored run with the snapshot record, caught up with a later edit',
        5,
        5,
        1,
        { ...quiet, restoredRun: { run: 7, generation: 4 } },
        record(5, true),
      ],
    ];
    for (const [what, generation, observedGeneration, startedUnder, pass, want] of rows) {
      const machine = machineWith({})(generation, observedGeneration);
      const wanted = desired(machine);
      const running = ours({ config: wanted, live: older(wanted, startedUnder) });
      expect([what, runRecord(machine, running, none, running, pass)]).toEqual([what, want]);
    }
    // Only into the run the pass began with.
    const machine = machineWith({})(4, 3);
    const wanted = desired(machine);
    const first = ours({ config: wanted, live: older(wanted, undefined) });
    const stopped = ours({ config: wanted, active: false });
    expect(runRecord(machine, first, none, stopped, quiet)).toBeUndefined();
    const another = ours({ id: 8, config: wanted, live: older(wanted, undefined) });
    expect(runRecord(machine, first, none, another, quiet)).toBeUndefined();
  });

  // What "settled" means for runCaughtUp: the pass left the run as its steps meant to.
  const device = { kind: 'disk', field: 'spec.disks[data]' } as const;
  const attach = { op: 'attachDevice', device, live: true, config: true } as unknown as MachineStep;
  const quietPass = { executed: [], deferred: [], detachErrors: [], failure: undefined };
  const settledRows: Array<[what: string, pass: Parameters<typeof passSettled>[0], want: boolean]> =
    [
      ['nothing to do', { outcome: quietPass, shutdown: undefined, detaching: false }, true],
      [
        'live changes that took effect',
        {
          outcome: {
            ...quietPass,
            executed: [{ op: 'setMemory', kib: 1, live: true, config: true }],
          },
          shutdown: undefined,
          detaching: false,
        },
        true,
      ],
      [
        'a step failed',
        {
          outcome: {
            ...quietPass,
            failure: { step: attach, reason: 'AttachFailed', message: 'x' },
          },
          shutdown: undefined,
          detaching: false,
        },
        false,
      ],
      [
        'a device change deferred to a restart',
        { outcome: { ...quietPass, deferred: [attach] }, shutdown: undefined, detaching: false },
        false,
      ],
      [
        'a detach refused',
        {
          outcome: { ...quietPass, detachErrors: ['busy'] },
          shutdown: undefined,
          detaching: false,
        },
        false,
      ],
      [
        'a device still detaching',
        { outcome: quietPass, shutdown: undefined, detaching: true },
        false,
      ],
      [
        'a stop under way',
        { outcome: quietPass, shutdown: 'RestartToApplyChanges', detaching: false },
        false,
      ],
      ...(['start', 'shutdown', 'destroy'] as const).map(
        (op): [string, Parameters<typeof passSettled>[0], boolean] => [
          `a ${op} made`,
          {
            outcome: { ...quietPass, executed: [{ op } as unknown as MachineStep] },
            shutdown: undefined,
            detaching: false,
          },
          false,
        ],
      ),
    ];
  it.each(settledRows)('counts a pass as settled for the record: %s', (_what, pass, want) => {
    expect(passSettled(pass)).toBe(want);
  });

  it('records the generation a start runs under and a define holds, 0 when unresolved', () => {
    const steps: MachineStep[] = [
      { op: 'define', doc: desired(machineWith({})(3, 3)), created: true },
      { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } },
      { op: 'suspend' },
    ];
    expect(withRunGeneration(steps, 5)[1]).toMatchObject({ op: 'start', generation: 5 });
    expect(withRunGeneration(steps, 0)[1]).toMatchObject({ op: 'start', generation: 0 });
    expect(withRunGeneration(steps, 5)[0]).toMatchObject({ op: 'define', generation: 5 });
    expect(withRunGeneration(steps, 5)[2]).toBe(steps[2]);
  });

  it('reads the recorded generation back from the running definition', () => {
    const xml = buildDomainXML(desired(machineWith({})(3, 3))).replace(
      '</metadata>',
      `<lvorun:run xmlns:lvorun="${RUN_NAMESPACE}" generation="5"/></metadata>`,
    );
    expect(parseDomainXML(xml).startedUnder).toBe(5);
    expect(parseDomainXML(buildDomainXML(desired(machineWith({})(3, 3)))).startedUnder).toBe(
      undefined,
    );
    expect(buildRunXML(5).trim()).toBe('<run generation="5"/>');
  });
});
