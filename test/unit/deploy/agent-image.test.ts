// The offline image build (`npm run image`) carries out the Dockerfile's runtime stage; these
// tests keep the two in step and check the OCI layout it writes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { dockerInstructions, runtimeRecipe } from '../../../src/commands/local/agent-image.js';
import { buildImage, normalizeReference, tar } from '../../../src/commands/local/oci-image.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const ROOT = packageRoot();
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'lvo-image-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe("the offline build reads the Dockerfile's runtime stage", () => {
  const recipe = runtimeRecipe(dockerfile);
  const instructions = dockerInstructions(dockerfile);
  const runtimeStart = instructions.findLastIndex((i) => i.keyword === 'FROM');
  const runtime = instructions.slice(runtimeStart + 1);

  it('carries out every runtime instruction (an unknown one would have thrown)', () => {
    expect(recipe.base).toMatch(/^node:\d+-bookworm-slim$/);
    expect(instructions[runtimeStart]!.args).toContain(recipe.base);
  });

  it('installs exactly the packages the Dockerfile installs', () => {
    const fromDockerfile = runtime
      .filter((i) => i.keyword === 'RUN')
      .flatMap((i) => [...i.args.matchAll(/apt-get install ([^&;|]+)/g)])
      .flatMap((m) => m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')));
    expect(recipe.packages).toEqual(fromDockerfile);
    expect(recipe.packages).toContain('libvirt0');
  });

  it('copies what each COPY --from=build names, to the same place', () => {
    const copies = runtime.filter((i) => i.keyword === 'COPY');
    expect(recipe.copies).toHaveLength(copies.length);
    const byDest = Object.fromEntries(recipe.copies.map((c) => [c.source, c.dest]));
    expect(byDest['dist']).toBe('/opt/libvirt-operator/dist');
    expect(byDest['node_modules']).toBe('/opt/libvirt-operator/node_modules');
    expect(byDest['build/Release/libvirt_native.node']).toBe(
      '/opt/libvirt-operator/build/Release/libvirt_native.node',
    );
  });

  it('takes WORKDIR, ENV, USER, ENTRYPOINT, CMD and the CLI link from it', () => {
    const last = (k: string) => runtime.filter((i) => i.keyword === k).at(-1)?.args;
    expect(recipe.config.WorkingDir).toBe(last('WORKDIR'));
    expect(recipe.config.Entrypoint).toEqual(JSON.parse(last('ENTRYPOINT')!));
    expect(recipe.config.Cmd).toEqual(JSON.parse(last('CMD')!));
    expect(recipe.config.User).toBe(last('USER'));
    expect(recipe.config.Env).toContain(last('ENV')!.replace(' ', '='));
    expect(recipe.links).toEqual([
      {
        target: '/opt/libvirt-operator/dist/cli.js',
        link: '/usr/local/bin/libvirt-operator',
      },
    ]);
    expect(recipe.chmods).toEqual([{ mode: 0o755, path: '/opt/libvirt-operator/dist/cli.js' }]);
  });

  it('refuses what it cannot reproduce instead of building a different image', () => {
    const base = 'FROM node:20-bookworm AS build\nWORKDIR /src\nFROM node:20-bookworm-slim\n';
    expect(() => runtimeRecipe(`${base}RUN curl -o /x https://example.com/x\n`)).toThrow(
      /cannot carry out 'RUN curl/,
    );
    expect(() => runtimeRecipe(`${base}COPY local.txt /x\n`)).toThrow(/from the build stage/);
    expect(() => runtimeRecipe(`${base}VOLUME /data\n`)).toThrow(/cannot carry out VOLUME/);
    expect(runtimeRecipe(`${base}RUN apt-get update && apt-get install -y a b\n`).packages).toEqual(
      ['a', 'b'],
    );
  });
});

describe('OCI layout', () => {
  it('names images the way containerd and Docker do', () => {
    expect(normalizeReference('libvirt-operator:dev')).toBe(
      'docker.io/library/libvirt-operator:dev',
    );
    expect(normalizeReference('org/x')).toBe('docker.io/org/x:latest');
    expect(normalizeReference('localhost/a/pause:v1')).toBe('localhost/a/pause:v1');
    expect(normalizeReference('registry.example.com:5000/x:1')).toBe(
      'registry.example.com:5000/x:1',
    );
  });

  it('writes tar archives GNU tar reads back: long names, symlinks, modes', () => {
    const long = `/opt/${'d'.repeat(120)}/file.txt`;
    const archive = tar([
      { type: 'dir', path: '/opt' },
      { type: 'dir', path: `/opt/${'d'.repeat(120)}` },
      { type: 'file', path: long, data: Buffer.from('hello'), mode: 0o750 },
      { type: 'symlink', path: '/opt/link', target: long },
    ]);
    const file = join(tmp, 'a.tar');
    writeFileSync(file, archive);
    const out = join(tmp, 'out');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('tar', ['-xf', file, '-C', out]);
    expect(readFileSync(join(out, long), 'utf8')).toBe('hello');
    expect(statSync(join(out, long)).mode & 0o777).toBe(0o750);
    expect(readlinkSync(join(out, 'opt', 'link'))).toBe(long);
  });

  it('links index, manifest, config and layers by digest, named for containerd', () => {
    const image = buildImage({
      reference: 'libvirt-operator:dev',
      layers: [[{ type: 'file', path: '/a', data: Buffer.from('a') }]],
      config: { Entrypoint: ['/a'] },
    });
    const file = join(tmp, 'img.tar');
    writeFileSync(file, image.archive);
    const out = join(tmp, 'img');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('tar', ['-xf', file, '-C', out]);
    const blob = (digest: string) => readFileSync(join(out, 'blobs', 'sha256', digest.slice(7)));
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as {
      manifests: Array<{ digest: string; annotations: Record<string, string> }>;
    };
    expect(index.manifests[0]!.annotations['io.containerd.image.name']).toBe(
      'docker.io/library/libvirt-operator:dev',
    );
    expect(index.manifests[0]!.digest).toBe(image.manifestDigest);
    const manifestBlob = blob(image.manifestDigest);
    expect(sha(manifestBlob)).toBe(image.manifestDigest);
    const manifest = JSON.parse(manifestBlob.toString()) as {
      config: { digest: string };
      layers: Array<{ digest: string; size: number }>;
    };
    const config = JSON.parse(blob(manifest.config.digest).toString()) as {
      rootfs: { diff_ids: string[] };
      config: { Entrypoint: string[] };
    };
    const layer = blob(manifest.layers[0]!.digest);
    expect(layer.length).toBe(manifest.layers[0]!.size);
    expect(config.rootfs.diff_ids).toEqual([sha(gunzipSync(layer))]);
    expect(config.config.Entrypoint).toEqual(['/a']);
    expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))).toEqual([
      expect.objectContaining({ RepoTags: ['libvirt-operator:dev'] }),
    ]);
  });
});
