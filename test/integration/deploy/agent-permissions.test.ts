// What the agent's ServiceAccount can and cannot do once manifests/ is applied: RBAC, checked by
// impersonating the ServiceAccount, and the admission policy that scopes each agent to its
// node, checked with impersonated node claims and with real pod-bound tokens driving the
// agent's own write code (src/agent/kube-writes.ts).
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeFieldManager } from '../../../src/agent/kube-writes.js';
import {
  createEventRecorder,
  createKubeClient,
  createLogger,
  createStatusWriter,
  done,
  keyPath,
  referenceTo,
  startLease,
  type KubeObject,
} from '../../../src/runtime/index.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { nodeFinalizer } from '../../../src/controllers/context.js';
import { machineNotFound } from '../../../src/controllers/shared/missing-machine.js';
import { snapshotStatus } from '../../../src/controllers/virtual-machine-snapshot/status.js';
import { restoreStatus } from '../../../src/controllers/virtual-machine-restore/status.js';
import type {
  VirtualMachineRestore,
  VirtualMachineSnapshot,
} from '../../../src/api/generated/types.js';
import type { KubectlResult } from '../../../src/commands/local/control-plane.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { collect, spawnCli } from '../../harness/processes.js';
import { reconcileWithFinalizer } from '../../harness/finalizer.js';
import {
  AGENT_NAMESPACE,
  AGENT_USER,
  AGENT_GROUPS,
  boundAgentToken,
  kubeConfigWithToken,
  kubectlAsAgent,
} from './agent-identity.js';

const MANIFESTS = join(packageRoot(), 'manifests');
const TENANT = 'tenant';
const POLICY_DENIAL =
  /is forbidden: ValidatingAdmissionPolicy 'libvirt-operator-agent-node-scope' with binding 'libvirt-operator-agent-node-scope' denied request: /;

const vm = (name: string, nodeName: string) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachine',
  metadata: { name, namespace: TENANT, labels: { app: name } },
  spec: { nodeName, domainType: 'qemu', vcpus: 1, memory: '128Mi' },
});
const volume = (name: string, nodeName: string) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'Volume',
  metadata: { name, namespace: TENANT },
  spec: { nodeName, pool: 'images', capacity: '1Gi' },
});
const network = {
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualNetwork',
  metadata: { name: 'lab' },
  spec: { mode: 'isolated', bridge: 'virbr-lab' },
};
const pool = {
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'StoragePool',
  metadata: { name: 'images' },
  spec: { type: 'dir', path: '/var/lib/libvirt-operator/images' },
};

function expectForbiddenByRbac(res: KubectlResult): void {
  expect(res.code, res.stdout).not.toBe(0);
  expect(res.stderr).toMatch(
    /is forbidden: User "system:serviceaccount:libvirt-operator:libvirt-operator-agent" cannot/,
  );
}

function expectDeniedByPolicy(res: KubectlResult, message: RegExp): void {
  expect(res.code, res.stdout).not.toBe(0);
  expect(res.stderr).toMatch(POLICY_DENIAL);
  expect(res.stderr).toMatch(message);
}

function expectOk(res: KubectlResult): void {
  expect(res.code, res.stderr).toBe(0);
}

