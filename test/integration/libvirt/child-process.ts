// Runs the binding in a separate Node process, for what cannot be observed from inside a test
// worker: whether the process exits by itself, what it prints, how it fails to load. The
// facade is transpiled (no type check) into a temp tree shaped like the repository, so its
// addon lookup (two levels up, build/Release) resolves to this checkout's build or to none.
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export interface CompiledFacade {
  dir: string;
  /** file URL of the compiled src/libvirt/index.js */
  indexUrl: string;
  remove(): Promise<void>;
}

export async function compileFacade(opts: { withAddon: boolean }): Promise<CompiledFacade> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lvbt-facade-'));
  const srcDir = path.join(repoRoot, 'src', 'libvirt');
  const outDir = path.join(dir, 'src', 'libvirt');
  // With its subfolders: the facade uses its XML reader (xml/) too.
  for (const file of await readdir(srcDir, { recursive: true })) {
    if (!file.endsWith('.ts')) continue;
    const source = await readFile(path.join(srcDir, file), 'utf8');
    const out = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    const target = path.join(outDir, file.replace(/\.ts$/, '.js'));
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, out.outputText);
  }
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n');
  if (opts.withAddon) await symlink(path.join(repoRoot, 'build'), path.join(dir, 'build'));
  return {
    dir,
    indexUrl: `file://${path.join(outDir, 'index.js')}`,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Whether it exited by itself before `timeoutMs`. */
  exited: boolean;
  ms: number;
}

/** Runs an ES module script; kills it after `timeoutMs` if it has not exited. */
export function runScript(
  script: string,
  opts: { timeoutMs: number; nodeArgs?: string[]; cwd?: string },
): Promise<ChildResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(
      process.execPath,
      [...(opts.nodeArgs ?? []), '--input-type=module', '-e', script],
      { cwd: opts.cwd ?? repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    let exited = true;
    const timer = setTimeout(() => {
      exited = false;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, exited, ms: Date.now() - started });
    });
  });
}
