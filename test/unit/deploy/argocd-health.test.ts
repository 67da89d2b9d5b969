// The Argo CD health script, run by the real lua5.4 on status objects captured from real runs
// (test/integration/agent/health.test.ts with LVO_CAPTURE_HEALTH_FIXTURES=1), and the shipped
// argocd-cm keys, which must each hold the script verbatim.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { ARGO_HEALTH_LUA, argoHealth, fluxExprs } from '../../harness/health-tools.js';

const FIXTURES = join(packageRoot(), 'test', 'fixtures', 'health');
const fixture = (file: string) => JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')) as Obj;
interface Obj {
  kind: string;
  metadata: { name: string; generation?: number };
  status?: { observedGeneration?: number; phase?: string; conditions?: unknown[] };
}

const KINDS = [
  'VirtualMachine',
  'Volume',
  'VirtualNetwork',
  'StoragePool',
  'VirtualMachineSnapshot',
  'VirtualMachineRestore',
];

describe('Argo CD health (manifests/argocd/health.lua, run by lua5.4)', () => {
  const expected: Record<string, string> = {
    'VirtualNetwork-health-net.json': 'Healthy',
    'StoragePool-health-pool.json': 'Healthy',
    'Volume-root.json': 'Healthy',
    'VirtualMachine-web.json': 'Healthy',
    'VirtualMachine-clash.json': 'Degraded',
    'Volume-slow.json': 'Progressing',
    'VirtualMachineSnapshot-web-snap.json': 'Healthy',
    'VirtualMachineRestore-waiting.json': 'Progressing',
  };

  it('has a captured fixture for every case and every kind', () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.json'));
    expect(files.sort()).toEqual(Object.keys(expected).sort());
    expect(new Set(files.map((f) => fixture(f).kind))).toEqual(new Set(KINDS));
  });

  it.each(Object.entries(expected))('%s is %s', (file, status) => {
    const verdict = argoHealth(fixture(file));
    expect(verdict.status).toBe(status);
    expect(verdict.message.length).toBeGreaterThan(0);
  });

  it('says Degraded with the cause for a name clash', () => {
    expect(argoHealth(fixture('VirtualMachine-clash.json')).message).toMatch(/^NameConflict: /);
  });

  it('is Progressing until the operator observed the current generation', () => {
    const vm = fixture('VirtualMachine-web.json');
    vm.metadata.generation = (vm.status?.observedGeneration ?? 0) + 1;
    expect(argoHealth(vm).status).toBe('Progressing');
    const fresh = { ...vm, status: undefined };
    expect(argoHealth(fresh)).toEqual({
      status: 'Progressing',
      message: 'waiting for the operator to report status',
    });
  });

  it('reports a usable object that is still converging (Ready and Reconciling) as Progressing', () => {
    const vol = fixture('Volume-root.json');
    const resizing = {
      type: 'Reconciling',
      status: 'True',
      reason: 'ResizeFailed',
      message: 'growing to 20 GiB failed',
    };
    vol.status = {
      ...vol.status,
      conditions: [
        ...(vol.status?.conditions ?? []).filter(
          (c) => (c as { type: string }).type !== 'Reconciling',
        ),
        resizing,
      ],
    };
    expect(argoHealth(vol)).toEqual({
      status: 'Progressing',
      message: 'ResizeFailed: growing to 20 GiB failed',
    });
  });

  it('reports a paused machine as Suspended', () => {
    const vm = fixture('VirtualMachine-web.json');
    vm.status = { ...vm.status, phase: 'Paused' };
    expect(argoHealth(vm).status).toBe('Suspended');
  });

  it('ships the script verbatim under an argocd-cm key for every kind', () => {
    const script = readFileSync(ARGO_HEALTH_LUA, 'utf8');
    const cm = parse(
      readFileSync(join(packageRoot(), 'manifests', 'argocd', 'argocd-cm-health.yaml'), 'utf8'),
    ) as { data: Record<string, string> };
    expect(Object.keys(cm.data).sort()).toEqual(
      KINDS.map((k) => `resource.customizations.health.virt.dev_${k}`).sort(),
    );
    for (const value of Object.values(cm.data)) expect(value).toBe(script);
  });

  it('documents Flux healthCheckExprs for every kind', () => {
    const kinds = (fluxExprs() as Array<{ kind: string; current?: string; failed?: string }>).map(
      (e) => {
        expect(e.current).toContain("'Ready'");
        expect(e.failed).toContain("'Stalled'");
        return e.kind;
      },
    );
    expect(kinds.sort()).toEqual([...KINDS].sort());
  });
});
