import { describe, expect, it } from 'vitest';
import type {
  VirtualMachine,
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../../../src/api/generated/types.js';
import {
  cleanupDescription,
  desiredSnapshot,
  libvirtSnapshotName,
  parseRecord,
  recordDescription,
} from '../../../../src/controllers/virtual-machine-snapshot/desired.js';
import { virtualMachineSnapshot } from '../../../../src/controllers/virtual-machine-snapshot/index.js';
import { kindResyncMs } from '../../../../src/controllers/module.js';
import {
  firstStartWait,
  isOwnSnapshot,
  liveDeleteBlocker,
  planSnapshot,
  revertingRestores,
  WAITING_FOR_FIRST_START,
} from '../../../../src/controllers/virtual-machine-snapshot/plan.js';
import {
  deletionStatus,
  saysDeletion,
  snapshotStatus,
} from '../../../../src/controllers/virtual-machine-snapshot/status.js';
import {
  isMarkerOf,
  refusalIn,
  restoreMarkerXML,
} from '../../../../src/controllers/virtual-machine-restore/desired.js';
import {
  DISKS_NAMED,
  mayActOnDomain,
  needsPowerOff,
  planRestore,
  restoredDisksWording,
  revertFailedDisksWording,
  restoredWording,
  revertPaused,
  revertedFacts,
  snapshotFacts,
  snapshotOfRevert,
} from '../../../../src/controllers/virtual-machine-restore/plan.js';
import { restoreStatus } from '../../../../src/controllers/virtual-machine-restore/status.js';
import type { SnapshotDiskView } from '../../../../src/libvirt/xml/snapshot.js';
import { REASON_CLASSES } from '../../../../src/api/conditions.js';

const now = new Date('2026-12-03T12:00:00Z');
const snap = (over: Partial<VirtualMachineSnapshot> = {}): VirtualMachineSnapshot => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachineSnapshot',
  metadata: {
    name: 'before-upgrade',
    namespace: 'ns',
    uid: '0123abcd-0000-4000-8000-000000000000',
    generation: 1,
  },
  spec: { vmName: 'web', includeMemory: true },
  ...over,
});
const qcow2: SnapshotDiskView = { name: 'vda', device: 'disk', format: 'qcow2', readonly: false };
const cdrom: SnapshotDiskView = { name: 'sda', device: 'cdrom', format: 'raw', readonly: true };

describe('desiredSnapshot', () => {
  it.each([
    ['running, includeMemory', true, true, 'internal', true, false],
    ['running, disks only', true, false, 'internal', false, true],
    ['stopped', false, true, 'no', false, false],
  ] as const)('%s', (_, active, includeMemory, memory, includesMemory, freeze) => {
    const d = desiredSnapshot(snap({ spec: { vmName: 'web', includeMemory } }), {
      active,
      disks: [qcow2, cdrom],
    });
    expect(d).toEqual({
      kind: 'take',
      doc: {
        name: 'before-upgrade-0123abcd',
        memory,
        disks: [
          { name: 'vda', snapshot: 'internal' },
          { name: 'sda', snapshot: 'no' },
        ],
      },
      includesMemory,
      freeze,
    });
  });

  it('refuses writable disks that are not qcow2, naming them', () => {
    const d = desiredSnapshot(snap(), {
      active: true,
      disks: [qcow2, { name: 'vdb', device: 'disk', format: 'raw', readonly: false }],
    });
    expect(d).toEqual({ kind: 'unsupported', message: expect.stringContaining('vdb (raw)') });
    // With the Volume the disk is, as the spec names it.
    const named = desiredSnapshot(
      snap(),
      { active: true, disks: [{ name: 'vdb', device: 'disk', format: 'raw', readonly: false }] },
      new Map([['vdb', 'scratch']]),
    );
    expect(named).toEqual({
      kind: 'unsupported',
      message: 'only qcow2 disks can be snapshotted; vdb (raw, Volume scratch) cannot',
    });
  });

  // Measured on libvirt 9.0 / QEMU 7.2: a checkpoint taken after `setvcpus --live` cannot be
  // loaded ("Unknown savevm section or instance 'cpu_common' 1"), and the failed revert leaves
  // the domain shut off. Internal snapshots of a running machine always hold its memory.
  it('refuses a running machine with vCPUs added live, for a memory or a disks-only snapshot', () => {
    for (const includeMemory of [true, false]) {
      const d = desiredSnapshot(snap({ spec: { vmName: 'web', includeMemory } }), {
        active: true,
        disks: [qcow2],
        addedVcpus: 1,
      });
      expect(d).toEqual({
        kind: 'unsupported',
        message: expect.stringMatching(/1 vCPU added while it runs.*restart the machine/),
      });
    }
    // Stopped, or with the vCPUs it booted with: taken.
    expect(desiredSnapshot(snap(), { active: false, disks: [qcow2], addedVcpus: 0 }).kind).toBe(
      'take',
    );
    expect(desiredSnapshot(snap(), { active: true, disks: [qcow2], addedVcpus: 0 }).kind).toBe(
      'take',
    );
  });

  // Measured on libvirt 9.0: "internal snapshots of a VM with pflash based firmware are not
  // supported" for a running UEFI machine; shut off, its disks-only snapshot is taken.
  it('refuses a running machine on UEFI (pflash) firmware, not a stopped one', () => {
    for (const includeMemory of [true, false]) {
      const d = desiredSnapshot(snap({ spec: { vmName: 'web', includeMemory } }), {
        active: true,
        disks: [qcow2],
        pflash: true,
      });
      expect(d).toEqual({
        kind: 'unsupported',
        message: expect.stringMatching(/UEFI firmware.*runStrategy: Halted/),
      });
    }
    expect(desiredSnapshot(snap(), { active: false, disks: [qcow2], pflash: true }).kind).toBe(
      'take',
    );
  });

  it('refuses a machine without a writable qcow2 disk, saying how to give it one', () => {
    const decision = desiredSnapshot(snap(), { active: false, disks: [cdrom] });
    expect(decision.kind).toBe('unsupported');
    // The demo boots from kernel and initrd alone: the message is all a user has to go on.
    expect(decision.kind === 'unsupported' && decision.message).toMatch(
      /no writable qcow2 disk.*add a Volume of format qcow2 to spec\.disks.*create the snapshot again/,
    );
  });
});

