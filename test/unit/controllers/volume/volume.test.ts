import { describe, expect, it } from 'vitest';
import type { Condition } from '../../../../src/api/conditions.js';
import type { Volume } from '../../../../src/api/generated/types.js';
import {
  desiredVolume,
  requestedCapacity,
  sourceKind,
} from '../../../../src/controllers/volume/desired.js';
import {
  birthTimeDecides,
  lostBaseOfOverlay,
  lostBaseProblem,
  ownsVolume,
  planImport,
  planVolume,
  resizeSuspended,
} from '../../../../src/controllers/volume/plan.js';
import { usedByList, volumeStatus } from '../../../../src/controllers/volume/status.js';
import type { ObservedVolume } from '../../../../src/libvirt/xml/volume.js';

const GiB = 2n ** 30n;
const vol = (
  spec: Partial<Volume['spec']> = {},
  status?: Volume['status'],
  generation = 1,
): Volume => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'Volume',
  metadata: { name: 'data', namespace: 'apps', uid: 'u-1', generation },
  spec: {
    nodeName: 'n1',
    pool: 'images',
    capacity: '10Gi',
    format: 'qcow2',
    deletionPolicy: 'Delete',
    ...spec,
  },
  ...(status ? { status } : {}),
});
const file = (over: Partial<ObservedVolume> = {}): ObservedVolume => ({
  name: 'apps_data',
  capacity: 10n * GiB,
  allocation: 10n * GiB,
  format: 'qcow2',
  path: '/srv/images/apps_data',
  key: '/srv/images/apps_data',
  ...over,
});
const base = { path: '/srv/images/apps_base', capacity: 2n * GiB, format: 'qcow2' as const };
const T0 = new Date('2026-01-01T00:00:00Z');
const T1 = new Date('2026-01-01T00:05:00Z');

describe('desiredVolume', () => {
  it('names the file <namespace>_<name>: one plain file name, never a path', () => {
    expect(desiredVolume(vol())).toEqual({
      name: 'apps_data',
      capacity: 10n * GiB,
      format: 'qcow2',
    });
  });
  it('keeps raw format and exact byte capacities', () => {
    expect(desiredVolume(vol({ format: 'raw', capacity: 1048577 }))).toEqual({
      name: 'apps_data',
      capacity: 1048577n,
      format: 'raw',
    });
  });
  it('rounds a qcow2 capacity up to whole KiB, which libvirt and QEMU make exactly', () => {
    // 100M = 100,000,000 bytes: libvirt's qemu-img create makes 100,000,768 (97,657 KiB).
    expect(desiredVolume(vol({ capacity: '100M' })).capacity).toBe(100_000_768n);
    expect(requestedCapacity(vol({ capacity: '100M' }))).toBe(100_000_768n);
    expect(requestedCapacity(vol({ capacity: '100M', format: 'raw' }))).toBe(100_000_000n);
    expect(requestedCapacity(vol({ capacity: '10Gi' }))).toBe(10n * GiB);
  });
  it('a clone is as large as its source unless more is asked', () => {
    expect(
      desiredVolume(vol({ capacity: undefined, source: { clone: { volume: 'base' } } }), base)
        .capacity,
    ).toBe(2n * GiB);
    expect(
      desiredVolume(vol({ capacity: '1Gi', source: { clone: { volume: 'base' } } }), base).capacity,
    ).toBe(2n * GiB);
    expect(
      desiredVolume(vol({ capacity: '20Gi', source: { clone: { volume: 'base' } } }), base),
    ).toEqual({
      name: 'apps_data',
      capacity: 20n * GiB,
      format: 'qcow2',
    });
  });
  it('an overlay names the source file as its backing store', () => {
    expect(
      desiredVolume(
        vol({ capacity: undefined, source: { backingVolume: { volume: 'base' } } }),
        base,
      ),
    ).toEqual({
      name: 'apps_data',
      capacity: 2n * GiB,
      format: 'qcow2',
      backingStore: { path: '/srv/images/apps_base', format: 'qcow2' },
    });
  });
  it('refuses to build a copy without its source', () => {
    expect(() => desiredVolume(vol({ source: { clone: { volume: 'base' } } }))).toThrow(/source/);
  });
  it('classifies sources', () => {
    expect(sourceKind(vol())).toBe('blank');
    expect(sourceKind(vol({ source: { clone: { volume: 'b' } } }))).toBe('clone');
    expect(sourceKind(vol({ source: { backingVolume: { volume: 'b' } } }))).toBe('backingVolume');
    expect(
      sourceKind(vol({ source: { http: { url: 'http://x/y', sha256: 'a'.repeat(64) } } })),
    ).toBe('http');
    expect(requestedCapacity(vol({ capacity: undefined }))).toBeUndefined();
  });
});

