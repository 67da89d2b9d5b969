// The agent image, built without a container engine or a registry (`npm run image`). The
// recipe is the Dockerfile's runtime stage, read and carried out here instruction by
// instruction, so the two cannot drift: an instruction this builder cannot reproduce is an
// error, not a silent difference.
//
// What each instruction means offline, on a Debian host of the same release:
//   FROM node:<N>-<release>-slim  the host's Node binary (same major) at /usr/local/bin/node,
//                                 /usr/bin/env for scripts' shebangs, passwd/group, os-release;
//   apt-get install P...          the host's installed files of each package (docs left out),
//                                 plus every shared library their ELF files and Node load
//                                 (maintainer scripts are not run);
//   COPY --from=build /src/X      the build stage's product from this checkout: X as `npm run
//                                 build` left it, node_modules from `npm ci --omit=dev`;
//   chmod, ln -s, WORKDIR, ENV, USER, ENTRYPOINT, CMD as Docker would.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  cpSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { buildImage, type BuiltImage, type ImageConfig, type LayerEntry } from './oci-image.js';
import { cacheRoot } from './control-plane.js';

export interface Instruction {
  keyword: string;
  args: string;
}

/** Instructions with continuation lines joined and comment lines dropped, as Docker reads them. */
export function dockerInstructions(text: string): Instruction[] {
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

/** The runtime stage as the offline builder carries it out. */
export interface RuntimeRecipe {
  /** The base image, e.g. node:20-bookworm-slim. */
  base: string;
  /** Where the build stage worked (its last WORKDIR), to map its paths to this checkout. */
  buildWorkdir: string;
  packages: string[];
  copies: Array<{ source: string; dest: string }>;
  chmods: Array<{ mode: number; path: string }>;
  links: Array<{ target: string; link: string }>;
  config: ImageConfig;
}

const IGNORED_COMMANDS = [/^apt-get update$/, /^rm -rf \/var\/lib\/apt\/lists\/\*$/];

/** Reads the Dockerfile's last stage (named from its build stage) into a recipe, or throws. */
export function runtimeRecipe(dockerfile: string): RuntimeRecipe {
  const all = dockerInstructions(dockerfile);
  const froms = all.map((ins, i) => (ins.keyword === 'FROM' ? i : -1)).filter((i) => i >= 0);
  if (froms.length < 2) throw new Error('Dockerfile: expected a build stage and a runtime stage');
  let buildWorkdir = '/';
  for (const ins of all.slice(froms.at(-2)!, froms.at(-1)!))
    if (ins.keyword === 'WORKDIR') buildWorkdir = posix.resolve(buildWorkdir, ins.args);
  const from = /^(\S+)(?:\s+AS\s+\S+)?$/i.exec(all[froms.at(-1)!]!.args);
  if (!from) throw new Error(`Dockerfile: cannot read FROM ${all[froms.at(-1)!]!.args}`);
  const recipe: RuntimeRecipe = {
    base: from[1]!,
    buildWorkdir,
    packages: [],
    copies: [],
    chmods: [],
    links: [],
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      WorkingDir: '/',
    },
  };
  const cfg = recipe.config;
  const workdir = () => cfg.WorkingDir ?? '/';
  for (const ins of all.slice(froms.at(-1)! + 1)) {
    switch (ins.keyword) {
      case 'WORKDIR':
        cfg.WorkingDir = posix.resolve(workdir(), ins.args);
        break;
      case 'ENV': {
        const m = /^(\w+)[= ](.*)$/.exec(ins.args);
        if (!m) throw new Error(`Dockerfile: cannot read ENV ${ins.args}`);
        cfg.Env = [...(cfg.Env ?? []).filter((e) => !e.startsWith(`${m[1]}=`)), `${m[1]}=${m[2]}`];
        break;
      }
      case 'USER':
        cfg.User = ins.args.trim();
        break;
      case 'ENTRYPOINT':
        cfg.Entrypoint = JSON.parse(ins.args) as string[];
        break;
      case 'CMD':
        cfg.Cmd = JSON.parse(ins.args) as string[];
        break;
      case 'COPY': {
        const words = ins.args.split(/\s+/);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
        const paths = words.filter((w) => !w.startsWith('--'));
        if (from === undefined || paths.length !== 2)
          throw new Error(
            `Dockerfile: the offline build copies one path from the build stage per COPY, got 'COPY ${ins.args}'`,
          );
        recipe.copies.push({
          source: posix.relative(buildWorkdir, posix.resolve(buildWorkdir, paths[0]!)),
          dest: posix.resolve(workdir(), paths[1]!),
        });
        break;
      }
      case 'RUN':
        for (const command of ins.args.split('&&').map((c) => c.trim().replace(/\s+/g, ' '))) {
          if (IGNORED_COMMANDS.some((re) => re.test(command))) continue;
          const apt = /^apt-get install (.*)$/.exec(command);
          const chmod = /^chmod (0?[0-7]{3,4}) (\S+)$/.exec(command);
          const ln = /^ln -s (\S+) (\S+)$/.exec(command);
          if (apt) recipe.packages.push(...apt[1]!.split(' ').filter((w) => !w.startsWith('-')));
          else if (chmod)
            recipe.chmods.push({
              mode: parseInt(chmod[1]!, 8),
              path: posix.resolve(workdir(), chmod[2]!),
            });
          else if (ln)
            recipe.links.push({ target: ln[1]!, link: posix.resolve(workdir(), ln[2]!) });
          else
            throw new Error(
              `Dockerfile: the offline image build (src/commands/local/agent-image.ts) cannot carry out 'RUN ${command}'; teach it this command`,
            );
        }
        break;
      default:
        throw new Error(
          `Dockerfile: the offline image build cannot carry out ${ins.keyword} in the runtime stage`,
        );
    }
  }
  return recipe;
}