describe('the record in the description', () => {
  it('round-trips, and is absent from foreign descriptions', () => {
    const s = snap();
    const text = recordDescription(s, { uid: 'u-1', includeMemory: false, quiesced: true });
    expect(parseRecord(text)).toEqual({ uid: 'u-1', includeMemory: false, quiesced: true });
    expect(parseRecord('made by hand')).toBeUndefined();
    expect(parseRecord(undefined)).toBeUndefined();
    expect(libvirtSnapshotName(s)).toBe('before-upgrade-0123abcd');
  });

  it('keeps the libvirt name short enough for libvirt to save its record (<name>.xml.new)', () => {
    const long = snap({ metadata: { ...snap().metadata, name: 'a'.repeat(253) } });
    const name = libvirtSnapshotName(long);
    expect(`${name}.xml.new`.length).toBeLessThanOrEqual(255);
    expect(name).toBe(`${'a'.repeat(238)}-0123abcd`);
  });
});

describe('planSnapshot', () => {
  const found = (uid: string) => ({
    snapshot: {} as never,
    doc: {
      name: 'before-upgrade-0123abcd',
      description: recordDescription(snap(), { uid, includeMemory: true }),
      disks: [],
    },
  });
  const take = desiredSnapshot(snap(), { active: true, disks: [qcow2] });
  type PlanInput = Parameters<typeof planSnapshot>[0];
  const plan = (over: Partial<PlanInput> & Pick<PlanInput, 'snap'>) =>
    planSnapshot({
      domainFound: true,
      found: undefined,
      decision: take,
      cutShort: false,
      ...over,
    });

  it('records ours, refuses a foreign one with our name', () => {
    const s = snap();
    expect(plan({ snap: s, found: found(s.metadata.uid!) }).op).toBe('record');
    expect(plan({ snap: s, found: found('other') })).toMatchObject({
      op: 'fail',
      reason: 'NameConflict',
    });
  });

  it('takes it once; a Ready one that vanished fails; a Failed one stays', () => {
    expect(plan({ snap: snap() }).op).toBe('take');
    const ready = snap({ status: { phase: 'Ready', snapshotName: 'x' } });
    expect(plan({ snap: ready })).toMatchObject({
      op: 'fail',
      reason: 'SnapshotMissing',
    });
    const failed = snap({ status: { phase: 'Failed' } });
    expect(plan({ snap: failed }).op).toBe('none');
    expect(plan({ snap: snap(), domainFound: false, decision: undefined }).op).toBe('wait');
  });
});

describe('firstStartWait: a machine that has not run yet, whose runStrategy starts it', () => {
  type Strategy = NonNullable<VirtualMachine['spec']['runStrategy']>;
  type Phase = NonNullable<NonNullable<VirtualMachine['status']>['phase']>;
  const vm = (
    runStrategy: Strategy,
    status?: { phase?: Phase; startedAt?: string; observedGeneration?: number },
  ): VirtualMachine => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'web', namespace: 'ns', uid: 'vm-uid', generation: 2 },
    spec: {
      nodeName: 'n',
      domainType: 'qemu',
      firmware: 'bios',
      terminationGracePeriodSeconds: 30,
      updatePolicy: 'Manual',
      vcpus: 1,
      memory: '128Mi',
      disks: [],
      runStrategy,
    },
    ...(status ? { status } : {}),
  });
  const ran = '2026-12-03T11:00:00Z';
  const off = { active: false };

  it.each([
    // Defined, not started yet (the define and the first create are apart): wait.
    ['no status yet, Always', vm('Always'), off, true],
    ['Pending, Always', vm('Always', { phase: 'Pending', observedGeneration: 2 }), off, true],
    [
      'Starting (a start failed, retried)',
      vm('Always', { phase: 'Starting', observedGeneration: 2 }),
      off,
      true,
    ],
    [
      'RerunOnFailure, never run',
      vm('RerunOnFailure', { phase: 'Pending', observedGeneration: 2 }),
      off,
      true,
    ],
    [
      'Manual, its one first start to come',
      vm('Manual', { phase: 'Starting', observedGeneration: 2 }),
      off,
      true,
    ],
    // A status of an older generation judged another spec (one since fixed): wait for this one.
    [
      'Failed for generation 1, spec now 2',
      vm('Always', { phase: 'Failed', observedGeneration: 1 }),
      off,
      true,
    ],
    [
      'Stopped for generation 1 (Halted then), Always now',
      vm('Always', { phase: 'Stopped', observedGeneration: 1 }),
      off,
      true,
    ],
    // Running (or paused): taken as it is, a checkpoint.
    ['running, never seen running by the status yet', vm('Always'), { active: true }, false],
    // Meant to stay off: disks only, at once.
    ['Halted', vm('Halted'), off, false],
    ['Halted, Stopped', vm('Halted', { phase: 'Stopped', observedGeneration: 2 }), off, false],
    // Has run: Manual leaves it to the user, the others' restarts are not a first start.
    [
      'Manual, stopped by the user after its first run',
      vm('Manual', { phase: 'Stopped', startedAt: ran, observedGeneration: 2 }),
      off,
      false,
    ],
    [
      'Always, shut off after a run',
      vm('Always', { phase: 'Starting', startedAt: ran, observedGeneration: 2 }),
      off,
      false,
    ],
    [
      'RerunOnFailure, guest shut itself down',
      vm('RerunOnFailure', { phase: 'Stopped', startedAt: ran, observedGeneration: 2 }),
      off,
      false,
    ],
    // Not on its way up until a user acts: never waits for good.
    [
      'start refused for its definition (Failed)',
      vm('Always', { phase: 'Failed', observedGeneration: 2 }),
      off,
      false,
    ],
    [
      'Manual, start refused (Failed)',
      vm('Manual', { phase: 'Failed', observedGeneration: 2 }),
      off,
      false,
    ],
    [
      'start held back (Stopped, VolumeHasOverlays)',
      vm('RerunOnFailure', { phase: 'Stopped', observedGeneration: 2 }),
      off,
      false,
    ],
    // Its running snapshot is refused (UEFI, pflash): disks only now, not Unsupported later.
    ['on pflash firmware', vm('Always'), { active: false, pflash: true }, false],
    // libvirt picks the pflash loader of firmware='efi' only at the start: the spec tells.
    [
      'firmware uefi, no loader in the shut-off definition yet',
      { ...vm('Always'), spec: { ...vm('Always').spec, firmware: 'uefi' } },
      off,
      false,
    ],
  ] as const)('%s: waits %s', (_, machineVm, machine, waits) => {
    const wait = firstStartWait(machineVm, machine, snap());
    expect(wait !== undefined).toBe(waits);
    if (wait) expect(wait.reason).toBe(WAITING_FOR_FIRST_START);
  });

  it('does not wait for a snapshot of the disks alone (includeMemory false)', () => {
    expect(firstStartWait(vm('Always'), off, snap())).toBeDefined();
    expect(
      firstStartWait(vm('Always'), off, snap({ spec: { vmName: 'web', includeMemory: false } })),
    ).toBe(undefined);
  });

  it('says it waits for the first start, what then, and how it ends otherwise', () => {
    expect(firstStartWait(vm('RerunOnFailure'), off, snap())).toEqual({
      reason: 'WaitingForFirstStart',
      message:
        'VirtualMachine web has not run yet and runStrategy RerunOnFailure starts it: the ' +
        'snapshot waits for that first start, to be taken of the running machine (of its disks ' +
        'alone if the start is refused or runStrategy becomes Halted)',
    });
    // Pending and Reconciling (kstatus InProgress), not Stalled: the start comes by itself.
    expect(REASON_CLASSES[WAITING_FOR_FIRST_START]).toBe('transient');
  });

  it('says that the start fails and is retried, naming where to look, without its changing message', () => {
    const failing = (generation: number, reason: string): VirtualMachine => ({
      ...vm('Always', { phase: 'Starting', observedGeneration: generation }),
      status: {
        phase: 'Starting',
        observedGeneration: generation,
        conditions: [
          {
            type: 'Ready',
            status: 'False',
            reason,
            message: 'domain start failed (try 7): QEMU exited while starting',
            lastTransitionTime: ran,
          },
        ],
      },
    });
    const said =
      "; its start has failed so far and is retried (the machine's Ready condition, reason " +
      'StartFailed, says why)';
    const wait = firstStartWait(failing(2, 'StartFailed'), off, snap());
    expect(wait?.message.endsWith(`Halted)${said}`)).toBe(true);
    expect(wait?.message).not.toContain('try 7');
    // Not for another reason, nor from a status that judged an older spec.
    expect(firstStartWait(failing(2, 'NotCreated'), off, snap())?.message).not.toContain(said);
    expect(firstStartWait(failing(1, 'StartFailed'), off, snap())?.message).not.toContain(said);
  });

  it('holds the take back in planSnapshot, but not the retry of a take already sent', () => {
    const wait = firstStartWait(vm('Always'), off, snap());
    const base = {
      domainFound: true,
      found: undefined,
      decision: desiredSnapshot(snap(), { active: false, disks: [qcow2] }),
      cutShort: false,
      firstStart: wait,
    };
    expect(planSnapshot({ ...base, snap: snap() })).toEqual({ op: 'wait', ...wait });
    // A take that may have reached libvirt is cleaned up and made again as it began.
    const inProgress = snap({ status: { phase: 'InProgress' } });
    expect(planSnapshot({ ...base, snap: inProgress })).toMatchObject({
      op: 'take',
      cleanUp: 'unrecorded',
    });
    expect(planSnapshot({ ...base, snap: snap(), cutShort: true })).toMatchObject({ op: 'take' });
    // Disks that can hold no snapshot fail at once rather than wait.
    const raw = { ...qcow2, format: 'raw' };
    expect(
      planSnapshot({
        ...base,
        snap: snap(),
        decision: desiredSnapshot(snap(), { active: false, disks: [raw] }),
      }),
    ).toMatchObject({ op: 'fail', reason: 'Unsupported' });
  });
});

