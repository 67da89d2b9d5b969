// The package as a user gets it: `npm pack` (prepack builds dist/), installed from the tarball
// into an empty project (npm compiles the native addon from binding.gyp, against the system's
// libvirt-dev, as the install step), then both entry points imported from that project: the
// main entry ('.': the API, no native code) and 'libvirt-operator/libvirt' (the binding, which
// opens libvirt's test driver). Offline where the npm cache has the dependencies already.
// Packed from a copy of the checkout's sources: prepack run in the checkout would rewrite its
// dist/ in place, file by file, under whatever runs from it meanwhile (scripts/test.sh runs
// this beside the other lane; `node dist/cli.js` agents of bench/ and `npm start`).
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
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

/** What `npm pack` needs to build and pack: the sources, not the checkout's dist/. */
const STAGED = [
  'package.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'README.md',
  'binding.gyp',
  'src',
  'crds',
  'scripts/build-tiny-guest.sh',
  'scripts/install-host-deps.sh',
  'scripts/provision-control-plane.sh',
];

/** Every file under `dir` with its modification time, to tell that nothing rewrote it. */
async function mtimes(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  // None yet (a checkout never built) is nothing to rewrite.
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const file = join(entry.parentPath, entry.name);
    out.set(file, (await stat(file)).mtimeMs);
  }
  return out;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lvo-pack-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('npm pack output installs into an empty project', () => {
  it('resolves the main entry and libvirt-operator/libvirt', async () => {
    const stage = join(work, 'stage');
    for (const p of STAGED) await cp(join(ROOT, p), join(stage, p), { recursive: true });
    // tsc for prepack, from the checkout's dependencies.
    await symlink(join(ROOT, 'node_modules'), join(stage, 'node_modules'));
    const before = await mtimes(join(ROOT, 'dist'));
    const packed = await sh('npm', ['pack', '--pack-destination', work, '--loglevel=error'], stage);
    expect(packed.code, packed.out).toBe(0);
    expect(await mtimes(join(ROOT, 'dist')), 'the checkout dist/ was rewritten').toEqual(before);
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