describe('ownsVolume', () => {
  it('owns the file its status records', () => {
    expect(
      ownsVolume(
        vol({}, { path: '/srv/images/apps_data' }),
        file({ capacity: 1n, format: 'raw' }),
        undefined,
      ),
    ).toBe(true);
  });
  it('owns an unrecorded file that is exactly what it would create (crash before the status write)', () => {
    expect(ownsVolume(vol(), file(), desiredVolume(vol()))).toBe(true);
  });
  it.each([
    ['another format', file({ format: 'raw' })],
    ['another capacity', file({ capacity: 5n * GiB })],
    ['a backing store', file({ backingStore: { path: '/etc/x', format: 'raw' } })],
  ])('does not own an unrecorded file with %s', (_what, observed) => {
    expect(ownsVolume(vol(), observed, desiredVolume(vol()))).toBe(false);
  });
  it('does not own a matching file older than itself (one a deleted Volume kept), to the second', () => {
    const created = vol();
    created.metadata.creationTimestamp = '2026-01-02T03:04:05Z';
    const own = (changedAt: string) =>
      ownsVolume(created, file(), desiredVolume(created), { changedAt: new Date(changedAt) });
    expect(own('2026-01-02T03:04:04.999Z')).toBe(false);
    // Made in a later second: a crash before the status write.
    expect(own('2026-01-02T03:04:06.000Z')).toBe(true);
    expect(ownsVolume(created, file(), desiredVolume(created))).toBe(true);
    // One this process made for the Volume is its own, however soon (status not seen yet).
    expect(
      ownsVolume(created, file(), desiredVolume(created), {
        changedAt: new Date('2026-01-02T03:04:05.100Z'),
        made: '/srv/images/apps_data',
      }),
    ).toBe(true);
    // The recorded path is ours whatever its age.
    const recorded = vol({}, { path: '/srv/images/apps_data' });
    recorded.metadata.creationTimestamp = '2026-01-02T03:04:05Z';
    expect(
      ownsVolume(recorded, file(), undefined, { changedAt: new Date('2020-01-01T00:00:00Z') }),
    ).toBe(true);
    const plan = planVolume(created, 'blank', desiredVolume(created), file(), {
      changedAt: new Date('2026-01-01T00:00:00Z'),
    });
    expect(plan).toEqual({ conflict: expect.stringContaining('older than the Volume') });
  });
  // The creation time has whole seconds: a file changed within that second may be the
  // Volume's own (made, then the agent killed before its status write) or a kept one changed
  // just before a re-create. Its birth time tells them apart.
  it('tells a file changed within its creation second by its birth time', () => {
    const created = vol();
    created.metadata.creationTimestamp = '2026-01-02T03:04:05Z';
    const changed = new Date('2026-01-02T03:04:05.300Z');
    const own = (bornAt?: string) =>
      ownsVolume(created, file(), desiredVolume(created), {
        changedAt: changed,
        ...(bornAt === undefined ? {} : { bornAt: new Date(bornAt) }),
      });
    // Born before the creation second: a kept file, touched since.
    expect(own('2026-01-02T03:04:04.999Z')).toBe(false);
    expect(own('2025-06-01T00:00:00Z')).toBe(false);
    // Born within it: the Volume's own (a crash between create and status write).
    expect(own('2026-01-02T03:04:05.000Z')).toBe(true);
    expect(own('2026-01-02T03:04:05.250Z')).toBe(true);
    // Birth time unknown: as a crash's, if it matches the spec.
    expect(own()).toBe(true);
    expect(
      ownsVolume(created, file({ format: 'raw' }), desiredVolume(created), { changedAt: changed }),
    ).toBe(false);
    const plan = (bornAt?: Date) =>
      planVolume(created, 'blank', desiredVolume(created), file(), { changedAt: changed, bornAt });
    expect(plan(new Date('2026-01-01T00:00:00Z'))).toEqual({
      conflict: expect.stringContaining('older than the Volume'),
    });
    expect(plan(new Date('2026-01-02T03:04:05.100Z'))).toEqual({ steps: [] });
    // A clone's kept file is never discarded and copied over.
    expect(
      planVolume(created, 'clone', desiredVolume(created), file(), {
        changedAt: changed,
        bornAt: new Date('2026-01-01T00:00:00Z'),
      }),
    ).toEqual({ conflict: expect.stringContaining('older than the Volume') });
    // A birth time matters only there: changed before the second, older whatever it says.
    expect(
      ownsVolume(created, file(), desiredVolume(created), {
        changedAt: new Date('2026-01-02T03:04:04.000Z'),
        bornAt: new Date('2026-01-02T03:04:05.100Z'),
      }),
    ).toBe(false);
  });
  it('asks for the birth time only of an unrecorded file changed within its creation second', () => {
    const created = vol();
    created.metadata.creationTimestamp = '2026-01-02T03:04:05Z';
    const at = (t: string) => new Date(t);
    const path = '/srv/images/apps_data';
    expect(birthTimeDecides(created, file(), { changedAt: at('2026-01-02T03:04:05.300Z') })).toBe(
      true,
    );
    expect(birthTimeDecides(created, file(), { changedAt: at('2026-01-02T03:04:04.300Z') })).toBe(
      false,
    );
    expect(birthTimeDecides(created, file(), { changedAt: at('2026-01-02T03:04:06.000Z') })).toBe(
      false,
    );
    expect(birthTimeDecides(created, file(), {})).toBe(false);
    expect(
      birthTimeDecides(created, file(), { changedAt: at('2026-01-02T03:04:05.300Z'), made: path }),
    ).toBe(false);
    const recorded = vol({}, { path });
    recorded.metadata.creationTimestamp = '2026-01-02T03:04:05Z';
    expect(birthTimeDecides(recorded, file(), { changedAt: at('2026-01-02T03:04:05.300Z') })).toBe(
      false,
    );
  });
  it('does not own a file at another path than the recorded one', () => {
    expect(
      ownsVolume(
        vol({}, { path: '/old/apps_data' }),
        file({ format: 'raw' }),
        desiredVolume(vol()),
      ),
    ).toBe(false);
  });
});

