// What a machine's status tells a user and a GitOps tool, over the combinations of runStrategy,
// virt.dev/paused and the domain's power state that a pass leaves standing: each row is read
// as Ready (status, reason), the kstatus reading the conditions give (Stalled: Failed,
// Reconciling: InProgress, Ready: Current) and the verdict of the shipped Argo CD script (run by
// lua5.4). Healthy where something needs a user, or waiting where nothing will come, is the
// fault this table is here to catch. Pure: machineStatus on observations as observe.ts makes
// them; the host tiers are test/integration/controllers/virtual-machine/day2.test.ts and
// test/integration/agent/health.test.ts.
import { describe, expect, it } from 'vitest';
import type { VirtualMachineStatus } from '../../../../src/api/generated/types.js';
import type { ShutdownReason } from '../../../../src/controllers/virtual-machine/plan.js';
import { machineStatus } from '../../../../src/controllers/virtual-machine/status.js';
import { argoHealth } from '../../../harness/health-tools.js';
import { desired, NOW, ours, runningStatus, vm } from './machines.js';

type Strategy = 'Always' | 'Manual' | 'Halted' | 'RerunOnFailure';

interface Row {
  strategy: Strategy;
  /** virt.dev/paused, if set. */
  paused?: string;
  /** libvirt's state/reason now. */
  power: string;
  /**
   * The status the previous pass left: a run it saw up (default), none yet, or the domain shut
   * off after a crash or a failed start (libvirt forgets that reason when libvirtd restarts).
   */
  before?: 'running' | 'new' | 'crashed' | 'failed';
  /** The stop the operator is making (plan.ts), if any. */
  shutdown?: ShutdownReason;
}

/** Ready's status and reason, kstatus, Argo CD. */
type Reading = [ready: string, kstatus: string, argo: string];

