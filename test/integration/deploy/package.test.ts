// The package as a user gets it: `npm pack` (prepack builds dist/), installed from the tarball
// into an empty project (npm compiles the native addon from binding.gyp, against the system's
// libvirt-dev, as the install step), then both entry points imported from that project: the
// main entry ('.': the API, no native code) and 'libvirt-operator/libvirt' (the binding, which
// opens libvirt's test driver). Offline where the npm cache has the dependencies already.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const ROOT = packageRoot();
let work: string;

function sh(
  cmd: string,
  args: string[],
  cwd: string,
  timeoutMs = 900_000,
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      {
        cwd,
        timeout: timeoutMs,
        maxBuffer: 16 << 20,
        env: { ...process.env, npm_config_yes: 'true' },
      },
      (err, stdout, stderr) => {
        resolve({
          code: err ? ((err as { code?: number }).code ?? 1) : 0,
          out: `${stdout}${stderr}`,
        });
      },
    );
  });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lvo-pack-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('npm pack output installs into an empty project', () => {
  it('resolves the main entry and libvirt-operator/libvirt', async () => {
    const packed = await sh('npm', ['pack', '--pack-destination', work, '--loglevel=error'], ROOT);
    expect(packed.code, packed.out).toBe(0);
    const tarball = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    expect(tarball, packed.out).toBeDefined();

    const project = join(work, 'consumer');
    await sh('mkdir', ['-p', project], work);
    await writeFile(
      join(project, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }),
    );
    const installed = await sh(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        join(work, tarball!),
      ],
      project,
    );
    expect(installed.code, installed.out).toBe(0);

    const script = `
      import { validateManifest, API_VERSION } from 'libvirt-operator';
      import { Connect } from 'libvirt-operator/libvirt';
      const problems = validateManifest({
        apiVersion: API_VERSION, kind: 'StoragePool', metadata: { name: 'p' }, spec: { path: '/x' },
      });
      const conn = await Connect.open('test:///default');
      const domains = await conn.listAllDomains();
      console.log(JSON.stringify({ problems, domains: domains.map((d) => d.getName()) }));
      await conn.close();
    `;
    const ran = await sh(process.execPath, ['--input-type=module', '-e', script], project, 60_000);
    expect(ran.code, ran.out).toBe(0);
    expect(JSON.parse(ran.out.trim().split('\n').at(-1)!)).toEqual({
      problems: [],
      domains: ['test'],
    });
    // tsc (prepack) and compiling the addon at install take minutes on a busy 2-core host.
  }, 1_500_000);
});
