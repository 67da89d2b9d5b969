// manifests/overlays/local changes only what the local real node needs: the dev image that is
// never pulled, and the API server's address; and it adds the optional finalizer policy.
// Rendered with the harness's kubectl (the kustomize the tests' API server version ships),
// compared object by object with manifests/.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { findBinaries } from '../../../src/commands/local/control-plane.js';
import { NODE_API_SERVER_PORT } from '../../../src/commands/local/local-node.js';
import { AGENT_IMAGE_REFERENCE } from '../../../src/commands/local/agent-image.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import { FINALIZER_POLICY_DIR } from '../../../src/commands/local/finalizer-policy.js';

type Obj = {
  kind: string;
  metadata: { name: string };
  spec?: { template?: { spec?: { containers?: Array<Record<string, unknown>> } } };
};

function render(dir: string): Obj[] {
  const bin = findBinaries();
  if (!bin) throw new Error("no kubectl from the control-plane binaries: run 'npm run setup'");
  const out = execFileSync(join(bin, 'kubectl'), ['kustomize', dir], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as Obj);
}

describe('manifests/overlays/local', () => {
  const base = render(join(packageRoot(), 'manifests'));
  const local = render(join(packageRoot(), 'manifests', 'overlays', 'local'));
  const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;

  it('has the same objects plus the optional finalizer policy, all but the DaemonSet unchanged', () => {
    const policy = render(FINALIZER_POLICY_DIR);
    expect(policy.map(key).sort()).toEqual([
      'MutatingAdmissionPolicy/libvirt-operator-host-finalizer',
      'MutatingAdmissionPolicyBinding/libvirt-operator-host-finalizer',
    ]);
    expect(local.map(key).sort()).toEqual([...base, ...policy].map(key).sort());
    for (const o of local.filter((x) => x.kind !== 'DaemonSet'))
      expect(o, key(o)).toEqual([...base, ...policy].find((b) => key(b) === key(o)));
  });

  it('runs the image npm run image builds, never pulled, reaching the API server at the node', () => {
    const ds = local.find((o) => o.kind === 'DaemonSet')!;
    const baseDs = base.find((o) => o.kind === 'DaemonSet')!;
    const c = ds.spec!.template!.spec!.containers![0]!;
    expect(c.image).toBe(AGENT_IMAGE_REFERENCE);
    expect(c.imagePullPolicy).toBe('Never');
    const env = c.env as Array<{ name: string; value?: string; valueFrom?: unknown }>;
    expect(env.find((e) => e.name === 'KUBERNETES_SERVICE_HOST')?.valueFrom).toEqual({
      fieldRef: { fieldPath: 'status.hostIP' },
    });
    expect(env.find((e) => e.name === 'KUBERNETES_SERVICE_PORT')?.value).toBe(
      String(NODE_API_SERVER_PORT),
    );
    // Nothing else in the DaemonSet differs.
    const baseC = baseDs.spec!.template!.spec!.containers![0]!;
    const strip = (x: Record<string, unknown>) => ({
      ...x,
      image: undefined,
      imagePullPolicy: undefined,
      env: (x.env as Array<{ name: string }>).filter((e) => !e.name.startsWith('KUBERNETES_')),
    });
    expect(strip(c)).toEqual(strip(baseC));
    const withoutContainers = (o: Obj) =>
      JSON.stringify({
        ...o,
        spec: {
          ...o.spec,
          template: { ...o.spec!.template, spec: { ...o.spec!.template!.spec, containers: [] } },
        },
      });
    expect(withoutContainers(ds)).toBe(withoutContainers(baseDs));
  });
});
