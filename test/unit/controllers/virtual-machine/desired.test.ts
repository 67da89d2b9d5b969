import { describe, expect, it } from 'vitest';
import { isStalledReason } from '../../../../src/api/conditions.js';
import type {
  VirtualMachine,
  VirtualNetwork,
  Volume,
} from '../../../../src/api/generated/types.js';
import { defaultMacAddress } from '../../../../src/api/names.js';
import {
  cloudInitFiles,
  cloudInitImage,
} from '../../../../src/controllers/virtual-machine/cloud-init.js';
import {
  desiredDomain,
  diskLetters,
  interfaceMacs,
  machineInputs,
  quantityKiB,
  unsupportedSpec,
  type MachineInputs,
  type References,
} from '../../../../src/controllers/virtual-machine/desired.js';
import { configSteps, restartPending } from '../../../../src/controllers/virtual-machine/plan.js';
import { buildDomainXML, parseDomainXML } from '../../../../src/libvirt/xml/domain.js';
import { stampOf } from '../../../../src/ownership/metadata.js';
import { noInputs, ours, UID, vm } from './machines.js';

function volume(
  name: string,
  over: { node?: string; phase?: string; path?: string; format?: 'qcow2' | 'raw' } = {},
): Volume {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name, namespace: 'prod' },
    spec: {
      nodeName: over.node ?? 'node-a',
      pool: 'images',
      format: over.format ?? 'qcow2',
      deletionPolicy: 'Delete',
    },
    status: {
      phase: (over.phase ?? 'Available') as 'Available',
      ...(over.path === '' ? {} : { path: over.path ?? `/pool/prod_${name}` }),
    },
  };
}

function network(
  name: string,
  nodes: Array<{ nodeName: string; active?: boolean }>,
): VirtualNetwork {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualNetwork',
    metadata: { name },
    spec: { mode: 'nat', autostart: true },
    status: { nodes },
  };
}

function refs(volumes: Volume[], networks: VirtualNetwork[]): References {
  return {
    volume: (ns, name) =>
      volumes.find((v) => v.metadata.namespace === ns && v.metadata.name === name),
    network: (name) => networks.find((n) => n.metadata.name === name),
  };
}

describe('diskLetters', () => {
  it.each([
    [0, 'a'],
    [1, 'b'],
    [25, 'z'],
    [26, 'aa'],
    [27, 'ab'],
    [51, 'az'],
    [52, 'ba'],
    [701, 'zz'],
    [702, 'aaa'],
  ])('%i -> %s', (index, letters) => expect(diskLetters(index)).toBe(letters));
});

describe('quantityKiB', () => {
  it.each([
    ['256Mi', 262144],
    ['1Gi', 1048576],
    ['1.5Gi', 1572864],
    ['1G', 976563],
    [1024, 1],
    [1000, 1],
    ['1025', 2],
  ] as const)('%s -> %i KiB (rounded up)', (q, kib) => expect(quantityKiB(q)).toBe(kib));
});

