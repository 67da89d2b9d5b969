// A machine's removal deletes its restores; one claimed by another node's agent the admission
// policy refuses (403). The removal must then wait and say which restore and what to do, not
// throw on every pass with nothing on the machine to show for it.
import { describe, expect, it } from 'vitest';
import type { VirtualMachine, VirtualMachineRestore } from '../../../../src/api/generated/types.js';
import type { ControllerContext } from '../../../../src/controllers/context.js';
import {
  deleteRestoresOf,
  restoresRefusedMessage,
} from '../../../../src/controllers/shared/restores.js';
import { KubeApiError } from '../../../../src/runtime/kube-client.js';

const vm = {
  metadata: { name: 'vm', namespace: 'ns', uid: 'u1' },
  spec: { nodeName: 'b' },
} as unknown as VirtualMachine;
const restore = (name: string, nodeName?: string) =>
  ({
    metadata: { name, namespace: 'ns', uid: name },
    spec: { vmName: 'vm', snapshotName: 's' },
    status: nodeName === undefined ? {} : { nodeName },
  }) as unknown as VirtualMachineRestore;

function context(restores: VirtualMachineRestore[], fail: (r: VirtualMachineRestore) => unknown) {
  const deleted: string[] = [];
  const ctx = {
    byIndex: () => restores,
    deleteObject: (_kind: string, r: VirtualMachineRestore) => {
      const err = fail(r);
      if (err) return Promise.reject(err);
      deleted.push(String(r.metadata.name));
      return Promise.resolve();
    },
  } as unknown as ControllerContext;
  return { ctx, deleted };
}

const forbidden = () =>
  new KubeApiError(403, 'Forbidden', 'its status.nodeName is gone', 'DELETE', '/x');

describe('deleteRestoresOf', () => {
  it('deletes what it may and returns the restores the policy refused', async () => {
    const { ctx, deleted } = context(
      [restore('a'), restore('b', 'gone'), restore('c', 'b')],
      (r) => (r.status?.nodeName === 'gone' ? forbidden() : undefined),
    );
    const refused = await deleteRestoresOf(vm, ctx);
    expect(refused.map((r) => r.metadata.name)).toEqual(['b']);
    expect(deleted).toEqual(['a', 'c']);
  });

  it('still throws any other failure', async () => {
    const { ctx } = context([restore('a')], () => new KubeApiError(500, 'x', 'y', 'DELETE', '/'));
    await expect(deleteRestoresOf(vm, ctx)).rejects.toThrow(/500/);
  });

  it('names the restore, its node and both ways out', () => {
    expect(restoresRefusedMessage([restore('b', 'gone')])).toBe(
      'deletion waits: VirtualMachineRestore ns/b is claimed by node gone (status.nodeName), ' +
        "whose agent alone may delete it: if that host is retired, run 'libvirt-operator " +
        "forget-node gone'; otherwise delete the restore with the cluster admin's credentials " +
        '(kubectl delete vmrestore b -n ns)',
    );
  });

  it('says a refusal of an unclaimed restore is about permissions, not a node to forget', () => {
    const message = restoresRefusedMessage([restore('c')]);
    expect(message).toMatch(/refused this agent the deletion of VirtualMachineRestore ns\/c/);
    expect(message).toMatch(/RBAC and the admission policy/);
    expect(message).not.toMatch(/forget-node|\(unset\)/);
  });
});
