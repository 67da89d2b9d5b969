import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoragePool } from '../../../../src/api/generated/types.js';
import { desiredPool } from '../../../../src/controllers/storage-pool/desired.js';
import {
  forbiddenTarget,
  otherPoolDirs,
  type ObservedPool,
} from '../../../../src/controllers/storage-pool/observe.js';
import { pathOverlap, planPool } from '../../../../src/controllers/storage-pool/plan.js';
import {
  notMounted,
  notSelectedStatus,
  overlapProblem,
  poolNodeStatus,
  removedMessage,
} from '../../../../src/controllers/storage-pool/status.js';
import { bytesQuantity, floorMiB, parseQuantity } from '../../../../src/api/quantity.js';
import { newProblem, retryDelay } from '../../../../src/controllers/kit.js';
import {
  forgetFigures,
  steadyFigure,
  type ShownFigures,
} from '../../../../src/controllers/shared/figures.js';
import { isStalledReason, type Condition } from '../../../../src/api/conditions.js';
import { applyPoolSteps } from '../../../../src/controllers/storage-pool/act.js';
import type { Connect } from '../../../../src/libvirt/connection.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';
import type { StoragePool as LibvirtPool } from '../../../../src/libvirt/storage.js';

const UID = '6f1c1d9e-1b7e-4c56-9a53-0d2f5e1a7b11';
const pool = (over: Partial<StoragePool> = {}): StoragePool => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'StoragePool',
  metadata: { name: 'images', uid: UID, generation: 3 },
  spec: { type: 'dir', path: '/srv/images', autostart: true },
  ...over,
});
const ours = (over: Partial<Extract<ObservedPool, { found: 'ours' }>> = {}): ObservedPool => ({
  found: 'ours',
  handle: undefined as never,
  doc: desiredPool(pool()),
  active: true,
  persistent: true,
  autostart: true,
  figures: {
    state: 'running',
    capacity: 100n * 2n ** 30n,
    allocation: 3n * 2n ** 20n + 17n,
    available: 99n * 2n ** 30n,
  },
  ...over,
});
const T0 = new Date('2026-01-01T00:00:00Z');
const T1 = new Date('2026-01-01T00:10:00Z');

describe('desiredPool', () => {
  it('is a dir pool named like the object, with the uid as UUID and the spec path', () => {
    expect(desiredPool(pool())).toEqual({
      type: 'dir',
      name: 'images',
      uuid: UID,
      target: { path: '/srv/images' },
    });
  });
  it('fails naming the field when the object has no uid', () => {
    expect(() => desiredPool(pool({ metadata: { name: 'x' } }))).toThrow(/uid/);
  });
});

describe('planPool', () => {
  const desired = desiredPool(pool());
  it('creates a missing pool: define, build, start, autostart', () => {
    expect(planPool(desired, { found: 'none' }, true).map((s) => s.op)).toEqual([
      'define',
      'build',
      'start',
      'autostart',
    ]);
    expect(planPool(desired, { found: 'none' }, false).map((s) => s.op)).toEqual([
      'define',
      'build',
      'start',
    ]);
  });
  it('never touches a pool that holds our name under another UUID', () => {
    expect(
      planPool(desired, { found: 'clash', uuid: 'dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566' }, true),
    ).toEqual([]);
  });
  it('does nothing for a converged pool, whatever its capacity figures', () => {
    expect(planPool(desired, ours(), true)).toEqual([]);
    expect(
      planPool(
        desired,
        ours({ figures: { state: 'running', capacity: 1n, allocation: 1n, available: 0n } }),
        true,
      ),
    ).toEqual([]);
  });
  it('ignores permissions libvirt reports but we never set', () => {
    const observed = ours({
      doc: {
        ...desiredPool(pool()),
        target: { path: '/srv/images', permissions: { mode: 0o755, owner: 0, group: 0 } },
      },
    });
    expect(planPool(desired, observed, true)).toEqual([]);
  });
  it('restarts a stopped pool (build is idempotent for dir pools)', () => {
    expect(planPool(desired, ours({ active: false }), true).map((s) => s.op)).toEqual([
      'build',
      'start',
    ]);
  });
  it('fixes autostart in both directions', () => {
    expect(planPool(desired, ours({ autostart: false }), true)).toEqual([
      { op: 'autostart', value: true },
    ]);
    expect(planPool(desired, ours(), false)).toEqual([{ op: 'autostart', value: false }]);
  });
  it('redefines when an owned field drifted, naming it', () => {
    const observed = ours({ doc: { ...desiredPool(pool()), target: { path: '/elsewhere' } } });
    expect(planPool(desired, observed, true)).toEqual([
      { op: 'define', doc: desired, changed: ['path'] },
    ]);
  });
  it('makes a transient pool with our UUID persistent', () => {
    expect(planPool(desired, ours({ persistent: false }), true)).toEqual([
      { op: 'define', doc: desired, changed: [] },
    ]);
  });
});

