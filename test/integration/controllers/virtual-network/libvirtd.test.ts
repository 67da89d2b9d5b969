// VirtualNetwork against a real libvirtd (a private one, as in ../volume/libvirtd.test.ts),
// where bridges are real host devices: a spec.bridge that names a device the network did not
// make must be refused before anything is defined, and the device left as it was; a name too
// long for the files libvirtd keeps per network is refused at define or start (the test driver
// keeps no files and takes it).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualNetwork } from '../../../../src/api/generated/types.js';
import { reconcileVirtualNetwork } from '../../../../src/controllers/virtual-network/index.js';
import { Connect } from '../../../../src/libvirt/index.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { usePrivateLibvirtd } from '../../../harness/private-libvirtd.js';
import {
  converge,
  requeueMs,
  snapshotContext,
  type SnapshotContext,
} from '../../../harness/controller-context.js';
import { argoHealth, kstatus } from '../../../harness/health-tools.js';
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

/** A name of `length` characters under this file's prefix (a DNS subdomain, as Kubernetes wants). */
const longName = (length: number) => `hb-${ID}-`.padEnd(length, 'a');

describe('a name longer than libvirtd can name its files after', () => {
  it('is DefineRefused (Stalled) on that node while another node runs it', async () => {
    // libvirtd writes /etc/libvirt/qemu/networks/<name>.xml.new: ENAMETOOLONG from 248 on.
    const name = longName(250);
    // A second node whose libvirt (the test driver, its own state) keeps no files.
    const dir = mkdtempSync(join(tmpdir(), 'lvo-vnet-long-'));
    writeFileSync(join(dir, 'host.xml'), '<node/>');
    const connB = await Connect.open(`test://${join(dir, 'host.xml')}`);
    const ctxB = snapshotContext({
      kubeConfig: cp().kubeConfig,
      conn: connB,
      nodeName: 'vnet-other',
      stateDir: dir,
    });
    try {
      const created = await k.create<VirtualNetwork>(KIND, {
        metadata: { name },
        spec: { mode: 'isolated' },
      });
      await converge(ctxB, reconcileVirtualNetwork, name, {
        until: async () =>
          (await k.get<VirtualNetwork>(KIND, undefined, name))?.status?.nodes?.some(
            (n) => n.nodeName === 'vnet-other' && n.active,
          ) === true,
      });
      await ctx.refresh();
      const action = await reconcileVirtualNetwork(name, ctx);
      // Retried with backoff all the same, so a host that learns to take it is picked up.
      expect(requeueMs(action)).toBeGreaterThan(0);
      const ready = await readyOf(name);
      expect(ready).toMatchObject({ status: 'False', reason: 'DefineRefused' });
      expect(ready?.message).toContain('File name too long');
      expect(ready?.message).toContain('shorter metadata.name');
      expect(
        await conn.lookupNetworkByUUIDString(String(created.metadata.uid)).catch(() => undefined),
      ).toBeUndefined();
      expect(ctx.events.some((e) => e.key === name && e.reason === 'DefineRefused')).toBe(true);

      // The summary: one of two nodes runs it, the other never will until a user acts.
      const stored = await k.get<VirtualNetwork>(KIND, undefined, name);
      expect(stored?.status?.readyNodes).toBe('1/2');
      const top = (type: string) => stored?.status?.conditions?.find((c) => c.type === type);
      expect(top('Ready')).toMatchObject({ status: 'False', reason: 'DefineRefused' });
      expect(top('Ready')?.message).toContain(`not ready on 1 of 2 node(s): ${NODE} (`);
      expect(top('Stalled')).toMatchObject({ status: 'True', reason: 'DefineRefused' });
      expect(top('Reconciling')?.status).toBe('False');
      expect(kstatus([stored]).get(`${KIND}/${name}`)?.status).toBe('Failed');
      expect(argoHealth(stored).status).toBe('Degraded');

      await k.remove(KIND, undefined, name);
      await converge(ctx, reconcileVirtualNetwork, name);
      await converge(ctxB, reconcileVirtualNetwork, name, {
        until: async () => (await k.get(KIND, undefined, name)) === undefined,
      });
      expect(await connB.listAllNetworks()).toEqual([]);
    } finally {
      await connB.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is StartRefused when only dnsmasq files are too long, and is removed on deletion', async () => {
    // Defined (<name>.xml.new fits), but the start writes dnsmasq's <name>.hostsfile.
    const name = longName(246);
    const octet = parseInt(ID.slice(0, 2), 16);
    const created = await k.create<VirtualNetwork>(KIND, {
      metadata: { name },
      spec: {
        mode: 'isolated',
        ipv4: {
          cidr: `10.214.${octet}.1/24`,
          dhcp: { rangeStart: `10.214.${octet}.10`, rangeEnd: `10.214.${octet}.20` },
        },
      },
    });
    await ctx.refresh();
    await reconcileVirtualNetwork(name, ctx);
    const ready = await readyOf(name);
    expect(ready).toMatchObject({ status: 'False', reason: 'StartRefused' });
    expect(ready?.message).toContain('hostsfile');
    expect(ready?.message).toContain('File name too long');
    const stored = await k.get<VirtualNetwork>(KIND, undefined, name);
    expect(stored?.status?.conditions?.find((c) => c.type === 'Stalled')?.status).toBe('True');
    const network = await conn.lookupNetworkByUUIDString(String(created.metadata.uid));
    expect(await network.isActive()).toBe(false);

    await k.remove(KIND, undefined, name);
    await converge(ctx, reconcileVirtualNetwork, name, {
      until: async () => (await k.get(KIND, undefined, name)) === undefined,
    });
    expect(
      await conn.lookupNetworkByUUIDString(String(created.metadata.uid)).catch(() => undefined),
    ).toBeUndefined();
  });
});
