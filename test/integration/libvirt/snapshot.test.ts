// Domain snapshots through the binding on libvirt's test driver, call for call against
// libvirt's own Python binding, plus what only the binding has (handles, predicates) and the
// libvirt behaviour the restore controller relies on.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  DomainMetadataType,
  DomainModificationImpact,
  ErrorCode,
  LibvirtError,
  bindingStats,
  isNotFound,
  type Domain,
} from '../../../src/libvirt/index.js';
import { HANDLE, native } from '../../../src/libvirt/addon.js';
import { buildSnapshotXML, parseSnapshotXML } from '../../../src/libvirt/xml/snapshot.js';
import { TEST_URI, domainXML, uniqueName } from './fixtures.js';
import { bindingSequence, pythonSequence } from './snapshot-sequence.js';

let conn: Connect;
let dir: string;
const created: Domain[] = [];

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
  dir = await mkdtemp(path.join(tmpdir(), 'lvo-snap-'));
});

afterAll(async () => {
  for (const d of created) {
    for (const s of await d.listAllSnapshots().catch(() => [])) await s.delete().catch(() => {});
    await d.destroy().catch(() => undefined);
    await d.undefine().catch(() => undefined);
  }
  await conn?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof LibvirtError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

async function defined(): Promise<Domain> {
  const d = await conn.defineDomainXML(domainXML({ name: uniqueName('snap') }));
  created.push(d);
  return d;
}

const snapXML = (name: string, memory: 'internal' | 'no' = 'no') =>
  buildSnapshotXML({ name, memory, disks: [] });

describe('domain snapshots on the test driver', () => {
  it('returns what libvirt-python returns, error codes included, call for call', async () => {
    const xml = domainXML({ name: uniqueName('seq') });
    const ours = await bindingSequence(conn, xml);
    const theirs = await pythonSequence(TEST_URI, path.join(dir, 'seq.xml'), xml);
    expect(ours).toEqual(theirs);
    // The comparison covers the failures that matter, not only successes.
    expect(ours).toContainEqual([
      'lookup-missing',
      { error: [ErrorCode.VIR_ERR_NO_DOMAIN_SNAPSHOT, expect.any(Number)] },
    ]);
  });

  it('names a missing snapshot with isNotFound(err, "domainSnapshot") only', async () => {
    const d = await defined();
    const err = await rejection(d.lookupSnapshotByName('absent'));
    expect(isNotFound(err, 'domainSnapshot')).toBe(true);
    expect(isNotFound(err, 'domain')).toBe(false);
    expect(isNotFound(err)).toBe(true);
    expect(err.codeName).toBe('VIR_ERR_NO_DOMAIN_SNAPSHOT');
  });

  it('reads back the document it wrote, and frees handles', async () => {
    const d = await defined();
    const before = bindingStats().handleReferences;
    const snap = await d.createSnapshotXML(
      buildSnapshotXML({ name: 'a<&>"b', description: 'x & y', memory: 'no', disks: [] }),
    );
    expect(snap.getName()).toBe('a<&>"b');
    const doc = parseSnapshotXML(await snap.getXMLDesc());
    expect(doc).toMatchObject({ name: 'a<&>"b', description: 'x & y', state: 'shutoff' });
    expect(bindingStats().handleReferences).toBe(before + 1);
    snap.free();
    expect(bindingStats().handleReferences).toBe(before);
    const freed = await rejection(snap.getXMLDesc());
    expect(freed.code).toBe(ErrorCode.VIR_ERR_INVALID_DOMAIN_SNAPSHOT);
    expect(() => snap.getName()).toThrow(/freed/);
    snap.free(); // twice is harmless
  });

  it('rejects calls on a snapshot of a closed connection', async () => {
    const other = await Connect.open(TEST_URI);
    const d = await other.defineDomainXML(domainXML({ name: uniqueName('closed') }));
    const snap = await d.createSnapshotXML(snapXML('c1'));
    await snap.delete();
    await d.undefine();
    await other.close();
    expect((await rejection(snap.isCurrent())).code).toBe(ErrorCode.VIR_ERR_INVALID_CONN);
  });

  it('freezes and thaws through the driver (the test driver fakes a guest agent)', async () => {
    const d = await conn.createDomainXML(domainXML({ name: uniqueName('freeze') }));
    created.push(d);
    const frozen = await d.fsFreeze(null, 0, { timeoutMs: 10_000 });
    expect(frozen).toBeGreaterThan(0);
    expect(await d.fsThaw()).toBe(frozen);
    await expect(d.fsFreeze(['/'], 1 << 30)).rejects.toBeInstanceOf(LibvirtError);
  });

  it('drops metadata written after a snapshot when reverting to it (the restore marker)', async () => {
    const d = await defined();
    await d.create();
    const s = await d.createSnapshotXML(snapXML('m1', 'internal'));
    const uri = 'http://virt.dev/libvirt-operator/restore/v1';
    for (const flags of [DomainModificationImpact.LIVE, DomainModificationImpact.CONFIG]) {
      await d.setMetadata(DomainMetadataType.ELEMENT, "<restore uid='u'/>", 'lvor', uri, flags);
    }
    expect(
      await d.getMetadata(DomainMetadataType.ELEMENT, uri, DomainModificationImpact.CONFIG),
    ).toContain('uid="u"');
    await s.revert();
    const gone = await rejection(
      d.getMetadata(DomainMetadataType.ELEMENT, uri, DomainModificationImpact.CONFIG),
    );
    expect(gone.code).toBe(ErrorCode.VIR_ERR_NO_DOMAIN_METADATA);
    expect((await d.getState()).stateName).toBe('running');
  });

  it('rejects a domain handle passed as a snapshot with a TypeError', async () => {
    const d = await defined();
    // The addon checks the handle's tag; it never reinterprets a domain as a snapshot.
    await expect(native.domainSnapshot.getXMLDesc(d[HANDLE] as never, 0, 0)).rejects.toThrow(
      TypeError,
    );
    expect(() => native.domainSnapshot.getName(d[HANDLE] as never)).toThrow(TypeError);
  });
});