describe('applyPoolSteps', () => {
  // What libvirtd 9.0 answers when a file stands at spec.path, or at one of its parents.
  const systemError = (message: string) =>
    new LibvirtError(message, { code: 38, domain: 18, level: 2 });
  it.each<[string, 'build' | 'start', string]>([
    ['at the path', 'start', "cannot open directory '/srv/images': Not a directory"],
    ['at a parent', 'build', "cannot create path '/srv': Not a directory"],
  ])('a file %s is PathNotDirectory (Stalled), naming spec.path', async (_n, op, message) => {
    const handle = {
      build: () => (op === 'build' ? Promise.reject(systemError(message)) : Promise.resolve()),
      create: () => Promise.reject(systemError(message)),
    } as unknown as LibvirtPool;
    const outcome = await applyPoolSteps({} as Connect, handle, [{ op: 'build' }, { op: 'start' }]);
    expect(outcome.problem?.reason).toBe('PathNotDirectory');
    expect(outcome.problem?.message).toContain(
      `spec.path is not a directory on this node (${message})`,
    );
    expect(isStalledReason('PathNotDirectory')).toBe(true);
  });
});

describe('otherPoolDirs (the directories a removal keeps)', () => {
  const listed = (uuid: string, xml: () => Promise<string>) =>
    ({ getUUIDString: () => uuid, getXMLDesc: xml }) as unknown as LibvirtPool;
  const poolXML = (path: string) =>
    `<pool type='dir'><name>p</name><uuid>6f1c1d9e-1b7e-4c56-9a53-0d2f5e1a7b11</uuid><target><path>${path}</path></target></pool>`;
  it('skips a pool removed between the list and the read (pools are deleted in parallel)', async () => {
    const gone = new LibvirtError('Storage pool not found', { code: 49, domain: 18, level: 2 });
    const conn = {
      listAllStoragePools: async () => [
        listed('ours', async () => poolXML('/srv/ours')),
        listed('other', async () => poolXML('/srv/other')),
        listed('removed', () => Promise.reject(gone)),
      ],
    } as unknown as Connect;
    expect([...(await otherPoolDirs(conn, 'ours'))]).toEqual(['/srv/other']);
  });
});