describe('planSnapshot after an interrupted take', () => {
  const take = desiredSnapshot(snap(), { active: false, disks: [qcow2] });
  const inProgress = snap({ status: { phase: 'InProgress' } });
  const base = { domainFound: true, found: undefined, decision: take, cutShort: false };
  const cleanUp = (step: ReturnType<typeof planSnapshot>) =>
    step.op === 'take' ? (step.cleanUp ?? 'none') : `op ${step.op}`;

  it('cleans up first when a take may have been cut short, else not', () => {
    expect(cleanUp(planSnapshot({ ...base, snap: snap() }))).toBe('none');
    expect(cleanUp(planSnapshot({ ...base, snap: inProgress }))).toBe('unrecorded');
    expect(cleanUp(planSnapshot({ ...base, snap: snap(), cutShort: true }))).toBe('unrecorded');
  });

  it('takes a cleanup record left by a dead pass for what it is, not a name conflict', () => {
    const s = snap();
    const leftover = {
      snapshot: {} as never,
      doc: { name: 'before-upgrade-0123abcd', description: cleanupDescription(s), disks: [] },
    };
    expect(parseRecord(cleanupDescription(s))).toBeUndefined();
    expect(cleanUp(planSnapshot({ ...base, snap: s, found: leftover }))).toBe('leftover');
    expect(cleanUp(planSnapshot({ ...base, snap: inProgress, found: leftover }))).toBe('leftover');
    const other = snap({ metadata: { uid: 'ffffffff-0000-0000-0000-000000000000' } });
    expect(planSnapshot({ ...base, snap: other, found: leftover })).toMatchObject({
      op: 'fail',
      reason: 'NameConflict',
    });
  });
});