/** A root file system being assembled from host files; keeps symlinked directories as links. */
class RootFs {
  readonly entries = new Map<string, LayerEntry>();

  dir(path: string, mode = 0o755): void {
    for (let p = path; p !== '/'; p = posix.dirname(p))
      if (!this.entries.has(p)) this.entries.set(p, { type: 'dir', path: p, mode });
  }

  file(path: string, data: Buffer, mode = 0o644): void {
    this.dir(posix.dirname(path));
    this.entries.set(path, { type: 'file', path, data, mode });
  }

  symlink(path: string, target: string): void {
    this.dir(posix.dirname(path));
    this.entries.set(path, { type: 'symlink', path, target });
  }

  /**
   * The host's `path` at the same place in the image, with every symlink on the way (Debian's
   * /lib -> usr/lib, a library's soname link) kept as a link and its target added too.
   */
  host(path: string, depth = 0): void {
    if (depth > 40) throw new Error(`too many symbolic links at ${path}`);
    const parts = path.split('/').filter(Boolean);
    let cur = '/';
    for (let i = 0; i < parts.length; i++) {
      const next = posix.join(cur, parts[i]!);
      const st = lstatSync(next);
      if (st.isSymbolicLink()) {
        const target = readlinkSync(next);
        this.symlink(next, target);
        const resolved = posix.resolve(cur, target);
        this.host(posix.join(resolved, ...parts.slice(i + 1)), depth + 1);
        return;
      }
      if (i < parts.length - 1) {
        if (!this.entries.has(next)) this.dir(next, st.mode & 0o7777);
      } else if (st.isDirectory()) this.dir(next, st.mode & 0o7777);
      else if (st.isFile()) {
        this.dir(cur);
        this.entries.set(next, {
          type: 'file',
          path: next,
          data: readFileSync(next),
          mode: st.mode & 0o7777,
        });
      }
      cur = next;
    }
  }

  /** A host directory tree copied to `dest`, symlinks kept as they are. */
  tree(source: string, dest: string): void {
    const st = lstatSync(source);
    if (st.isSymbolicLink()) this.symlink(dest, readlinkSync(source));
    else if (st.isDirectory()) {
      this.dir(dest, st.mode & 0o7777);
      for (const name of readdirSync(source).sort())
        this.tree(join(source, name), posix.join(dest, name));
    } else if (st.isFile()) this.file(dest, readFileSync(source), st.mode & 0o7777);
  }

  layer(): LayerEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
  }
}

function isElf(path: string): boolean {
  try {
    const b = readFileSync(path).subarray(0, 4);
    return b.length === 4 && b[0] === 0x7f && b.toString('latin1', 1, 4) === 'ELF';
  } catch {
    return false;
  }
}

/** The shared libraries (and the dynamic loader) `ldd` says an ELF file loads. */
function sharedLibraries(path: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return []; // static, or not a dynamic object
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    if (/=> not found/.test(line)) throw new Error(`${path}: ${line.trim()}`);
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** Files of an installed Debian package, without docs, man pages and translations. */
function packageFiles(pkg: string): string[] {
  let out: string;
  try {
    out = execFileSync('dpkg-query', ['-L', pkg], { encoding: 'utf8', stdio: 'pipe' });
  } catch {
    throw new Error(
      `the Dockerfile installs the Debian package ${pkg}, which this host does not have; install it (apt-get install ${pkg}) and build again`,
    );
  }
  return out
    .split('\n')
    .filter((p) => p.startsWith('/') && p !== '/.')
    .filter((p) => !/^\/usr\/share\/(doc|man|info|lintian|locale|bug)(\/|$)/.test(p))
    .filter((p) => existsSync(p) && !lstatSync(p).isDirectory());
}

function osRelease(): Record<string, string> {
  const text = readFileSync('/etc/os-release', 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .map((l) => /^(\w+)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!.replace(/^"|"$/g, '')]),
  );
}