describe('forbiddenTarget (spec.path as the host resolves it)', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lvo-pool-path-'));
    await symlink('/etc', join(dir, 'to-etc'));
    await symlink(dir, join(dir, 'to-self'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it.each<[string, string, string | undefined]>([
    ['a link into /etc', 'to-etc', '/etc'],
    ['a missing directory below a link into /etc', 'to-etc/pool/images', '/etc/pool/images'],
    ['a link elsewhere', 'to-self/pool', undefined],
    ['a plain missing path', 'pool', undefined],
  ])('%s', async (_name, path, forbidden) => {
    expect(await forbiddenTarget(join(dir, path))).toBe(forbidden);
  });

  it('a path that exists nowhere up to / is judged as written', async () => {
    expect(await forbiddenTarget('/nonexistent-lvo/pool')).toBeUndefined();
  });
});

describe('bytesQuantity', () => {
  const cases: Array<[bigint, string]> = [
    [0n, '0'],
    [1n, '1'],
    [1023n, '1023'],
    [1024n, '1Ki'],
    [1536n * 1024n * 1024n, '1536Mi'],
    [100n * 2n ** 30n, '100Gi'],
    [2n ** 40n, '1Ti'],
    [2n ** 60n * 3n, '3Ei'],
    [2n ** 70n, '1024Ei'],
    [4097n, '4097'],
  ];
  it.each(cases)('%s bytes -> %s, which parses back to the same bytes', (bytes, text) => {
    expect(bytesQuantity(bytes)).toBe(text);
    expect(parseQuantity(text) === bytes || bytes > 2n ** 63n).toBe(true);
  });
  it('refuses a negative count', () => {
    expect(() => bytesQuantity(-1n)).toThrow(/negative/);
  });
  it('floorMiB rounds down to whole MiB', () => {
    expect(floorMiB(3n * 2n ** 20n + 17n)).toBe(3n * 2n ** 20n);
    expect(floorMiB(2n ** 20n - 1n)).toBe(0n);
  });
});

describe('poolNodeStatus', () => {
  it('reports state and MiB-rounded figures with Ready True', () => {
    const entry = poolNodeStatus(pool(), 'n1', { observed: ours() }, T0);
    expect(entry).toEqual({
      nodeName: 'n1',
      observedGeneration: 3,
      state: 'running',
      capacity: '100Gi',
      allocation: '3Mi',
      available: '99Gi',
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Running',
          message: 'pool images is running at /srv/images',
          lastTransitionTime: '2026-01-01T00:00:00Z',
          observedGeneration: 3,
        },
      ],
    });
  });
  it('is identical on the next pass (no status write for a converged pool)', () => {
    const first = poolNodeStatus(pool(), 'n1', { observed: ours() }, T0);
    const again = poolNodeStatus(
      pool({ status: { nodes: [first] } }),
      'n1',
      { observed: ours() },
      T1,
    );
    expect(again).toEqual(first);
  });
  it('does not change when a few KiB were written', () => {
    const first = poolNodeStatus(pool(), 'n1', { observed: ours() }, T0);
    const grown = ours({
      figures: {
        state: 'running',
        capacity: 100n * 2n ** 30n,
        allocation: 3n * 2n ** 20n + 9000n,
        available: 99n * 2n ** 30n,
      },
    });
    expect(
      poolNodeStatus(pool({ status: { nodes: [first] } }), 'n1', { observed: grown }, T1),
    ).toEqual(first);
  });
  it('reports a name clash without figures, naming the foreign UUID', () => {
    const entry = poolNodeStatus(pool(), 'n1', { observed: { found: 'clash', uuid: 'aaaa' } }, T0);
    expect(entry.state).toBeUndefined();
    expect(entry.conditions?.[0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason: 'NameConflict',
    });
    expect(entry.conditions?.[0]?.message).toContain('aaaa');
  });
  it('reports a host problem over the observation', () => {
    const entry = poolNodeStatus(
      pool(),
      'n1',
      { observed: { found: 'none' }, problem: { reason: 'PathConflict', message: 'used by p1' } },
      T0,
    );
    expect(entry.conditions?.[0]).toMatchObject({
      status: 'False',
      reason: 'PathConflict',
      message: 'used by p1',
    });
  });
  it('keeps lastTransitionTime while the status holds and moves it on a change', () => {
    const first = poolNodeStatus(
      pool(),
      'n1',
      {
        observed: ours({
          active: false,
          figures: { state: 'inactive', capacity: 0n, allocation: 0n, available: 0n },
        }),
      },
      T0,
    );
    const later = poolNodeStatus(
      pool({ status: { nodes: [first] } }),
      'n1',
      { observed: ours() },
      T1,
    );
    // A stopped pool has no figures (libvirt keeps its last, stale ones): none shown.
    expect(first).not.toHaveProperty('capacity');
    expect(first).not.toHaveProperty('available');
    expect(later).toHaveProperty('capacity');
    expect(first.conditions?.[0]).toMatchObject({
      status: 'False',
      reason: 'Inactive',
      lastTransitionTime: '2026-01-01T00:00:00Z',
    });
    expect(later.conditions?.[0]).toMatchObject({
      status: 'True',
      lastTransitionTime: '2026-01-01T00:10:00Z',
    });
  });
  it('adds DeletionBlocked listing the Volumes, and drops it when none remain', () => {
    const blocked = poolNodeStatus(
      pool(),
      'n1',
      { observed: ours(), blockedBy: ['b/v2', 'a/v1'] },
      T0,
    );
    expect(blocked.conditions?.[1]).toMatchObject({
      type: 'DeletionBlocked',
      status: 'True',
      reason: 'VolumesRemain',
    });
    expect(blocked.conditions?.[1]?.message).toContain('a/v1, b/v2');
    const free = poolNodeStatus(
      pool({ status: { nodes: [blocked] } }),
      'n1',
      { observed: ours() },
      T1,
    );
    expect(free.conditions?.map((c) => c.type)).toEqual(['Ready']);
  });
  it('leaves other nodes and unknown condition types out', () => {
    const other = {
      nodeName: 'n2',
      conditions: [
        { type: 'Foo', status: 'True' as const, reason: 'X', message: '', lastTransitionTime: 'x' },
      ],
    };
    const entry = poolNodeStatus(
      pool({ status: { nodes: [other] } }),
      'n1',
      { observed: ours() },
      T0,
    );
    expect(entry.nodeName).toBe('n1');
    expect(entry.conditions?.map((c) => c.type)).toEqual(['Ready']);
  });
});

