// A node lacking OVMF or swtpm, on a real libvirtd (a private daemon whose mount namespace
// hides QEMU's firmware descriptors and the swtpm binary; the host keeps both). libvirt 9.0
// defines such a domain and refuses only its start, so under updatePolicy Restart a running
// guest given UEFI or a TPM would be shut down for a start that cannot succeed: the machine
// must be Stalled naming the field and the package, with no domain defined.
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import type { Kube } from '../../../harness/kube-objects.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';

const NODE = 'node-no-ovmf';
const NS = 'no-ovmf';
const VM = `fw-${randomBytes(3).toString('hex')}`;
const cp = useControlPlane();
const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  namespace: NS,
  tmpPrefix: 'lvo-no-ovmf-',
  hide: ['/usr/share/qemu/firmware', '/usr/bin/swtpm'],
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
const ready = async () => (await getVm())?.status?.conditions?.find((c) => c.type === 'Ready');

async function passUntil(reasons: string[]): Promise<void> {
  for (let pass = 0; pass < 10; pass++) {
    await ctx.refresh();
    await reconcileVirtualMachine(`${NS}/${VM}`, ctx);
    if (reasons.includes((await ready())?.reason ?? '')) return;
  }
  throw new Error(`Ready never became ${reasons.join(' or ')}: ${JSON.stringify(await getVm())}`);
}

describe('a node without OVMF or swtpm', () => {
  it('is Stalled naming the field and the package, and defines nothing', async () => {
    const spec = {
      nodeName: NODE,
      domainType: 'qemu' as const,
      runStrategy: 'Halted' as const,
      vcpus: 1,
      memory: '32Mi',
      firmware: 'uefi' as const,
    };
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: VM, namespace: NS },
      spec,
    });
    await passUntil(['Unsupported', 'Halted', 'DefineFailed', 'DefineRefused']);
    expect(await ready()).toMatchObject({
      status: 'False',
      reason: 'Unsupported',
      message: expect.stringMatching(
        new RegExp(
          `^spec\\.firmware: QEMU on node ${NODE} finds no UEFI firmware; install Debian's ovmf`,
        ),
      ),
    });
    expect((await getVm())?.status?.phase).toBe('Failed');
    expect(await conn.listAllDomains()).toHaveLength(0);

    // BIOS with a TPM: swtpm is what is missing now.
    await k.patchSpec('VirtualMachine', NS, VM, { firmware: 'bios', tpm: { version: '2.0' } });
    await passUntil(['Unsupported', 'Halted', 'DefineFailed', 'DefineRefused']);
    expect((await ready())?.message).toMatch(
      /^spec\.tpm: .*no TPM emulator \(swtpm\); install Debian's swtpm and swtpm-tools/,
    );
    expect(await conn.listAllDomains()).toHaveLength(0);

    // Neither asked for: defined as usual.
    await k.patchSpec('VirtualMachine', NS, VM, { tpm: null });
    await passUntil(['Halted']);
    expect(await conn.listAllDomains()).toHaveLength(1);

    await k.remove('VirtualMachine', NS, VM);
    await converge(ctx, reconcileVirtualMachine, `${NS}/${VM}`, {
      until: async () => (await getVm()) === undefined,
    });
    expect(await conn.listAllDomains()).toHaveLength(0);
  }, 120_000);
});
