// A restart asked (`libvirt-operator vm restart`) of a running guest on a node that cannot start
// the machine as its spec asks (OVMF missing): the stop would leave the guest down until the
// package is installed, so the restart waits, the guest keeps its run, the problem says why
// and what to install, and nothing is recorded. Once the problem is gone the same request
// restarts it, once. A private libvirtd with QEMU whose mount namespace hides the firmware
// descriptors (the host keeps them); the test driver has no domain capabilities to lack OVMF.
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { main as vmCommand } from '../../../../src/commands/vm.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';

const NODE = 'node-restart-no-ovmf';
const NS = 'restart-no-ovmf';
const VM = `rg-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-restart-no-ovmf-',
  hide: ['/usr/share/qemu/firmware'],
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

const key = `${NS}/${VM}`;
const getVm = () => k.get<VirtualMachine>('VirtualMachine', NS, VM);
const ready = (vm: VirtualMachine | undefined) =>
  vm?.status?.conditions?.find((c) => c.type === 'Ready');
const run = async () => {
  const d = await conn.lookupDomainByUUIDString(String((await getVm())!.metadata.uid));
  return (await d.isActive()) ? d.getID() : -1;
};

/** Runs `vm restart` and returns what it printed. */
async function restartCommand(): Promise<string> {
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  try {
    expect(await vmCommand(['restart', VM, '-n', NS, '--kubeconfig', cp().kubeconfigPath])).toBe(0);
    return log.mock.calls.map((c) => c.join(' ')).join('\n');
  } finally {
    log.mockRestore();
  }
}

async function pass(): Promise<VirtualMachine | undefined> {
  await ctx.refresh();
  await reconcileVirtualMachine(key, ctx);
  return getVm();
}

describe('a requested restart on a node without OVMF', () => {
  it('waits while the spec asks for UEFI, then restarts once', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: VM, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '64Mi',
        // SeaBIOS with no disk does not answer ACPI: destroyed at once, not after a grace period.
        terminationGracePeriodSeconds: 0,
      },
    });
    await converge(ctx, reconcileVirtualMachine, key, {
      until: async () => ready(await getVm())?.status === 'True',
    });
    const first = await run();
    expect(first).toBeGreaterThan(0);

    await k.patchSpec('VirtualMachine', NS, VM, { firmware: 'uefi' });
    await ctx.refresh();
    // The status still says Ready (no pass saw the change yet): nothing to say of a wait.
    expect(await restartCommand()).toMatch(/: restart requested \([^)]*\)$/);
    let held: VirtualMachine | undefined;
    for (let i = 0; i < 3; i++) held = await pass();
    // The guest runs on, the request is not recorded, and Ready says why and what to install.
    expect(await run()).toBe(first);
    expect(held?.status?.lastRestartRequest).toBeUndefined();
    expect(held?.status?.phase).toBe('Running');
    expect(ready(held)).toMatchObject({
      status: 'False',
      reason: 'Unsupported',
      message: expect.stringMatching(
        /^spec\.firmware: .*install Debian's ovmf.*; the restart virt\.dev\/restart-requested-at asks waits for it/,
      ),
    });
    expect(held?.status?.conditions?.find((c) => c.type === 'ShutdownRequested')).toBeUndefined();
    // Asked again now that the status says it: still written, and the command says it waits.
    expect(await restartCommand()).toMatch(
      new RegExp(
        `^virtualmachine ${NS}/${VM}: restart requested \\([^)]*\\), but it waits: the node ` +
          "cannot start the machine as its spec asks.*spec\\.firmware: .*install Debian's ovmf",
      ),
    );
    for (let i = 0; i < 2; i++) held = await pass();
    expect(await run()).toBe(first);

    // The problem gone (here by the field; installing ovmf does the same): restarted once.
    const value = held?.metadata.annotations?.['virt.dev/restart-requested-at'];
    await k.patchSpec('VirtualMachine', NS, VM, { firmware: 'bios' });
    await converge(ctx, reconcileVirtualMachine, key, {
      until: async () => {
        const vm = await getVm();
        return vm?.status?.lastRestartRequest === value && ready(vm)?.status === 'True';
      },
      maxPasses: 20,
    });
    const second = await run();
    expect(second).toBeGreaterThan(first);
    for (let i = 0; i < 2; i++) await pass();
    expect(await run()).toBe(second);

    await k.remove('VirtualMachine', NS, VM);
    await converge(ctx, reconcileVirtualMachine, key, {
      until: async () => (await getVm()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 180_000);
});