/** `npm ci --omit=dev` for this lock file, cached by its digest (the build stage's prune). */
function productionModules(root: string, log: (line: string) => void): string {
  const lock = readFileSync(join(root, 'package-lock.json'));
  const pkg = readFileSync(join(root, 'package.json'));
  const key = createHash('sha256').update(lock).update(pkg).digest('hex').slice(0, 16);
  const dir = join(cacheRoot(), 'image', `node-modules-${key}`);
  if (existsSync(join(dir, '.complete'))) return join(dir, 'node_modules');
  log('image: npm ci --omit=dev (production dependencies, cached by package-lock.json)');
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  cpSync(join(root, 'package.json'), join(tmp, 'package.json'));
  cpSync(join(root, 'package-lock.json'), join(tmp, 'package-lock.json'));
  execFileSync(
    'npm',
    ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
    { cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  execFileSync('touch', [join(dir, '.complete')]);
  return join(dir, 'node_modules');
}

export interface AgentImageOptions {
  /** The checkout: Dockerfile, package.json, dist/, build/Release/. */
  root: string;
  reference?: string;
  log?: (line: string) => void;
}

export const AGENT_IMAGE_REFERENCE = 'libvirt-operator:dev';

export function buildAgentImage(opts: AgentImageOptions): BuiltImage & { recipe: RuntimeRecipe } {
  const log = opts.log ?? (() => undefined);
  const root = opts.root;
  const recipe = runtimeRecipe(readFileSync(join(root, 'Dockerfile'), 'utf8'));

  // FROM: node:<major>-<codename>-slim, matched against this host.
  const base = /^node:(\d+)-(\w+)-slim$/.exec(recipe.base);
  if (!base)
    throw new Error(
      `the offline build knows node:<major>-<release>-slim bases, not ${recipe.base}`,
    );
  const release = osRelease();
  if (release.ID !== 'debian' || release.VERSION_CODENAME !== base[2])
    throw new Error(
      `the Dockerfile's runtime stage is Debian ${base[2]}, this host is ${release.ID} ${release.VERSION_CODENAME}: the host's packages would not be that image's`,
    );
  const nodeMajor = process.versions.node.split('.')[0];
  if (nodeMajor !== base[1])
    throw new Error(`the Dockerfile's base has Node ${base[1]}, this build runs Node ${nodeMajor}`);

  // The build stage's products, from this checkout.
  const products: Record<string, string> = {
    'package.json': join(root, 'package.json'),
    dist: join(root, 'dist'),
    crds: join(root, 'crds'),
    'build/Release/libvirt_native.node': join(root, 'build', 'Release', 'libvirt_native.node'),
  };
  for (const [name, path] of Object.entries(products))
    if (!existsSync(path))
      throw new Error(`${name} is missing: run 'npm run setup' (addon and TypeScript build) first`);
  for (const c of recipe.copies)
    if (c.source !== 'node_modules' && !(c.source in products))
      throw new Error(
        `the Dockerfile copies ${c.source} from the build stage, which the offline build does not produce`,
      );

  const system = new RootFs();
  const elves: string[] = [];
  system.file('/usr/local/bin/node', readFileSync(process.execPath), 0o755);
  elves.push(process.execPath);
  for (const p of ['/usr/bin/env', '/etc/os-release']) {
    system.host(p);
    if (isElf(p)) elves.push(p);
  }
  system.file(
    '/etc/passwd',
    Buffer.from(
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    ),
  );
  system.file('/etc/group', Buffer.from('root:x:0:\nnogroup:x:65534:\n'));
  system.dir('/root', 0o700);
  system.dir('/tmp', 0o1777);
  for (const pkg of recipe.packages) {
    log(`image: Debian package ${pkg}`);
    for (const file of packageFiles(pkg)) {
      system.host(file);
      if (isElf(file)) elves.push(file);
    }
  }
  const addon = products['build/Release/libvirt_native.node']!;
  const seen = new Set<string>();
  for (const elf of [...elves, addon])
    for (const lib of sharedLibraries(elf))
      if (!seen.has(lib)) {
        seen.add(lib);
        system.host(lib);
      }

  const app = new RootFs();
  const modules = productionModules(root, log);
  for (const c of recipe.copies)
    app.tree(c.source === 'node_modules' ? modules : products[c.source]!, c.dest);
  for (const { mode, path } of recipe.chmods) {
    const e = app.entries.get(path);
    if (!e || e.type === 'symlink')
      throw new Error(`Dockerfile: chmod of ${path}, which the image does not have`);
    e.mode = mode;
  }
  for (const { target, link } of recipe.links) app.symlink(link, target);

  log(`image: packing ${system.entries.size + app.entries.size} entries`);
  const image = buildImage({
    reference: opts.reference ?? AGENT_IMAGE_REFERENCE,
    layers: [system.layer(), app.layer()],
    config: recipe.config,
    history: [
      `FROM ${recipe.base} + apt-get install ${recipe.packages.join(' ')} (host files, offline)`,
      `COPY --from=build ${recipe.copies.map((c) => c.source).join(' ')}`,
    ],
  });
  return { ...image, recipe };
}

/** Writes the image's OCI layout tar to `file` (via a temp name, so a reader never sees half). */
export function writeImage(image: BuiltImage, file: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, image.archive);
  renameSync(tmp, file);
}
