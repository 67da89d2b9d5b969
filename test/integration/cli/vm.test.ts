// `vm pause|unpause|restart` on a machine being deleted: its agent is removing the domain and
// acts on nothing else, so the command must not write the request and say "requested".
import { describe, expect, it } from 'vitest';
import { getJSON } from '../../harness/agent.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { collect, spawnCli } from '../../harness/processes.js';

interface Obj {
  metadata: { annotations?: Record<string, string>; deletionTimestamp?: string };
}

describe('vm on a machine being deleted', () => {
  const cp = useControlPlane();

  it('refuses every action, writes nothing, exits 1', async () => {
    const vm = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      // A finalizer no agent removes holds the deletion open, as an agent busy with it does.
      metadata: { name: 'going', namespace: 'default', finalizers: ['example.com/hold'] },
      spec: { nodeName: 'n1', vcpus: 1, memory: '64Mi' },
    };
    const created = await cp().kubectl(['create', '-f', '-'], { input: JSON.stringify(vm) });
    expect(created.code, created.stderr).toBe(0);
    const deleted = await cp().kubectl(['delete', 'vm', 'going', '--wait=false']);
    expect(deleted.code, deleted.stderr).toBe(0);
    const since = (await getJSON<Obj>(cp(), ['vm', 'going'])).metadata.deletionTimestamp;

    for (const action of ['pause', 'unpause', 'restart']) {
      const res = await collect(
        spawnCli(['vm', action, 'going', '--kubeconfig', cp().kubeconfigPath]),
      );
      expect(res.stderr.trim(), action).toBe(
        `libvirt-operator vm: virtualmachine default/going is being deleted (since ${since}): its agent removes the domain and acts on nothing else, and no request was written; it waits for its finalizers (example.com/hold)`,
      );
      expect(res.code, action).toBe(1);
    }
    const after = await getJSON<Obj>(cp(), ['vm', 'going']);
    expect(after.metadata.annotations ?? {}).toEqual({});

    const released = await cp().kubectl([
      'patch',
      'vm',
      'going',
      '--type=merge',
      '-p',
      '{"metadata":{"finalizers":null}}',
    ]);
    expect(released.code, released.stderr).toBe(0);
  });
});
