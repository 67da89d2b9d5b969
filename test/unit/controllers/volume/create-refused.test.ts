// How libvirt's refusals to make or grow a volume file are classified: what no retry fixes
// (a size beyond the file system's largest file, a qcow2 v2 image with internal snapshots) is
// Stalled; a full file system is retried and says so with the numbers. The error texts are
// libvirtd 9.0's and qemu-img 7.2's, measured on this project's machines.
import { describe, expect, it } from 'vitest';
import { isStalledReason } from '../../../../src/api/conditions.js';
import { applyVolumeSteps, largestFile } from '../../../../src/controllers/volume/act.js';
import { qcow2Layers } from '../../../../src/controllers/volume/import.js';
import type { ReadyPool } from '../../../../src/controllers/volume/observe.js';
import { layersProblem } from '../../../../src/controllers/volume/plan.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';
import type { StorageVol } from '../../../../src/libvirt/storage.js';

const DIR = '/srv/lvo-pool-missing';
const FILE = `${DIR}/apps_disk`;
const POOL_XML = `<pool type='dir'><name>pool</name><uuid>6a3b0e5e-1c1f-4d55-9d6e-4b1f3c2a9e01</uuid><target><path>${DIR}</path></target></pool>`;
const internal = (message: string) => new LibvirtError(message, { code: 1, domain: 18, level: 2 });
const system = (message: string) => new LibvirtError(message, { code: 38, domain: 18, level: 2 });

/** A pool whose creates fail with `err`; it reports `available` bytes once refreshed. */
const pool = (err: unknown, available = 0n) => {
  let refreshed = false;
  return {
    name: 'pool',
    handle: {
      createVolumeXML: () => Promise.reject(err),
      getXMLDesc: () => Promise.resolve(POOL_XML),
      refresh: () => {
        refreshed = true;
        return Promise.resolve();
      },
      // libvirt's figure before a refresh still counts what the failed create began.
      getInfo: () =>
        Promise.resolve({
          state: 2,
          capacity: 0n,
          allocation: 0n,
          available: refreshed ? available : 0n,
        }),
    },
    locks: new Map(),
  } as unknown as ReadyPool;
};

/** A volume file whose grow fails with `err`. */
const file = (err: unknown) =>
  ({
    resize: () => Promise.reject(err),
    getPath: () => Promise.resolve(FILE),
  }) as unknown as StorageVol;

const TIB64 = 64n * 2n ** 40n;

describe('largestFile', () => {
  it('is (2^32 - 1) blocks on ext4, as measured with truncate on 4 KiB blocks', () => {
    expect(largestFile(0xef53, 4096)).toBe(17592186040320n);
    expect(largestFile(0xef53, 1024)).toBe(4398046510080n);
  });
  it('is unknown for file systems that take files beyond 64Ti (xfs, tmpfs)', () => {
    expect(largestFile(0x58465342, 4096)).toBeUndefined();
    expect(largestFile(0x01021994, 4096)).toBeUndefined();
  });
});

describe('a create', () => {
  it('beyond the largest file the file system takes is CapacityTooLarge, Stalled', async () => {
    const err = system(`cannot extend file '${FILE}': File too large`);
    const doc = { name: 'apps_disk', capacity: TIB64, format: 'raw' as const };
    const outcome = await applyVolumeSteps(pool(err), undefined, undefined, [
      { op: 'create', doc },
    ]);
    expect(outcome.problem?.reason).toBe('CapacityTooLarge');
    expect(isStalledReason('CapacityTooLarge')).toBe(true);
    expect(outcome.problem?.message).toContain(`spec.capacity (${TIB64} bytes)`);
    expect(outcome.problem?.message).toContain(`pool pool's directory ${DIR}`);
    expect(outcome.problem?.message).toContain('File too large');
  });

  it('into a full file system is CreateFailed (retried) naming the pool, free and asked bytes', async () => {
    const err = system(`cannot allocate 10485760 bytes in file '${FILE}': No space left on device`);
    const doc = { name: 'apps_disk', capacity: 10485760n, format: 'raw' as const };
    const outcome = await applyVolumeSteps(pool(err, 651264n), undefined, undefined, [
      { op: 'create', doc },
    ]);
    expect(outcome.problem?.reason).toBe('CreateFailed');
    expect(isStalledReason('CreateFailed')).toBe(false);
    expect(outcome.problem?.message).toMatch(/^pool pool is full on this node/);
    expect(outcome.problem?.message).toContain('libvirt reports 651264 bytes available');
    expect(outcome.problem?.message).toContain('10485760 bytes (spec.capacity');
    expect(outcome.problem?.message).toContain(`free space in ${DIR}`);
  });

  it("qemu-img's ENOSPC for a qcow2 image is the same full pool", async () => {
    const err = internal(
      `internal error: Child process (/usr/bin/qemu-img create -f qcow2 -o compat=1.1 ${FILE} ` +
        `68719476736K) unexpected exit status 1: qemu-img: ${FILE}: Could not resize image: ` +
        `Failed to grow the L1 table: No space left on device`,
    );
    const doc = { name: 'apps_disk', capacity: TIB64, format: 'qcow2' as const };
    const outcome = await applyVolumeSteps(pool(err, 4096n), undefined, undefined, [
      { op: 'create', doc },
    ]);
    expect(outcome.problem?.reason).toBe('CreateFailed');
    expect(outcome.problem?.message).toContain('pool pool is full');
  });
});

