// A deleted machine whose restore another node's agent claimed (a host that died and was not
// forgotten): the admission policy refuses this node's agent the restore's DELETE, so the
// machine's deletion waits. It must say so where `kubectl get`, `kubectl wait` and kstatus
// look, its conditions, not only in an Event; and `forget-node` must end the wait. Real
// control plane with manifests/ applied (RBAC and the policy), the real agent with a pod-bound
// token for node-a, libvirt's test driver.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import type { VirtualMachine } from '../../../src/api/generated/types.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';
import { kstatus } from '../../harness/health-tools.js';
import { collect, spawnCli } from '../../harness/processes.js';
import { boundAgentToken, kubeConfigWithToken } from './agent-identity.js';

const MANIFESTS = join(packageRoot(), 'manifests');
const NODE = 'node-a';
const GONE = 'node-gone';
const id = randomBytes(3).toString('hex');
const NS = `delblk-${id}`;
const VM = `vm-${id}`;
const RESTORE = `back-${id}`;

interface EventList {
  items: Array<{ type: string; reason: string; message: string }>;
}

describe("a deleted machine waiting for a restore another node's agent claimed", () => {
  const cp = useControlPlane();
  let agent: TestAgent | undefined;
  const admin = async (args: string[], input?: string) => {
    const res = await cp().kubectl(args, input === undefined ? {} : { input });
    if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr.trim()}`);
    return res.stdout;
  };

  beforeAll(async () => {
    await admin(['apply', '-k', MANIFESTS]);
    await admin(['create', 'namespace', NS]);
    const token = await boundAgentToken(cp(), MANIFESTS, NODE);
    agent = await startTestAgent(cp(), {
      nodeName: NODE,
      kubeConfig: kubeConfigWithToken(cp(), token),
    });
  }, 120_000);
  afterAll(async () => {
    await agent?.stop();
  });

  it('shows DeletionBlocked naming the restore and its node, until forget-node', async () => {
    await admin(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachine',
        metadata: { name: VM, namespace: NS },
        spec: { nodeName: NODE, runStrategy: 'Always', vcpus: 1, memory: '64Mi' },
      }),
    );
    await until('the machine Running', async () => {
      const vm = await getJSON<VirtualMachine>(cp(), ['vm', VM, '-n', NS]);
      return vm.status?.phase === 'Running';
    });
    // A restore of it that a host which died claimed: as the admin, its status names that node.
    await admin(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachineRestore',
        metadata: { name: RESTORE, namespace: NS },
        spec: { vmName: VM, snapshotName: `snap-${id}` },
      }),
    );
    await admin([
      'patch',
      'vmrestore',
      RESTORE,
      '-n',
      NS,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { nodeName: GONE } }),
    ]);

    await admin(['delete', 'vm', VM, '-n', NS, '--wait=false']);
    const blocked = await until('the machine DeletionBlocked', async () => {
      const vm = await getJSON<VirtualMachine>(cp(), ['vm', VM, '-n', NS]);
      const c = vm.status?.conditions?.find((c) => c.type === 'DeletionBlocked');
      return c?.status === 'True' && { vm, c };
    });
    expect(blocked.c.reason).toBe('RestoreClaimedElsewhere');
    expect(blocked.c.message).toContain(`VirtualMachineRestore ${NS}/${RESTORE}`);
    expect(blocked.c.message).toContain(`claimed by node ${GONE}`);
    expect(blocked.c.message).toContain(`'libvirt-operator forget-node ${GONE}'`);
    // The domain is gone from the node: the status no longer shows the run it had.
    expect(blocked.vm.status?.phase).toBe('Stopped');
    const ready = blocked.vm.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'RestoreClaimedElsewhere' });
    expect(blocked.vm.status?.state).toBeUndefined();
    // kstatus judges the deletion before the conditions: Terminating, not the Failed the
    // Stalled condition alone would give (docs/api.md, Health for GitOps tools).
    expect(kstatus([blocked.vm]).get(`VirtualMachine/${VM}`)?.status).toBe('Terminating');
    expect(blocked.vm.status?.conditions?.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'RestoreClaimedElsewhere',
    });
    // kubectl wait reads it as any other condition.
    await admin(['wait', `vm/${VM}`, '-n', NS, '--for=condition=DeletionBlocked', '--timeout=5s']);
    const events = JSON.parse(
      await admin([
        'get',
        'events',
        '-n',
        NS,
        `--field-selector=involvedObject.name=${VM},reason=DeletePending`,
        '-o',
        'json',
      ]),
    ) as EventList;
    expect(events.items.length).toBeGreaterThan(0);
    expect(events.items[0]).toMatchObject({ type: 'Warning', message: blocked.c.message });

    // The retired host is forgotten: its claim on the restore goes, and with it the wait.
    const forget = await collect(
      spawnCli(['forget-node', GONE, '--kubeconfig', cp().kubeconfigPath]),
    );
    expect(forget.code, forget.stderr).toBe(0);
    await until(
      'the machine and the restore gone',
      async () => {
        const vm = await cp().kubectl([
          'get',
          'vm',
          VM,
          '-n',
          NS,
          '--ignore-not-found',
          '-o',
          'name',
        ]);
        const r = await cp().kubectl([
          'get',
          'vmrestore',
          RESTORE,
          '-n',
          NS,
          '--ignore-not-found',
          '-o',
          'name',
        ]);
        return vm.code === 0 && r.code === 0 && vm.stdout.trim() === '' && r.stdout.trim() === '';
      },
      30_000,
    );
  });
});
