// A machine under runStrategy Manual whose QEMU dies (SIGKILL, as the OOM killer sends): libvirt
// shuts the domain off with reason `crashed`, and nothing starts it again. It read Ready=True
// ManualPower (kstatus Current, Argo CD Healthy) for a guest that is down without anyone
// choosing it; it must read Stalled, also after a restart of libvirtd, which forgets the
// reason. A private libvirtd with QEMU (the test driver has no process to kill), and the real
// kstatus and Argo CD health checks.
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import { argoHealth, kstatus } from '../../../harness/health-tools.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';

const NODE = 'node-manual-crash';
const NS = 'manual-crash';
const VM = `crash-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-manual-crash-',
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
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);

async function pass(): Promise<VirtualMachine | undefined> {
  await ctx.refresh();
  await reconcileVirtualMachine(`${NS}/${VM}`, ctx);
  return getVm();
}

/** The QEMU process this file's daemon runs for the domain (its -name says guest=NAME). */
async function qemuPid(domainName: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    const named = args.some(
      (a) => a === `guest=${domainName}` || a.startsWith(`guest=${domainName},`),
    );
    if (args[0]?.includes('qemu-system') && named) return Number(entry);
  }
  throw new Error(`no QEMU process for domain ${domainName}`);
}

const stateOf = async (uid: string) =>
  (await (await conn.lookupDomainByUUIDString(uid)).getState()).stateName;

describe('runStrategy Manual after a crash', () => {
  it('a guest whose QEMU died reads Stalled (StoppedByCrash), also after a libvirtd restart', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: VM, namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Manual',
        // No guest OS to answer ACPI: the deletion at the end destroys at once.
        terminationGracePeriodSeconds: 0,
        vcpus: 1,
        memory: '64Mi',
      },
    });
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm())?.status?.phase === 'Running',
    });
    const running = (await getVm())!;
    expect(condition(running, 'Ready')).toMatchObject({ status: 'True', reason: 'ManualPower' });
    const domainName = running.status!.domainName!;
    process.kill(await qemuPid(domainName), 'SIGKILL');
    const uid = String(running.metadata.uid);
    const deadline = Date.now() + 30_000;
    while ((await stateOf(uid)) !== 'shutoff' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    expect(await stateOf(uid)).toBe('shutoff');

    for (const when of ['after the crash', 'after a libvirtd restart']) {
      if (when !== 'after the crash') conn = await lv().restart();
      await pass();
      const vm = (await pass())!;
      expect(vm.status?.state, when).toEqual({ state: 'shutoff', reason: 'crashed' });
      expect(vm.status?.phase, when).toBe('Stopped');
      const ready = condition(vm, 'Ready');
      expect(ready, when).toMatchObject({ status: 'False', reason: 'StoppedByCrash' });
      expect(ready?.message, when).toContain('runStrategy Manual does not start it again');
      expect(condition(vm, 'Stalled')?.status, when).toBe('True');
      expect(kstatus([vm]).get(`VirtualMachine/${VM}`)?.status, when).toBe('Failed');
      expect(argoHealth(vm).status, when).toBe('Degraded');
      // Left off, as Manual asks: the operator never starts it for the crash.
      expect(await stateOf(uid), when).toBe('shutoff');
    }

    // Started by the user: the user's power state again.
    await (await conn.lookupDomainByUUIDString(uid)).create();
    const restarted = (await pass())!;
    expect(condition(restarted, 'Ready')).toMatchObject({ status: 'True', reason: 'ManualPower' });
    expect(kstatus([restarted]).get(`VirtualMachine/${VM}`)?.status).toBe('Current');

    await k.remove('VirtualMachine', NS, VM);
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 180_000);
});