describe("the agent's ServiceAccount after kubectl apply -k manifests/", () => {
  const cp = useControlPlane();
  const asAgent = (node: string | undefined, args: string[], input?: string) =>
    kubectlAsAgent(cp(), node, args, input === undefined ? {} : { input });
  const admin = async (args: string[], input?: string) => {
    const res = await cp().kubectl(args, input === undefined ? {} : { input });
    if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr.trim()}`);
    return res.stdout;
  };
  const getJson = async <T>(args: string[]) =>
    JSON.parse(await admin([...args, '-o', 'json'])) as T;

  beforeAll(async () => {
    await admin(['apply', '-k', MANIFESTS]);
    await admin(['create', 'namespace', TENANT]);
    const objects = [
      pool,
      network,
      vm('vm-a', 'node-a'),
      vm('vm-b', 'node-b'),
      volume('disk-a', 'node-a'),
      volume('disk-b', 'node-b'),
    ];
    await admin(['apply', '-f', '-'], objects.map((o) => JSON.stringify(o)).join('\n'));
    await admin(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'cloud-init', namespace: TENANT },
        stringData: { userData: '#cloud-config\n' },
      }),
    );
  });

  describe('RBAC (impersonating the ServiceAccount)', () => {
    it('lists the VMs of its node with a field selector, and only those', async () => {
      const res = await asAgent(undefined, [
        'get',
        'virtualmachines',
        '--all-namespaces',
        '--field-selector=spec.nodeName=node-a',
        '-o',
        'name',
      ]);
      expectOk(res);
      expect(res.stdout.trim()).toBe('virtualmachine.virt.dev/vm-a');
    });

    it('watches the VMs of its node with a field selector', async () => {
      const res = await asAgent(undefined, [
        'get',
        '--raw',
        '/apis/virt.dev/v1alpha1/virtualmachines?watch=true&fieldSelector=spec.nodeName%3Dnode-a&timeoutSeconds=1',
      ]);
      expectOk(res);
      expect(res.stdout).toMatch(/"type":"ADDED".*"name":"vm-a"/);
      expect(res.stdout).not.toMatch(/"name":"vm-b"/);
    });

    it('reads one VM of another node by name (a snapshot’s machine: elsewhere, or nowhere?)', async () => {
      const res = await asAgent(undefined, [
        'get',
        'virtualmachine',
        'vm-b',
        '-n',
        TENANT,
        '-o',
        'name',
      ]);
      expectOk(res);
      expect(res.stdout.trim()).toBe('virtualmachine.virt.dev/vm-b');
    });

    it.each([
      ['get', 'nodes'],
      ['list', 'nodes'],
      ['watch', 'nodes'],
      ...['virtualmachines', 'volumes', 'virtualnetworks', 'storagepools'].flatMap((r) => [
        ['list', `${r}.virt.dev`],
        ['watch', `${r}.virt.dev`],
        ['patch', `${r}.virt.dev`, '--subresource=status'],
      ]),
      ['create', 'events.events.k8s.io', `--namespace=${TENANT}`],
      ['patch', 'events.events.k8s.io', `--namespace=${TENANT}`],
      ['create', 'leases.coordination.k8s.io', `--namespace=${AGENT_NAMESPACE}`],
      ['update', 'leases.coordination.k8s.io', `--namespace=${AGENT_NAMESPACE}`],
      ['get', 'leases.coordination.k8s.io', `--namespace=${AGENT_NAMESPACE}`],
    ])('may %s %s %s', async (...args) => {
      const res = await asAgent(undefined, ['auth', 'can-i', ...args]);
      expect(res.stdout.trim()).toBe('yes');
    });

    it.each([
      ['get', 'secrets', `--namespace=${TENANT}`],
      ['list', 'secrets', '--all-namespaces'],
      ['watch', 'secrets', `--namespace=${AGENT_NAMESPACE}`],
      ['delete', 'virtualmachines.virt.dev', `--namespace=${TENANT}`],
      ['create', 'virtualmachines.virt.dev', `--namespace=${TENANT}`],
      ['update', 'virtualmachines.virt.dev', `--namespace=${TENANT}`],
      ['delete', 'volumes.virt.dev', `--namespace=${TENANT}`],
      ['delete', 'virtualnetworks.virt.dev'],
      ['create', 'storagepools.virt.dev'],
      ['patch', 'nodes'],
      ['create', 'pods', `--namespace=${AGENT_NAMESPACE}`],
      ['delete', 'leases.coordination.k8s.io', `--namespace=${AGENT_NAMESPACE}`],
      ['create', 'leases.coordination.k8s.io', '--namespace=kube-node-lease'],
      ['update', 'leases.coordination.k8s.io', '--namespace=default'],
      ['update', 'customresourcedefinitions.apiextensions.k8s.io'],
      // Nothing the agent never does: it writes status only by server-side apply (a patch),
      // Events only through events.k8s.io, and sets no owner references (so it needs no
      // finalizers subresource).
      ...['virtualmachines', 'volumes', 'virtualnetworks', 'storagepools'].flatMap((r) => [
        ['update', `${r}.virt.dev`, '--subresource=status'],
        ['update', `${r}.virt.dev`, '--subresource=finalizers'],
      ]),
      ['update', 'virtualmachinesnapshots.virt.dev', '--subresource=status'],
      ['update', 'virtualmachinerestores.virt.dev', '--subresource=status'],
      ['update', 'virtualmachinesnapshots.virt.dev', '--subresource=finalizers'],
      ['create', 'events', `--namespace=${TENANT}`],
      ['patch', 'events', `--namespace=${TENANT}`],
    ])('may not %s %s %s', async (...args) => {
      const res = await asAgent(undefined, ['auth', 'can-i', ...args]);
      expect(res.stdout.trim()).toBe('no');
    });

    it('auth can-i --list shows no secrets, no wildcard and no delete but of snapshots', async () => {
      const res = await cp().kubectl(['auth', 'can-i', '--list', `--namespace=${TENANT}`], {
        asUser: AGENT_USER,
        asGroups: AGENT_GROUPS,
      });
      expectOk(res);
      // Rows are `RESOURCE  NON-RESOURCE-URLS  RESOURCE-NAMES  [VERBS]`; non-resource rows
      // (discovery URLs every authenticated user may read) start with blanks.
      const rows = res.stdout
        .split('\n')
        .slice(1)
        .filter((l) => /^\S/.test(l))
        .map((l) => ({
          resource: l.split(/\s+/)[0]!,
          verbs: /\[([^\]]*)\]\s*$/.exec(l)?.[1] ?? '',
        }));
      const resources = rows.map((r) => r.resource);
      expect(resources).toEqual(
        expect.arrayContaining([
          'virtualmachines.virt.dev',
          'virtualmachines.virt.dev/status',
          'events.events.k8s.io',
          'nodes',
        ]),
      );
      expect(resources.filter((r) => /secret/.test(r))).toEqual([]);
      expect(resources.filter((r) => r.startsWith('*'))).toEqual([]);
      // The only deletes: a machine's VirtualMachineSnapshots and VirtualMachineRestores go
      // with it, and local control planes have no garbage collector to follow owner references
      // (docs/api.md).
      expect(
        rows
          .filter((r) => /\*|delete/.test(r.verbs))
          .map((r) => r.resource)
          .sort(),
      ).toEqual(['virtualmachinerestores.virt.dev', 'virtualmachinesnapshots.virt.dev']);
    });

    it('cannot read a Secret', async () => {
      expectForbiddenByRbac(await asAgent('node-a', ['get', 'secret', 'cloud-init', '-n', TENANT]));
      expectForbiddenByRbac(await asAgent('node-a', ['get', 'secrets', '--all-namespaces']));
    });

    it('cannot delete a VirtualMachine, not even one on its node', async () => {
      expectForbiddenByRbac(
        await asAgent('node-a', ['delete', 'virtualmachine', 'vm-a', '-n', TENANT]),
      );
    });

    it('cannot write a Lease outside its namespace', async () => {
      const lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: 'libvirt-operator-node-a', namespace: 'default' },
        spec: { holderIdentity: 'node-a' },
      };
      expectForbiddenByRbac(await asAgent('node-a', ['create', '-f', '-'], JSON.stringify(lease)));
    });
  });

  describe('admission policy (impersonating the agent on a node)', () => {
    const lease = (name: string, holder: string) =>
      JSON.stringify({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name, namespace: AGENT_NAMESPACE },
        // Short, so the runtime's Lease below can take it over quickly.
        spec: { holderIdentity: holder, leaseDurationSeconds: 1 },
      });

    it('lets the agent on node-a create and renew its own Lease', async () => {
      expectOk(
        await asAgent('node-a', ['create', '-f', '-'], lease('libvirt-operator-node-a', 'node-a')),
      );
      expectOk(
        await asAgent(
          'node-a',
          ['replace', '-f', '-'],
          lease('libvirt-operator-node-a', 'node-a-2'),
        ),
      );
      const got = await getJson<{ spec: { holderIdentity: string } }>([
        'get',
        'lease',
        'libvirt-operator-node-a',
        '-n',
        AGENT_NAMESPACE,
      ]);
      expect(got.spec.holderIdentity).toBe('node-a-2');
    });

    it("refuses the agent on node-b another node's Lease, by update or create", async () => {
      expectDeniedByPolicy(
        await asAgent('node-b', ['replace', '-f', '-'], lease('libvirt-operator-node-a', 'node-b')),
        /the agent on node node-b may write only the Lease libvirt-operator-node-b, not libvirt-operator-node-a/,
      );
      expectDeniedByPolicy(
        await asAgent('node-b', ['create', '-f', '-'], lease('libvirt-operator-node-c', 'node-b')),
        /may write only the Lease libvirt-operator-node-b/,
      );
      expectOk(
        await asAgent('node-b', ['create', '-f', '-'], lease('libvirt-operator-node-b', 'node-b')),
      );
    });

    it('refuses the ServiceAccount without a node claim (a token not bound to a pod)', async () => {
      expectDeniedByPolicy(
        await asAgent(undefined, ['create', '-f', '-'], lease('libvirt-operator-node-x', 'x')),
        /must authenticate with its pod-bound ServiceAccount token/,
      );
      expectDeniedByPolicy(
        await asAgent(undefined, [
          'patch',
          'virtualmachine',
          'vm-a',
          '-n',
          TENANT,
          '--subresource=status',
          '--type=merge',
          '-p',
          '{"status":{"phase":"Running"}}',
        ]),
        /this request has no node name/,
      );
    });

    it("admits a VM status write from the VM's node and refuses it from another node", async () => {
      const patch = (node: string, name: string, phase: string) =>
        asAgent(node, [
          'patch',
          'virtualmachine',
          name,
          '-n',
          TENANT,
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify({ status: { phase } }),
        ]);
      expectOk(await patch('node-a', 'vm-a', 'Running'));
      expectDeniedByPolicy(
        await patch('node-b', 'vm-a', 'Failed'),
        /the agent on node node-b may not write virtualmachines tenant\/vm-a: its spec.nodeName is node-a/,
      );
      expectDeniedByPolicy(
        await asAgent('node-a', [
          'patch',
          'volume',
          'disk-b',
          '-n',
          TENANT,
          '--subresource=status',
          '--type=merge',
          '-p',
          '{"status":{"phase":"Failed"}}',
        ]),
        /may not write volumes tenant\/disk-b: its spec.nodeName is node-b/,
      );
      const got = await getJson<{ status: { phase: string } }>([
        'get',
        'virtualmachine',
        'vm-a',
        '-n',
        TENANT,
      ]);
      expect(got.status.phase).toBe('Running');
    });

    it('lets the agent patch finalizers of its own VM but not its spec, labels or annotations', async () => {
      const patch = (node: string, body: object) =>
        asAgent(node, [
          'patch',
          'virtualmachine',
          'vm-a',
          '-n',
          TENANT,
          '--type=merge',
          '-p',
          JSON.stringify(body),
        ]);
      expectOk(await patch('node-a', { metadata: { finalizers: ['virt.dev/host-cleanup'] } }));
      const onlyFinalizers = /may change only metadata.finalizers of virtualmachines vm-a/;
      expectDeniedByPolicy(await patch('node-a', { spec: { memory: '64Mi' } }), onlyFinalizers);
      expectDeniedByPolicy(
        await patch('node-a', { metadata: { labels: { app: 'stolen' } } }),
        onlyFinalizers,
      );
      expectDeniedByPolicy(
        await patch('node-a', { metadata: { annotations: { note: 'x' } } }),
        onlyFinalizers,
      );
      expectDeniedByPolicy(
        await patch('node-b', { metadata: { finalizers: [] } }),
        /the agent on node node-b may not write virtualmachines tenant\/vm-a/,
      );
      const got = await getJson<{
        spec: { memory: string };
        metadata: { finalizers?: string[]; labels: Record<string, string> };
      }>(['get', 'virtualmachine', 'vm-a', '-n', TENANT]);
      expect(got.metadata.finalizers).toEqual(['virt.dev/host-cleanup']);
      expect(got.spec.memory).toBe('128Mi');
      expect(got.metadata.labels).toEqual({ app: 'vm-a' });
      // The admin may still do what the agent may not.
      await admin([
        'patch',
        'virtualmachine',
        'vm-a',
        '-n',
        TENANT,
        '--type=merge',
        '-p',
        '{"metadata":{"finalizers":null}}',
      ]);
    });

    it("on a VirtualNetwork, lets each agent write its own status.nodes entry and finalizer, not another node's", async () => {
      const applyEntry = (node: string, entry: object) =>
        asAgent(
          node,
          [
            'apply',
            '--server-side',
            '--force-conflicts',
            '--subresource=status',
            `--field-manager=${nodeFieldManager(node)}`,
            '-f',
            '-',
          ],
          JSON.stringify({
            apiVersion: 'virt.dev/v1alpha1',
            kind: 'VirtualNetwork',
            metadata: { name: 'lab' },
            status: { nodes: [entry] },
          }),
        );
      expectOk(await applyEntry('node-a', { nodeName: 'node-a', active: true }));
      expectOk(await applyEntry('node-b', { nodeName: 'node-b', active: true }));
      expectDeniedByPolicy(
        await applyEntry('node-a', { nodeName: 'node-b', active: false }),
        /the agent on node node-a may write only its own entry of status.nodes in virtualnetworks lab/,
      );
      const got = await getJson<{ status: { nodes: { nodeName: string; active: boolean }[] } }>([
        'get',
        'virtualnetwork',
        'lab',
      ]);
      expect(got.status.nodes).toEqual([
        { nodeName: 'node-a', active: true },
        { nodeName: 'node-b', active: true },
      ]);

      const finalizers = (node: string, list: string[]) =>
        asAgent(node, [
          'patch',
          'virtualnetwork',
          'lab',
          '--type=merge',
          '-p',
          JSON.stringify({ metadata: { finalizers: list } }),
        ]);
      expectOk(await finalizers('node-a', ['node.virt.dev/node-a']));
      expectOk(await finalizers('node-b', ['node.virt.dev/node-a', 'node.virt.dev/node-b']));
      expectDeniedByPolicy(
        await finalizers('node-a', ['node.virt.dev/node-a']),
        /the agent on node node-a may add or remove only its own finalizer node.virt.dev\/node-a on virtualnetworks lab/,
      );
      expectDeniedByPolicy(
        await finalizers('node-a', [
          'node.virt.dev/node-a',
          'node.virt.dev/node-b',
          'node.virt.dev/node-ab',
        ]),
        /may add or remove only its own finalizer/,
      );
      expectOk(await finalizers('node-a', ['node.virt.dev/node-b']));
    });

    it('matches a long node name by the prefix of its hashed finalizer', async () => {
      const long = `host-${'x'.repeat(70)}`;
      const own = `node.virt.dev/${long.slice(0, 52)}-0123456789`;
      expectOk(
        await asAgent(long, [
          'patch',
          'storagepool',
          'images',
          '--type=merge',
          '-p',
          JSON.stringify({ metadata: { finalizers: [own] } }),
        ]),
      );
      expectDeniedByPolicy(
        await asAgent('node-a', [
          'patch',
          'storagepool',
          'images',
          '--type=merge',
          '-p',
          '{"metadata":{"finalizers":[]}}',
        ]),
        /may add or remove only its own finalizer node.virt.dev\/node-a on storagepools images/,
      );
    });
    describe('snapshots, claimed by their node finalizer', () => {
      const snapshot = (name: string) =>
        JSON.stringify({
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'VirtualMachineSnapshot',
          metadata: { name, namespace: TENANT },
          spec: { vmName: 'vm-a' },
        });
      const patchSnap = (node: string, name: string, body: object, status = false) =>
        asAgent(node, [
          'patch',
          'virtualmachinesnapshot',
          name,
          '-n',
          TENANT,
          ...(status ? ['--subresource=status'] : []),
          '--type=merge',
          '-p',
          JSON.stringify(body),
        ]);
      const finalizers = (node: string, name: string, list: string[]) =>
        patchSnap(node, name, { metadata: { finalizers: list } });
      const condition = (reason: string) => ({
        type: 'Ready',
        status: 'False',
        reason,
        message: 'm',
        lastTransitionTime: '2026-01-01T00:00:00Z',
      });
      const status = (node: string, name: string, phase: string, reason = 'SnapshotInProgress') =>
        patchSnap(node, name, { status: { phase, conditions: [condition(reason)] } }, true);
      const remove = (node: string, name: string) =>
        asAgent(node, ['delete', 'virtualmachinesnapshot', name, '-n', TENANT, '--wait=false']);
      const get = (name: string) =>
        getJson<{ metadata: { finalizers?: string[] }; status?: { phase?: string } }>([
          'get',
          'virtualmachinesnapshot',
          name,
          '-n',
          TENANT,
        ]);

      it('lets node-a claim, report on and delete its snapshot; refuses node-b all of it', async () => {
        await admin(['create', '-f', '-'], snapshot('snap-a'));
        expectOk(await finalizers('node-a', 'snap-a', ['node.virt.dev/node-a']));
        expectOk(await status('node-a', 'snap-a', 'InProgress'));
        const claimedByA =
          /the agent on node node-b may not write or delete virtualmachinesnapshots tenant\/snap-a: it is claimed by node.virt.dev\/node-a/;
        expectDeniedByPolicy(await status('node-b', 'snap-a', 'Failed'), claimedByA);
        expectDeniedByPolicy(await finalizers('node-b', 'snap-a', []), claimedByA);
        expectDeniedByPolicy(
          await finalizers('node-b', 'snap-a', ['node.virt.dev/node-a', 'node.virt.dev/node-b']),
          claimedByA,
        );
        expectDeniedByPolicy(await remove('node-b', 'snap-a'), claimedByA);
        expect(await get('snap-a')).toMatchObject({
          metadata: { finalizers: ['node.virt.dev/node-a'] },
          status: { phase: 'InProgress' },
        });
        // Its own: deleted, its finalizer kept until node-a has cleaned up, then removed.
        expectOk(await remove('node-a', 'snap-a'));
        expectOk(await finalizers('node-a', 'snap-a', []));
        const left = await cp().kubectl(['get', 'virtualmachinesnapshot', 'snap-a', '-n', TENANT]);
        expect(left.stderr).toMatch(/NotFound/);
      });

      it('lets any agent only claim an unclaimed snapshot or report its machine missing', async () => {
        await admin(['create', '-f', '-'], snapshot('snap-free'));
        expectDeniedByPolicy(
          await status('node-b', 'snap-free', 'Failed'),
          /the agent on node node-b may write the status of virtualmachinesnapshots tenant\/snap-free only once it has claimed it/,
        );
        expectDeniedByPolicy(
          await finalizers('node-b', 'snap-free', ['node.virt.dev/node-a']),
          /may add or remove only its own finalizer node.virt.dev\/node-b on virtualmachinesnapshots snap-free/,
        );
        expectDeniedByPolicy(
          await finalizers('node-b', 'snap-free', ['virt.dev/user-hold']),
          /may add or remove only its own finalizer/,
        );
        expectOk(await status('node-b', 'snap-free', 'Pending', 'VirtualMachineNotFound'));
        // Not a record of a snapshot taken, which its machine's agent would go by.
        expectDeniedByPolicy(
          await patchSnap(
            'node-b',
            'snap-free',
            { status: { snapshotName: 'other', phase: 'Pending' } },
            true,
          ),
          /only once it has claimed it/,
        );
        expectOk(await finalizers('node-a', 'snap-free', ['node.virt.dev/node-a']));
        expectOk(await status('node-a', 'snap-free', 'InProgress'));
        expectDeniedByPolicy(
          await status('node-b', 'snap-free', 'Pending', 'VirtualMachineNotFound'),
          /it is claimed by node.virt.dev\/node-a/,
        );
        // An unclaimed one goes with its machine: deleted by the machine's agent.
        expectOk(await finalizers('node-a', 'snap-free', []));
        expectOk(await remove('node-a', 'snap-free'));
      });
    });
    it('lets only the agent that status.nodeName names write or delete a restore', async () => {
      await admin(
        ['create', '-f', '-'],
        JSON.stringify({
          apiVersion: 'virt.dev/v1alpha1',
          kind: 'VirtualMachineRestore',
          metadata: { name: 'back', namespace: TENANT },
          spec: { vmName: 'vm-a', snapshotName: 'snap-a' },
        }),
      );
      const status = (node: string, body: object) =>
        asAgent(node, [
          'patch',
          'virtualmachinerestore',
          'back',
          '-n',
          TENANT,
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify({ status: body }),
        ]);
      const ready = (reason: string) => [
        {
          type: 'Ready',
          status: 'False',
          reason,
          message: 'm',
          lastTransitionTime: '2026-01-01T00:00:00Z',
        },
      ];
      const missing = { phase: 'Pending', conditions: ready('VirtualMachineNotFound') };
      const onlyOwn =
        /the agent on node node-b may write the status of virtualmachinerestores tenant\/back only with status.nodeName node-b/;
      // Unclaimed: any agent may say that its machine exists nowhere, nothing else.
      expectOk(await status('node-b', missing));
      expectDeniedByPolicy(await status('node-b', { phase: 'Failed' }), onlyOwn);
      expectDeniedByPolicy(
        await status('node-b', { ...missing, startTime: '2026-01-01T00:00:00Z' }),
        onlyOwn,
      );
      // Nor which snapshot a revert began on: a restore would take another for it.
      expectDeniedByPolicy(await status('node-b', { ...missing, snapshotUid: 'other' }), onlyOwn);
      // Nor what the revert needs of the snapshot: a checkpoint's power-off would be skipped.
      expectDeniedByPolicy(await status('node-b', { ...missing, includesMemory: true }), onlyOwn);
      expectDeniedByPolicy(
        await status('node-b', { ...missing, disks: [{ name: 'vda' }] }),
        onlyOwn,
      );
      expectDeniedByPolicy(
        await status('node-b', { nodeName: 'node-a', phase: 'Failed' }),
        onlyOwn,
      );
      // One that holds them (a claim forget-node removed) keeps them: the policy then compares
      // the lists themselves (above, the key's presence alone decided). Left as they were, the
      // report is allowed; another list, in any field, is not.
      const recorded = { includesMemory: false, disks: [{ name: 'vda', volume: 'root' }] };
      await admin([
        'patch',
        'virtualmachinerestore',
        'back',
        '-n',
        TENANT,
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({ status: recorded }),
      ]);
      expectOk(await status('node-b', { ...missing, ...recorded }));
      expectDeniedByPolicy(
        await status('node-b', { ...missing, disks: [{ name: 'vda', volume: 'other' }] }),
        onlyOwn,
      );
      expectDeniedByPolicy(
        await status('node-b', {
          ...missing,
          disks: [...recorded.disks, { name: 'vdb', volume: 'data' }],
        }),
        onlyOwn,
      );
      // node-a claims it with its first status; from then on it is node-a's alone.
      expectOk(
        await status('node-a', {
          nodeName: 'node-a',
          phase: 'Pending',
          conditions: ready('SnapshotNotReady'),
        }),
      );
      const claimedByA =
        /the agent on node node-b may not write or delete virtualmachinerestores tenant\/back: its status.nodeName is node-a/;
      expectDeniedByPolicy(
        await status('node-b', { nodeName: 'node-b', phase: 'Failed' }),
        claimedByA,
      );
      expectDeniedByPolicy(await status('node-b', missing), claimedByA);
      expectDeniedByPolicy(
        await asAgent('node-b', ['delete', 'virtualmachinerestore', 'back', '-n', TENANT]),
        claimedByA,
      );
      expectDeniedByPolicy(
        await status('node-a', { nodeName: null, phase: 'Failed' }),
        /the agent on node node-a may write the status of virtualmachinerestores tenant\/back only with status.nodeName node-a/,
      );
      expect(
        await getJson<{ status: object }>(['get', 'virtualmachinerestore', 'back', '-n', TENANT]),
      ).toMatchObject({ status: { nodeName: 'node-a', phase: 'Pending' } });
      expectOk(await asAgent('node-a', ['delete', 'virtualmachinerestore', 'back', '-n', TENANT]));
    });
  });

  it("forget-node clears a retired node's claim on a restore, which another node's agent then deletes", async () => {
    // node-gone never had a Node object (it was deleted when the host was retired).
    const gone = `node-gone-${randomBytes(3).toString('hex')}`;
    await admin(
      ['create', '-f', '-'],
      JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachineRestore',
        metadata: { name: 'back-gone', namespace: TENANT },
        spec: { vmName: 'vm-b', snapshotName: 'snap-b' },
      }),
    );
    await admin([
      'patch',
      'virtualmachinerestore',
      'back-gone',
      '-n',
      TENANT,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { nodeName: gone, phase: 'Succeeded' } }),
    ]);
    const clientB = createKubeClient(
      kubeConfigWithToken(cp(), await boundAgentToken(cp(), MANIFESTS, 'node-b')),
    );
    const path = `/apis/virt.dev/v1alpha1/namespaces/${TENANT}/virtualmachinerestores/back-gone`;
    await expect(clientB.request({ method: 'DELETE', path })).rejects.toThrow(
      new RegExp(`403 Forbidden: .*tenant/back-gone: its status.nodeName is ${gone}`),
    );

    const forget = () =>
      collect(spawnCli(['forget-node', gone, '--kubeconfig', cp().kubeconfigPath]));
    const res = await forget();
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(
      `removed: VirtualMachineRestore ${TENANT}/back-gone: status.nodeName ${gone}`,
    );
    const after = await getJson<{ status: Record<string, unknown> }>([
      'get',
      'virtualmachinerestore',
      'back-gone',
      '-n',
      TENANT,
    ]);
    expect(after.status).not.toHaveProperty('nodeName');
    expect(after.status).toMatchObject({ phase: 'Succeeded' });
    // Idempotent: nothing left to clear.
    const again = await forget();
    expect(again.stdout.trim()).toBe(`nothing of node ${gone} left on any object`);
    await clientB.request({ method: 'DELETE', path });
    const left = await cp().kubectl(['get', 'vmrestore', 'back-gone', '-n', TENANT]);
    expect(left.stderr).toMatch(/NotFound/);
  });

  describe("real pod-bound tokens and the agent runtime's own write paths", () => {
    const VMS = {
      group: 'virt.dev',
      version: 'v1alpha1',
      plural: 'virtualmachines',
      kind: 'VirtualMachine',
      namespaced: true,
    };
    const log = createLogger({ level: 'silent' });
    const SNAPSHOTS = { ...VMS, plural: 'virtualmachinesnapshots', kind: 'VirtualMachineSnapshot' };
    const RESTORES = { ...VMS, plural: 'virtualmachinerestores', kind: 'VirtualMachineRestore' };

    it("the agent's snapshot and restore writes: any agent's report of a missing machine, then only the claimant's", async () => {
      await admin(
        ['create', '-f', '-'],
        [
          {
            kind: 'VirtualMachineSnapshot',
            metadata: { name: 'snap-real', namespace: TENANT },
            spec: { vmName: 'vm-a' },
          },
          {
            kind: 'VirtualMachineRestore',
            metadata: { name: 'back-real', namespace: TENANT },
            spec: { vmName: 'vm-a', snapshotName: 'snap-real' },
          },
        ]
          .map((o) => JSON.stringify({ apiVersion: 'virt.dev/v1alpha1', ...o }))
          .join('\n'),
      );
      const token = async (node: string) =>
        createKubeClient(kubeConfigWithToken(cp(), await boundAgentToken(cp(), MANIFESTS, node)));
      const [clientA, clientB] = [await token('node-a'), await token('node-b')];
      const snap = () =>
        clientA.request<VirtualMachineSnapshot>({
          method: 'GET',
          path: keyPath(SNAPSHOTS, `${TENANT}/snap-real`),
        });
      const restore = () =>
        clientA.request<VirtualMachineRestore>({
          method: 'GET',
          path: keyPath(RESTORES, `${TENANT}/back-real`),
        });
      // As the agent applies a status it computed (src/agent/kube-writes.ts).
      const writer = (client: typeof clientA, resource: typeof VMS) => {
        const w = createStatusWriter(client, { resource, fieldManager: 'libvirt-operator' });
        return { apply: (obj: KubeObject, status: object) => w.apply(obj, { ...status }) };
      };
      const now = new Date();
      const missing = { phase: 'Pending' as const, ...machineNotFound(TENANT, 'vm-a') };
      const waiting = { phase: 'Pending' as const, reason: 'SnapshotNotReady', message: 'm' };

      // Before any agent has claimed them, node-b may say their machine exists nowhere.
      await writer(clientB, SNAPSHOTS).apply(
        await snap(),
        snapshotStatus(await snap(), missing, now),
      );
      await writer(clientB, RESTORES).apply(
        await restore(),
        restoreStatus(await restore(), missing, now),
      );
      // node-a claims the snapshot with its finalizer and the restore with its status.
      await reconcileWithFinalizer(clientA, SNAPSHOTS, nodeFinalizer('node-a'), await snap(), () =>
        Promise.resolve(done()),
      );
      const inProgress = {
        phase: 'InProgress' as const,
        reason: 'SnapshotInProgress',
        message: 'm',
      };
      await writer(clientA, SNAPSHOTS).apply(
        await snap(),
        snapshotStatus(await snap(), inProgress, now),
      );
      await writer(clientA, RESTORES).apply(
        await restore(),
        restoreStatus(await restore(), waiting, now, { nodeName: 'node-a' }),
      );
      expect((await restore()).status?.nodeName).toBe('node-a');

      await expect(
        writer(clientB, SNAPSHOTS).apply(await snap(), snapshotStatus(await snap(), missing, now)),
      ).rejects.toThrow(
        /403 Forbidden: .*tenant\/snap-real: it is claimed by node.virt.dev\/node-a/,
      );
      await expect(
        writer(clientB, RESTORES).apply(
          await restore(),
          restoreStatus(await restore(), waiting, now, { nodeName: 'node-b' }),
        ),
      ).rejects.toThrow(/403 Forbidden: .*tenant\/back-real: its status.nodeName is node-a/);
      for (const path of [
        keyPath(SNAPSHOTS, `${TENANT}/snap-real`),
        keyPath(RESTORES, `${TENANT}/back-real`),
      ])
        await expect(clientB.request({ method: 'DELETE', path })).rejects.toThrow(/403 Forbidden/);
      // node-a deletes both, and releases the snapshot once it has cleaned up.
      await clientA.request({ method: 'DELETE', path: keyPath(RESTORES, `${TENANT}/back-real`) });
      await clientA.request({ method: 'DELETE', path: keyPath(SNAPSHOTS, `${TENANT}/snap-real`) });
      await reconcileWithFinalizer(clientA, SNAPSHOTS, nodeFinalizer('node-a'), await snap(), () =>
        Promise.resolve(done()),
      );
      const left = await cp().kubectl(['get', 'vmsnap,vmrestore', '-n', TENANT, '-o', 'name']);
      expect(left.stdout).not.toMatch(/-real/);
    });

    it('node-a holds its Lease, writes status, a finalizer and an Event for vm-a; node-b is refused', async () => {
      const clientA = createKubeClient(
        kubeConfigWithToken(cp(), await boundAgentToken(cp(), MANIFESTS, 'node-a')),
      );
      const clientB = createKubeClient(
        kubeConfigWithToken(cp(), await boundAgentToken(cp(), MANIFESTS, 'node-b')),
      );
      const fresh = () =>
        clientA.request<KubeObject & { status?: unknown }>({
          method: 'GET',
          path: keyPath(VMS, `${TENANT}/vm-a`),
        });

      const acquired = new Promise<void>((resolve) => {
        const lease = startLease(
          clientA,
          {
            namespace: AGENT_NAMESPACE,
            name: 'libvirt-operator-node-a',
            identity: 'agent-node-a-test',
            retryPeriodMs: 200,
            renewDeadlineMs: 1000,
            leaseDurationSeconds: 2,
          },
          {
            onAcquired: () => void lease.stop({ release: true }).then(resolve),
            onLost: () => undefined,
          },
          { log },
        );
      });
      await acquired;

      const status = createStatusWriter(clientA, {
        resource: VMS,
        fieldManager: 'libvirt-operator',
      });
      await status.apply(await fresh(), { phase: 'Stopped' });
      await reconcileWithFinalizer(clientA, VMS, 'virt.dev/host-cleanup', await fresh(), () =>
        Promise.resolve(done()),
      );
      const events = createEventRecorder(clientA, {
        reportingController: 'virt.dev/libvirt-operator',
        reportingInstance: 'libvirt-operator-node-a',
        log,
      });
      await events.publish(referenceTo(VMS, await fresh()), {
        type: 'Normal',
        reason: 'Defined',
        action: 'Define',
        note: 'domain defined',
      });
      await events.close();

      const vmA = await fresh();
      expect(vmA.metadata.finalizers).toEqual(['virt.dev/host-cleanup']);
      // observedGeneration: the schema's default for a status that does not set it.
      expect(vmA.status).toEqual({ observedGeneration: 0, phase: 'Stopped' });
      const reasons = await admin([
        'get',
        'events.events.k8s.io',
        '-n',
        TENANT,
        '-o',
        'jsonpath={.items[*].reason}',
      ]);
      expect(reasons.split(' ')).toContain('Defined');
      const holder = await admin([
        'get',
        'lease',
        'libvirt-operator-node-a',
        '-n',
        AGENT_NAMESPACE,
        '-o',
        'jsonpath={.spec.holderIdentity}',
      ]);
      expect(holder).toBe('');

      const statusB = createStatusWriter(clientB, {
        resource: VMS,
        fieldManager: 'libvirt-operator',
      });
      await expect(statusB.apply(await fresh(), { phase: 'Failed' })).rejects.toThrow(
        /403 Forbidden: .*the agent on node node-b may not write virtualmachines tenant\/vm-a: its spec.nodeName is node-a/,
      );
      const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${AGENT_NAMESPACE}/leases/libvirt-operator-node-a`;
      const leaseA = await clientB.request<KubeObject>({ method: 'GET', path: leasePath });
      await expect(
        clientB.request({
          method: 'PUT',
          path: leasePath,
          body: { ...leaseA, spec: { holderIdentity: 'intruder' } },
        }),
      ).rejects.toThrow(
        /may write only the Lease libvirt-operator-node-b, not libvirt-operator-node-a/,
      );
      await expect(
        clientA.request({ method: 'GET', path: `/api/v1/namespaces/${TENANT}/secrets/cloud-init` }),
      ).rejects.toThrow(/403 Forbidden: secrets "cloud-init" is forbidden/);
    });
  });
});
