// VirtualNetwork against a real libvirtd (a private one, as in ../volume/libvirtd.test.ts),
// where bridges are real host devices: a spec.bridge that names a device the network did not
// make must be refused before anything is defined, and the device left as it was.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualNetwork } from '../../../../src/api/generated/types.js';
import { reconcileVirtualNetwork } from '../../../../src/controllers/virtual-network/index.js';
import type { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';
import { converge, type SnapshotContext } from '../../../harness/controller-context.js';
import type { Kube } from '../../../harness/kube-objects.js';

const NODE = 'vnet-real';
const KIND = 'VirtualNetwork';
const ID = randomBytes(3).toString('hex');
/** A host bridge no libvirt network made, with an address of its own. */
const HOST_BRIDGE = `lvohb${ID}`;
const cp = useControlPlane();

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

// Registered before the daemon's hooks: the bridge is there before it starts and goes after
// it stops.
beforeAll(() => {
  ip('link', 'add', HOST_BRIDGE, 'type', 'bridge');
  ip('addr', 'add', '10.213.77.1/24', 'dev', HOST_BRIDGE);
});
afterAll(() => {
  try {
    ip('link', 'del', HOST_BRIDGE);
  } catch {
    // not created
  }
});

const lv = usePrivateLibvirtd({
  controlPlane: cp,
  nodeName: NODE,
  tmpPrefix: 'lvo-vnet-real-',
  async cleanup(conn) {
    for (const network of await conn.listAllNetworks().catch(() => [])) {
      if (!network.getName().startsWith(`hb-${ID}`)) continue;
      await network.destroy().catch(() => undefined);
      await network.undefine().catch(() => undefined);
    }
  },
});
let conn: Connect;
let k: Kube;
let ctx: SnapshotContext;

beforeAll(() => {
  ({ conn, k, ctx } = lv());
});

const entryOf = async (name: string) =>
  (await k.get<VirtualNetwork>(KIND, undefined, name))?.status?.nodes?.find(
    (n) => n.nodeName === NODE,
  );
const readyOf = async (name: string) =>
  (await entryOf(name))?.conditions?.find((c) => c.type === 'Ready');

describe('a spec.bridge naming a host device the network did not make', () => {
  it('is BridgeInUse before anything is defined, and the device is left as it was', async () => {
    const name = `hb-${ID}`;
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name },
      spec: { mode: 'isolated', bridge: HOST_BRIDGE },
    });
    await ctx.refresh();
    await reconcileVirtualNetwork(name, ctx);
    // No half-made network: not defined (so not marked for autostart either).
    const defined = await conn
      .lookupNetworkByUUIDString(String(created.metadata.uid))
      .catch(() => undefined);
    expect(defined).toBeUndefined();
    const ready = await readyOf(name);
    expect(ready).toMatchObject({ status: 'False', reason: 'BridgeInUse' });
    expect(ready?.message).toContain(`'${HOST_BRIDGE}'`);
    expect(ready?.message).toContain('nothing was created on the node');
    expect(ip('-br', 'addr', 'show', 'dev', HOST_BRIDGE)).toContain('10.213.77.1/24');

    // Naming a free bridge instead lets it start.
    const free = `lvofb${ID}`;
    await k.patchSpec(KIND, undefined, name, { bridge: free });
    await converge(ctx, reconcileVirtualNetwork, name, {
      until: async () => (await readyOf(name))?.status === 'True',
    });
    expect((await entryOf(name))?.bridge).toBe(free);

    await k.remove(KIND, undefined, name);
    await converge(ctx, reconcileVirtualNetwork, name, {
      until: async () => (await k.get(KIND, undefined, name)) === undefined,
    });
    expect(ip('-br', 'addr', 'show', 'dev', HOST_BRIDGE)).toContain('10.213.77.1/24');
  });
});