describe('planVolume', () => {
  it('creates a missing blank volume, clones a missing clone', () => {
    expect(planVolume(vol(), 'blank', desiredVolume(vol()), undefined)).toEqual({
      steps: [{ op: 'create', doc: desiredVolume(vol()) }],
    });
    const clone = vol({ source: { clone: { volume: 'base' } } });
    expect(planVolume(clone, 'clone', desiredVolume(clone, base), undefined)).toEqual({
      steps: [{ op: 'clone', doc: desiredVolume(clone, base) }],
    });
  });
  it('copies again over an unrecorded copy: a crash may have cut its content short', () => {
    const clone = vol({ capacity: undefined, source: { clone: { volume: 'base' } } });
    const desired = desiredVolume(clone, base);
    const halfDone = file({ capacity: 2n * GiB });
    expect(planVolume(clone, 'clone', desired, halfDone)).toEqual({
      steps: [{ op: 'discard' }, { op: 'clone', doc: desired }],
    });
    const recorded = vol(
      { capacity: undefined, source: { clone: { volume: 'base' } } },
      { path: '/srv/images/apps_data' },
    );
    expect(planVolume(recorded, 'clone', undefined, halfDone)).toEqual({ steps: [] });
    // Copied by this process; the cached status does not show it yet.
    expect(
      planVolume(clone, 'clone', desired, halfDone, { made: '/srv/images/apps_data' }),
    ).toEqual({
      steps: [],
    });
  });
  it('does nothing for a converged volume, whatever its allocation', () => {
    const v = vol({}, { path: '/srv/images/apps_data' });
    expect(planVolume(v, 'blank', undefined, file({ allocation: 123n }))).toEqual({ steps: [] });
  });
  it('reports a foreign file under our name as a conflict naming it', () => {
    const plan = planVolume(vol(), 'blank', desiredVolume(vol()), file({ format: 'raw' }));
    expect(plan).toEqual({ conflict: expect.stringContaining('/srv/images/apps_data') });
  });
  it('grows a smaller file to spec.capacity', () => {
    const v = vol({ capacity: '20Gi' }, { path: '/srv/images/apps_data' });
    expect(planVolume(v, 'blank', undefined, file())).toEqual({
      steps: [{ op: 'resize', capacity: 20n * GiB }],
    });
  });
  it('grows a qcow2 file to the whole KiB above spec.capacity, and no further', () => {
    const v = vol({ capacity: '300M' }, { path: '/srv/images/apps_data' });
    expect(planVolume(v, 'blank', undefined, file({ capacity: 200_000_768n }))).toEqual({
      steps: [{ op: 'resize', capacity: 300_000_256n }],
    });
    expect(planVolume(v, 'blank', undefined, file({ capacity: 300_000_256n }))).toEqual({
      steps: [],
    });
  });
  it('never shrinks', () => {
    const v = vol({ capacity: '1Gi' }, { path: '/srv/images/apps_data' });
    expect(planVolume(v, 'blank', undefined, file())).toEqual({ steps: [] });
  });
  it('does not grow a copy because its source grew, only when spec.capacity asks', () => {
    const v = vol(
      { capacity: undefined, source: { clone: { volume: 'base' } } },
      { path: '/srv/images/apps_data' },
    );
    expect(planVolume(v, 'clone', undefined, file({ capacity: 2n * GiB }))).toEqual({ steps: [] });
  });
  it('does not retry a resize the driver does not support within the same generation', () => {
    const unsupported: Condition = {
      type: 'Resized',
      status: 'False',
      reason: 'ResizeUnsupported',
      message: '',
      lastTransitionTime: 't',
      observedGeneration: 2,
    };
    const v = vol(
      { capacity: '20Gi' },
      { path: '/srv/images/apps_data', conditions: [unsupported] },
      2,
    );
    expect(resizeSuspended(v)).toBe(true);
    expect(planVolume(v, 'blank', undefined, file())).toEqual({ steps: [] });
    const next = vol(
      { capacity: '30Gi' },
      { path: '/srv/images/apps_data', conditions: [unsupported] },
      3,
    );
    expect(planVolume(next, 'blank', undefined, file())).toEqual({
      steps: [{ op: 'resize', capacity: 30n * GiB }],
    });
  });
});

