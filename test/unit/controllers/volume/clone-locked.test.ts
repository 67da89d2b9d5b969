import { describe, expect, it } from 'vitest';
import { applyVolumeSteps } from '../../../../src/controllers/volume/act.js';
import type { ReadyPool } from '../../../../src/controllers/volume/observe.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';
import type { StorageVol } from '../../../../src/libvirt/storage.js';

const SRC = '/var/lib/libvirt-operator/pool/apps_src';
const DST = '/var/lib/libvirt-operator/pool/apps_dst';

// What libvirtd 9.0 answers to virStorageVolCreateXMLFrom when a running domain has the
// source open (seen on qemu:///system).
const locked = new LibvirtError(
  `internal error: Child process (/usr/bin/qemu-img convert -f qcow2 -O qcow2 -o compat=0.10 ${SRC} ${DST}) unexpected exit status 1: qemu-img: Could not open '${SRC}': Failed to get shared "write" lock\nIs another process using the image [${SRC}]?\n`,
  { code: 1, domain: 0, level: 2 },
);

const poolFailing = (err: unknown) =>
  ({
    name: 'pool',
    handle: { createVolumeXMLFrom: () => Promise.reject(err) },
    locks: new Map(),
  }) as unknown as ReadyPool;
const source = {} as StorageVol;
const clone = [
  {
    op: 'clone' as const,
    doc: { name: 'apps_dst', capacity: 2n ** 20n, format: 'qcow2' as const },
  },
];

describe('copying a Volume whose file another process has open', () => {
  it('is SourceInUse (waited for), not CreateFailed', async () => {
    const outcome = await applyVolumeSteps(poolFailing(locked), undefined, source, clone);
    expect(outcome.problem).toMatchObject({
      reason: 'SourceInUse',
      message: expect.stringContaining('open for writing by another process'),
    });
  });

  it('any other failure of the copy is still CreateFailed', async () => {
    const full = new LibvirtError('no space left on device', { code: 1, domain: 18, level: 2 });
    const outcome = await applyVolumeSteps(poolFailing(full), undefined, source, clone);
    expect(outcome.problem?.reason).toBe('CreateFailed');
  });
});
