// Bulk domain statistics on test:///default (which reports the state group only; the QEMU
// groups are checked on a real guest in test/e2e/operator/guest-metrics.test.ts), side by side
// with libvirt's own Python binding on the same call.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  ConnectGetAllDomainStatsFlags,
  DomainStatsTypes,
  isLibvirtError,
  type Domain,
} from '../../../src/libvirt/index.js';
import { TEST_URI, domainXML, uniqueName } from './fixtures.js';

let conn: Connect;
let mine: Domain;

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
  mine = await conn.defineDomainXML(domainXML({ name: uniqueName('stats') }));
});
afterAll(async () => {
  await mine?.undefine().catch(() => undefined);
  await conn?.close();
});

describe('getAllDomainStats / domainListGetStats', () => {
  it('returns one typed record per domain, with name, UUID and state', async () => {
    const records = await conn.getAllDomainStats(DomainStatsTypes.STATE);
    const test = records.find((r) => r.name === 'test');
    expect(test?.state).toEqual({
      state: 1,
      reason: 0,
      stateName: 'running',
      reasonName: 'unknown',
    });
    expect(test?.uuid).toBe((await conn.lookupDomainByName('test')).getUUIDString());
    const defined = records.find((r) => r.name === mine.getName());
    expect(defined?.state?.stateName).toBe('shutoff');
    expect(defined?.uuid).toBe(mine.getUUIDString());
    expect(defined?.interfaces).toEqual([]);
  });

  it('selects domains by flags', async () => {
    const active = await conn.getAllDomainStats(
      DomainStatsTypes.STATE,
      ConnectGetAllDomainStatsFlags.ACTIVE,
    );
    expect(active.map((r) => r.name)).toContain('test');
    expect(active.map((r) => r.name)).not.toContain(mine.getName());
  });

  it('domainListGetStats returns records for exactly the given domains', async () => {
    const test = await conn.lookupDomainByName('test');
    const records = await conn.domainListGetStats([test, mine], DomainStatsTypes.STATE);
    expect(records.map((r) => r.name).sort()).toEqual([mine.getName(), 'test'].sort());
    expect(await conn.domainListGetStats([], DomainStatsTypes.STATE)).toEqual([]);
  });

  it('matches libvirt-python on the same call (the driver’s own domain "test")', async () => {
    const py = execFileSync(
      '/usr/bin/python3',
      [
        '-c',
        'import libvirt,json;c=libvirt.open("test:///default");' +
          'print(json.dumps({d.name():s for d,s in c.getAllDomainStats(0,0)}))',
      ],
      { encoding: 'utf8' },
    );
    const expected = (JSON.parse(py) as Record<string, Record<string, number>>)['test'];
    const ours = (await conn.getAllDomainStats(0)).find((r) => r.name === 'test');
    expect(ours?.params).toEqual(expected);
  });

  it('rejects with a LibvirtError for a closed connection and a freed domain', async () => {
    const other = await Connect.open(TEST_URI);
    const dom = await other.lookupDomainByName('test');
    await other.close();
    await expect(other.getAllDomainStats(DomainStatsTypes.STATE)).rejects.toSatisfy(isLibvirtError);
    await expect(conn.domainListGetStats([dom], DomainStatsTypes.STATE)).rejects.toSatisfy(
      isLibvirtError,
    );
    const freed = await conn.lookupDomainByName('test');
    freed.free();
    await expect(conn.domainListGetStats([freed], DomainStatsTypes.STATE)).rejects.toSatisfy(
      isLibvirtError,
    );
  });
});
