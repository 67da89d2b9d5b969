// Domain snapshots through the binding on the real libvirtd with QEMU, against libvirt's own
// Python binding: the same call sequence on two domains of the same shape (a qcow2 disk each;
// internal snapshots live in it), and a checkpoint of a running domain: create, revert, delete.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import { Connect, ErrorCode, LibvirtError, type Domain } from '../../../src/libvirt/index.js';
import { buildSnapshotXML, parseSnapshotXML } from '../../../src/libvirt/xml/snapshot.js';
import { bindingSequence, pythonSequence } from '../../integration/libvirt/snapshot-sequence.js';
import { uniqueName } from './fixtures.js';

const run = promisify(execFile);
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });

let daemon: LibvirtDaemon;
let conn: Connect;
let dir: string;
const domains: Domain[] = [];

/** A TCG domain idling in its firmware, with one qcow2 disk of its own. */
async function qcow2DomainXML(name: string): Promise<string> {
  const disk = path.join(dir, `${name}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
  return builder.build({
    domain: {
      '@_type': 'qemu',
      name,
      uuid: randomUUID(),
      memory: { '@_unit': 'KiB', '#text': 65536 },
      vcpu: 1,
      os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
      devices: {
        disk: {
          '@_type': 'file',
          '@_device': 'disk',
          driver: { '@_name': 'qemu', '@_type': 'qcow2' },
          source: { '@_file': disk },
          target: { '@_dev': 'vda', '@_bus': 'virtio' },
        },
      },
    },
  }) as string;
}

beforeAll(async () => {
  daemon = await ensureLibvirtd();
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
  dir = await mkdtemp('/var/tmp/lvbt-snap-');
});

afterAll(async () => {
  for (const d of domains) {
    for (const s of await d.listAllSnapshots().catch(() => [])) await s.delete().catch(() => {});
    await d.destroy().catch(() => undefined);
    await d.undefine().catch(() => undefined);
  }
  await conn?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  await daemon?.stop();
});

describe('domain snapshots on a real libvirtd', () => {
  it('returns what libvirt-python returns, error codes included, call for call', async () => {
    const ours = await bindingSequence(conn, await qcow2DomainXML(uniqueName('seq')));
    const xml = await qcow2DomainXML(uniqueName('pyseq'));
    const theirs = await pythonSequence(daemon.uri, path.join(dir, 'py.xml'), xml);
    expect(ours).toEqual(theirs);
  });

  it('checkpoints a running domain and reverts to it; the guest agent freeze fails fast', async () => {
    const name = uniqueName('run');
    const d = await conn.createDomainXML(await qcow2DomainXML(name));
    domains.push(d);
    // No guest agent channel: libvirt says so at once instead of waiting for an answer.
    const freeze = await d.fsFreeze(null, 0, { timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(freeze).toBeInstanceOf(LibvirtError);
    expect((freeze as LibvirtError).code).toBe(ErrorCode.VIR_ERR_ARGUMENT_UNSUPPORTED);
    const snap = await d.createSnapshotXML(
      buildSnapshotXML({
        name: 'cp',
        memory: 'internal',
        disks: [{ name: 'vda', snapshot: 'internal' }],
      }),
    );
    const doc = parseSnapshotXML(await snap.getXMLDesc());
    expect(doc).toMatchObject({ name: 'cp', state: 'running', memory: 'internal' });
    // The file is the one the domain had when the snapshot was taken (libvirt's record).
    const source = path.join(dir, `${name}.qcow2`);
    expect(doc.disks).toEqual([{ name: 'vda', snapshot: 'internal', source }]);
    await d.suspend();
    await snap.revert();
    expect((await d.getState()).stateName).toBe('running');
    // libvirt 9.0 takes internal snapshots of a running domain only with its memory.
    const diskOnly = await d
      .createSnapshotXML(
        buildSnapshotXML({
          name: 'disk',
          memory: 'no',
          disks: [{ name: 'vda', snapshot: 'internal' }],
        }),
        16,
      )
      .catch((e: unknown) => e);
    expect((diskOnly as LibvirtError).code).toBe(ErrorCode.VIR_ERR_CONFIG_UNSUPPORTED);
    await snap.delete();
    expect(await d.numOfSnapshots()).toBe(0);
  });
});
