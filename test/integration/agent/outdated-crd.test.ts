// An agent newer than the installed CRDs (the image tag changed, crds/ not re-applied): the
// StoragePool CRD here is this version's without status.readyNodes, as older releases had it.
// The API server refuses every summary apply that carries the field (HTTP 500 "field not
// declared in schema"). The agent must say so once, naming the kind, the field and the fix, keep
// its readiness failing with the same words, put a Warning Event on the object, and recover by
// itself once this version's CRDs are applied.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { startAgent, type Agent } from '../../../src/agent/agent.js';
import { createLogger } from '../../../src/runtime/log.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode, getJSON, until } from '../../harness/agent.js';

const id = randomBytes(3).toString('hex');
const NODE = `node-skew-${id}`;
const POOL = `skew-${id}`;
/** A second pool, deleted while refused: its write is never made again. */
const DOOMED = `skew-doomed-${id}`;
const MESSAGE =
  "the installed CustomResourceDefinition for StoragePool is older than this agent: it lacks .status.readyNodes; apply this version's CRDs: kubectl apply -k manifests/ (docs/deploy.md, Upgrading)";

interface Schema {
  properties: Record<string, Schema>;
}

/** crds/ with StoragePool's status.readyNodes taken out of its schema. */
function olderCrds(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lvo-crds-'));
  for (const f of readdirSync('crds').filter((f) => f.endsWith('.yaml'))) {
    let text = readFileSync(join('crds', f), 'utf8');
    if (f === 'storagepool.yaml') {
      const crd = parseAllDocuments(text)[0]!.toJSON() as {
        spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> };
      };
      const status = crd.spec.versions[0]!.schema.openAPIV3Schema.properties.status!;
      expect(status.properties.readyNodes).toBeDefined();
      delete status.properties.readyNodes;
      text = stringify(crd);
    }
    writeFileSync(join(dir, f), text);
  }
  return dir;
}

interface Line {
  level: string;
  msg: string;
  kind?: string;
  key?: string;
  error?: { message: string };
}

describe('an agent newer than the installed CRDs', () => {
  const cp = useControlPlane({ installCRDs: false });
  const lines: Line[] = [];
  let agent: Agent | undefined;
  let stateDir: string;
  let crdDir: string;

  beforeAll(async () => {
    crdDir = olderCrds();
    await cp().installCRDs(crdDir);
    await ensureNode(cp(), NODE);
    stateDir = mkdtempSync(join(tmpdir(), 'lvo-agent-'));
  });
  afterAll(async () => {
    await cp()
      .kubectl(['delete', 'storagepool', POOL, DOOMED, '--ignore-not-found', '--wait=true'])
      .catch(() => undefined);
    await agent?.stop();
    for (const d of [crdDir, stateDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('says which field the CRD lacks and how to fix it, once, and recovers once it is applied', async () => {
    agent = await startAgent({
      libvirtUri: 'test:///default',
      kubeConfig: cp().kubeConfig,
      stateDir,
      lease: false,
      log: createLogger({
        level: 'debug',
        destination: { write: (s: string) => void lines.push(JSON.parse(s) as Line) },
      }),
      resyncMs: 60_000,
      nodeName: NODE,
    });
    await agent.synced;
    for (const name of [POOL, DOOMED]) {
      const applied = await cp().kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'StoragePool',
          metadata: { name },
          spec: { path: `/var/lib/lvo-skew-${id}/${name}` },
        }),
      });
      expect(applied.code, applied.stderr).toBe(0);
    }

    const readiness = await until('readiness failing on the CRD', async () => {
      const r = await agent!.runtime.ready();
      return !r.ready && r.lines.some((l) => l.startsWith('[-]crds')) && r;
    });
    expect(readiness.lines).toContain(`[-]crds failed: ${MESSAGE}`);
    // Retries go on (backoff from 5 ms): let several fail, then count what was said.
    const failures = () =>
      lines.filter((l) => l.msg === 'reconcile failed; retrying' && l.key === POOL);
    await until('several refused retries', async () => failures().length >= 3);
    expect(lines.filter((l) => l.msg === MESSAGE)).toEqual([
      expect.objectContaining({ level: 'error', kind: 'StoragePool' }),
    ]);
    // The retries name the cause too, but only at debug level: no error line per retry.
    expect(failures().every((l) => l.level === 'debug' && l.error?.message === MESSAGE)).toBe(true);
    expect(lines.filter((l) => l.level === 'error' && l.msg !== MESSAGE)).toEqual([]);

    const events = await until('a Warning Event on the pool', async () => {
      const list = await getJSON<{
        items: Array<{ reason: string; note: string; regarding: { name: string } }>;
      }>(cp(), ['events.v1.events.k8s.io', '-A']);
      const ours = list.items.filter(
        (e) => e.regarding.name === POOL && e.reason === 'CRDOutdated',
      );
      return ours.length > 0 && ours;
    });
    expect(events.map((e) => e.note)).toEqual([MESSAGE]);

    // The second pool, refused too, is deleted: no write of it will ever go through, and it
    // must not keep readiness failing once the CRDs are applied.
    await until('the doomed pool refused too', async () => {
      const list = await getJSON<{ items: Array<{ reason: string; regarding: { name: string } }> }>(
        cp(),
        ['events.v1.events.k8s.io', '-A'],
      );
      return list.items.some((e) => e.regarding.name === DOOMED && e.reason === 'CRDOutdated');
    });
    const deleted = await cp().kubectl(['delete', 'storagepool', DOOMED, '--wait=true']);
    expect(deleted.code, deleted.stderr).toBe(0);

    // This version's CRDs: the next retry goes through and readiness recovers by itself.
    await cp().installCRDs();
    await until(
      'the summary written',
      async () =>
        (await getJSON<{ status?: { readyNodes?: string } }>(cp(), ['storagepool', POOL])).status
          ?.readyNodes,
      120_000,
    );
    await until('readiness back', async () => (await agent!.runtime.ready()).ready, 30_000);
  }, 180_000);
});
