import { describe, expect, it } from 'vitest';
import { applyVolumeSteps } from '../../../../src/controllers/volume/act.js';
import type { ReadyPool } from '../../../../src/controllers/volume/observe.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';

const DIR = '/srv/lvo-pool';
const BASE = '/srv/other-pool/base.qcow2';
const POOL_XML = `<pool type='dir'><name>pool</name><uuid>6a3b0e5e-1c1f-4d55-9d6e-4b1f3c2a9e01</uuid><target><path>${DIR}</path></target></pool>`;

const poolFailing = (err: unknown) =>
  ({
    name: 'pool',
    handle: {
      createVolumeXML: () => Promise.reject(err),
      getXMLDesc: () => Promise.resolve(POOL_XML),
    },
    locks: new Map(),
  }) as unknown as ReadyPool;

const doc = { name: 'apps_ov', capacity: 2n ** 30n, format: 'qcow2' as const };

describe("a create refused with 'Permission denied'", () => {
  it("of a plain file is PathForbidden, naming the pool's directory", async () => {
    const denied = new LibvirtError(`cannot create path '${DIR}/apps_ov': Permission denied`, {
      code: 38,
      domain: 18,
      level: 2,
    });
    const outcome = await applyVolumeSteps(poolFailing(denied), undefined, undefined, [
      { op: 'create', doc },
    ]);
    expect(outcome.problem?.reason).toBe('PathForbidden');
    expect(outcome.problem?.message).toContain(`pool pool's directory ${DIR}`);
  });

  it("of an overlay, about its backing file, is CreateFailed: the pool's directory is not blamed", async () => {
    // qemu-img opens the base Volume's file, which may be in another pool's directory: its
    // "Permission denied" says nothing of the directory the overlay is made in.
    const denied = new LibvirtError(
      `internal error: Child process (/usr/bin/qemu-img create -f qcow2 -b ${BASE} -F qcow2 ` +
        `${DIR}/apps_ov 1073741824) unexpected exit status 1: qemu-img: ${DIR}/apps_ov: Could ` +
        `not open backing file: Could not open '${BASE}': Permission denied\n`,
      { code: 1, domain: 18, level: 2 },
    );
    const overlay = { ...doc, backingStore: { path: BASE, format: 'qcow2' as const } };
    const outcome = await applyVolumeSteps(poolFailing(denied), undefined, undefined, [
      { op: 'create', doc: overlay },
    ]);
    expect(outcome.problem?.reason).toBe('CreateFailed');
    expect(outcome.problem?.message).toContain(`Could not open '${BASE}': Permission denied`);
    expect(outcome.problem?.message).not.toContain(DIR + ' on this node');
  });
});
