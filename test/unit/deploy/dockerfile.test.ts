// The Dockerfile cannot be built here (no container engine), so this checks what can be
// checked without one: the stages, that every file it copies exists (or is made by the build
// stage), that the context's .dockerignore lets those files in, that the runtime stage has no
// toolchain or -dev package, and that the image runs the CLI's `run` command.
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const ROOT = packageRoot();
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

interface Instruction {
  keyword: string;
  args: string;
}

interface Stage {
  image: string;
  name: string | undefined;
  workdir: string;
  instructions: Instruction[];
}

/** Instructions with continuation lines joined and comment lines dropped, as Docker reads them. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    const continued = line.endsWith('\\');
    pending += (pending ? ' ' : '') + (continued ? line.slice(0, -1).trim() : line);
    if (continued) continue;
    const m = /^(\w+)\s+(.*)$/.exec(pending);
    if (!m) throw new Error(`Dockerfile: cannot read the instruction '${pending}'`);
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]! });
    pending = '';
  }
  if (pending) throw new Error('Dockerfile: ends inside a continued line');
  return out;
}

function stages(text: string): Stage[] {
  const result: Stage[] = [];
  for (const ins of instructions(text)) {
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`Dockerfile: cannot read FROM ${ins.args}`);
      result.push({ image: m[1]!, name: m[2], workdir: '/', instructions: [] });
      continue;
    }
    const stage = result.at(-1);
    if (!stage) throw new Error(`Dockerfile: ${ins.keyword} before the first FROM`);
    if (ins.keyword === 'WORKDIR') stage.workdir = posix.resolve(stage.workdir, ins.args);
    stage.instructions.push({ ...ins });
  }
  return result;
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}

/** COPY's sources and destination, with the destination made absolute against WORKDIR. */
function copies(stage: Stage): Copy[] {
  let workdir = '/';
  const out: Copy[] = [];
  for (const ins of stage.instructions) {
    if (ins.keyword === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    if (ins.keyword !== 'COPY') continue;
    const words = ins.args.split(/\s+/);
    const flags = words.filter((w) => w.startsWith('--'));
    const paths = words.filter((w) => !w.startsWith('--'));
    const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
    out.push({ from, sources: paths.slice(0, -1), dest: posix.resolve(workdir, paths.at(-1)!) });
  }
  return out;
}

/** Where a COPY puts one source: into the directory when the destination ends with '/'. */
function copiedTo(copy: Copy, source: string, rawDestEndsWithSlash: boolean): string {
  return rawDestEndsWithSlash || copy.sources.length > 1
    ? posix.join(copy.dest, posix.basename(source))
    : copy.dest;
}

/** .dockerignore semantics: the last matching pattern wins; a matched directory takes its files. */
function includedInContext(ignore: string, file: string): boolean {
  const patterns = ignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  let included = true;
  for (const p of patterns) {
    const negated = p.startsWith('!');
    const glob = posix.normalize((negated ? p.slice(1) : p).replace(/^\/+|\/+$/g, ''));
    const re = new RegExp(
      '^' +
        glob
          .split('**')
          .map((part) =>
            part
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]'),
          )
          .join('.*') +
        '(/.*)?$',
    );
    if (re.test(file)) included = negated;
  }
  return included;
}