describe('a grow', () => {
  it('of a qcow2 v2 image holding snapshots is ResizeRefused (Stalled), saying what to do', async () => {
    const err = internal(
      `internal error: Child process (/usr/bin/qemu-img resize ${FILE} 20971520) unexpected ` +
        `exit status 1: qemu-img: Can't resize a v2 image which has snapshots\n`,
    );
    const outcome = await applyVolumeSteps(pool(undefined), file(err), undefined, [
      { op: 'resize', capacity: 20971520n },
    ]);
    expect(outcome.problem).toBeUndefined();
    expect(outcome.resizeProblem?.reason).toBe('ResizeRefused');
    expect(isStalledReason('ResizeRefused')).toBe(true);
    const message = outcome.resizeProblem?.message ?? '';
    expect(message).toContain('qcow2 version 2 (compat 0.10) image holding internal snapshots');
    expect(message).toContain('the file is unchanged');
    expect(message).toContain(`qemu-img amend -f qcow2 -o compat=1.1 ${FILE}`);
  });

  it('of a raw file beyond the largest file is ResizeUnsupported naming spec.capacity', async () => {
    const err = system(`Failed to truncate file '${FILE}': File too large`);
    const outcome = await applyVolumeSteps(pool(undefined), file(err), undefined, [
      { op: 'resize', capacity: TIB64 },
    ]);
    expect(outcome.resizeProblem?.reason).toBe('ResizeUnsupported');
    expect(outcome.resizeProblem?.message).toContain(`spec.capacity (${TIB64} bytes)`);
  });
});

describe('a qcow2 file replaced on the host', () => {
  const header = (backing?: string, dataFile = false) => {
    const head = Buffer.alloc(512);
    head.writeUInt32BE(0x514649fb, 0);
    head.writeUInt32BE(3, 4);
    if (backing) {
      head.writeBigUInt64BE(400n, 8);
      head.writeUInt32BE(backing.length, 16);
      head.write(backing, 400);
    }
    if (dataFile) head.writeBigUInt64BE(1n << 2n, 72);
    return head;
  };

  it('qcow2Layers reads where the backing name is and the data-file bit', () => {
    expect(qcow2Layers(header())).toEqual({ dataFile: false });
    expect(qcow2Layers(header('/etc/shadow'))).toEqual({
      backingFile: { offset: 400, length: 11 },
      dataFile: false,
    });
    expect(qcow2Layers(header(undefined, true))).toEqual({ dataFile: true });
    expect(qcow2Layers(Buffer.alloc(512))).toBeUndefined();
  });

  it('names a backing file a blank, copied or imported Volume was not made with', () => {
    const layers = { backingFile: '/etc/shadow', dataFile: false };
    for (const kind of ['blank', 'clone', 'http'] as const) {
      expect(layersProblem(FILE, kind, layers, undefined)).toMatchObject({
        reason: 'InvalidImage',
        message: expect.stringContaining(`${FILE} names the backing file /etc/shadow`),
      });
    }
    expect(layersProblem(FILE, 'blank', { dataFile: false }, undefined)).toBeUndefined();
    expect(layersProblem(FILE, 'blank', undefined, undefined)).toBeUndefined();
  });

  it("accepts an overlay's own base, refuses another one and any data file", () => {
    const base = `${DIR}/apps_base`;
    const on = (backingFile: string) => ({ backingFile, dataFile: false });
    expect(layersProblem(FILE, 'backingVolume', on(base), base)).toBeUndefined();
    expect(layersProblem(FILE, 'backingVolume', on('/etc/shadow'), base)?.message).toContain(
      `not its backingVolume's file ${base}`,
    );
    expect(layersProblem(FILE, 'clone', { dataFile: true }, undefined)?.reason).toBe(
      'InvalidImage',
    );
  });
});
