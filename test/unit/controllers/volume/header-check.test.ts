// When a recorded qcow2 file's header is read again: only once libvirt describes the file
// otherwise (a replacement, a rewrite), never while an earlier read is still under way, and
// never waited for beyond the bound. The volume XML is libvirtd 9.0's for a dir pool file,
// measured on this project's machines (before and after `rm` + `qemu-img create` of it).
import { describe, expect, it } from 'vitest';
import {
  checkHeader,
  fileIdentity,
  headerCheckDue,
  type HeaderChecks,
} from '../../../../src/controllers/volume/header-check.js';
import type { ImageLayers } from '../../../../src/controllers/volume/observe.js';
import { parseVolumeXML } from '../../../../src/libvirt/xml/volume.js';

const FILE = '/tmp/hfixe-d99123/a';
const xml = (mtime: string, ctime: string, atime = '1796604479.941478394') => `<volume type='file'>
  <name>a</name>
  <key>${FILE}</key>
  <capacity unit='bytes'>16777216</capacity>
  <allocation unit='bytes'>200704</allocation>
  <physical unit='bytes'>196616</physical>
  <target>
    <path>${FILE}</path>
    <format type='qcow2'/>
    <permissions><mode>0600</mode><owner>0</owner><group>0</group></permissions>
    <timestamps>
      <atime>${atime}</atime>
      <mtime>${mtime}</mtime>
      <ctime>${ctime}</ctime>
      <btime>0</btime>
    </timestamps>
  </target>
</volume>`;
const made = parseVolumeXML(xml('1796604479.928699637', '1796604479.940699638'));
const replaced = parseVolumeXML(xml('1796604481.148699690', '1796604481.148699690'));
const clean: ImageLayers = { dataFile: false };
const backed: ImageLayers = { backingFile: '/etc/hostname', dataFile: false };

describe('fileIdentity', () => {
  it('tells a replaced file from the one that was there, and ignores atime', () => {
    expect(fileIdentity(made)).toBeDefined();
    expect(fileIdentity(replaced)).not.toBe(fileIdentity(made));
    // The header read itself moves atime: that is no change of the file.
    const readSince = parseVolumeXML(
      xml('1796604479.928699637', '1796604479.940699638', '1796604500.000000001'),
    );
    expect(fileIdentity(readSince)).toBe(fileIdentity(made));
  });

  it('has none without libvirt timestamps (the test driver)', () => {
    const { changed: _, ...bare } = made;
    expect(fileIdentity(bare)).toBeUndefined();
  });
});

describe('headerCheckDue', () => {
  const id = fileIdentity(made);
  it('reads a file never read, or changed since', () => {
    expect(headerCheckDue(undefined, id)).toBe('read');
    const last = { identity: fileIdentity(replaced), layers: clean, pending: false };
    expect(headerCheckDue(last, id)).toBe('read');
  });
  it('reuses the answer for the same file', () => {
    expect(headerCheckDue({ identity: id, layers: backed, pending: false }, id)).toBe('reuse');
  });
  it('reads every time a file libvirt cannot describe', () => {
    expect(headerCheckDue({ identity: undefined, layers: clean, pending: false }, undefined)).toBe(
      'read',
    );
  });
  it('waits for a read under way, even of a changed file', () => {
    const last = { identity: id, layers: clean, pending: true };
    expect(headerCheckDue(last, id)).toBe('wait');
    expect(headerCheckDue(last, fileIdentity(replaced))).toBe('wait');
  });
});

describe('checkHeader', () => {
  it('reads once per file, again when it changed', async () => {
    const checks: HeaderChecks = new Map();
    const reads: string[] = [];
    const read = (path: string) => {
      reads.push(path);
      return Promise.resolve(reads.length === 1 ? clean : backed);
    };
    expect(await checkHeader(checks, 'u', FILE, fileIdentity(made), read)).toEqual({
      layers: clean,
    });
    expect(await checkHeader(checks, 'u', FILE, fileIdentity(made), read)).toEqual({
      layers: clean,
    });
    expect(reads).toHaveLength(1);
    expect(await checkHeader(checks, 'u', FILE, fileIdentity(replaced), read)).toEqual({
      layers: backed,
    });
    expect(reads).toHaveLength(2);
  });

  it('does not wait beyond the bound, keeps the last answer, and starts no second read', async () => {
    const checks: HeaderChecks = new Map();
    await checkHeader(checks, 'u', FILE, fileIdentity(made), () => Promise.resolve(backed));
    let answer: (layers: ImageLayers) => void = () => undefined;
    let reads = 0;
    const hung = () => {
      reads++;
      return new Promise<ImageLayers>((resolve) => (answer = resolve));
    };
    const started = Date.now();
    const late = await checkHeader(checks, 'u', FILE, fileIdentity(replaced), hung, 50);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(late.unchecked).toContain('did not answer within 50 ms');
    expect(late.layers).toEqual(backed);
    const again = await checkHeader(checks, 'u', FILE, fileIdentity(replaced), hung, 50);
    expect(again.unchecked).toContain('has not answered yet');
    expect(reads).toBe(1);
    // Its answer, when it comes, is the one used for that file.
    answer(clean);
    await new Promise((resolve) => setImmediate(resolve));
    expect(await checkHeader(checks, 'u', FILE, fileIdentity(replaced), hung, 50)).toEqual({
      layers: clean,
    });
    expect(reads).toBe(1);
  });
});