describe('planImport', () => {
  const http = {
    source: { http: { url: 'http://127.0.0.1/img', sha256: 'a'.repeat(64) } },
    capacity: undefined,
  };
  const imported: Condition = {
    type: 'Imported',
    status: 'True',
    reason: 'Verified',
    message: '',
    lastTransitionTime: 't',
  };
  const P = '/srv/images/apps_data';
  it('starts a download when there is neither file nor job', () => {
    expect(planImport(vol(http), undefined, undefined, 0, undefined)).toEqual({ do: 'download' });
  });
  it('waits while downloading, and after a failure until the retry time', () => {
    expect(planImport(vol(http), undefined, { state: 'downloading' }, 0, undefined)).toEqual({
      do: 'wait',
    });
    expect(
      planImport(vol(http), undefined, { state: 'failed', retryAt: 100 }, 99, undefined),
    ).toEqual({ do: 'wait' });
    expect(
      planImport(vol(http), undefined, { state: 'failed', retryAt: 100 }, 100, undefined),
    ).toEqual({ do: 'download' });
  });
  it('records the path before uploading, then uploads', () => {
    expect(planImport(vol(http), undefined, { state: 'verified' }, 0, P)).toEqual({
      do: 'record',
      path: P,
    });
    expect(planImport(vol(http, { path: P }), undefined, { state: 'verified' }, 0, P)).toEqual({
      do: 'upload',
    });
  });
  it('is converged once the import completed', () => {
    expect(
      planImport(vol(http, { path: P, conditions: [imported] }), file(), undefined, 0, undefined),
    ).toEqual({ do: 'converged' });
  });
  it('keeps a file this process uploaded, even while the cached status predates Imported', () => {
    expect(planImport(vol(http, { path: P }), file(), { state: 'uploaded' }, 0, undefined)).toEqual(
      { do: 'converged' },
    );
  });
  it('imports again when a file it uploaded is gone', () => {
    expect(planImport(vol(http, { path: P }), undefined, { state: 'uploaded' }, 0, P)).toEqual({
      do: 'download',
    });
  });
  it('replaces its own interrupted upload', () => {
    expect(planImport(vol(http, { path: P }), file(), undefined, 0, undefined)).toEqual({
      do: 'discard',
    });
  });
  it('never touches a file it did not record', () => {
    expect(planImport(vol(http), file(), { state: 'verified' }, 0, P)).toMatchObject({
      do: 'conflict',
    });
    expect(
      planImport(
        vol(http, { path: '/other', conditions: [imported] }),
        file(),
        undefined,
        0,
        undefined,
      ),
    ).toMatchObject({ do: 'conflict' });
  });
});