const ROWS: Array<[string, Row, Reading]> = [
  // ---- Always ----
  [
    'running',
    { strategy: 'Always', power: 'running/booted' },
    ['True/Running', 'Current', 'Healthy'],
  ],
  [
    'paused as asked',
    { strategy: 'Always', paused: 'true', power: 'paused/user' },
    ['True/PausedByRequest', 'Current', 'Suspended'],
  ],
  [
    'paused for a snapshot (ends by itself)',
    { strategy: 'Always', power: 'paused/snapshot' },
    ['False/Paused', 'InProgress', 'Progressing'],
  ],
  [
    'starting up',
    { strategy: 'Always', power: 'paused/starting_up' },
    ['False/Paused', 'InProgress', 'Progressing'],
  ],
  [
    'paused on a disk error',
    { strategy: 'Always', power: 'paused/ioerror' },
    ['False/PausedByError', 'Failed', 'Degraded'],
  ],
  [
    'paused on a disk error, "true"',
    { strategy: 'Always', paused: 'true', power: 'paused/ioerror' },
    ['False/PausedByError', 'Failed', 'Degraded'],
  ],
  [
    'paused on a watchdog, invalid value',
    { strategy: 'Always', paused: 'yes', power: 'paused/watchdog' },
    ['False/PausedByError', 'Failed', 'Degraded'],
  ],
  [
    'left paused by an invalid value',
    { strategy: 'Always', paused: 'yes', power: 'paused/user' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'running, invalid value',
    { strategy: 'Always', paused: 'True', power: 'running/booted' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'starting up, invalid value',
    { strategy: 'Always', paused: 'yes', power: 'paused/starting_up' },
    ['False/Paused', 'InProgress', 'Progressing'],
  ],
  [
    'suspended to RAM by the guest',
    { strategy: 'Always', power: 'pmsuspended/unknown' },
    ['False/GuestSuspended', 'InProgress', 'Progressing'],
  ],
  [
    'suspended to RAM by the guest, "true" (it does not run, as asked)',
    { strategy: 'Always', paused: 'true', power: 'pmsuspended/unknown' },
    ['True/PausedByRequest', 'Current', 'Suspended'],
  ],
  [
    'the guest shutting down (started again after)',
    { strategy: 'Always', power: 'shutdown/user' },
    ['False/NotRunning', 'InProgress', 'Progressing'],
  ],
  [
    'crashed (destroyed and started again)',
    { strategy: 'Always', power: 'crashed/panicked' },
    ['False/Crashed', 'InProgress', 'Progressing'],
  ],
  [
    'shut off after a crash (started again)',
    { strategy: 'Always', power: 'shutoff/crashed' },
    ['False/NotRunning', 'InProgress', 'Progressing'],
  ],
  [
    'restarting on request',
    { strategy: 'Always', power: 'running/booted', shutdown: 'RestartRequested' },
    ['False/Restarting', 'InProgress', 'Progressing'],
  ],
  // ---- RerunOnFailure ----
  [
    'the guest shut itself down',
    { strategy: 'RerunOnFailure', power: 'shutoff/shutdown' },
    ['True/GuestShutdown', 'Current', 'Healthy'],
  ],
  [
    'the guest shut itself down, invalid value',
    { strategy: 'RerunOnFailure', paused: 'yes', power: 'shutoff/shutdown' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'shut off after a crash (started again)',
    { strategy: 'RerunOnFailure', power: 'shutoff/crashed' },
    ['False/NotRunning', 'InProgress', 'Progressing'],
  ],
  [
    'suspended to RAM by the guest, "true"',
    { strategy: 'RerunOnFailure', paused: 'true', power: 'pmsuspended/unknown' },
    ['True/PausedByRequest', 'Current', 'Suspended'],
  ],
  [
    'paused on a disk error, "true"',
    { strategy: 'RerunOnFailure', paused: 'true', power: 'paused/ioerror' },
    ['False/PausedByError', 'Failed', 'Degraded'],
  ],
  // ---- Manual ----
  [
    'running',
    { strategy: 'Manual', power: 'running/booted' },
    ['True/ManualPower', 'Current', 'Healthy'],
  ],
  [
    'paused by the user (virsh suspend)',
    { strategy: 'Manual', power: 'paused/user' },
    ['True/ManualPower', 'Current', 'Suspended'],
  ],
  [
    'paused as asked',
    { strategy: 'Manual', paused: 'true', power: 'paused/user' },
    ['True/ManualPower', 'Current', 'Suspended'],
  ],
  [
    'paused on a disk error',
    { strategy: 'Manual', power: 'paused/ioerror' },
    ['False/PausedByError', 'Failed', 'Degraded'],
  ],
  [
    'left paused by an invalid value',
    { strategy: 'Manual', paused: 'yes', power: 'paused/user' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'running, invalid value',
    { strategy: 'Manual', paused: 'yes', power: 'running/booted' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'shut down by the guest or the user',
    { strategy: 'Manual', power: 'shutoff/shutdown' },
    ['True/ManualPower', 'Current', 'Healthy'],
  ],
  [
    'destroyed by the user',
    { strategy: 'Manual', power: 'shutoff/destroyed' },
    ['True/ManualPower', 'Current', 'Healthy'],
  ],
  [
    'shut off after a crash (QEMU killed, a guest panic): nothing starts it',
    { strategy: 'Manual', power: 'shutoff/crashed' },
    ['False/StoppedByCrash', 'Failed', 'Degraded'],
  ],
  [
    'shut off after a crash, libvirtd restarted since',
    { strategy: 'Manual', power: 'shutoff/unknown', before: 'crashed' },
    ['False/StoppedByCrash', 'Failed', 'Degraded'],
  ],
  [
    'shut off after a crash, invalid value',
    { strategy: 'Manual', paused: 'yes', power: 'shutoff/crashed' },
    ['False/StoppedByCrash', 'Failed', 'Degraded'],
  ],
  [
    'shut off by libvirtd, which could not reconnect to its QEMU: nothing starts it',
    { strategy: 'Manual', power: 'shutoff/daemon' },
    ['False/StoppedByCrash', 'Failed', 'Degraded'],
  ],
  [
    'shut off by a start that failed (virsh start; QEMU exited): nothing starts it',
    { strategy: 'Manual', power: 'shutoff/failed' },
    ['False/StoppedByFailedStart', 'Failed', 'Degraded'],
  ],
  [
    'shut off by a start that failed, libvirtd restarted since',
    { strategy: 'Manual', power: 'shutoff/unknown', before: 'failed' },
    ['False/StoppedByFailedStart', 'Failed', 'Degraded'],
  ],
  [
    'shut off by a start that failed, invalid value',
    { strategy: 'Manual', paused: 'yes', power: 'shutoff/failed' },
    ['False/StoppedByFailedStart', 'Failed', 'Degraded'],
  ],
  [
    'shut off for no reason libvirt knows (a host reboot while it ran): the user restarts it',
    { strategy: 'Manual', power: 'shutoff/unknown' },
    ['True/ManualPower', 'Current', 'Healthy'],
  ],
  [
    'not started yet (started once)',
    { strategy: 'Manual', power: 'shutoff/unknown', before: 'new' },
    ['False/NotRunning', 'InProgress', 'Progressing'],
  ],
  // ---- Halted ----
  [
    'shut off',
    { strategy: 'Halted', power: 'shutoff/shutdown' },
    ['True/Halted', 'Current', 'Healthy'],
  ],
  [
    'shut off, "true" (paused once it runs)',
    { strategy: 'Halted', paused: 'true', power: 'shutoff/shutdown' },
    ['True/Halted', 'Current', 'Healthy'],
  ],
  [
    'shut off, invalid value',
    { strategy: 'Halted', paused: 'yes', power: 'shutoff/destroyed' },
    ['False/InvalidAnnotation', 'Failed', 'Degraded'],
  ],
  [
    'being stopped',
    { strategy: 'Halted', power: 'running/booted', shutdown: 'RunStrategyHalted' },
    ['False/Stopping', 'InProgress', 'Progressing'],
  ],
];

function statusOf(row: Row): VirtualMachineStatus {
  const [state = '', reason = ''] = row.power.split('/');
  const active = state !== 'shutoff';
  const before =
    row.before === 'new'
      ? undefined
      : row.before === 'crashed' || row.before === 'failed'
        ? runningStatus({ phase: 'Stopped', state: { state: 'shutoff', reason: row.before } })
        : runningStatus();
  const machine = vm(
    { runStrategy: row.strategy },
    {
      ...(before ? { status: before } : {}),
      ...(row.paused === undefined ? {} : { annotations: { 'virt.dev/paused': row.paused } }),
    },
  );
  return machineStatus({
    vm: machine,
    nodeName: 'node-a',
    now: NOW,
    observed: ours({ config: desired(machine), active, power: { state, reason } }),
    problem: undefined,
    shutdown: row.shutdown,
    started: undefined,
    pending: [],
  });
}

/** What kstatus concludes from the conditions (its order: Stalled, Reconciling, Ready). */
function kstatusOf(status: VirtualMachineStatus): string {
  const is = (type: string) =>
    status.conditions?.some((c) => c.type === type && c.status === 'True');
  if (is('Stalled')) return 'Failed';
  if (is('Reconciling')) return 'InProgress';
  return is('Ready') ? 'Current' : 'InProgress';
}

describe('what a machine reads as, by runStrategy, virt.dev/paused and power state', () => {
  it.each(ROWS)('%s: %o', (_name, row, [ready, ks, argo]) => {
    const status = statusOf(row);
    const readyCondition = status.conditions?.find((c) => c.type === 'Ready');
    expect(`${readyCondition?.status}/${readyCondition?.reason}`).toBe(ready);
    expect(kstatusOf(status)).toBe(ks);
    const machine = vm({ runStrategy: row.strategy });
    expect(argoHealth({ kind: 'VirtualMachine', metadata: machine.metadata, status }).status).toBe(
      argo,
    );
    // A reading that needs a user names what: the annotation and its value, or the cause.
    if (readyCondition?.reason === 'InvalidAnnotation') {
      expect(readyCondition.message).toContain(`virt.dev/paused is "${row.paused}"`);
    }
  });
});
