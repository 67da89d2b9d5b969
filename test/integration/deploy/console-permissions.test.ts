// What manifests/console/ grants a console user, checked against a real API server by
// impersonation: exec into pods of the operator's namespace (where only the agents run) and
// reading VirtualMachines where it is bound; no exec elsewhere and nothing more.
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { useControlPlane } from '../../harness/control-plane.js';

const USER = 'console-user';
const OPERATOR_NS = 'libvirt-operator';
const TENANT = 'tenant';

describe('the console user roles (manifests/console/)', () => {
  const cp = useControlPlane();

  /** `pods/exec` is checked as `pods --subresource=exec` (`pods/exec` would mean a pod named exec). */
  const can = async (verb: string, resource: string, namespace: string) => {
    const [type, sub] = resource.split('/');
    const r = await cp().kubectl([
      'auth',
      'can-i',
      verb,
      type!,
      ...(sub ? [`--subresource=${sub}`] : []),
      '-n',
      namespace,
      '--as',
      USER,
    ]);
    return r.stdout.trim();
  };

  beforeAll(async () => {
    const kubectl = async (args: string[], input?: string) => {
      const r = await cp().kubectl(args, input === undefined ? {} : { input });
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
    };
    for (const ns of [OPERATOR_NS, TENANT, 'other']) await kubectl(['create', 'namespace', ns]);
    await kubectl(['apply', '-f', join(packageRoot(), 'manifests', 'console')]);
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'RoleBinding',
            metadata: { name: 'console', namespace: OPERATOR_NS },
            roleRef: {
              apiGroup: 'rbac.authorization.k8s.io',
              kind: 'Role',
              name: 'libvirt-operator-console',
            },
            subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: USER }],
          },
          {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'RoleBinding',
            metadata: { name: 'console-vms', namespace: TENANT },
            roleRef: {
              apiGroup: 'rbac.authorization.k8s.io',
              kind: 'ClusterRole',
              name: 'libvirt-operator-console-vm-reader',
            },
            subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: USER }],
          },
        ],
      }),
    );
    // The authorizer learns new bindings through its informers: wait until it has.
    const deadline = Date.now() + 30_000;
    while ((await can('list', 'pods', OPERATOR_NS)) !== 'yes') {
      if (Date.now() > deadline) throw new Error('the RoleBinding never took effect');
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it('may exec into the agent pods and find them, in the operator namespace only', async () => {
    expect(await can('create', 'pods/exec', OPERATOR_NS)).toBe('yes');
    expect(await can('get', 'pods/exec', OPERATOR_NS)).toBe('yes');
    expect(await can('list', 'pods', OPERATOR_NS)).toBe('yes');
    for (const ns of [TENANT, 'other', 'kube-system']) {
      expect(await can('create', 'pods/exec', ns)).toBe('no');
      expect(await can('list', 'pods', ns)).toBe('no');
    }
  });

  it('reads VirtualMachines where it is bound, and nothing more', async () => {
    expect(await can('get', 'virtualmachines.virt.dev', TENANT)).toBe('yes');
    expect(await can('get', 'virtualmachines.virt.dev', 'other')).toBe('no');
    expect(await can('patch', 'virtualmachines.virt.dev', TENANT)).toBe('no');
    for (const [verb, resource] of [
      ['delete', 'pods'],
      ['create', 'pods'],
      ['create', 'pods/attach'],
      ['create', 'pods/portforward'],
      ['get', 'secrets'],
      ['get', 'leases.coordination.k8s.io'],
    ] as const) {
      expect(await can(verb, resource, OPERATOR_NS), `${verb} ${resource}`).toBe('no');
    }
  });
});
