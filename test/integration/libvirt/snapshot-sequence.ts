// The binding's side of the snapshot comparison with libvirt's own Python binding: the same
// calls, in the same order, as test/fixtures/python/snapshot_sequence.py, recorded the same
// way ([step, result], a failure as {error: [code, domain]}). Shared by the integration test
// (test:///default) and the end-to-end one (the real libvirtd with QEMU).
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DomainSnapshotDeleteFlags,
  DomainSnapshotListFlags,
  LibvirtError,
  type Connect,
  type DomainSnapshot,
} from '../../../src/libvirt/index.js';
import { buildSnapshotXML } from '../../../src/libvirt/xml/snapshot.js';

export type Step = [string, unknown];

const PYTHON_SCRIPT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../fixtures/python/snapshot_sequence.py',
);

/** Runs the sequence through libvirt-python; fails saying what is missing if it cannot. */
export async function pythonSequence(uri: string, xmlFile: string, xml: string): Promise<Step[]> {
  await writeFile(xmlFile, xml);
  return new Promise((resolve, reject) => {
    execFile(
      '/usr/bin/python3',
      [PYTHON_SCRIPT, uri, xmlFile],
      { timeout: 60_000 },
      (err, out, e) => {
        if (err)
          reject(
            new Error(
              `libvirt-python reference run failed (needs Debian python3-libvirt for /usr/bin/python3): ${String(e) || err.message}`,
            ),
          );
        else resolve(JSON.parse(String(out)) as Step[]);
      },
    );
  });
}

export async function bindingSequence(conn: Connect, xml: string): Promise<Step[]> {
  const out: Step[] = [];
  const step = async (label: string, fn: () => Promise<unknown>) => {
    let value: unknown;
    try {
      value = await fn();
    } catch (err) {
      if (!(err instanceof LibvirtError)) throw err;
      value = { error: [err.code, err.domain] };
    }
    out.push([label, value === undefined ? 'ok' : value]);
  };
  const nameOf = (s: DomainSnapshot) => s.getName();
  const names = (list: DomainSnapshot[]) => list.map(nameOf).sort();
  const snapXML = (name: string) =>
    buildSnapshotXML({ name, description: `d ${name}`, memory: 'no', disks: [] });

  const dom = await conn.defineDomainXML(xml);
  try {
    await step('num-empty', () => dom.numOfSnapshots(0));
    await step('has-current-empty', () => dom.hasCurrentSnapshot());
    await step('current-empty', async () => nameOf(await dom.currentSnapshot()));
    await step('lookup-missing', async () => nameOf(await dom.lookupSnapshotByName('nope')));
    await step('create-s1', async () => nameOf(await dom.createSnapshotXML(snapXML('s1'), 0)));
    await step('create-s2', async () => nameOf(await dom.createSnapshotXML(snapXML('s2'), 0)));
    await step('create-s1-again', async () => nameOf(await dom.createSnapshotXML(snapXML('s1'))));
    await step('create-bad-xml', async () =>
      nameOf(await dom.createSnapshotXML('<domainsnapshot><name>')),
    );
    await step('create-bad-flags', async () =>
      nameOf(await dom.createSnapshotXML(snapXML('s9'), 1 << 30)),
    );
    const s1 = await dom.lookupSnapshotByName('s1');
    const s2 = await dom.lookupSnapshotByName('s2');
    await step('parent-s2', async () => nameOf(await s2.getParent()));
    await step('parent-s1', async () => nameOf(await s1.getParent()));
    await step('list-all', async () => names(await dom.listAllSnapshots(0)));
    await step('list-roots', async () =>
      names(await dom.listAllSnapshots(DomainSnapshotListFlags.ROOTS)),
    );
    await step('list-leaves', async () =>
      names(await dom.listAllSnapshots(DomainSnapshotListFlags.LEAVES)),
    );
    await step('num-all', () => dom.numOfSnapshots(0));
    await step('num-roots', () => dom.numOfSnapshots(DomainSnapshotListFlags.ROOTS));
    await step('has-current', () => dom.hasCurrentSnapshot());
    await step('current', async () => nameOf(await dom.currentSnapshot()));
    await step('is-current-s1', () => s1.isCurrent());
    await step('is-current-s2', () => s2.isCurrent());
    await step('has-metadata-s1', () => s1.hasMetadata());
    await step('xml-has-description', async () =>
      (await s1.getXMLDesc()).includes('<description>d s1</description>'),
    );
    await step('revert-s1', () => s1.revert(0));
    await step('current-after-revert', async () => nameOf(await dom.currentSnapshot()));
    await step('revert-bad-flags', () => s1.revert(1 << 30));
    await step('delete-bad-flags', () => s2.delete(1 << 30));
    await step('delete-s2', () => s2.delete(0));
    await step('lookup-deleted', async () => nameOf(await dom.lookupSnapshotByName('s2')));
    await step('delete-s2-again', () => s2.delete(0));
    await step('xml-deleted', () => s2.getXMLDesc());
    await step('num-after-delete', () => dom.numOfSnapshots(0));
    await step('delete-s1-children', () => s1.delete(DomainSnapshotDeleteFlags.CHILDREN));
    await step('num-final', () => dom.numOfSnapshots(0));
  } finally {
    for (const s of await dom.listAllSnapshots()) await s.delete();
    await dom.undefine();
  }
  return out;
}