function aptPackages(stage: Stage): string[] {
  return stage.instructions
    .filter((i) => i.keyword === 'RUN')
    .flatMap((i) => [...i.args.matchAll(/apt-get install ([^&;|]+)/g)])
    .flatMap((m) => m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')));
}

const dockerfile = read('Dockerfile');
const dockerignore = read('.dockerignore');
const [build, runtime, ...extra] = stages(dockerfile);

describe('the Dockerfile reader used below', () => {
  it('joins continued lines, skips comments inside them and tracks WORKDIR', () => {
    const s = stages('FROM a AS b\nWORKDIR /x\nRUN one \\\n# note\n two\nCOPY f ./g/\n');
    expect(s).toHaveLength(1);
    expect(s[0]!.instructions.map((i) => i.args)).toEqual(['/x', 'one two', 'f ./g/']);
    expect(copies(s[0]!)).toEqual([{ from: undefined, sources: ['f'], dest: '/x/g' }]);
  });

  it('applies .dockerignore allow-lists the way Docker does', () => {
    const ignore = '*\n!src\n!a.json\nsrc/secret\n';
    expect(includedInContext(ignore, 'src/x/y.ts')).toBe(true);
    expect(includedInContext(ignore, 'a.json')).toBe(true);
    expect(includedInContext(ignore, 'node_modules/x')).toBe(false);
    expect(includedInContext(ignore, 'src/secret/k')).toBe(false);
  });
});

describe('Dockerfile', () => {
  it('has two stages: a build on node:20-bookworm and a runtime on node:20-bookworm-slim', () => {
    expect(extra).toEqual([]);
    expect(build?.image).toBe('node:20-bookworm');
    expect(build?.name).toBe('build');
    expect(runtime?.image).toBe('node:20-bookworm-slim');
  });

  it('builds with libvirt-dev and a toolchain: npm ci, node-gyp, tsc, then prunes dev dependencies', () => {
    expect(aptPackages(build!)).toEqual(
      expect.arrayContaining(['libvirt-dev', 'pkg-config', 'python3', 'make', 'g++']),
    );
    const runs = build!.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    const steps = [/\bnpm ci\b/, /\bnode-gyp rebuild\b/, /\btsc -p tsconfig\.build\.json\b/];
    const at = (re: RegExp) => runs.join('\n').search(re);
    for (const re of steps) expect(at(re), String(re)).toBeGreaterThanOrEqual(0);
    expect(at(steps[0]!)).toBeLessThan(at(steps[1]!));
    expect(at(steps[1]!)).toBeLessThan(at(steps[2]!));
    expect(at(/\bnpm prune --omit=dev\b/)).toBeGreaterThan(at(steps[2]!));
  });

  it('copies into the build stage only files that exist and that .dockerignore lets in', () => {
    const sources = copies(build!).flatMap((c) => c.sources);
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src']));
    for (const source of sources) {
      expect(existsSync(join(ROOT, source)), `${source} does not exist`).toBe(true);
      expect(includedInContext(dockerignore, source), `.dockerignore leaves out ${source}`).toBe(
        true,
      );
    }
    // The files TypeScript and node-gyp read come in with src/, so spot-check a few.
    for (const file of ['src/cli.ts', 'src/libvirt/native/addon.cc'])
      expect(includedInContext(dockerignore, file), file).toBe(true);
    for (const hostArtifact of [
      'node_modules/yaml/package.json',
      'build/Release/x.node',
      'dist/cli.js',
      '.git/HEAD',
    ])
      expect(includedInContext(dockerignore, hostArtifact), hostArtifact).toBe(false);
  });

  it('copies into the runtime stage only what the build stage copied in or produced', () => {
    const tsconfigBuild = JSON.parse(read('tsconfig.build.json')) as {
      compilerOptions: { outDir: string };
    };
    const gyp = JSON.parse(read('binding.gyp')) as { targets: { target_name: string }[] };
    const buildRuns = build!.instructions
      .filter((i) => i.keyword === 'RUN')
      .map((i) => i.args)
      .join('\n');
    // What the build stage's RUN steps produce, each with the evidence that it does.
    const produced: Record<string, boolean> = {
      node_modules: /\bnpm ci\b/.test(buildRuns),
      [posix.normalize(tsconfigBuild.compilerOptions.outDir)]:
        /\btsc -p tsconfig\.build\.json\b/.test(buildRuns),
      [`build/Release/${gyp.targets[0]!.target_name}.node`]: /\bnode-gyp rebuild\b/.test(buildRuns),
    };
    const rawCopies = build!.instructions.filter((i) => i.keyword === 'COPY');
    const copiedIn = copies(build!).flatMap((c, n) =>
      c.sources.map((s) => copiedTo(c, s, rawCopies[n]!.args.trimEnd().endsWith('/'))),
    );
    const fromBuild = copies(runtime!).filter((c) => c.from === 'build');
    expect(copies(runtime!).filter((c) => c.from !== 'build')).toEqual([]);
    for (const source of fromBuild.flatMap((c) => c.sources)) {
      const relative = posix.relative(build!.workdir, source);
      const ok = copiedIn.includes(source) || produced[relative] === true;
      expect(ok, `${source} is neither copied into nor produced by the build stage`).toBe(true);
    }
    expect(
      fromBuild.flatMap((c) => c.sources).map((s) => posix.relative(build!.workdir, s)),
    ).toEqual(
      expect.arrayContaining([
        'dist',
        'node_modules',
        'package.json',
        'build/Release/libvirt_native.node',
      ]),
    );
  });

  it('lays the runtime out as the code expects: package.json, dist/ and build/Release/ under one root', () => {
    const dests = Object.fromEntries(
      copies(runtime!).flatMap((c) =>
        c.sources.map((s) => [posix.relative(build!.workdir, s), c.dest]),
      ),
    );
    const root = runtime!.workdir;
    expect(dests['package.json']).toBe(`${root}/package.json`);
    expect(dests['dist']).toBe(`${root}/dist`);
    expect(dests['build/Release/libvirt_native.node']).toBe(
      `${root}/build/Release/libvirt_native.node`,
    );
    // src/libvirt/addon.ts (dist/libvirt/addon.js once built) looks for the addon two
    // directories up, in build/Release/: that is the runtime WORKDIR only with this layout.
    const addon = read('src/libvirt/addon.ts');
    expect(addon).toMatch(/dirname\(fileURLToPath\(import\.meta\.url\)\), '\.\.', '\.\.'\)/);
    expect(addon).toMatch(/'build', 'Release', 'libvirt_native\.node'/);
  });

  it('installs no -dev package and no toolchain in the runtime stage: libvirt0 and genisoimage', () => {
    const packages = aptPackages(runtime!);
    expect(packages.sort()).toEqual(['genisoimage', 'libvirt0']);
    expect(
      packages.filter((p) => /-dev$|^(gcc|g\+\+|make|python3|build-essential)$/.test(p)),
    ).toEqual([]);
  });

  it("runs the CLI's run command: ENTRYPOINT libvirt-operator, linked to package.json's bin", () => {
    const last = (k: string) => runtime!.instructions.filter((i) => i.keyword === k).at(-1)?.args;
    const entrypoint = JSON.parse(last('ENTRYPOINT') ?? 'null') as string[];
    const cmd = JSON.parse(last('CMD') ?? 'null') as string[];
    expect([...entrypoint, ...cmd]).toEqual(['libvirt-operator', 'run']);
    const bin = (JSON.parse(read('package.json')) as { bin: Record<string, string> }).bin;
    const link = /ln -s (\S+) \/usr\/local\/bin\/libvirt-operator\b/.exec(
      runtime!.instructions
        .filter((i) => i.keyword === 'RUN')
        .map((i) => i.args)
        .join('\n'),
    );
    expect(link?.[1]).toBe(posix.join(runtime!.workdir, bin['libvirt-operator']!));
    // The CLI dispatches `run` (src/cli.ts's command table).
    expect(read('src/cli.ts')).toMatch(/const COMMANDS[^]*?\n\s+run: '/);
  });
});
