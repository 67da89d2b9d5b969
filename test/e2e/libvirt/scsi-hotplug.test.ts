// SCSI disks hot-plugged one by one into a running QEMU domain the way the VirtualMachine
// controller plans them (desired.ts + deviceSteps), next to a sata install CD-ROM and the
// cloud-init CD-ROM that share the sd names. No guest needs to boot: QEMU plugs SCSI disks
// without the guest's help. What only a real QEMU shows: from the 7th sd name on, libvirt put
// a disk without a unit on a second SCSI controller, and wrote that controller into the
// persistent definition as an emulated LSI card, so those disks changed controller at the
// next boot (a guest without the LSI driver lost them).
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../src/api/generated/types.js';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  desiredDomain,
  type MachineInputs,
} from '../../../src/controllers/virtual-machine/desired.js';
import type { OursDomain } from '../../../src/controllers/virtual-machine/observe.js';
import {
  configSteps,
  deviceNames,
  deviceSteps,
  restartPending,
} from '../../../src/controllers/virtual-machine/plan.js';
import {
  Connect,
  DomainDeviceModifyFlags,
  DomainXMLFlags,
  type Domain,
} from '../../../src/libvirt/index.js';
import { buildDiskXML, buildDomainXML, parseDomainXML } from '../../../src/libvirt/xml/domain.js';

const DISKS = 9;
const RUN = randomBytes(3).toString('hex');
const UID = randomUUID();

let daemon: LibvirtDaemon;
let conn: Connect;
let dom: Domain | undefined;
let dir: string;

beforeAll(async () => {
  daemon = await ensureLibvirtd();
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
  dir = await mkdtemp(join(tmpdir(), `lvo-scsi-${RUN}-`));
  await mkdir(join(dir, 'cloud-init'));
});

afterAll(async () => {
  await dom?.destroy().catch(() => undefined);
  await dom?.undefine().catch(() => undefined);
  await conn?.close();
  await daemon?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function machine(scsiDisks: number): VirtualMachine {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: `scsi-${RUN}`, namespace: 'lvo-e2e', uid: UID, generation: 1 },
    spec: {
      nodeName: 'n',
      runStrategy: 'Always',
      domainType: 'qemu',
      vcpus: 1,
      memory: '64Mi',
      firmware: 'bios',
      terminationGracePeriodSeconds: 10,
      updatePolicy: 'Manual',
      disks: [
        { name: 'install', volume: 'iso', readOnly: true, device: 'cdrom' },
        ...Array.from({ length: scsiDisks }, (_, i) => ({
          name: `d${i}`,
          volume: `d${i}`,
          readOnly: false,
          bus: 'scsi' as const,
        })),
      ],
    },
  };
}

async function definitions(domain: Domain) {
  const live = await domain.getXMLDesc(0);
  const config = await domain.getXMLDesc(DomainXMLFlags.INACTIVE);
  return { live, config, parsed: { live: parseDomainXML(live), config: parseDomainXML(config) } };
}

/** The model of every SCSI controller in a domain's XML. */
const scsiControllers = (xml: string) =>
  [...xml.matchAll(/<controller type='scsi' index='\d+' model='([^']+)'/g)].map((m) => m[1]);

describe('scsi disks hot-plugged into a running QEMU domain', () => {
  it('all stay on the virtio-scsi controller, live and at the next boot', async () => {
    const files = ['install.iso', ...Array.from({ length: DISKS }, (_, i) => `d${i}.raw`)];
    for (const file of files) await writeFile(join(dir, file), Buffer.alloc(1 << 20));
    const seed = join(dir, 'cloud-init', `${UID}-ab12.iso`);
    await writeFile(seed, Buffer.alloc(1 << 16));
    const inputs: MachineInputs = {
      volumes: new Map([
        ['iso', { path: join(dir, 'install.iso'), format: 'raw' as const }],
        ...Array.from({ length: DISKS }, (_, i): [string, { path: string; format: 'raw' }] => [
          `d${i}`,
          { path: join(dir, `d${i}.raw`), format: 'raw' },
        ]),
      ]),
      cloudInit: { path: seed, files: {} },
      consoleLog: undefined,
    };

    dom = await conn.defineDomainXML(buildDomainXML(desiredDomain(machine(0), inputs)));
    await dom.create();
    const detach = { since: undefined, graceMs: 10_000, now: new Date() };
    for (let n = 1; n <= DISKS; n++) {
      const vm = machine(n);
      const want = desiredDomain(vm, inputs);
      const { parsed } = await definitions(dom);
      const held = { live: parsed.live, config: parsed.config } as OursDomain;
      const steps = deviceSteps(want, held, deviceNames(vm, want), detach);
      expect(steps.map((s) => s.op)).toEqual(['attachDevice']);
      const step = steps[0];
      if (step?.op !== 'attachDevice' || step.device.kind !== 'disk') throw new Error('no disk');
      await dom.attachDeviceFlags(
        buildDiskXML(step.device.disk),
        DomainDeviceModifyFlags.LIVE | DomainDeviceModifyFlags.CONFIG,
      );
    }

    const vm = machine(DISKS);
    const want = desiredDomain(vm, inputs);
    const after = await definitions(dom);
    const held = { live: after.parsed.live, config: after.parsed.config } as OursDomain;
    // Converged: the next pass attaches nothing, does not redefine, and has nothing waiting
    // for a restart.
    expect(deviceSteps(want, held, deviceNames(vm, want), detach)).toEqual([]);
    expect(configSteps(want, held, [])).toEqual([]);
    expect(restartPending(want, after.parsed.live, deviceNames(vm, want))).toEqual([]);
    expect(scsiControllers(after.live)).toEqual(['virtio-scsi']);
    expect(scsiControllers(after.config)).toEqual(['virtio-scsi']);
    // Targets do not collide with the two sata CD-ROMs (libvirt would refuse the attach).
    const targets = after.parsed.config.devices.disks.map((d) => d.target.dev);
    expect(new Set(targets).size).toBe(DISKS + 2);

    // The next boot, from the persistent definition, has every disk on the same controller.
    await dom.destroy();
    await dom.create();
    const booted = await definitions(dom);
    expect(scsiControllers(booted.live)).toEqual(['virtio-scsi']);
    const scsi = booted.parsed.live.devices.disks.filter((d) => d.target.bus === 'scsi');
    // The unit of each is its target's index, as libvirt derives it below sdh: sdc is unit 2.
    expect(scsi.map((d) => [d.target.dev, d.scsiUnit])).toEqual(
      Array.from({ length: DISKS }, (_, i) => [`sd${String.fromCharCode(99 + i)}`, i + 2]),
    );
  });
});
