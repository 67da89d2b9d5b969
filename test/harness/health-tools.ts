// What GitOps tools conclude about objects, computed by the tools' own engines: Argo CD's Lua
// health script run by the real lua5.4 interpreter, kstatus (sigs.k8s.io/cli-utils) and Flux's
// healthCheckExprs evaluated with cel-go (scripts/build-health-tools.sh builds both into one
// cached Go binary). A missing interpreter or Go toolchain fails with a message saying so.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../../src/commands/local/package-root.js';

export const ARGO_HEALTH_LUA = join(packageRoot(), 'manifests', 'argocd', 'health.lua');
export const FLUX_KUSTOMIZATION = join(
  packageRoot(),
  'manifests',
  'flux',
  'kustomization-health.yaml',
);

export interface Verdict {
  status: string;
  message: string;
}

/** A JSON value as a Lua constructor expression (what Argo CD hands the script as `obj`). */
export function luaValue(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'string') return JSON.stringify(v).replace(/\\u([0-9a-fA-F]{4})/g, '\\u{$1}');
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `{${v.map(luaValue).join(',')}}`;
  const entries = Object.entries(v as Record<string, unknown>).map(
    ([k, x]) => `[${luaValue(k)}]=${luaValue(x)}`,
  );
  return `{${entries.join(',')}}`;
}

/** Runs manifests/argocd/health.lua on `obj` with lua5.4. */
export function argoHealth(obj: unknown, script = ARGO_HEALTH_LUA): Verdict {
  const program =
    `obj = ${luaValue(obj)}\n` +
    `local hs = dofile(${JSON.stringify(script)})\n` +
    `io.write(hs.status, "\\n", hs.message or "")\n`;
  const res = spawnSync('lua5.4', ['-'], { input: program, encoding: 'utf8' });
  if (res.error) {
    throw new Error(
      `lua5.4 is needed to test the Argo CD health checks (${res.error.message}); run scripts/install-host-deps.sh`,
    );
  }
  if (res.status !== 0) throw new Error(`lua5.4 failed: ${res.stderr}`);
  const [status = '', ...rest] = res.stdout.split('\n');
  return { status, message: rest.join('\n') };
}

let healthCheckBinary: string | undefined;

/** Builds (once, cached outside the repository) and returns the health-check binary. */
export function healthCheckTool(): string {
  if (healthCheckBinary) return healthCheckBinary;
  const script = join(packageRoot(), 'scripts', 'build-health-tools.sh');
  try {
    healthCheckBinary = execFileSync('bash', [script], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 15 * 60_000,
    }).trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `building the kstatus/CEL health-check tool failed (needs Go and the module proxy): ${e.stderr?.slice(-2000) ?? e.message}`,
      { cause: err },
    );
  }
  return healthCheckBinary;
}

function runTool(args: string[], objects: unknown[]): Map<string, Verdict> {
  const out = execFileSync(healthCheckTool(), args, {
    input: JSON.stringify(objects),
    encoding: 'utf8',
  });
  const verdicts = new Map<string, Verdict>();
  for (const line of out.trim().split('\n')) {
    const [id = '', status = '', ...rest] = line.split(' ');
    verdicts.set(id, { status, message: rest.join(' ') });
  }
  return verdicts;
}

/** kstatus's verdict per `Kind/name`. */
export function kstatus(objects: unknown[]): Map<string, Verdict> {
  return runTool(['kstatus'], objects);
}

/** The healthCheckExprs of manifests/flux/kustomization-health.yaml. */
export function fluxExprs(): unknown[] {
  const doc = parse(readFileSync(FLUX_KUSTOMIZATION, 'utf8')) as {
    spec: { healthCheckExprs: unknown[] };
  };
  return doc.spec.healthCheckExprs;
}

/** Flux's verdict per `Kind/name` with the shipped healthCheckExprs (cel-go). */
export function fluxHealth(objects: unknown[]): Map<string, Verdict> {
  const dir = mkdtempSync(join(tmpdir(), 'lvo-cel-'));
  try {
    const file = join(dir, 'exprs.json');
    writeFileSync(file, JSON.stringify(fluxExprs()));
    return runTool(['cel', file], objects);
  } finally {
    // One folder per call: kept, a suite run left dozens in /tmp.
    rmSync(dir, { recursive: true, force: true });
  }
}
