import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildPoolXML, changedPoolFields, parsePoolXML } from '../../../src/libvirt/xml/pool.js';
import { dirPool, dirPoolWithPermissions } from '../../fixtures/xml/cases.js';

const LIBVIRT = join(import.meta.dirname, '../../fixtures/xml/libvirt');
const pool = (target: string) =>
  `<pool type='dir'><name>p</name><uuid>u</uuid><target><path>/p</path>${target}</target></pool>`;

describe('parsePoolXML', () => {
  it("reads the test driver's pool, ignoring capacity, allocation and source", () => {
    expect(
      parsePoolXML(readFileSync(join(LIBVIRT, 'test-driver-pool-default.xml'), 'utf8')),
    ).toStrictEqual({
      type: 'dir',
      name: 'default-pool',
      uuid: 'dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566',
      target: { path: '/default-pool' },
    });
  });

  it('reads the mode in octal and -1 ids as unset', () => {
    expect(
      parsePoolXML(
        pool('<permissions><mode>0711</mode><owner>-1</owner><group>107</group></permissions>'),
      ).target.permissions,
    ).toStrictEqual({ mode: 0o711, group: 107 });
  });

  it.each([
    [
      `<pool type='logical'><name>p</name><uuid>u</uuid><target><path>/p</path></target></pool>`,
      `pool@type: "logical" is not one of 'dir'`,
    ],
    [
      pool('<permissions><mode>0999</mode></permissions>'),
      'pool/target/permissions/mode: 0999 is not octal',
    ],
    [
      pool('<permissions><owner>root</owner></permissions>'),
      'pool/target/permissions/owner: "root"',
    ],
    [`<pool type='dir'><name>p</name><uuid>u</uuid></pool>`, 'pool/target: is missing'],
  ])('refuses %s, naming the field', (xml, message) => {
    expect(() => parsePoolXML(xml)).toThrow(message);
  });
});

describe('buildPoolXML', () => {
  it('writes the mode as four octal digits', () => {
    expect(
      buildPoolXML({ ...dirPool, target: { path: '/p', permissions: { mode: 0o711 } } }),
    ).toContain('<mode>0711</mode>');
  });

  it('refuses modes libvirt refuses (setuid, setgid, sticky) or that are not modes', () => {
    for (const mode of [0o4755, 0o1777, -1, 1.5]) {
      expect(() =>
        buildPoolXML({ ...dirPool, target: { path: '/p', permissions: { mode } } }),
      ).toThrow(
        /^pool\/target\/permissions\/mode: .* is not a permission mode between 0 and 0o777/,
      );
    }
  });
});

describe('changedPoolFields', () => {
  it('compares path and the permissions the desired document sets', () => {
    const observed = parsePoolXML(buildPoolXML(dirPoolWithPermissions));
    expect(changedPoolFields(dirPoolWithPermissions, observed)).toEqual([]);
    expect(
      changedPoolFields({ ...dirPoolWithPermissions, target: { path: '/srv/images' } }, observed),
    ).toEqual([]);
    expect(
      changedPoolFields(
        { ...dirPool, uuid: dirPoolWithPermissions.uuid, name: 'shared' },
        observed,
      ),
    ).toEqual(['path']);
    const mode = {
      ...dirPoolWithPermissions,
      target: { path: '/srv/images', permissions: { mode: 0o700 } },
    };
    expect(changedPoolFields(mode, observed)).toEqual(['permissions.mode']);
  });
});