describe('notSelectedStatus', () => {
  it('says the node is not selected, with no figures', () => {
    const entry = notSelectedStatus(pool(), 'n1', [], T0);
    expect(entry).toEqual({
      nodeName: 'n1',
      observedGeneration: 3,
      conditions: [
        expect.objectContaining({ type: 'Ready', status: 'False', reason: 'NodeNotSelected' }),
      ],
    });
  });
  it('says the pool stays while Volumes remain', () => {
    const entry = notSelectedStatus(pool(), 'n1', ['ns/v'], T0);
    expect(entry.conditions?.map((c) => c.type)).toEqual(['Ready', 'DeletionBlocked']);
    expect(entry.conditions?.[0]?.message).toContain('stays');
  });
});

describe('retryDelay', () => {
  const cond = (status: Condition['status'], at: string): Condition => ({
    type: 'Ready',
    status,
    reason: 'X',
    message: '',
    lastTransitionTime: at,
  });
  it('retries a fresh problem after 5 s', () => {
    expect(retryDelay(undefined, T1)).toBe(5_000);
    expect(retryDelay(cond('False', '2026-01-01T00:09:59Z'), T1)).toBe(5_000);
  });
  it('waits as long as the problem has lasted, doubling each retry', () => {
    expect(retryDelay(cond('False', '2026-01-01T00:09:30Z'), T1)).toBe(30_000);
  });
  it('caps the wait at 5 minutes', () => {
    expect(retryDelay(cond('False', '2026-01-01T00:00:00Z'), T1)).toBe(300_000);
  });
  it('treats an unreadable time as fresh', () => {
    expect(retryDelay(cond('False', 'garbage'), T1)).toBe(5_000);
  });
  it("starts from the agent's retryMinMs when it is given one", () => {
    expect(retryDelay(undefined, T1, 1_000)).toBe(1_000);
    expect(retryDelay(cond('False', '2026-01-01T00:09:58Z'), T1, 1_000)).toBe(2_000);
    expect(retryDelay(cond('False', '2026-01-01T00:00:00Z'), T1, 1_000)).toBe(300_000);
  });
});

describe('newProblem', () => {
  const c = (status: Condition['status'], reason: string): Condition[] => [
    { type: 'Ready', status, reason, message: 'm', lastTransitionTime: 't' },
  ];
  it('reports a condition that turned False, or False for another reason', () => {
    expect(newProblem(undefined, c('False', 'A'), 'Ready')?.reason).toBe('A');
    expect(newProblem(c('True', 'Ok'), c('False', 'A'), 'Ready')?.reason).toBe('A');
    expect(newProblem(c('False', 'A'), c('False', 'B'), 'Ready')?.reason).toBe('B');
  });
  it('stays quiet while the same problem lasts, or when things are fine', () => {
    expect(newProblem(c('False', 'A'), c('False', 'A'), 'Ready')).toBeUndefined();
    expect(newProblem(c('False', 'A'), c('True', 'Ok'), 'Ready')).toBeUndefined();
  });
});

describe('steadyFigure', () => {
  const shown: ShownFigures = new Map();
  it('shows a moving figure fresh at most once per interval', () => {
    const key = `test/${Math.random()}`;
    expect(steadyFigure(shown, key, 1n, 1_000, 60_000)).toBe(1n);
    expect(steadyFigure(shown, key, 2n, 60_999, 60_000)).toBe(1n);
    expect(steadyFigure(shown, key, 3n, 61_000, 60_000)).toBe(3n);
  });
  it('refreshes when the clock went backwards, and after forgetting', () => {
    const key = `test/${Math.random()}`;
    steadyFigure(shown, key, 1n, 10_000);
    expect(steadyFigure(shown, key, 2n, 5_000)).toBe(2n);
    forgetFigures(shown, key);
    expect(steadyFigure(shown, key, 4n, 5_001)).toBe(4n);
  });
});