describe('liveDeleteBlocker', () => {
  const vda = { name: 'vda', source: '/pool/ns_root' };
  const vdb = { name: 'vdb', source: '/pool/ns_data' };
  const running = (disks: Array<{ name: string; source?: string }>) => ({ active: true, disks });
  it('lets a live delete through when every disk of the snapshot is attached on its file', () => {
    expect(liveDeleteBlocker({ disks: [vda, vdb] }, running([vda, vdb]))).toBeUndefined();
    // A disk attached since is no concern: the snapshot does not name it.
    expect(liveDeleteBlocker({ disks: [vda] }, running([vda, vdb]))).toBeUndefined();
  });

  it('holds it back when a disk of the snapshot was detached since (libvirt 9.0 crashes)', () => {
    expect(liveDeleteBlocker({ disks: [vda, vdb] }, running([vda]))).toMatch(
      /disk vdb is no longer attached.*deleted once the domain is shut off \(runStrategy Halted/,
    );
    // Shut off, libvirt deletes it from the files: nothing holds it back.
    expect(
      liveDeleteBlocker({ disks: [vda, vdb] }, { active: false, disks: [vda] }),
    ).toBeUndefined();
  });

  it('holds it back when a disk of the snapshot is on another file now (libvirt refuses)', () => {
    expect(
      liveDeleteBlocker({ disks: [vda] }, running([{ name: 'vda', source: '/pool/other' }])),
    ).toMatch(/disk vda is now \/pool\/other, not \/pool\/ns_root/);
  });
});

describe('isOwnSnapshot', () => {
  it('is the object’s record or its cleanup record, never a foreign snapshot of the name', () => {
    const s = snap();
    const uid = String(s.metadata.uid);
    expect(isOwnSnapshot(recordDescription(s, { uid, includeMemory: true }), uid)).toBe(true);
    expect(isOwnSnapshot(cleanupDescription(s), uid)).toBe(true);
    expect(isOwnSnapshot(recordDescription(s, { uid: 'other', includeMemory: true }), uid)).toBe(
      false,
    );
    expect(isOwnSnapshot('made by hand', uid)).toBe(false);
    expect(isOwnSnapshot(undefined, uid)).toBe(false);
  });
});

describe('revertingRestores', () => {
  const restore = (
    name: string,
    phase: string,
    spec: Partial<VirtualMachineRestore['spec']> = {},
  ): VirtualMachineRestore => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachineRestore',
    metadata: { name, namespace: 'ns' },
    spec: { vmName: 'web', snapshotName: 'before-upgrade', ...spec },
    status: { phase: phase as 'InProgress' },
  });
  it('names the restores of the machine that are reverting to this snapshot', () => {
    expect(
      revertingRestores(snap(), [
        restore('now', 'InProgress'),
        restore('later', 'Pending'),
        restore('done', 'Succeeded'),
        restore('other-snapshot', 'InProgress', { snapshotName: 'other' }),
        restore('other-vm', 'InProgress', { vmName: 'db' }),
      ]),
    ).toEqual(['now']);
  });
  it('names the restore whose pass this agent runs, before its InProgress is seen', () => {
    const pending = {
      ...restore('later', 'Pending'),
      metadata: { ...restore('later', 'Pending').metadata, uid: 'u-later' },
    };
    expect(revertingRestores(snap(), [pending], 'u-later')).toEqual(['later']);
    expect(revertingRestores(snap(), [pending], 'u-other')).toEqual([]);
  });
  it('leaves out one begun on another object of this name (status.snapshotUid)', () => {
    const begun = (name: string, snapshotUid: string): VirtualMachineRestore => {
      const r = restore(name, 'InProgress');
      return {
        ...r,
        metadata: { ...r.metadata, uid: `u-${name}` },
        status: { ...r.status, snapshotUid },
      };
    };
    const own = String(snap().metadata.uid);
    const restores = [begun('on-this', own), begun('on-gone', 'gone-uid')];
    expect(revertingRestores(snap(), restores)).toEqual(['on-this']);
    // Also the one whose pass this agent runs: it does not revert to this object either.
    expect(revertingRestores(snap(), restores, 'u-on-gone')).toEqual(['on-this']);
  });
});

describe('snapshotStatus', () => {
  it('says a disks-only snapshot of a running machine is crash-consistent when not quiesced', () => {
    const s = snap({ spec: { vmName: 'web', includeMemory: false } });
    const status = snapshotStatus(
      s,
      {
        phase: 'Ready',
        found: {
          snapshot: {} as never,
          doc: {
            name: 'n',
            state: 'running',
            creationTime: 1796309332,
            disks: [{ name: 'vda', snapshot: 'internal' }],
          },
        },
        record: { uid: 'u', includeMemory: false, quiesced: false },
        volumes: new Map([['vda', 'root']]),
      },
      now,
    );
    expect(status).toMatchObject({
      phase: 'Ready',
      snapshotName: 'n',
      includesMemory: false,
      quiesced: false,
      disks: [{ name: 'vda', volume: 'root' }],
      creationTime: '2026-12-03T14:48:52Z',
    });
    expect(status.conditions?.[0]).toMatchObject({
      type: 'Ready',
      status: 'True',
      reason: 'CrashConsistent',
    });
  });
});

describe('deletionStatus', () => {
  const wait = { reason: 'DisksChanged', message: 'libvirt cannot delete this snapshot now' };
  const ready = {
    type: 'Ready',
    status: 'True' as const,
    reason: 'DisksOnly',
    message: 'm',
    lastTransitionTime: '2026-12-03T11:00:00Z',
  };
  it('says why the deletion waits, keeping the rest of the status, and clears it after', () => {
    const s = snap({ status: { phase: 'Ready', snapshotName: 'n', conditions: [ready] } });
    expect(saysDeletion(s, undefined)).toBe(true);
    expect(saysDeletion(s, wait)).toBe(false);
    const waiting = deletionStatus(s, wait, now);
    expect(waiting).toMatchObject({ phase: 'Ready', snapshotName: 'n' });
    expect(waiting.conditions).toEqual([
      ready,
      {
        type: 'DeletionBlocked',
        status: 'True',
        ...wait,
        lastTransitionTime: '2026-12-03T12:00:00Z',
        observedGeneration: 1,
      },
    ]);
    const held = snap({ status: waiting });
    // Said already: nothing to write. Another wait, or the end of it, is a change.
    expect(saysDeletion(held, wait)).toBe(true);
    expect(saysDeletion(held, { ...wait, reason: 'RestoreInProgress' })).toBe(false);
    expect(saysDeletion(held, undefined)).toBe(false);
    expect(deletionStatus(held, undefined, now).conditions).toEqual([ready]);
  });
});