describe('desiredDomain', () => {
  it('builds the whole domain from a minimal spec', () => {
    expect(desiredDomain(vm(), noInputs)).toEqual({
      type: 'qemu',
      name: 'prod_web',
      uuid: UID,
      stamp: { kind: 'VirtualMachine', namespace: 'prod', name: 'web', uid: UID },
      memoryKiB: 262144,
      currentMemoryKiB: 262144,
      vcpu: { current: 1, max: 1 },
      os: { type: 'hvm', arch: 'x86_64', machine: 'q35' },
      features: { acpi: true, apic: true },
      onPoweroff: 'destroy',
      onReboot: 'restart',
      onCrash: 'destroy',
      devices: {
        // The q35 root, virtio-scsi, and root ports: 4 for devices + 8 spare for hotplug.
        controllers: [
          { type: 'pci', model: 'pcie-root' },
          { type: 'scsi', model: 'virtio-scsi' },
          ...Array.from({ length: 12 }, () => ({ type: 'pci', model: 'pcie-root-port' })),
        ],
        disks: [],
        interfaces: [],
        serials: [{ source: { type: 'pty' } }],
        consoles: [],
        channels: [{ type: 'unix', target: { type: 'virtio', name: 'org.qemu.guest_agent.0' } }],
        memballoon: { model: 'virtio', statsPeriod: 5 },
      },
    });
  });

  it('takes the UUID from spec.uuid when set, the maximums from maxMemory and maxVcpus', () => {
    const doc = desiredDomain(
      vm({
        uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
        memory: '1Gi',
        maxMemory: '4Gi',
        vcpus: 2,
        maxVcpus: 8,
        domainType: 'kvm',
      }),
      noInputs,
    );
    expect(doc.uuid).toBe('6695eb01-f6a4-8304-79aa-97f2502e193f');
    expect(doc.stamp?.uid).toBe(UID); // the stamp names the object, the UUID the domain
    expect(doc.type).toBe('kvm');
    expect([doc.memoryKiB, doc.currentMemoryKiB]).toEqual([4194304, 1048576]);
    expect(doc.vcpu).toEqual({ current: 2, max: 8 });
  });

  it.each([
    ['bios', undefined],
    ['uefi', 'efi'],
  ] as const)('firmware %s -> os firmware %s', (firmware, expected) => {
    expect(desiredDomain(vm({ firmware }), noInputs).os.firmware).toBe(expected);
  });

  it('names disk targets per bus in spec order, sata and scsi sharing sd, the CD-ROM last', () => {
    const inputs: MachineInputs = {
      volumes: new Map([
        ['a', { path: '/p/a', format: 'qcow2' }],
        ['b', { path: '/p/b', format: 'raw' }],
        ['c', { path: '/p/c', format: 'qcow2' }],
        ['d', { path: '/p/d', format: 'raw' }],
      ]),
      cloudInit: { path: '/state/cloud-init/x.iso', files: {} },
      consoleLog: undefined,
    };
    const doc = desiredDomain(
      vm({
        disks: [
          { name: 'root', volume: 'a', bus: 'virtio', readOnly: false, bootOrder: 1 },
          { name: 'b', volume: 'b', bus: 'sata', readOnly: true },
          { name: 'c', volume: 'c', bus: 'scsi', readOnly: false },
          { name: 'd', volume: 'd', bus: 'virtio', readOnly: false, bootOrder: 2 },
        ],
      }),
      inputs,
    );
    expect(
      doc.devices.disks.map((d) => [
        d.device,
        d.target.dev,
        d.target.bus,
        d.source,
        d.driver?.type,
        d.readonly,
        d.bootOrder,
      ]),
    ).toEqual([
      ['disk', 'vda', 'virtio', { type: 'file', file: '/p/a' }, 'qcow2', false, 1],
      ['disk', 'sda', 'sata', { type: 'file', file: '/p/b' }, 'raw', true, undefined],
      ['disk', 'sdb', 'scsi', { type: 'file', file: '/p/c' }, 'qcow2', false, undefined],
      ['disk', 'vdb', 'virtio', { type: 'file', file: '/p/d' }, 'raw', false, 2],
      [
        'cdrom',
        'sdc',
        'sata',
        { type: 'file', file: '/state/cloud-init/x.iso' },
        'raw',
        true,
        undefined,
      ],
    ]);
  });

  it('boots a kernel and initrd from Volumes with the command line', () => {
    const doc = desiredDomain(
      vm({
        boot: {
          kernel: { volume: 'k' },
          initrd: { volume: 'i' },
          cmdline: 'console=ttyS0 root=/dev/vda',
        },
      }),
      {
        ...noInputs,
        volumes: new Map([
          ['k', { path: '/p/vmlinuz', format: 'raw' }],
          ['i', { path: '/p/initrd', format: 'raw' }],
        ]),
      },
    );
    expect(doc.os).toMatchObject({
      kernel: '/p/vmlinuz',
      initrd: '/p/initrd',
      cmdline: 'console=ttyS0 root=/dev/vda',
    });
  });

  it('writes no command line for an empty cmdline, as libvirt reads it back', () => {
    // libvirt 9.0 drops an empty <cmdline/> (measured): writing it would be a difference from
    // the running and the persistent definition forever, a redefinition on every pass.
    const inputs = {
      ...noInputs,
      volumes: new Map([['k', { path: '/p/k', format: 'raw' as const }]]),
    };
    const doc = desiredDomain(vm({ boot: { kernel: { volume: 'k' }, cmdline: '' } }), inputs);
    expect(doc.os.cmdline).toBeUndefined();
    const asLibvirtKeepsIt = parseDomainXML(
      buildDomainXML(doc).replace(/<cmdline\/>|<cmdline><\/cmdline>/, ''),
    );
    expect(restartPending(doc, asLibvirtKeepsIt)).toEqual([]);
    expect(configSteps(doc, ours({ config: asLibvirtKeepsIt }))).toEqual([]);
  });

  it('gives interfaces a stable default MAC derived from uid and name, or the spec lower-cased', () => {
    const machine = vm({
      interfaces: [
        { name: 'eth0', network: 'lab', model: 'virtio' },
        { name: 'eth1', network: 'lab', macAddress: '52:54:00:AA:00:01', model: 'e1000' },
      ],
    });
    const doc = desiredDomain(machine, noInputs);
    expect(doc.devices.interfaces).toEqual([
      { source: { network: 'lab' }, mac: defaultMacAddress(UID, 'eth0'), model: 'virtio' },
      { source: { network: 'lab' }, mac: '52:54:00:aa:00:01', model: 'e1000' },
    ]);
    expect(defaultMacAddress(UID, 'eth0')).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(interfaceMacs(machine).map((m) => m.name)).toEqual(['eth0', 'eth1']);
    // Stable: the same on every call, different per interface.
    expect(desiredDomain(machine, noInputs).devices.interfaces[0]?.mac).toBe(
      doc.devices.interfaces[0]?.mac,
    );
    expect(defaultMacAddress(UID, 'eth0')).not.toBe(defaultMacAddress(UID, 'eth1'));
  });

  it('logs the pty serial to the file the annotation asks for, so a console still attaches', () => {
    const doc = desiredDomain(vm(), { ...noInputs, consoleLog: '/state/console/x.log' });
    expect(doc.devices.serials).toEqual([
      { source: { type: 'pty' }, log: { file: '/state/console/x.log', append: 'off' } },
    ]);
  });

  it('escapes user strings through the XML library: hostile text survives a round trip', () => {
    const cmdline = `console=ttyS0 x="</cmdline><on_crash>preserve</on_crash>" y='&amp;' <!-- z -->`;
    const doc = desiredDomain(vm({ boot: { kernel: { volume: 'k' }, cmdline } }), {
      ...noInputs,
      volumes: new Map([['k', { path: '/p/<k\'&"k>', format: 'raw' }]]),
    });
    const xml = buildDomainXML(doc);
    const back = parseDomainXML(xml);
    expect(back.os.cmdline).toBe(cmdline);
    expect(back.os.kernel).toBe('/p/<k\'&"k>');
    expect(back.onCrash).toBe('destroy');
    expect(stampOf(xml)).toEqual(doc.stamp);
  });
});

