// libvirt keeps no stop reason for an inactive domain across a restart of libvirtd (or a host
// reboot): every such domain comes back shut off with reason `unknown`. A machine under
// runStrategy RerunOnFailure that the agent had already seen stopped without a failure must
// then say Stopped, as the plan leaves it, not Starting for ever. A private libvirtd with QEMU,
// which this file restarts (the test driver has no daemon to restart).
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';

const NODE = 'node-rerun';
const NS = 'rerun-restart';
const VM = `rerun-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-rerun-',
  async cleanup(conn) {
    for (const d of await conn.listAllDomains().catch(() => [])) {
      await d.destroy().catch(() => undefined);
      await d.undefine().catch(() => undefined);
    }
  },
});
let conn: Connect;
let k: Kube;
let ctx: SnapshotContext;

beforeAll(() => {
  ({ conn, k, ctx } = lv());
});

const getVm = () => k.get<VirtualMachine>('VirtualMachine', NS, VM);
const ready = (vm: VirtualMachine | undefined) =>
  vm?.status?.conditions?.find((c) => c.type === 'Ready');
const domain = async () => conn.lookupDomainByUUIDString(String((await getVm())!.metadata.uid));

async function pass(): Promise<VirtualMachine | undefined> {
  await ctx.refresh();
  await reconcileVirtualMachine(`${NS}/${VM}`, ctx);
  return getVm();
}

describe('RerunOnFailure after a libvirtd restart', () => {
  it('a machine seen stopped without a failure stays Stopped, and says so', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: VM, namespace: NS },
      spec: { nodeName: NODE, domainType: 'qemu', runStrategy: 'Manual', vcpus: 1, memory: '64Mi' },
    });
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm())?.status?.phase === 'Running',
    });
    // A user stops it under Manual, then hands it to RerunOnFailure: no failure was seen.
    await (await domain()).destroy();
    expect((await pass())?.status?.state).toEqual({ state: 'shutoff', reason: 'destroyed' });
    await k.patchSpec('VirtualMachine', NS, VM, { runStrategy: 'RerunOnFailure' });
    const before = await pass();
    expect(await (await domain()).isActive()).toBe(false);
    expect(before?.status?.phase).toBe('Stopped');
    expect(ready(before)).toMatchObject({ status: 'True', reason: 'StoppedBeforeRerun' });

    conn = await lv().restart();
    const first = await pass();
    const after = await pass();
    // libvirt forgot why it stopped (reason `unknown`); the agent did not, on every pass, and
    // wrote nothing more once it had looked.
    expect(after?.status?.state).toEqual({ state: 'shutoff', reason: 'destroyed' });
    expect(after?.status).toEqual(first?.status);
    expect(after?.metadata.resourceVersion).toBe(first?.metadata.resourceVersion);
    expect(await (await domain()).isActive()).toBe(false);
    expect(after?.status?.phase).toBe('Stopped');
    expect(ready(after)).toMatchObject({ status: 'True', reason: 'StoppedBeforeRerun' });

    await k.remove('VirtualMachine', NS, VM);
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 120_000);
});