describe('snapshotOfRevert', () => {
  const at = (creationTimestamp: string) =>
    snap({ metadata: { ...snap().metadata, creationTimestamp } });
  const restore = (status?: VirtualMachineRestore['status']): VirtualMachineRestore => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachineRestore',
    metadata: { name: 'r', namespace: 'ns', uid: 'r-uid' },
    spec: { vmName: 'web', snapshotName: 'before-upgrade' },
    ...(status ? { status } : {}),
  });
  const began = restore({ phase: 'InProgress', startTime: '2026-12-03T12:00:00Z' });

  it('drops a snapshot object created after the revert began: another under the name', () => {
    expect(snapshotOfRevert(began, at('2026-12-03T12:00:01Z'))).toBeUndefined();
  });

  it('drops one of another machine once the revert began: it cannot be the one begun on', () => {
    const other = snap({ spec: { vmName: 'db', includeMemory: true } });
    expect(snapshotOfRevert(began, other)).toBeUndefined();
    // Before the revert, planRestore says whose it is (SnapshotOfAnotherMachine).
    expect(snapshotOfRevert(restore({ phase: 'Pending' }), other)).toBe(other);
  });

  it('tells one re-created in the very second the revert began by the uid it recorded', () => {
    const begunOn = at('2026-12-03T12:00:00Z');
    const recorded = restore({
      phase: 'InProgress',
      startTime: '2026-12-03T12:00:00Z',
      snapshotUid: String(begunOn.metadata.uid),
    });
    expect(snapshotOfRevert(recorded, begunOn)).toBe(begunOn);
    // Deleted (its finalizer removed by hand) and created again in that second: a new uid.
    const again = snap({
      metadata: { ...begunOn.metadata, uid: 'fedc0000-0000-4000-8000-000000000000' },
    });
    expect(snapshotOfRevert(recorded, again)).toBeUndefined();
    // The uid decides, not the clock: the one begun on, whatever its time says.
    const skewed = at('2026-12-03T12:00:05Z');
    expect(snapshotOfRevert(recorded, skewed)).toBe(skewed);
    // One of another machine is never it, whatever its uid.
    const other = snap({ ...begunOn, spec: { vmName: 'db', includeMemory: true } });
    expect(snapshotOfRevert(recorded, other)).toBeUndefined();
    // Before the revert begins nothing is recorded: the one of the name.
    expect(snapshotOfRevert(restore({ phase: 'Pending' }), again)).toBe(again);
  });

  it('keeps the one reverted to, and any before the revert begins', () => {
    const before = at('2026-12-03T11:59:00Z');
    expect(snapshotOfRevert(began, before)).toBe(before);
    // Begun by an earlier version (no snapshotUid), same second: not told apart, kept.
    expect(snapshotOfRevert(began, at('2026-12-03T12:00:00Z'))).toBeDefined();
    const later = at('2026-12-03T12:05:00Z');
    expect(snapshotOfRevert(restore({ phase: 'Pending' }), later)).toBe(later);
    expect(snapshotOfRevert(restore(), later)).toBe(later);
    // No startTime recorded: nothing to compare with.
    expect(snapshotOfRevert(restore({ phase: 'InProgress' }), later)).toBe(later);
    expect(snapshotOfRevert(began, undefined)).toBeUndefined();
  });
});

