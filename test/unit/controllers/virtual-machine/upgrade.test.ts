// A machine defined by an older operator, planned by this one (fixtures: see
// test/fixtures/xml/upgrade/README.md).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../../src/api/generated/types.js';
import type { MachineInputs } from '../../../../src/controllers/virtual-machine/desired.js';
import {
  deviceNames,
  planMachine,
  restartPending,
} from '../../../../src/controllers/virtual-machine/plan.js';
import { parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { desired, NOW, observed, ours } from './machines.js';

const dir = join(import.meta.dirname, '../../../fixtures/xml/upgrade');
const fixture = (name: string) => readFileSync(join(dir, name), 'utf8');

describe('a machine whose scsi disks an older operator left on an LSI controller', () => {
  const vm = JSON.parse(fixture('6675db7-scsi9-vm.json')) as VirtualMachine;
  const live = parseDomainXML(fixture('6675db7-scsi9-live.xml'));
  const config = parseDomainXML(fixture('6675db7-scsi9-config.xml'));
  const pool = '/tmp/lvo-upg-U9GcUR/pool';
  const volume = (name: string, format: 'raw' | 'qcow2') => [
    `${name}-deef85`,
    { path: `${pool}/default_${name}-deef85`, format },
  ];
  const inputs: MachineInputs = {
    volumes: new Map([
      volume('k', 'raw'),
      volume('i', 'raw'),
      volume('cd', 'raw'),
      ...Array.from({ length: 9 }, (_, i) => volume(`s${i}`, 'qcow2')),
    ] as Array<[string, { path: string; format: 'raw' | 'qcow2' }]>),
    cloudInit: undefined,
    consoleLog: undefined,
  };
  const want = desired(vm, inputs);

  it('names those disks in RestartRequired, and nothing else', () => {
    // sdh, sdi and sdj (disks s6..s8) sit on the lsilogic card: a guest without its driver
    // does not see them. A restart puts them on the virtio-scsi controller.
    expect(restartPending(want, live, deviceNames(vm, want))).toEqual([
      'spec.disks[s6]',
      'spec.disks[s7]',
      'spec.disks[s8]',
    ]);
  });

  it('redefines the definition with every scsi disk on the virtio-scsi controller', () => {
    const domain = ours({ uuid: vm.metadata.uid!, name: 'default_run-deef85', config, live });
    const plan = planMachine({
      vm,
      desired: want,
      observed: observed(domain),
      cloudInit: undefined,
      now: NOW,
    });
    // One define and nothing else: no restart while the guest runs (updatePolicy Manual).
    expect(plan.steps.map((s) => s.op)).toEqual(['define']);
    const define = plan.steps[0];
    const units = define?.op === 'define' ? define.doc.devices.disks.map((d) => d.scsiUnit) : [];
    expect(units).toEqual([undefined, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