describe('machineInputs', () => {
  const spec = {
    disks: [{ name: 'root', volume: 'root', bus: 'virtio' as const, readOnly: false }],
    boot: { kernel: { volume: 'kernel' }, initrd: { volume: 'initrd' } },
    interfaces: [{ name: 'eth0', network: 'lab', model: 'virtio' as const }],
  };
  const raw = { format: 'raw' } as const;
  const good = [volume('root', raw), volume('kernel', raw), volume('initrd', raw)];
  const lab = network('lab', [{ nodeName: 'node-a', active: true }]);

  // A base image written by a machine corrupts every overlay on it (qcow2 cannot tell).
  it('refuses a writable disk on a Volume others are layered on, not a read-only one', () => {
    const layered = {
      ...refs(good, [lab]),
      overlaysOf: (_ns: string, name: string) => (name === 'root' ? ['web-1', 'web-2'] : []),
    };
    expect(machineInputs(vm(spec), layered, 'node-a', '/state')).toEqual({
      problem: {
        reason: 'VolumeHasOverlays',
        message:
          "spec.disks[0].volume: Volume 'root' is the backing file of Volumes web-1, web-2: " +
          'writing it would corrupt what they read; attach it with readOnly: true, or delete them first',
      },
      holdStart: true,
    });
    const readOnly = { ...spec, disks: [{ ...spec.disks[0]!, readOnly: true }] };
    expect(machineInputs(vm(readOnly), layered, 'node-a', '/state')).toHaveProperty('inputs');
    expect(isStalledReason('VolumeHasOverlays')).toBe(true);
  });

  it('resolves every Volume to its path and format', () => {
    const result = machineInputs(vm(spec), refs(good, [lab]), 'node-a', '/state');
    expect(result).toEqual({
      inputs: {
        volumes: new Map([
          ['root', { path: '/pool/prod_root', format: 'raw' }],
          ['kernel', { path: '/pool/prod_kernel', format: 'raw' }],
          ['initrd', { path: '/pool/prod_initrd', format: 'raw' }],
        ]),
        cloudInit: undefined,
        consoleLog: undefined,
      },
    });
  });

  it('refuses a qcow2 Volume as kernel or initrd: QEMU reads them as plain files', () => {
    const qcow2 = [volume('root', raw), volume('kernel'), volume('initrd')];
    expect(machineInputs(vm(spec), refs(qcow2, [lab]), 'node-a', '/state')).toEqual({
      problem: {
        reason: 'Unsupported',
        message: ['kernel', 'initrd']
          .map(
            (f) =>
              `spec.boot.${f}.volume: Volume '${f}' has format qcow2, but QEMU reads a kernel or ` +
              `initrd as a plain file; use a Volume with format raw (format is immutable: create ` +
              `one with format raw, e.g. a clone of this one)`,
          )
          .join('; '),
      },
    });
    expect(isStalledReason('Unsupported')).toBe(true);
    // A qcow2 disk is fine, as is the same Volume format as a disk of another machine.
    const disksOnly = { disks: spec.disks, interfaces: spec.interfaces };
    const root = [volume('root')];
    expect(machineInputs(vm(disksOnly), refs(root, [lab]), 'node-a', '/state')).toHaveProperty(
      'inputs',
    );
  });

  it.each([
    [
      'a missing Volume',
      [volume('kernel', raw), volume('initrd', raw)],
      [lab],
      'VolumeNotReady',
      "spec.disks[0].volume: Volume 'root' does not exist in namespace 'prod' on node 'node-a'",
    ],
    [
      'a Volume on another node',
      [volume('root', { node: 'node-b' }), volume('kernel', raw), volume('initrd', raw)],
      [lab],
      'VolumeNotOnNode',
      "spec.disks[0].volume: Volume 'root' is on node 'node-b', not on this machine's node 'node-a'; a machine can only use Volumes on its own node: name a Volume on node 'node-a' (spec.nodeName cannot change: create one there)",
    ],
    [
      'a Volume still importing',
      [volume('root'), volume('kernel', { ...raw, phase: 'Importing' }), volume('initrd', raw)],
      [lab],
      'VolumeNotReady',
      "spec.boot.kernel.volume: Volume 'kernel' is not ready yet (phase Importing)",
    ],
    [
      'a Volume without a path',
      [volume('root'), volume('kernel', raw), volume('initrd', { ...raw, path: '' })],
      [lab],
      'VolumeNotReady',
      "spec.boot.initrd.volume: Volume 'initrd' is not ready yet (phase Available)",
    ],
    [
      'a missing network',
      good,
      [],
      'NetworkNotReady',
      "spec.interfaces[0].network: VirtualNetwork 'lab' does not exist",
    ],
    [
      'a network inactive on this node',
      good,
      [network('lab', [{ nodeName: 'node-a', active: false }])],
      'NetworkNotReady',
      "spec.interfaces[0].network: VirtualNetwork 'lab' is not active on node 'node-a'",
    ],
    [
      'a network only on another node',
      good,
      [network('lab', [{ nodeName: 'node-b', active: true }])],
      'NetworkNotReady',
      "spec.interfaces[0].network: VirtualNetwork 'lab' is not active on node 'node-a'",
    ],
  ])('reports %s', (_what, volumes, networks, reason, message) => {
    // A network problem also holds back the start of a domain already defined.
    expect(machineInputs(vm(spec), refs(volumes, networks), 'node-a', '/state')).toEqual({
      problem: { reason, message },
      ...(reason.startsWith('Network') ? { holdStart: true } : {}),
    });
  });

  it('reports a network whose selector leaves this node out as NetworkNotOnNode (Stalled)', () => {
    const lab: VirtualNetwork = {
      ...network('lab', [{ nodeName: 'node-b', active: true }]),
      spec: { mode: 'nat', autostart: true, nodeSelector: { matchLabels: { rack: 'b' } } },
    };
    const withLabels = (labels: Record<string, string> | undefined): References => ({
      ...refs(good, [lab]),
      nodeLabels: () => labels,
    });
    expect(machineInputs(vm(spec), withLabels({ rack: 'a' }), 'node-a', '/state')).toEqual({
      problem: {
        reason: 'NetworkNotOnNode',
        message:
          "spec.interfaces[0].network: VirtualNetwork 'lab' is not on node 'node-a': its spec.nodeSelector does not select this node",
      },
      holdStart: true,
    });
    expect(isStalledReason('NetworkNotOnNode')).toBe(true);
    // Selected but not yet active here, or the Node unknown: a wait.
    for (const labels of [{ rack: 'b' }, undefined]) {
      const got = machineInputs(vm(spec), withLabels(labels), 'node-a', '/state');
      expect(got).toMatchObject({ problem: { reason: 'NetworkNotReady' } });
    }
  });

  // The network's own reason for this node reaches the machine: without it the machine said
  // only "not active" (InProgress for ever) and the user had to go and read the network.
  it.each([
    ['StartRefused', 'NetworkFailed', true],
    ['BridgeInUse', 'NetworkFailed', true],
    ['DefineRefused', 'NetworkFailed', true],
    ['StartFailed', 'NetworkNotReady', false],
  ])('carries the network entry reason %s for this node (%s)', (netReason, reason, stalled) => {
    const lab = network('lab', [{ nodeName: 'node-a', active: false }]);
    lab.status!.nodes![0]!.conditions = [
      {
        type: 'Ready',
        status: 'False',
        reason: netReason,
        message: 'libvirt says no',
        lastTransitionTime: '2026-01-01T00:00:00Z',
      },
    ];
    const base =
      "spec.interfaces[0].network: VirtualNetwork 'lab' is not active on node 'node-a' " +
      `(${netReason}: libvirt says no)`;
    expect(machineInputs(vm(spec), refs(good, [lab]), 'node-a', '/state')).toEqual({
      problem: {
        reason,
        message: stalled ? `${base}; fix the VirtualNetwork, or name another network` : base,
      },
      holdStart: true,
    });
    expect(isStalledReason(reason)).toBe(stalled);
  });

  // Still active here while it waits for its guests (InUse): a machine started onto it would
  // keep the removal waiting and lose its link once the network goes.
  it('holds a machine back from a network being removed from this node, unless it runs on it', () => {
    const lab: VirtualNetwork = {
      ...network('lab', [{ nodeName: 'node-a', active: true }]),
      spec: { mode: 'nat', autostart: true, nodeSelector: { matchLabels: { rack: 'b' } } },
    };
    const on = (runningOn: string[]): References => ({
      ...refs(good, [lab]),
      nodeLabels: () => ({ rack: 'a' }),
      runningOn,
    });
    expect(machineInputs(vm(spec), on([]), 'node-a', '/state')).toEqual({
      problem: {
        reason: 'NetworkNotReady',
        message:
          "spec.interfaces[0].network: VirtualNetwork 'lab' is being removed from node 'node-a' " +
          '(its spec.nodeSelector no longer selects it): the machine is not started on it; ' +
          'name another network, or wait until it is gone and create it again',
      },
      holdStart: true,
    });
    expect(machineInputs(vm(spec), on(['lab']), 'node-a', '/state')).toHaveProperty('inputs');
  });

  it('refuses a MAC another machine on the same network claimed first, naming it', () => {
    const mac = '52:54:00:12:34:56';
    const machine = (name: string, uid: string, created: string, network = 'lab') => {
      const m = vm({ interfaces: [{ name: 'eth0', network, macAddress: mac, model: 'virtio' }] });
      m.metadata = { ...m.metadata, name, uid, creationTimestamp: created };
      return m;
    };
    const first = machine('first', 'u1', '2026-03-01T10:00:00Z');
    const second = machine('second', 'u2', '2026-03-01T11:00:00Z');
    const elsewhere = machine('elsewhere', 'u3', '2026-03-01T09:00:00Z', 'other');
    const withMachines = (machines: VirtualMachine[]): References => ({
      ...refs([], [lab, network('other', [{ nodeName: 'node-a', active: true }])]),
      machinesOn: (net) =>
        machines.filter((m) => m.spec.interfaces?.some((i) => i.network === net)),
    });
    const all = withMachines([first, second, elsewhere]);
    expect(machineInputs(second, all, 'node-a', '/state')).toEqual({
      problem: {
        reason: 'MACAddressInUse',
        message: `spec.interfaces[0].macAddress: ${mac} is already used on VirtualNetwork 'lab' by VirtualMachine prod/first`,
      },
    });
    expect(machineInputs(first, all, 'node-a', '/state')).toHaveProperty('inputs');
    // Once the holder is gone, the address is free.
    expect(machineInputs(second, withMachines([second]), 'node-a', '/state')).toHaveProperty(
      'inputs',
    );
  });

  it('reports every problem at once, the first one giving the reason', () => {
    const result = machineInputs(vm(spec), refs([], []), 'node-a', '/state');
    expect(result).toEqual({
      problem: {
        reason: 'VolumeNotReady',
        message: [
          "spec.disks[0].volume: Volume 'root' does not exist in namespace 'prod' on node 'node-a'",
          "spec.boot.kernel.volume: Volume 'kernel' does not exist in namespace 'prod' on node 'node-a'",
          "spec.boot.initrd.volume: Volume 'initrd' does not exist in namespace 'prod' on node 'node-a'",
          "spec.interfaces[0].network: VirtualNetwork 'lab' does not exist",
        ].join('; '),
      },
      holdStart: true,
    });
  });

  it('places the cloud-init ISO and console log under the state directory', () => {
    const machine = vm(
      { cloudInit: { userData: '#cloud-config\n' } },
      {
        annotations: { 'virt.dev/console-log': 'true' },
      },
    );
    const result = machineInputs(machine, refs([], []), 'node-a', '/state');
    if (!('inputs' in result)) throw new Error('expected inputs');
    expect(result.inputs.cloudInit?.path).toMatch(
      new RegExp(`^/state/cloud-init/${UID}-[0-9a-f]{16}\\.iso$`),
    );
    expect(result.inputs.consoleLog).toBe(`/state/console/${UID}.log`);
  });

  it('logs the console only for the annotation value "true"', () => {
    const machine = vm({}, { annotations: { 'virt.dev/console-log': 'yes' } });
    const result = machineInputs(machine, refs([], []), 'node-a', '/state');
    expect('inputs' in result && result.inputs.consoleLog).toBeUndefined();
  });
});