describe('planRestore', () => {
  const restore = (phase?: string): VirtualMachineRestore => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachineRestore',
    metadata: { name: 'r', namespace: 'ns', uid: 'r-uid' },
    spec: { vmName: 'web', snapshotName: 'before-upgrade' },
    ...(phase ? { status: { phase: phase as never } } : {}),
  });
  const ready = snap({ status: { phase: 'Ready', snapshotName: 'lv', includesMemory: false } });
  const input = (r: VirtualMachineRestore, markerPresent: boolean) => ({
    restore: r,
    snapshot: ready,
    domainFound: true,
    markerPresent,
    libvirtSnapshotFound: true,
  });

  it('reverts when nothing happened yet or the marker is still there', () => {
    expect(planRestore(input(restore(), false))).toEqual({ op: 'revert', snapshotName: 'lv' });
    expect(planRestore(input(restore('Pending'), true)).op).toBe('revert');
    expect(planRestore(input(restore('InProgress'), true)).op).toBe('revert');
  });

  it('only finishes when InProgress lost its marker (the revert happened), never reverts twice', () => {
    expect(planRestore(input(restore('InProgress'), false))).toEqual({ op: 'finish' });
    expect(planRestore(input(restore('Succeeded'), true))).toEqual({ op: 'none' });
    expect(planRestore(input(restore('Failed'), false))).toEqual({ op: 'none' });
  });

  it('never reverts to a snapshot being deleted, unless its revert already began', () => {
    const deleting = {
      ...ready,
      metadata: { ...ready.metadata, deletionTimestamp: '2026-12-03T12:00:00Z' },
    };
    expect(planRestore({ ...input(restore(), false), snapshot: deleting })).toMatchObject({
      op: 'wait',
      reason: 'SnapshotNotFound',
      message: expect.stringMatching(/before-upgrade is being deleted/),
    });
    // Marked before the snapshot's deletion began: the revert goes on, or is finished.
    expect(planRestore({ ...input(restore('InProgress'), true), snapshot: deleting }).op).toBe(
      'revert',
    );
    expect(planRestore({ ...input(restore('InProgress'), false), snapshot: deleting }).op).toBe(
      'finish',
    );
  });

  it('never goes back to Pending once InProgress, when the snapshot object is gone', () => {
    const gone = (r: VirtualMachineRestore, marker: boolean) =>
      planRestore({ ...input(r, marker), snapshot: undefined, libvirtSnapshotFound: false });
    expect(gone(restore('InProgress'), true)).toEqual({
      op: 'fail',
      reason: 'SnapshotMissing',
      message:
        'VirtualMachineSnapshot before-upgrade was deleted before this restore reverted to it',
    });
    expect(gone(restore('InProgress'), false)).toEqual({ op: 'finish' });
    expect(gone(restore('Pending'), false)).toMatchObject({
      op: 'wait',
      reason: 'SnapshotNotFound',
    });
    // Made again under the name (not Ready yet): not the snapshot the revert began on, and
    // not taken while this restore is InProgress. Never a wait.
    expect(planRestore({ ...input(restore('InProgress'), true), snapshot: snap() })).toEqual({
      op: 'fail',
      reason: 'SnapshotMissing',
      message:
        'VirtualMachineSnapshot before-upgrade was deleted and made again before this restore reverted to it',
    });
  });

  it('fails a begun restore whose domain is gone, never back to Pending', () => {
    const lost = (r: VirtualMachineRestore, snapshot = ready) =>
      planRestore({
        ...input(r, false),
        snapshot,
        domainFound: false,
        libvirtSnapshotFound: false,
      });
    for (const snapshot of [ready, undefined])
      expect(lost(restore('InProgress'), snapshot)).toMatchObject({
        op: 'fail',
        reason: 'DomainMissing',
        message: expect.stringMatching(
          /^the domain of VirtualMachine web was removed from the host while this restore/,
        ),
      });
    // Not begun: it waits for the domain.
    expect(lost(restore('Pending'))).toMatchObject({
      op: 'wait',
      reason: 'VirtualMachineNotDefined',
    });
    expect(REASON_CLASSES.DomainMissing).toBe('stalled');
  });

  it('waits for a snapshot of this machine that is Ready', () => {
    expect(planRestore({ ...input(restore(), false), snapshot: undefined })).toMatchObject({
      op: 'wait',
      reason: 'SnapshotNotFound',
    });
    expect(planRestore({ ...input(restore(), false), snapshot: snap() })).toMatchObject({
      op: 'wait',
      reason: 'SnapshotNotReady',
    });
    // One of that name exists, of another machine: said so, not 'no VirtualMachineSnapshot'.
    const other = snap({ spec: { vmName: 'db', includeMemory: true }, status: ready.status });
    // Stalled (only the user can fix it), and says how.
    expect(planRestore({ ...input(restore(), false), snapshot: other })).toEqual({
      op: 'wait',
      reason: 'SnapshotOfAnotherMachine',
      message:
        'VirtualMachineSnapshot before-upgrade is of VirtualMachine db, not web; name a ' +
        'snapshot of web in a new VirtualMachineRestore (spec.snapshotName is immutable)',
    });
    const status = restoreStatus(
      restore(),
      { phase: 'Pending', reason: 'SnapshotOfAnotherMachine', message: 'x' },
      now,
    );
    expect(status.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
    expect(planRestore({ ...input(restore(), false), libvirtSnapshotFound: false })).toMatchObject({
      op: 'fail',
      reason: 'SnapshotMissing',
    });
  });

  it('marks the machine only for a pass that may act on the domain, from the cache alone', () => {
    const may = (r: VirtualMachineRestore, snapshot: VirtualMachineSnapshot | undefined) =>
      mayActOnDomain({ restore: r, snapshot });
    expect(may(restore(), ready)).toBe(true);
    expect(may(restore('Pending'), ready)).toBe(true);
    // Begun: the revert goes on or is finished (a power-off), even with the snapshot gone.
    expect(may(restore('InProgress'), ready)).toBe(true);
    expect(may(restore('InProgress'), undefined)).toBe(true);
    // Only waits (for its snapshot, or for the user): the snapshot it waits for must be taken.
    expect(may(restore(), snap())).toBe(false);
    expect(may(restore(), undefined)).toBe(false);
    expect(
      may(restore(), snap({ spec: { vmName: 'db', includeMemory: true }, status: ready.status })),
    ).toBe(false);
    const overlays = new Map([['root', ['overlay']]]);
    const held = snap({ status: { ...ready.status!, disks: [{ name: 'vda', volume: 'root' }] } });
    expect(may(restore(), held)).toBe(true);
    expect(mayActOnDomain({ restore: restore(), snapshot: held, overlays })).toBe(false);
    expect(may(restore('Succeeded'), ready)).toBe(false);
  });

  it('fails with the reason its snapshot failed', () => {
    const failed = snap({
      status: {
        phase: 'Failed',
        conditions: [
          {
            type: 'Ready',
            status: 'False',
            reason: 'Unsupported',
            message: 'only qcow2 disks can be snapshotted; vda (raw) cannot',
            lastTransitionTime: '2026-12-03T11:00:00Z',
          },
        ],
      },
    });
    expect(planRestore({ ...input(restore(), false), snapshot: failed })).toEqual({
      op: 'fail',
      reason: 'SnapshotFailed',
      message:
        'VirtualMachineSnapshot before-upgrade failed: only qcow2 disks can be snapshotted; vda (raw) cannot',
    });
  });

  it('powers off after reverting to a disks-only snapshot of a running machine', () => {
    const facts = snapshotFacts(ready, 'running');
    expect(needsPowerOff(facts, true)).toBe(true);
    expect(needsPowerOff(facts, false)).toBe(false);
    const checkpoint = snap({ status: { phase: 'Ready', includesMemory: true } });
    expect(needsPowerOff(snapshotFacts(checkpoint, 'running'), true)).toBe(false);
  });

  it('finishes a begun restore from what its InProgress write recorded, the object gone or not', () => {
    const disksOnly = snap({
      status: {
        phase: 'Ready',
        includesMemory: false,
        quiesced: false,
        disks: [{ name: 'vda', volume: 'root' }],
      },
    });
    const recorded = snapshotFacts(disksOnly, 'running');
    expect(recorded).toEqual({
      includesMemory: false,
      ofRunningMachine: true,
      disks: [{ name: 'vda', volume: 'root' }],
    });
    const begun = (status: Partial<NonNullable<VirtualMachineRestore['status']>>) =>
      ({
        metadata: { name: 'r', namespace: 'ns', uid: 'r-uid' },
        spec: { vmName: 'web', snapshotName: 'before-upgrade' },
        status: { phase: 'InProgress', ...status },
      }) as VirtualMachineRestore;
    const withFacts = begun(recorded);
    // Its object gone after the revert: the power-off still happens, the disks still named.
    expect(revertedFacts(withFacts, undefined, undefined)).toEqual(recorded);
    expect(needsPowerOff(revertedFacts(withFacts, undefined, undefined)!, true)).toBe(true);
    // Another under the name (not taken, or a checkpoint) says nothing of what was reverted.
    const other = snap({ status: { phase: 'Ready', includesMemory: true, disks: [] } });
    expect(revertedFacts(withFacts, other, 'running')).toEqual(recorded);
    // Begun by an earlier version (nothing recorded): the object, as before, or not known.
    expect(revertedFacts(begun({}), disksOnly, 'running')).toEqual(recorded);
    expect(revertedFacts(begun({}), undefined, undefined)).toBeUndefined();
  });

  it('reverts paused only where it powers off after: a disks-only checkpoint', () => {
    expect(revertPaused(ready, 'running')).toBe(true);
    expect(revertPaused(ready, 'paused')).toBe(true);
    // A stopped machine's snapshot would be booted by a paused revert.
    expect(revertPaused(ready, 'shutoff')).toBe(false);
    const checkpoint = snap({ status: { phase: 'Ready', includesMemory: true } });
    expect(revertPaused(checkpoint, 'running')).toBe(false);
  });

  it('says when a restore shut the running guest off, and whether runStrategy boots it', () => {
    const base = { includesMemory: false, stoppedRun: true, ofRunningMachine: true };
    expect(restoredWording({ ...base, runStrategy: undefined })).toBe(
      'disks; powered off to boot from them',
    );
    // Manual never starts it again: "to boot from them" would be untrue.
    expect(restoredWording({ ...base, runStrategy: 'Manual' })).toBe(
      'disks; powered off, and runStrategy Manual leaves it shut off',
    );
    expect(
      restoredWording({ ...base, ofRunningMachine: false, runStrategy: 'RerunOnFailure' }),
    ).toBe(
      'disks of the stopped machine; the revert shut the running guest off, and runStrategy ' +
        'RerunOnFailure boots it from them',
    );
    expect(restoredWording({ ...base, stoppedRun: false, runStrategy: 'Manual' })).toBe('disks');
    expect(restoredWording({ ...base, includesMemory: true, runStrategy: 'Always' })).toBe(
      'memory and disks',
    );
    // The checkpoint runs again on a machine Halted keeps off, until Halted shuts it down.
    expect(restoredWording({ ...base, includesMemory: true, runStrategy: 'Halted' })).toBe(
      'memory and disks; the guest runs, and runStrategy Halted shuts it down',
    );
  });

  it('names the disks a restore reverted and those it did not, a bounded list of each', () => {
    expect(
      restoredDisksWording(
        [{ name: 'vda', volume: 'root' }, { name: 'vdb' }],
        [{ volume: 'root' }, { volume: 'root' }, { volume: 'iso', readOnly: true }],
      ),
    ).toBe('disks reverted: vda (Volume root), vdb; not reverted: Volume iso (read-only)');
    const many = Array.from({ length: 9 }, (_, i) => ({ volume: `v${i}` }));
    const said = restoredDisksWording([], many);
    expect(said).toBe(
      'disks reverted: none; not reverted: ' +
        many
          .slice(0, DISKS_NAMED)
          .map((d) => `Volume ${d.volume} (not in the snapshot)`)
          .join(', ') +
        ` and ${9 - DISKS_NAMED} more`,
    );
  });

  it('says after a failed revert which disks it covered, whose state is unknown, bounded', () => {
    expect(
      revertFailedDisksWording(
        [
          { name: 'vda', volume: 'root' },
          { name: 'vdb', volume: 'old' },
        ],
        [{ volume: 'root' }, { volume: 'iso', readOnly: true }, { volume: 'scratch' }],
      ),
    ).toBe(
      'libvirt may have reverted some of the disks the revert covered before it failed, so ' +
        "each may hold the snapshot's data or what it held before: vda (Volume root), vdb " +
        '(Volume old, no longer attached); not part of the revert: Volume iso (read-only), ' +
        'Volume scratch (not in the snapshot)',
    );
    const many = Array.from({ length: 40 }, (_, i) => ({ name: `vd${i}`, volume: `v${i}` }));
    const said = revertFailedDisksWording(many, many);
    expect(said).toMatch(/: vd0 \(Volume v0\), .* and 34 more$/);
    expect(said.length).toBeLessThan(400);
  });

  it('records a refused revert in its marker, whatever the message holds', () => {
    const said = `libvirt could not revert to x: bad <"name"> & 'more'; disks: vda`;
    const xml = restoreMarkerXML('r-uid', said);
    expect(isMarkerOf(xml, 'r-uid')).toBe(true);
    expect(refusalIn(xml, 'r-uid')).toBe(said);
    expect(refusalIn(xml, 'other')).toBeUndefined();
    expect(refusalIn(restoreMarkerXML('r-uid'), 'r-uid')).toBeUndefined();
    expect(refusalIn(undefined, 'r-uid')).toBeUndefined();
  });

  it('fails a begun restore whose refusal its marker records, whether the marker is there or not', () => {
    for (const markerPresent of [true, false])
      expect(
        planRestore({ ...input(restore('InProgress'), markerPresent), refused: 'no; disks: vda' }),
      ).toEqual({ op: 'fail', reason: 'RevertFailed', message: 'no; disks: vda' });
  });

  it('keeps a begun restore InProgress while overlays on its snapshot’s disks hold it back', () => {
    const overlays = new Map([['root', ['overlay']]]);
    const held = snap({
      status: { ...ready.status!, disks: [{ name: 'vda', volume: 'root' }] },
    });
    const at = (phase?: string) =>
      planRestore({ ...input(restore(phase), true), snapshot: held, overlays });
    expect(at('InProgress')).toMatchObject({
      op: 'wait',
      reason: 'VolumeHasOverlays',
      phase: 'InProgress',
    });
    expect(at('Pending')).toMatchObject({ op: 'wait', reason: 'VolumeHasOverlays' });
    expect(at('Pending')).not.toHaveProperty('phase');
  });

  it('recognises its own marker only', () => {
    const xml = restoreMarkerXML('r-uid');
    expect(isMarkerOf(xml, 'r-uid')).toBe(true);
    expect(isMarkerOf(xml, 'other')).toBe(false);
    expect(isMarkerOf(undefined, 'r-uid')).toBe(false);
  });

  it('has a start time only once a revert began', () => {
    const failed = { phase: 'Failed' as const, reason: 'SnapshotMissing', message: 'm' };
    expect(restoreStatus(restore('Pending'), failed, now).startTime).toBeUndefined();
    const began = restoreStatus(
      restore('Pending'),
      { phase: 'InProgress', reason: 'Reverting', message: 'm' },
      now,
    );
    expect(began.startTime).toBe('2026-12-03T12:00:00Z');
    const refused = { phase: 'Failed' as const, reason: 'RevertFailed', message: 'm' };
    const later = new Date('2026-12-03T12:05:00Z');
    expect(restoreStatus({ ...restore(), status: began }, refused, later).startTime).toBe(
      '2026-12-03T12:00:00Z',
    );
  });

  it('records the machine the revert began on, and keeps it', () => {
    const pending = { phase: 'Pending' as const, reason: 'SnapshotNotReady', message: 'm' };
    expect(restoreStatus(restore(), pending, now, { vmUid: 'vm-1' }).vmUid).toBeUndefined();
    const began = restoreStatus(
      restore(),
      { phase: 'InProgress', reason: 'Reverting', message: 'm' },
      now,
      { vmUid: 'vm-1' },
    );
    expect(began.vmUid).toBe('vm-1');
    const done = { phase: 'Succeeded' as const, message: 'm' };
    expect(restoreStatus({ ...restore(), status: began }, done, now).vmUid).toBe('vm-1');
  });

  it('records the snapshot object the revert began on, in the InProgress write, and keeps it', () => {
    const pending = { phase: 'Pending' as const, reason: 'SnapshotNotReady', message: 'm' };
    const who = { vmUid: 'vm-1', snapshotUid: 'snap-1' };
    expect(restoreStatus(restore(), pending, now, who).snapshotUid).toBeUndefined();
    const began = restoreStatus(
      restore(),
      { phase: 'InProgress', reason: 'Reverting', message: 'm' },
      now,
      who,
    );
    expect(began).toMatchObject({ phase: 'InProgress', vmUid: 'vm-1', snapshotUid: 'snap-1' });
    // Never replaced: a later write naming another object (none does) keeps the first.
    const done = { phase: 'Succeeded' as const, message: 'm' };
    const after = { ...restore(), status: began };
    expect(restoreStatus(after, done, now, { snapshotUid: 'snap-2' }).snapshotUid).toBe('snap-1');
    expect(restoreStatus(after, done, now).snapshotUid).toBe('snap-1');
  });

  it('records what the later steps need of the snapshot with InProgress only, and keeps it', () => {
    const reverted = {
      includesMemory: false,
      ofRunningMachine: true,
      disks: [{ name: 'vda', volume: 'root' }],
    };
    const pending = { phase: 'Pending' as const, reason: 'SnapshotNotReady', message: 'm' };
    expect(restoreStatus(restore(), pending, now, { reverted }).includesMemory).toBeUndefined();
    const began = restoreStatus(
      restore(),
      { phase: 'InProgress', reason: 'Reverting', message: 'm' },
      now,
      { reverted },
    );
    expect(began).toMatchObject({ phase: 'InProgress', ...reverted });
    const done = { phase: 'Succeeded' as const, message: 'm' };
    const after = { ...restore(), status: began };
    const other = { includesMemory: true, ofRunningMachine: false, disks: [] };
    expect(restoreStatus(after, done, now, { reverted: other })).toMatchObject(reverted);
    // Begun by an earlier version: none recorded afterwards.
    const old = { ...restore(), status: { phase: 'InProgress' as const } };
    expect(restoreStatus(old, done, now, { reverted }).includesMemory).toBeUndefined();
  });

  it('names the node of the agent that writes it, which claims it; not a missing-machine report', () => {
    const pending = { phase: 'Pending' as const, reason: 'SnapshotNotReady', message: 'm' };
    const missing = { phase: 'Pending' as const, reason: 'VirtualMachineNotFound', message: 'm' };
    expect(restoreStatus(restore(), missing, now).nodeName).toBeUndefined();
    const claimed = restoreStatus(restore(), pending, now, { nodeName: 'node-a' });
    expect(claimed.nodeName).toBe('node-a');
    expect(restoreStatus({ ...restore(), status: claimed }, missing, now).nodeName).toBe('node-a');
  });

  it('keeps the completion time once Succeeded', () => {
    const first = restoreStatus(restore('InProgress'), { phase: 'Succeeded', message: 'm' }, now);
    const later = restoreStatus(
      { ...restore(), status: first },
      { phase: 'Succeeded', message: 'm' },
      new Date('2026-12-04T00:00:00Z'),
    );
    expect(later.completionTime).toBe(first.completionTime);
  });

  it('reads as kstatus expects: Reconciling while it waits, Stalled once Failed, neither once done', () => {
    const progress = (status: { conditions?: Array<{ type: string; status: string }> }) =>
      Object.fromEntries(
        (status.conditions ?? []).filter((c) => c.type !== 'Ready').map((c) => [c.type, c.status]),
      );
    const waiting = restoreStatus(
      restore(),
      { phase: 'Pending', reason: 'SnapshotNotReady', message: 'm' },
      now,
    );
    expect(progress(waiting)).toEqual({ Reconciling: 'True', Stalled: 'False' });
    const failed = restoreStatus(
      restore('InProgress'),
      { phase: 'Failed', reason: 'RevertFailed', message: 'm' },
      now,
    );
    expect(progress(failed)).toEqual({ Reconciling: 'False', Stalled: 'True' });
    const done = restoreStatus(restore('InProgress'), { phase: 'Succeeded', message: 'm' }, now);
    expect(progress(done)).toEqual({ Reconciling: 'False', Stalled: 'False' });

    const s = snap();
    for (const [reason, want] of [
      ['Unsupported', 'Stalled'],
      ['NameConflict', 'Stalled'],
      ['SnapshotFailed', 'Stalled'],
      ['SnapshotMissing', 'Stalled'],
    ] as const) {
      const st = snapshotStatus(s, { phase: 'Failed', reason, message: 'm' }, now);
      expect(progress(st), reason).toEqual({ Reconciling: 'False', [want]: 'True' });
    }
    for (const reason of ['VirtualMachineNotDefined', 'SnapshotInProgress']) {
      const st = snapshotStatus(s, { phase: 'InProgress', reason, message: 'm' }, now);
      expect(progress(st), reason).toEqual({ Reconciling: 'True', Stalled: 'False' });
    }
  });
});

