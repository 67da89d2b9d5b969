// `forget-node` on a real API server: a retired host's finalizers and status entries go, and
// nothing of a live node's; refused while the Node exists or its agent renews its Lease.
import { describe, expect, it } from 'vitest';
import { collect, spawnCli } from '../../harness/processes.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON } from '../../harness/agent.js';
import { dirPool, natNetwork } from '../../harness/manifests.js';

const GONE = 'retired-1';
const ALIVE = 'alive-1';
const NS = 'default';

interface Obj {
  metadata: { finalizers?: string[] };
  status?: { nodes?: Array<{ nodeName: string }> };
}

describe('forget-node', () => {
  const cp = useControlPlane();
  const kubectl = async (args: string[], input?: string) => {
    const res = await cp().kubectl(args, input === undefined ? {} : { input });
    expect(res.code, res.stderr).toBe(0);
    return res.stdout;
  };
  const forget = (...args: string[]) =>
    collect(spawnCli(['forget-node', ...args, '--kubeconfig', cp().kubeconfigPath]));
  const finalizersOf = async (...what: string[]) =>
    (await getJSON<Obj>(cp(), what)).metadata.finalizers ?? [];

  const objects = [
    {
      ...natNetwork('fn-net', 'fnbr0', 231),
      metadata: { name: 'fn-net', finalizers: [`node.virt.dev/${GONE}`, `node.virt.dev/${ALIVE}`] },
    },
    {
      ...dirPool('fn-pool', '/var/lib/fn-pool'),
      metadata: { name: 'fn-pool', finalizers: [`node.virt.dev/${GONE}`] },
    },
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: {
        name: 'fn-root',
        namespace: NS,
        finalizers: ['virt.dev/host-cleanup', 'virt.dev/volume-protection'],
      },
      spec: { nodeName: GONE, pool: 'fn-pool', capacity: '64Mi' },
    },
    ...[GONE, ALIVE].map((node) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: `fn-vm-${node}`, namespace: NS, finalizers: ['virt.dev/host-cleanup'] },
      spec: { nodeName: node, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
    })),
    {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachineSnapshot',
      metadata: { name: 'fn-snap', namespace: NS, finalizers: [`node.virt.dev/${GONE}`] },
      spec: { vmName: `fn-vm-${GONE}` },
    },
  ];

  it('is refused while the Node exists, and while its agent renews its Lease', async () => {
    await kubectl(['create', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n---\n'));
    await kubectl([
      'patch',
      'virtualnetwork',
      'fn-net',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { nodes: [{ nodeName: ALIVE }, { nodeName: GONE }] } }),
    ]);
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: GONE } }),
    );
    const alive = await forget(GONE);
    expect(alive.code).toBe(1);
    expect(alive.stderr).toContain(
      `Node ${GONE} still exists: delete it (kubectl delete node ${GONE})`,
    );

    await kubectl(['delete', 'node', GONE]);
    await kubectl(['create', 'namespace', 'libvirt-operator']);
    const lease = (renewTime: string) =>
      JSON.stringify({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: `libvirt-operator-${GONE}`, namespace: 'libvirt-operator' },
        spec: { holderIdentity: 'x', leaseDurationSeconds: 40, renewTime },
      });
    await kubectl(['apply', '-f', '-'], lease(new Date().toISOString().replace(/Z$/, '000Z')));
    const renewing = await forget(GONE);
    expect(renewing.code).toBe(1);
    expect(renewing.stderr).toMatch(/renewed its Lease \d+ s ago: the host still runs it/);
    await kubectl(['apply', '-f', '-'], lease('2026-01-01T00:00:00.000000Z'));
    expect(await finalizersOf('virtualnetwork', 'fn-net')).toHaveLength(2);
  });

  it('with --dry-run says what it would remove and removes nothing', async () => {
    const res = await forget(GONE, '--dry-run');
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(
      `would remove: VirtualNetwork fn-net: finalizer node.virt.dev/${GONE}, status.nodes entry ${GONE}`,
    );
    expect(res.stdout).toContain(
      `would remove: Volume ${NS}/fn-root: finalizer virt.dev/host-cleanup, finalizer virt.dev/volume-protection`,
    );
    expect(res.stdout).toContain('5 objects would no longer wait');
    expect(await finalizersOf('volume', 'fn-root', '-n', NS)).toHaveLength(2);
  });

  it('removes the retired node’s finalizers and status entry, and nothing of a live one', async () => {
    const res = await forget(GONE);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('5 objects no longer wait');
    const net = await getJSON<Obj>(cp(), ['virtualnetwork', 'fn-net']);
    expect(net.metadata.finalizers).toEqual([`node.virt.dev/${ALIVE}`]);
    expect(net.status?.nodes).toEqual([{ nodeName: ALIVE }]);
    expect(await finalizersOf('storagepool', 'fn-pool')).toEqual([]);
    expect(await finalizersOf('volume', 'fn-root', '-n', NS)).toEqual([]);
    expect(await finalizersOf('vm', `fn-vm-${GONE}`, '-n', NS)).toEqual([]);
    expect(await finalizersOf('vm', `fn-vm-${ALIVE}`, '-n', NS)).toEqual(['virt.dev/host-cleanup']);
    expect(await finalizersOf('virtualmachinesnapshot', 'fn-snap', '-n', NS)).toEqual([]);
    // Deleting what the retired host held no longer waits for it.
    await kubectl(['delete', 'vm', `fn-vm-${GONE}`, '-n', NS, '--wait=true', '--timeout=20s']);
    const again = await forget(GONE);
    expect(again.stdout.trim()).toBe(`nothing of node ${GONE} left on any object`);
  });

  it('needs exactly one NODE', async () => {
    const res = await forget();
    expect(res.code).toBe(2);
    expect(res.stderr.trim()).toBe(
      "libvirt-operator forget-node: exactly one NODE is required; see 'forget-node --help'",
    );
  });

  it("refuses a NODE that is no node's name instead of looking up another path", async () => {
    // '' listed all Nodes and '..' read /api/v1: both answered "Node ... still exists".
    for (const [node, why] of [
      ['', 'NODE must not be empty'],
      ['..', "NODE may not be '.' or '..'"],
    ] as const) {
      const res = await forget(node);
      expect(res.stderr.trim(), node).toBe(
        `libvirt-operator forget-node: ${why}; see 'forget-node --help'`,
      );
      expect(res.code, node).toBe(2);
    }
  });
});