describe('volumeStatus', () => {
  it('an available volume: exact capacity, MiB allocation, Ready True', () => {
    const status = volumeStatus(
      vol(),
      { observed: file({ allocation: 196_608n + 5n * 2n ** 20n }), usedBy: [] },
      T0,
    );
    expect(status).toEqual({
      phase: 'Available',
      observedGeneration: 1,
      path: '/srv/images/apps_data',
      capacity: '10Gi',
      allocation: '5Mi',
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Available',
          message: 'volume file /srv/images/apps_data',
          lastTransitionTime: '2026-01-01T00:00:00Z',
          observedGeneration: 1,
        },
        ...['Reconciling', 'Stalled'].map((type) => ({
          type,
          status: 'False',
          reason: 'Ready',
          message: 'the observed generation is converged',
          lastTransitionTime: '2026-01-01T00:00:00Z',
          observedGeneration: 1,
        })),
      ],
    });
  });
  it('is identical on the next pass', () => {
    const first = volumeStatus(vol(), { observed: file(), usedBy: [] }, T0);
    expect(volumeStatus(vol({}, first), { observed: file(), usedBy: [] }, T1)).toEqual(first);
  });
  it('is InUse with sorted users', () => {
    const usedBy = usedByList(['vm-b', 'vm-a', 'vm-a'], ['overlay']);
    expect(usedBy).toEqual([
      { kind: 'VirtualMachine', name: 'vm-a' },
      { kind: 'VirtualMachine', name: 'vm-b' },
      { kind: 'Volume', name: 'overlay' },
    ]);
    const status = volumeStatus(vol(), { observed: file(), usedBy }, T0);
    expect(status.phase).toBe('InUse');
    expect(status.usedBy).toEqual(usedBy);
  });
  it.each([
    ['PoolNotReady', 'Pending'],
    ['SourceNotReady', 'Pending'],
    ['NameConflict', 'Failed'],
    ['ChecksumMismatch', 'Failed'],
    ['SourceRefused', 'Failed'],
    ['InvalidImage', 'Failed'],
    ['PathReadOnly', 'Failed'],
    ['PathForbidden', 'Failed'],
    ['Unsupported', 'Failed'],
    // Retried and may pass by itself: Failed beside Reconciling=True contradicted itself.
    ['ImportFailed', 'Pending'],
    ['CreateFailed', 'Pending'],
  ])('%s makes the phase %s with Ready False', (reason, phase) => {
    const status = volumeStatus(vol(), { problem: { reason, message: 'why' }, usedBy: [] }, T0);
    expect(status.phase).toBe(phase);
    expect(status.conditions?.[0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason,
      message: 'why',
    });
    expect(status.capacity).toBeUndefined();
    // The phase and the kstatus conditions say the same: Failed exactly when Stalled.
    const stalled = status.conditions?.find((c) => c.type === 'Stalled')?.status;
    const reconciling = status.conditions?.find((c) => c.type === 'Reconciling')?.status;
    expect(stalled).toBe(phase === 'Failed' ? 'True' : 'False');
    expect(reconciling).toBe(phase === 'Failed' ? 'False' : 'True');
  });
  it('keeps the recorded path while the file cannot be observed', () => {
    const status = volumeStatus(
      vol({}, { path: '/p/apps_data' }),
      { problem: { reason: 'PoolNotReady', message: 'x' }, usedBy: [] },
      T0,
    );
    expect(status.path).toBe('/p/apps_data');
  });
  it('drops the recorded path of a failed import that left no file', () => {
    const status = volumeStatus(
      vol({}, { path: '/p/apps_data' }),
      { problem: { reason: 'ImportFailed', message: 'x' }, usedBy: [], noFile: true },
      T0,
    );
    expect(status.phase).toBe('Pending');
    expect(status.path).toBeUndefined();
  });
  it('shows import progress while Importing, and the planned path once recorded', () => {
    const status = volumeStatus(
      vol(),
      {
        importing: { progress: { bytesDone: 42, bytesTotal: 100, percent: 42 }, path: '/p/x' },
        usedBy: [],
      },
      T0,
    );
    expect(status).toMatchObject({ phase: 'Importing', path: '/p/x', progress: { percent: 42 } });
    expect(status.conditions?.[0]).toMatchObject({ status: 'False', reason: 'Importing' });
  });
  it('sets Imported once and keeps it afterwards', () => {
    const first = volumeStatus(
      vol(),
      { observed: file(), imported: { sha256: 'ab', bytes: 5n, format: 'qcow2' }, usedBy: [] },
      T0,
    );
    expect(first.conditions?.map((c) => c.type)).toEqual([
      'Ready',
      'Imported',
      'Reconciling',
      'Stalled',
    ]);
    const again = volumeStatus(vol({}, first), { observed: file(), usedBy: [] }, T1);
    expect(again).toEqual(first);
  });
  it('keeps ResizeUnsupported while the file is smaller than asked, drops it once it is not', () => {
    const v = vol({ capacity: '20Gi' });
    const first = volumeStatus(
      v,
      {
        observed: file(),
        usedBy: [],
        resizeProblem: { reason: 'ResizeUnsupported', message: 'no' },
      },
      T0,
    );
    expect(first.conditions?.[1]).toMatchObject({
      type: 'Resized',
      status: 'False',
      reason: 'ResizeUnsupported',
      observedGeneration: 1,
    });
    expect(first.phase).toBe('Available');
    const kept = volumeStatus(
      vol({ capacity: '20Gi' }, first),
      { observed: file(), usedBy: [] },
      T1,
    );
    expect(kept).toEqual(first);
    const grown = volumeStatus(
      vol({ capacity: '20Gi' }, first),
      { observed: file({ capacity: 20n * GiB }), usedBy: [] },
      T1,
    );
    expect(grown.conditions?.map((c) => c.type)).toEqual(['Ready', 'Reconciling', 'Stalled']);
  });
  it.each<[string, string, string]>([
    ['a grow the host cannot do is Stalled (kstatus Failed)', 'ResizeUnsupported', 'Stalled'],
    ['a failed grow, retried, is Reconciling (kstatus InProgress)', 'ResizeFailed', 'Reconciling'],
  ])('%s while the file stays usable (Ready=True)', (_name, reason, progress) => {
    const status = volumeStatus(
      vol({ capacity: '20Gi' }),
      { observed: file(), usedBy: [], resizeProblem: { reason, message: 'growing failed' } },
      T0,
    );
    const of = (type: string) => status.conditions?.find((c) => c.type === type);
    expect(of('Ready')).toMatchObject({ status: 'True', reason: 'Available' });
    expect(of(progress)).toMatchObject({ status: 'True', reason, message: 'growing failed' });
    const other = progress === 'Stalled' ? 'Reconciling' : 'Stalled';
    expect(of(other)?.status).toBe('False');
  });
  it('says when spec.capacity is below the file (a larger source): Stalled until it is not', () => {
    const small = vol({ capacity: '5Gi', source: { clone: { volume: 'base' } } });
    const first = volumeStatus(small, { observed: file(), usedBy: [] }, T0);
    const of = (s: typeof first, type: string) => s.conditions?.find((c) => c.type === type);
    expect(of(first, 'Ready')).toMatchObject({ status: 'True', reason: 'Available' });
    expect(of(first, 'Resized')).toMatchObject({ status: 'False', reason: 'ShrinkUnsupported' });
    expect(of(first, 'Resized')?.message).toContain(
      `spec.capacity (${5n * GiB} bytes) is below the volume's ${10n * GiB} bytes`,
    );
    expect(of(first, 'Stalled')).toMatchObject({ status: 'True', reason: 'ShrinkUnsupported' });
    const fixed = volumeStatus(
      vol({ capacity: '10Gi', source: { clone: { volume: 'base' } } }, first, 2),
      { observed: file(), usedBy: [] },
      T1,
    );
    expect(of(fixed, 'Resized')).toBeUndefined();
    expect(of(fixed, 'Stalled')?.status).toBe('False');
  });
  it('a file smaller than spec.capacity that no grow was tried on yet is not Available', () => {
    // An import's upload pass: the image is in, the grow comes in the next pass. A copy or
    // overlay of the Volume made on an Available status now would get the image's size.
    const imported = vol({
      capacity: '30M',
      format: 'raw',
      source: { http: { url: 'http://x/y', sha256: 'a'.repeat(64) } },
    });
    const facts = {
      observed: file({ capacity: 20n * 2n ** 20n, format: 'raw' as const }),
      usedBy: [],
      imported: { sha256: 'a'.repeat(64), bytes: 20n * 2n ** 20n, format: 'raw' },
    };
    const status = volumeStatus(imported, facts, T0);
    const of = (type: string) => status.conditions?.find((c) => c.type === type);
    expect(status.phase).toBe('Pending');
    expect(of('Ready')).toMatchObject({ status: 'False', reason: 'Resizing' });
    expect(of('Reconciling')).toMatchObject({ status: 'True', reason: 'Resizing' });
    expect(of('Imported')?.status).toBe('True');
    // Once a grow was tried and failed, Resized says so and the file stays usable.
    const failed = volumeStatus(
      imported,
      { ...facts, resizeProblem: { reason: 'ResizeFailed', message: 'no space' } },
      T0,
    );
    expect(failed.phase).toBe('Available');
  });
  it('a qcow2 file libvirt rounded up to whole KiB is the size asked for, not a shrink', () => {
    const status = volumeStatus(
      vol({ capacity: '100M' }),
      { observed: file({ capacity: 100_000_768n }), usedBy: [] },
      T0,
    );
    const of = (type: string) => status.conditions?.find((c) => c.type === type);
    expect(of('Ready')).toMatchObject({ status: 'True', reason: 'Available' });
    expect(of('Resized')).toBeUndefined();
    expect(of('Stalled')?.status).toBe('False');
  });
  it('says deletion is blocked and by whom', () => {
    const status = volumeStatus(
      vol(),
      { observed: file(), usedBy: usedByList(['web'], []), deletionBlocked: true },
      T0,
    );
    expect(status.conditions?.find((c) => c.type === 'DeletionBlocked')).toMatchObject({
      status: 'True',
      reason: 'InUse',
      message: expect.stringContaining('VirtualMachine web'),
    });
  });
});