describe('how often a snapshot is looked at again', () => {
  it('within a minute, so a libvirt snapshot deleted outside the operator soon reads Failed', () => {
    expect(kindResyncMs(virtualMachineSnapshot, 10 * 60_000)).toBeLessThanOrEqual(60_000);
    // The agent's shorter period, or its resync turned off, still wins.
    expect(kindResyncMs(virtualMachineSnapshot, 5_000)).toBe(5_000);
    expect(kindResyncMs(virtualMachineSnapshot, 0)).toBe(0);
    expect(kindResyncMs({}, 10 * 60_000)).toBe(10 * 60_000);
  });
});

describe('which snapshots a change wakes', () => {
  it('a restore wakes the snapshot it names, which may have found it gone in libvirt', () => {
    const restore: VirtualMachineRestore = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachineRestore',
      metadata: { name: 'r', namespace: 'ns', uid: 'r-uid' },
      spec: { vmName: 'web', snapshotName: 'before-upgrade' },
      status: { phase: 'Failed' },
    };
    const none = { keysByIndex: () => [], keys: () => [] };
    const keys = virtualMachineSnapshot.triggers
      .filter((t) => t.from === 'VirtualMachineRestore')
      .flatMap((t) => t.keys({ type: 'updated', obj: restore, old: restore }, none));
    expect(keys).toEqual(['ns/before-upgrade']);
  });
});
