// Every golden document against libvirt's own RELAX NG schemas (virt-xml-validate from
// libvirt-clients runs xmllint from libxml2-utils over /usr/share/libvirt/schemas).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDomainXML } from '../../../src/libvirt/xml/index.js';
import { allCases, minimalDomain } from '../../fixtures/xml/cases.js';

const run = promisify(execFile);
const FIXTURES = join(import.meta.dirname, '../../fixtures/xml');

async function validate(file: string, schema: string): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await run('virt-xml-validate', [file, schema]);
    return { ok: true, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(
        'virt-xml-validate is missing: install libvirt-clients (scripts/install-host-deps.sh)',
        { cause: err },
      );
    }
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

beforeAll(async () => {
  // virt-xml-validate is a shell script around xmllint; without it every case would fail
  // with a confusing message.
  await run('xmllint', ['--version']).catch((err: unknown) => {
    throw new Error('xmllint is missing: install libxml2-utils (apt-get install libxml2-utils)', {
      cause: err,
    });
  });
});

describe.each(allCases.filter((c) => c.schema !== undefined))('$name', (c) => {
  it(`is valid against libvirt's ${c.schema} schema`, async () => {
    const result = await validate(join(FIXTURES, `${c.name}.xml`), c.schema!);
    expect(result.output).toContain('validates');
    expect(result.ok).toBe(true);
  });
});

describe('the schema check itself', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lvo-xml-schema-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects a document libvirt would refuse (a space in a machine type)', async () => {
    const file = join(dir, 'bad.xml');
    await writeFile(
      file,
      buildDomainXML({ ...minimalDomain, os: { ...minimalDomain.os, machine: 'pc q35' } }),
    );
    const result = await validate(file, 'domain');
    expect(result.ok).toBe(false);
    expect(result.output).toContain('fails to validate');
  });
});
