// Claims of the user-facing docs that can be checked mechanically against the code and the
// manifests: after 30 sessions of changes, a reason added to the table that decides kstatus,
// an environment variable added to the agent or to the DaemonSet, went undocumented.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { agentConfig, type ConfigInput } from '../../../src/agent/config.js';
import { REASON_CLASSES } from '../../../src/api/conditions.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const ROOT = packageRoot();
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** The backticked names in a piece of markdown (`Foo` -> Foo). */
const backticked = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
/** The backticked reason-like names (`NameConflict`, not `spec.path`). */
const reasons = (text: string) => backticked(text).filter((w) => /^[A-Z][A-Za-z]+$/.test(w));

/** The rows of the first markdown table after `heading`, as arrays of cells. */
function tableAfter(markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(heading);
  expect(start, `heading ${heading}`).toBeGreaterThanOrEqual(0);
  const lines = markdown.slice(start).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.replace(/^\|? *| *\|?$/g, '')),
    );
  }
  return rows;
}

describe('docs/api.md: the health table', () => {
  const api = read('docs/api.md');
  const rows = tableAfter(api, '## Health for GitOps tools');
  const stalledRow = rows.find((r) => r[0]!.startsWith('False, user-fixable reason'));
  const otherRow = rows.find((r) => r[0]!.startsWith('False, any other reason'));
  // Phases named in the rows' asides, not reasons.
  const PHASES = new Set(['Failed', 'Pending']);

  it('names every reason REASON_CLASSES classes as stalled in the Stalled row', () => {
    const named = new Set(reasons(stalledRow![0]!));
    const stalled = Object.keys(REASON_CLASSES).filter((r) => REASON_CLASSES[r] === 'stalled');
    expect(stalled.filter((r) => !named.has(r))).toEqual([]);
  });

  it('names in each row only reasons of that class', () => {
    const wrongStalled = reasons(stalledRow![0]!).filter(
      (r) => !PHASES.has(r) && REASON_CLASSES[r] !== 'stalled',
    );
    expect(wrongStalled).toEqual([]);
    // Reasons outside the table are transient too (isStalledReason), so only named ones count.
    const wrongOther = reasons(otherRow![0]!).filter(
      (r) => !PHASES.has(r) && REASON_CLASSES[r] === 'stalled',
    );
    expect(wrongOther).toEqual([]);
  });
});

describe('docs/api.md: an object being deleted', () => {
  // kstatus (status.Compute) and Argo CD (gitops-engine GetResourceHealth) look at
  // metadata.deletionTimestamp before any condition: the table's Failed/Degraded does not
  // hold for a deletion that waits for a user (test/integration/deploy/deletion-blocked.test.ts
  // runs kstatus on one).
  const section = read('docs/api.md').split('## Health for GitOps tools')[1]!.split('\n## ')[0]!;

  it('says kstatus reads it Terminating and Argo CD Progressing, whatever its conditions', () => {
    const flat = section.replace(/\s+/g, ' ');
    expect(flat).toMatch(
      /An object being deleted \(.*?\) is judged by its deletion before its conditions: kstatus reads it `Terminating`/,
    );
    expect(flat).toMatch(/Argo CD `Progressing` \("Pending deletion"\)/);
  });
});

describe("README.md: the agent's configuration table", () => {
  const rows = tableAfter(read('README.md'), '## Configuration (`libvirt-operator run`)');
  const flagOf = (row: string[]) => backticked(row[0]!)[0]?.replace(/^--/, '');
  const envOf = (row: string[]) => backticked(row[1]!)[0];

  it("lists exactly run's flags", () => {
    const source = read('src/commands/run.ts');
    const block = /const FLAGS = \{([\s\S]*?)\} satisfies Options;/.exec(source)![1]!;
    const flags = [...block.matchAll(/^\s+'?([a-z-]+)'?: \{/gm)].map((m) => m[1]);
    expect(rows.map(flagOf).filter(Boolean).sort()).toEqual(flags.sort());
  });

  it("gives each flag the variable the agent reads in the flag's place", () => {
    const defaults = { hostname: () => 'host-a', libvirtUri: () => 'test:///default' };
    const values: Record<string, string> = {
      'node-name': 'node-b',
      'libvirt-uri': 'qemu:///session',
      kubeconfig: '/tmp/k',
      'health-addr': '127.0.0.1:9',
      'metrics-addr': '127.0.0.1:10',
      'state-dir': '/tmp/s',
      'lease-namespace': 'ns-b',
      'lease-duration': '12',
      'log-level': 'debug',
    };
    const base = agentConfig({ flags: {}, env: {} }, defaults);
    for (const row of rows.filter((r) => flagOf(r) && envOf(r))) {
      const flag = flagOf(row)! as keyof ConfigInput['flags'];
      const byFlag = agentConfig({ flags: { [flag]: values[flag] }, env: {} }, defaults);
      const byEnv = agentConfig({ flags: {}, env: { [envOf(row)!]: values[flag] } }, defaults);
      expect(byFlag, flag).not.toEqual(base);
      expect(byEnv, `${envOf(row)} for --${flag}`).toEqual(byFlag);
    }
  });

  it('lists every variable the native binding reads', () => {
    const native = join(ROOT, 'src/libvirt/native');
    const read = readdirSync(native)
      .filter((f) => /\.(cc|h)$/.test(f))
      .flatMap((f) => [
        ...readFileSync(join(native, f), 'utf8').matchAll(/getenv\("(LIBVIRT_NATIVE_\w+)"\)/g),
      ])
      .map((m) => m[1]!);
    const documented = rows.map(envOf).filter((e) => e?.startsWith('LIBVIRT_NATIVE_'));
    expect([...new Set(read)].sort()).toEqual(documented.sort());
  });
});

describe("docs/deploy.md: the DaemonSet's settings", () => {
  it("names every variable the DaemonSet's agent container sets", () => {
    const rows = tableAfter(read('docs/deploy.md'), '## The DaemonSet');
    const envRow = rows.find((r) => r[0] === 'env')!;
    const ds = parse(read('manifests/base/daemonset.yaml')) as {
      spec: { template: { spec: { containers: Array<{ env: Array<{ name: string }> }> } } };
    };
    const set = ds.spec.template.spec.containers[0]!.env.map((e) => e.name);
    const named = new Set(backticked(envRow[1]!).map((c) => c.split(/[ =]/)[0]));
    expect(set.filter((name) => !named.has(name))).toEqual([]);
  });
});