describe('lostBaseProblem', () => {
  it('keeps a lost base file from being made blank under overlays that have files', () => {
    expect(lostBaseProblem('/p/apps_base', ['l1', 'l2'])).toMatchObject({
      reason: 'BaseFileMissing',
      message: expect.stringContaining('Volumes l1, l2 are overlays on it'),
    });
  });
  it('lets a Volume without overlays, or one that never had a file, make its file', () => {
    expect(lostBaseProblem('/p/apps_base', [])).toBeUndefined();
    expect(lostBaseProblem(undefined, ['l1'])).toBeUndefined();
  });
});

describe('lostBaseOfOverlay', () => {
  const ready = (status: 'True' | 'False', reason: string): Condition => ({
    type: 'Ready',
    status,
    reason,
    message: '',
    lastTransitionTime: T0.toISOString(),
  });
  const baseVol = (status: Volume['status']) => {
    const b = vol({}, status);
    b.metadata.name = 'base';
    return b;
  };
  const overlay = '/srv/images/apps_data';
  it("is the base's own word, from its status: its file gone, or its own base's", () => {
    // The base's file gone (BaseFileMissing and no file observed, so no capacity).
    const gone = baseVol({
      path: '/srv/images/apps_base',
      conditions: [ready('False', 'BaseFileMissing')],
    });
    expect(lostBaseOfOverlay(overlay, 'base', gone)).toMatchObject({
      reason: 'BaseFileMissing',
      message: expect.stringMatching(
        /overlay on \/srv\/images\/apps_base, the file of base Volume base, which is gone/,
      ),
    });
    // The base is an overlay whose own base file is gone: its file is there, unusable.
    const deeper = baseVol({
      path: '/srv/images/apps_base',
      capacity: '2Gi',
      conditions: [ready('False', 'BaseFileMissing')],
    });
    expect(lostBaseOfOverlay(overlay, 'base', deeper)?.message).toContain(
      'which is an overlay itself whose base file is gone',
    );
  });
  it('leaves an overlay on a usable base, on a base not ready for another reason, or unknown', () => {
    const ok = baseVol({ path: '/srv/images/apps_base', conditions: [ready('True', 'Available')] });
    expect(lostBaseOfOverlay(overlay, 'base', ok)).toBeUndefined();
    const other = baseVol({ conditions: [ready('False', 'PoolNotReady')] });
    expect(lostBaseOfOverlay(overlay, 'base', other)).toBeUndefined();
    expect(lostBaseOfOverlay(overlay, 'base', undefined)).toBeUndefined();
  });
});
