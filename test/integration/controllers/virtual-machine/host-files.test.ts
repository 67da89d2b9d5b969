// The files a VirtualMachine has on its host besides the domain: the cloud-init NoCloud ISO
// (built with genisoimage, attached as a read-only SATA CD-ROM, rebuilt only when its content
// changes, the superseded one removed once neither the running domain nor a libvirt snapshot of
// it names it) and the serial console log that the `virt.dev/console-log` annotation asks for.
// Deleting the machine removes both.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import { reconcileVirtualMachine } from '../../../../src/controllers/virtual-machine/index.js';
import { Connect, DomainXMLFlags } from '../../../../src/libvirt/index.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { useControlPlane } from '../../../harness/control-plane.js';
import { converge, type SnapshotContext, requeueMs } from '../../../harness/controller-context.js';
import { type Kube } from '../../../harness/kube-objects.js';
import { openMachineBench, type MachineBench, type Recording } from './fixtures.js';

const NODE = 'node-a';
const NS = 'vm-files';

const controlPlane = useControlPlane();
let conn: Connect;
let rec: Recording;
let ctx: SnapshotContext;
let k: Kube;
let bench: MachineBench;
let stateDir: string;

beforeAll(async () => {
  for (const tool of ['genisoimage', 'isoinfo']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`]);
    } catch {
      throw new Error(`${tool} is missing: install it (Debian: apt-get install genisoimage)`);
    }
  }
  bench = await openMachineBench(controlPlane().kubeConfig, { namespace: NS, nodeName: NODE });
  ({ conn, rec, ctx, k, stateDir } = bench);
});

afterAll(async () => {
  await bench?.close();
});

const key = (name: string) => `${NS}/${name}`;
const vmOf = (name: string) => ctx.get<VirtualMachine>('VirtualMachine', NS, name);
const condition = (vm: VirtualMachine | undefined, type: string) =>
  vm?.status?.conditions?.find((c) => c.type === type);
const stored = (name: string, test: (vm: VirtualMachine | undefined) => boolean) => async () => {
  await ctx.refresh();
  return test(vmOf(name));
};
const ready = (name: string) => stored(name, (vm) => condition(vm, 'Ready')?.status === 'True');

const isoDir = () => join(stateDir, 'cloud-init');
const isos = () => (existsSync(isoDir()) ? readdirSync(isoDir()).sort() : []);
/** A file from the ISO's Joliet tree, as cloud-init would read it. */
const isoFile = (iso: string, name: string) =>
  execFileSync('isoinfo', ['-J', '-i', iso, '-x', `/${name}`], { encoding: 'utf8' });

const USER_DATA = '#cloud-config\nruncmd:\n  - [echo, "<hello & goodbye>"]\n';
const NETWORK_DATA = 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n';

describe('VirtualMachine host files on test:///default', () => {
  let uid = '';

  it('builds the NoCloud ISO and attaches it as a read-only SATA CD-ROM; the pty console is logged to a file', async () => {
    const created = await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'seed', namespace: NS, annotations: { 'virt.dev/console-log': 'true' } },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        vcpus: 1,
        memory: '128Mi',
        cloudInit: { userData: USER_DATA, networkData: NETWORK_DATA },
      },
    });
    uid = String(created.metadata.uid);
    await converge(ctx, reconcileVirtualMachine, key('seed'), { until: ready('seed') });

    const files = isos();
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(new RegExp(`^${uid}-[0-9a-f]{16}\\.iso$`));
    const iso = join(isoDir(), files[0]!);
    expect(execFileSync('isoinfo', ['-d', '-i', iso], { encoding: 'utf8' })).toMatch(
      /Volume id: cidata/,
    );
    expect(isoFile(iso, 'user-data')).toBe(USER_DATA);
    expect(isoFile(iso, 'network-config')).toBe(NETWORK_DATA);
    expect(isoFile(iso, 'meta-data')).toBe(`instance-id: ${uid}\nlocal-hostname: seed\n`);

    const domain = await conn.lookupDomainByUUIDString(uid);
    const live = parseDomainXML(await domain.getXMLDesc());
    expect(live.devices.disks).toEqual([
      expect.objectContaining({
        device: 'cdrom',
        source: { type: 'file', file: iso },
        driver: { name: 'qemu', type: 'raw' },
        target: { dev: 'sda', bus: 'sata' },
        readonly: true,
      }),
    ]);
    const consoleLog = join(stateDir, 'console', `${uid}.log`);
    expect(live.devices.serials).toEqual([
      expect.objectContaining({
        source: { type: 'pty' },
        log: { file: consoleLog, append: 'off' },
      }),
    ]);
    expect(existsSync(join(stateDir, 'console'))).toBe(true);
  });

  it('neither rebuilds the ISO nor writes anything when nothing changed', async () => {
    const iso = join(isoDir(), isos()[0]!);
    const mtime = statSync(iso).mtimeMs;
    rec.reset();
    const writes = ctx.writes;
    await ctx.refresh();
    expect(await reconcileVirtualMachine(key('seed'), ctx)).toEqual({ kind: 'done' });
    expect(rec.writes()).toEqual([]);
    expect(ctx.writes).toBe(writes);
    expect(statSync(iso).mtimeMs).toBe(mtime);
  });

  it('writes a new ISO for new cloud-init data, a restart-time change; the old one goes once unused', async () => {
    const [old] = isos();
    await k.patchSpec('VirtualMachine', NS, 'seed', {
      cloudInit: { userData: '#cloud-config\n{}\n' },
    });
    await converge(ctx, reconcileVirtualMachine, key('seed'), {
      until: stored('seed', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });
    const now = isos();
    expect(now).toHaveLength(2);
    expect(now).toContain(old);
    const [fresh] = now.filter((f) => f !== old);
    expect(condition(vmOf('seed'), 'RestartRequired')?.message).toContain('spec.cloudInit');
    const domain = await conn.lookupDomainByUUIDString(uid);
    const config = parseDomainXML(await domain.getXMLDesc(DomainXMLFlags.INACTIVE));
    expect(config.devices.disks[0]?.source).toEqual({
      type: 'file',
      file: join(isoDir(), fresh!),
    });
    expect(isoFile(join(isoDir(), fresh!), 'user-data')).toBe('#cloud-config\n{}\n');

    // The machine restarts (here: by the user, destroy then the operator starts it again).
    await domain.destroy();
    await converge(ctx, reconcileVirtualMachine, key('seed'), {
      until: stored('seed', (vm) => condition(vm, 'RestartRequired')?.status === 'False'),
    });
    expect(isos()).toEqual([fresh]);
  });

  it('keeps a superseded ISO while a libvirt snapshot of the domain names it', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'snapped', namespace: NS },
      spec: { nodeName: NODE, vcpus: 1, memory: '128Mi', cloudInit: { userData: 'first' } },
    });
    await converge(ctx, reconcileVirtualMachine, key('snapped'), { until: ready('snapped') });
    const mine = () => isos().filter((f) => f.startsWith(String(vmOf('snapped')?.metadata.uid)));
    const [old] = mine();
    const domain = await conn.lookupDomainByName(`${NS}_snapped`);
    // A snapshot taken with the first cloud-init data: its definition names the first ISO,
    // which a revert opens again.
    const snapshot = await domain.createSnapshotXML(
      '<domainsnapshot><name>before</name></domainsnapshot>',
    );
    await k.patchSpec('VirtualMachine', NS, 'snapped', { cloudInit: { userData: 'second' } });
    await converge(ctx, reconcileVirtualMachine, key('snapped'), {
      until: stored('snapped', (vm) => condition(vm, 'RestartRequired')?.status === 'True'),
    });
    await domain.destroy();
    await converge(ctx, reconcileVirtualMachine, key('snapped'), {
      until: stored('snapped', (vm) => condition(vm, 'RestartRequired')?.status === 'False'),
    });
    expect(mine()).toHaveLength(2);
    expect(mine()).toContain(old);

    // Once no snapshot names it, it goes.
    await snapshot.delete();
    snapshot.free();
    await converge(ctx, reconcileVirtualMachine, key('snapped'), {
      until: () => mine().length === 1,
    });
    expect(mine()).not.toContain(old);
    await k.remove('VirtualMachine', NS, 'snapped');
    await converge(ctx, reconcileVirtualMachine, key('snapped'), {
      until: stored('snapped', (vm) => !vm),
    });
  });

  it('reports a missing genisoimage as CloudInitFailed, defining nothing, and recovers', async () => {
    await k.create<VirtualMachine>('VirtualMachine', {
      metadata: { name: 'no-tool', namespace: NS },
      spec: { nodeName: NODE, vcpus: 1, memory: '128Mi', cloudInit: { userData: 'x' } },
    });
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      await ctx.refresh();
      const action = await reconcileVirtualMachine(key('no-tool'), ctx);
      expect(requeueMs(action)).toBeGreaterThan(0);
    } finally {
      process.env.PATH = path;
    }
    await ctx.refresh();
    const vm = vmOf('no-tool');
    expect(condition(vm, 'Synced')).toMatchObject({
      status: 'False',
      reason: 'CloudInitFailed',
      message:
        'genisoimage is not installed on this node; install it (Debian: apt-get install genisoimage)',
    });
    // Not defined yet, and retried (Reconciling): Pending, not Failed (which is Stalled).
    expect(vm?.status?.phase).toBe('Pending');
    await expect(conn.lookupDomainByName(`${NS}_no-tool`)).rejects.toMatchObject({ code: 42 });
    expect(readdirSync(isoDir()).filter((f) => f.startsWith('.'))).toEqual([]);

    await converge(ctx, reconcileVirtualMachine, key('no-tool'), { until: ready('no-tool') });
    await k.remove('VirtualMachine', NS, 'no-tool');
    await converge(ctx, reconcileVirtualMachine, key('no-tool'), {
      until: stored('no-tool', (v) => !v),
    });
  });

  it('removes the ISO and the console log with the machine', async () => {
    // QEMU would have written it; the test driver runs no guest.
    writeFileSync(join(stateDir, 'console', `${uid}.log`), 'boot\n');
    await k.remove('VirtualMachine', NS, 'seed');
    await converge(ctx, reconcileVirtualMachine, key('seed'), {
      until: stored('seed', (vm) => !vm),
    });
    expect(isos()).toEqual([]);
    expect(existsSync(join(stateDir, 'console', `${uid}.log`))).toBe(false);
    await expect(conn.lookupDomainByUUIDString(uid)).rejects.toMatchObject({ code: 42 });
  });
});