describe('removedMessage (the PoolRemoved Event)', () => {
  const path = '/srv/a/pool';
  it('says what became of spec.path and names the parents removed', () => {
    expect(removedMessage('n1', path, { directory: 'removed' }, ['/srv/a'])).toBe(
      'pool removed from node n1; directory /srv/a/pool removed; ' +
        'removed the parent directories its build had made: /srv/a',
    );
    expect(
      removedMessage('n1', path, { directory: 'kept', detail: 'Directory not empty' }, []),
    ).toBe('pool removed from node n1; directory /srv/a/pool kept: Directory not empty');
    expect(removedMessage('n1', path, { directory: 'preexisting' }, [])).toContain(
      'kept: it existed before the pool',
    );
    expect(removedMessage('n1', path, { directory: 'absent' }, [])).toContain(
      'there was no directory /srv/a/pool to remove',
    );
  });
  it('never calls a file a kept directory', () => {
    const message = removedMessage('n1', '/var/lib/dpkg/status', { directory: 'notDirectory' }, []);
    expect(message).toBe(
      'pool removed from node n1; /var/lib/dpkg/status is not a directory ' +
        '(a file stands there or at a parent): left untouched',
    );
  });
  it('says only the removal when no pool was there to remove', () => {
    expect(removedMessage('n1', path, undefined, [])).toBe('pool removed from node n1');
  });
});

describe('pathOverlap and overlapProblem (pools sharing or nesting directories)', () => {
  const others = [
    { name: 'a', path: '/srv/a' },
    { name: 'root-ish', path: '/data/pools' },
  ];
  it('finds the same directory, one inside another, and one around another', () => {
    expect(pathOverlap('/srv/a', others)).toMatchObject({ pool: { name: 'a' }, relation: 'same' });
    expect(pathOverlap('/srv/a/b', others)).toMatchObject({ relation: 'inside' });
    expect(pathOverlap('/data', others)).toMatchObject({
      pool: { name: 'root-ish' },
      relation: 'around',
    });
    expect(pathOverlap('/', others)?.relation).toBe('around');
  });
  it('does not confuse a shared name prefix with nesting', () => {
    expect(pathOverlap('/srv/ab', others)).toBeUndefined();
    expect(pathOverlap('/srv', [{ name: 'x', path: '/srvx' }])).toBeUndefined();
  });
  it('names the other pool, its directory, the link followed, and the way out', () => {
    const same = overlapProblem('/srv/link', '/srv/a', 'n1', {
      pool: { name: 'a', path: '/srv/a' },
      relation: 'same',
    });
    expect(same.reason).toBe('PathConflict');
    expect(same.message).toContain('spec.path /srv/link (which leads to /srv/a) on node n1');
    expect(same.message).toContain('libvirt pool a (directory /srv/a)');
    expect(same.message).toContain('spec.path is immutable');
    const nested = overlapProblem('/srv/a/b', '/srv/a/b', 'n1', {
      pool: { name: 'a', path: '/srv/a' },
      relation: 'inside',
    });
    expect(nested.reason).toBe('PathNested');
    expect(nested.message).not.toContain('leads to');
    expect(isStalledReason('PathNested')).toBe(true);
  });
});

describe('notMounted', () => {
  it('says how to get out: mount it, restart a pod whose view is frozen, or let the Volumes go', () => {
    const host = notMounted('/srv/data/pool', '/srv/data', 'n1', false);
    const pod = notMounted('/srv/data/pool', '/srv/data', 'n1', true);
    expect(host.reason).toBe('NotMounted');
    expect(host.message).toContain('mounted at /srv/data on node n1, which is not mounted now');
    expect(host.message).not.toContain('agent pod');
    expect(pod.message).toContain("restart this node's agent pod");
    for (const { message } of [host, pod])
      expect(message).toContain("set the pool's Volumes to deletionPolicy Retain");
  });
});
