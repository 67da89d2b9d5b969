// The agent reconciles nothing until every kind has listed (agent.ts passes every informer as
// `readsFrom`): a pass may read any kind's cache, and an empty cache that has not listed yet
// looks like objects that were deleted (a snapshot whose machine seemed gone was deleted at
// agent start: the crash test's seed 1100211920). Here one CRD is installed only after the
// agent started: a VirtualMachine waits, untouched, and /readyz names the kind that has not
// listed; once the CRD is there the machine converges.
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type Agent } from '../../../src/agent/agent.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode, getJSON, until } from '../../harness/agent.js';

const NODE = 'node-first-list';
const LATE = 'virtualmachinerestore.yaml';

interface Vm {
  metadata: { finalizers?: string[] };
  status?: { phase?: string };
}

/** A directory with the given CRD files of crds/, for installCRDs. */
function crdDir(pick: (file: string) => boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'lvo-crds-'));
  for (const f of readdirSync('crds').filter((f) => f.endsWith('.yaml') && pick(f))) {
    copyFileSync(join('crds', f), join(dir, f));
  }
  return dir;
}

describe('an agent whose kinds have not all listed yet', () => {
  const cp = useControlPlane({ installCRDs: false });
  let agent: Agent | undefined;
  let stateDir: string;
  const dirs: string[] = [];

  beforeAll(async () => {
    const early = crdDir((f) => f !== LATE);
    dirs.push(early);
    await cp().installCRDs(early);
    await ensureNode(cp(), NODE);
    stateDir = mkdtempSync(join(tmpdir(), 'lvo-agent-'));
  });
  afterAll(async () => {
    await agent?.stop();
    for (const d of [...dirs, stateDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('touches no object until the last kind lists, says which in /readyz, then converges', async () => {
    agent = await startAgent({
      libvirtUri: 'test:///default',
      kubeConfig: cp().kubeConfig,
      stateDir,
      lease: false,
      log: { level: process.env.LVO_TEST_LOG ?? 'silent' },
      resyncMs: 60_000,
      nodeName: NODE,
    });
    const applied = await cp().kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachine',
        metadata: { name: 'waits', namespace: 'default' },
        spec: { nodeName: NODE, runStrategy: 'Halted', vcpus: 1, memory: '64Mi' },
      }),
    });
    expect(applied.code, applied.stderr).toBe(0);
    const vms = agent.informers.VirtualMachine;
    await until(
      'the machine in the listed cache',
      async () => vms.hasSynced() && vms.cache.list().length === 1,
    );
    // Long enough for a pass to have added the finalizer had one run (it takes milliseconds).
    await new Promise((r) => setTimeout(r, 1_500));
    const untouched = await getJSON<Vm>(cp(), ['vm', 'waits', '-n', 'default']);
    expect(untouched.metadata.finalizers ?? []).toEqual([]);
    // Only the schema's default: nothing written.
    expect(untouched.status).toEqual({ observedGeneration: 0 });
    const readiness = await agent.runtime.ready();
    expect(readiness.ready).toBe(false);
    expect(readiness.lines.join('\n')).toMatch(/virtualmachinerestores/);

    const late = crdDir((f) => f === LATE);
    dirs.push(late);
    await cp().installCRDs(late);
    // The late informer retries its list with backoff (up to 30 s between tries).
    const vm = await until(
      'the machine Stopped',
      async () => {
        const o = await getJSON<Vm>(cp(), ['vm', 'waits', '-n', 'default']);
        return o.status?.phase === 'Stopped' && o;
      },
      60_000,
    );
    expect(vm.metadata.finalizers?.length).toBeGreaterThan(0);
    expect((await agent.runtime.ready()).ready).toBe(true);

    const gone = await cp().kubectl(['delete', 'vm', 'waits', '-n', 'default', '--timeout=30s']);
    expect(gone.code, gone.stderr).toBe(0);
  });
});