describe('unsupportedSpec', () => {
  it('refuses cloudInit.secretRef, naming the field', () => {
    expect(unsupportedSpec(vm({ cloudInit: { secretRef: { name: 's' } } }))).toEqual({
      reason: 'Unsupported',
      message: expect.stringContaining('spec.cloudInit.secretRef'),
    });
    expect(unsupportedSpec(vm({ cloudInit: { userData: 'x' } }))).toBeUndefined();
  });
});

describe('cloud-init seed', () => {
  it('has no seed without cloudInit', () => {
    expect(cloudInitFiles(vm())).toBeUndefined();
    expect(cloudInitImage(vm(), '/state')).toBeUndefined();
  });

  it('defaults meta-data to instance-id = uid and local-hostname = name, user-data to empty', () => {
    expect(cloudInitFiles(vm({ cloudInit: { networkData: 'version: 2\n' } }))).toEqual({
      'meta-data': `instance-id: ${UID}\nlocal-hostname: web\n`,
      'user-data': '',
      'network-config': 'version: 2\n',
    });
  });

  it('keeps given files as they are, without network-config unless given', () => {
    expect(cloudInitFiles(vm({ cloudInit: { userData: 'u', metaData: 'm' } }))).toEqual({
      'meta-data': 'm',
      'user-data': 'u',
    });
  });

  it('names the ISO by content: same data same path, other data (even moved between files) another', () => {
    const path = (cloudInit: object) => cloudInitImage(vm({ cloudInit }), '/s')?.path;
    expect(path({ userData: 'a' })).toBe(path({ userData: 'a' }));
    expect(path({ userData: 'a' })).not.toBe(path({ userData: 'b' }));
    expect(path({ userData: 'a', metaData: 'b' })).not.toBe(path({ userData: 'b', metaData: 'a' }));
    expect(path({ userData: 'ab', metaData: '' })).not.toBe(path({ userData: 'a', metaData: 'b' }));
  });
});
