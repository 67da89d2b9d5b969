// A VirtualNetwork on two nodes whose second Node is deleted after its agent stopped (a host
// retired without cleaning up), on a real API server with two agents on libvirt's test driver:
// the dead node's entry stays (for forget-node) but no longer holds the summary back, so a spec
// change reaches observedGeneration and Ready on the node that remains, where the entry kept
// observedGeneration at the old generation for ever.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';

const suffix = randomBytes(3).toString('hex');
const A = `kept-${suffix}`;
const B = `gone-${suffix}`;
const NET = `both-${suffix}`;

interface Cond {
  type: string;
  status: string;
  reason?: string;
}
interface Net {
  metadata: { generation?: number };
  status?: {
    observedGeneration?: number;
    readyNodes?: string;
    conditions?: Cond[];
    nodes?: { nodeName: string; observedGeneration?: number }[];
  };
}
const ready = (o: Net) => o.status?.conditions?.find((c) => c.type === 'Ready');

describe('a deleted Node', () => {
  const cp = useControlPlane();
  let a: TestAgent;
  let b: TestAgent | undefined;
  let hostDir: string;

  beforeAll(async () => {
    hostDir = mkdtempSync(join(tmpdir(), 'lvo-gone-'));
    writeFileSync(join(hostDir, 'node-b.xml'), '<node/>\n');
    a = await startTestAgent(cp(), { nodeName: A });
    b = await startTestAgent(cp(), {
      nodeName: B,
      libvirtUri: `test://${join(hostDir, 'node-b.xml')}`,
    });
  }, 20 * 60_000);

  afterAll(async () => {
    await b?.stop();
    await cp()
      .kubectl(['patch', 'vnet', NET, '--type=merge', '-p', '{"metadata":{"finalizers":null}}'])
      .catch(() => undefined);
    await cp().kubectl(['delete', 'vnet', NET, '--ignore-not-found', '--wait=false']);
    await a?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  it('no longer holds the summary back, and its entry stays for forget-node', async () => {
    const manifest = (mtu: number) =>
      JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualNetwork',
        metadata: { name: NET },
        spec: { mode: 'isolated', mtu },
      });
    const applied = await cp().kubectl(['apply', '--server-side', '-f', '-'], {
      input: manifest(1500),
    });
    expect(applied.code, applied.stderr).toBe(0);
    await until('Ready on both nodes', async () => {
      const o = await getJSON<Net>(cp(), ['vnet', NET]);
      return o.status?.readyNodes === '2/2' && ready(o)?.status === 'True';
    });

    // The host dies without cleaning up, and its Node is deleted.
    await b?.stop();
    b = undefined;
    const del = await cp().kubectl(['delete', 'node', B]);
    expect(del.code, del.stderr).toBe(0);

    const changed = await cp().kubectl(['apply', '--server-side', '-f', '-'], {
      input: manifest(1400),
    });
    expect(changed.code, changed.stderr).toBe(0);
    const o = await until(
      'observedGeneration caught up on the remaining node',
      async () => {
        const got = await getJSON<Net>(cp(), ['vnet', NET]);
        return got.status?.observedGeneration === got.metadata.generation && got;
      },
      20_000,
    );
    expect(o.metadata.generation).toBe(2);
    expect(ready(o)).toMatchObject({ status: 'True', reason: 'AllNodesReady' });
    expect(o.status?.readyNodes).toBe('1/1');
    // The dead node's entry is not another agent's to remove: forget-node does that.
    expect(o.status?.nodes?.find((n) => n.nodeName === B)).toMatchObject({
      observedGeneration: 1,
    });
  }, 60_000);
});
