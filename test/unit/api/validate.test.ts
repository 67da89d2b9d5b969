import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import type { VirtualMachineManifest, VolumeManifest } from '../../../src/api/generated/types.js';
import {
  defaultMacAddress,
  domainName,
  libvirtUuid,
  volumeFileName,
} from '../../../src/api/names.js';
import {
  applyDefaults,
  isVirtGroup,
  validateManifest,
  virtKindOf,
} from '../../../src/api/validate.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const examplesDir = join(packageRoot(), 'manifests', 'examples');

const vm = (
  spec: Record<string, unknown> = {},
  metadata: Record<string, unknown> = { name: 'web-1' },
) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachine',
  metadata,
  spec: { nodeName: 'node-1', vcpus: 2, memory: '1Gi', ...spec },
});
const fields = (obj: unknown, old?: unknown) =>
  validateManifest(obj, old).map((p) => `${p.field} (${p.type})`);

describe('validateManifest', () => {
  test.each(readdirSync(examplesDir).filter((f) => f.endsWith('.yaml')))(
    'example %s is valid',
    (file) => {
      expect(validateManifest(parse(readFileSync(join(examplesDir, file), 'utf8')))).toEqual([]);
    },
  );

  test('other API groups, versions and kinds are named as such', () => {
    expect(fields({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } })).toEqual([
      'apiVersion (NotSupported)',
    ]);
    expect(fields({ ...vm(), apiVersion: 'virt.dev/v1' })).toEqual(['apiVersion (NotSupported)']);
    expect(fields({ ...vm(), kind: 'VirtualDisk' })).toEqual(['kind (NotSupported)']);
    expect(fields('a string')).toEqual([' (TypeInvalid)']);
  });

  test('unknown fields stop validation, as strict decoding does in the API server', () => {
    expect(fields(vm({ cpus: 2, vcpus: 0, extra: { a: 1 } }))).toEqual([
      'spec.cpus (UnknownField)',
      'spec.extra (UnknownField)',
    ]);
    expect(validateManifest(vm({ cpus: 2 }))[0]?.message).toBe('unknown field "spec.cpus"');
    // metadata takes anything: labels, annotations, ownerReferences ...
    expect(fields(vm({}, { name: 'a', labels: { x: 'y' }, annotations: { 'a/b': 'c' } }))).toEqual(
      [],
    );
  });

  test('CEL rules are skipped after a blocking schema error, and run after a non-blocking one', () => {
    // An unsupported runStrategy blocks: memory > maxMemory is then not reported.
    expect(fields(vm({ runStrategy: 'Sometimes', memory: '2Gi', maxMemory: '1Gi' }))).toEqual([
      'spec.runStrategy (NotSupported)',
    ]);
    // A pattern mismatch does not block.
    expect(fields(vm({ uuid: 'nope', memory: '2Gi', maxMemory: '1Gi' }))).toEqual([
      'spec.uuid (Invalid)',
      'spec.memory (Invalid)',
    ]);
  });

  test("messages say what is wrong in the API server's words", () => {
    const [enumProblem] = validateManifest(vm({ domainType: 'xen' }));
    expect(enumProblem?.message).toBe('Unsupported value: "xen": supported values: "kvm", "qemu"');
    const [rule] = validateManifest(vm({ memory: '2Gi', maxMemory: '1Gi' }));
    expect(rule).toEqual({
      field: 'spec.memory',
      type: 'Invalid',
      message: 'memory must be less than or equal to maxMemory',
    });
    const [missing] = validateManifest(vm({ nodeName: undefined }));
    expect(missing).toEqual({
      field: 'spec.nodeName',
      type: 'Required',
      message: 'Required value',
    });
    const [label] = validateManifest({
      ...vm(),
      kind: 'VirtualNetwork',
      spec: {
        ipv4: { cidr: '10.0.0.1/24' },
        nodeSelector: { matchLabels: { zone: 'z'.repeat(64) } },
      },
    });
    expect(label?.field).toBe('spec.nodeSelector.matchLabels.zone');
  });

  test('node selectors take the label keys and values Kubernetes has, and only those', () => {
    const selector = (nodeSelector: unknown) => ({
      ...vm(),
      kind: 'StoragePool',
      spec: { path: '/var/lib/p', nodeSelector },
    });
    // What Nodes carry: prefixed keys, empty values, dots, underscores, upper case.
    const valid = {
      matchLabels: { 'node-role.kubernetes.io/worker': '', 'virt.dev/libvirt-host': 'true' },
      matchExpressions: [
        { key: 'topology.kubernetes.io/zone', operator: 'In', values: ['eu-west-1a', 'A_b.c'] },
        { key: 'kubernetes.io/hostname', operator: 'Exists' },
      ],
    };
    expect(fields(selector(valid))).toEqual([]);
    expect(fields(selector({ matchLabels: { zone: 'rack 1', 'a/b/c': 'x' } }))).toEqual([
      'spec.nodeSelector.matchLabels.zone (Invalid)',
      'spec.nodeSelector.matchLabels (Invalid)',
    ]);
    expect(fields(selector({ matchLabels: { ['k'.repeat(64)]: 'x' } }))).toEqual([
      'spec.nodeSelector.matchLabels (Invalid)',
    ]);
    expect(
      fields(selector({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['-a'] }] })),
    ).toEqual(['spec.nodeSelector.matchExpressions[0].values[0] (Invalid)']);
  });

  test('defaults are applied before the rules run, as in the API server', () => {
    // format defaults to qcow2, so a backing volume without a format is fine ...
    const overlay = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name: 'o' },
      spec: { nodeName: 'n', pool: 'p', source: { backingVolume: { volume: 'b' } } },
    };
    expect(fields(overlay)).toEqual([]);
    // ... and a network without spec.mode is nat, which needs ipv4.
    expect(
      fields({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualNetwork',
        metadata: { name: 'n' },
        spec: {},
      }),
    ).toEqual(['spec.ipv4 (Required)']);
  });

  test('null in a field means absent (pruned, then defaulted)', () => {
    expect(fields(vm({ uuid: null, runStrategy: null }))).toEqual([]);
  });

  test('transition rules run only on update, against the old object', () => {
    const old = vm({ uuid: '6f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d' });
    const changed = vm({ uuid: '0f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d' });
    expect(fields(changed)).toEqual([]);
    expect(fields(changed, old)).toEqual(['spec.uuid (Forbidden)']);
    expect(fields(vm(), old)).toEqual(['spec.uuid (Forbidden)']); // removed
    expect(fields(old, old)).toEqual([]);
    // Growing a volume is fine, shrinking is not.
    const vol = (capacity: string) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name: 'v' },
      spec: { nodeName: 'n', pool: 'p', capacity },
    });
    expect(fields(vol('20Gi'), vol('10Gi'))).toEqual([]);
    expect(fields(vol('10G'), vol('10Gi'))).toEqual(['spec.capacity (Forbidden)']);
  });

  test('list items are matched to their old selves by key, not by position', () => {
    const a = { macAddress: '52:54:00:00:00:01', ipAddress: '192.168.1.10' };
    const b = { macAddress: '52:54:00:00:00:02', ipAddress: '192.168.1.11' };
    const net = (hosts: unknown[]) => ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualNetwork',
      metadata: { name: 'n' },
      spec: {
        ipv4: {
          cidr: '192.168.1.1/24',
          dhcp: { rangeStart: '192.168.1.100', rangeEnd: '192.168.1.200', hosts },
        },
      },
    });
    expect(fields(net([b, a]), net([a, b]))).toEqual([]);
    expect(fields(net([a, a]))).toEqual([
      'spec.ipv4.dhcp.hosts[1] (Duplicate)',
      'spec.ipv4.dhcp.hosts (Invalid)',
    ]);
  });

  test('metadata names are checked as the API server checks them', () => {
    expect(fields(vm({}, {}))).toEqual(['metadata.name (Required)']);
    expect(fields(vm({}, { generateName: 'web-' }))).toEqual([]);
    expect(fields(vm({}, { name: 'a'.repeat(254) }))).toEqual(['metadata.name (Invalid)']);
    expect(fields(vm({}, { name: 'web-1', namespace: 'Bad_NS' }))).toEqual([
      'metadata.namespace (Invalid)',
    ]);
    const volume = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      spec: { nodeName: 'n', pool: 'p', capacity: '1Gi' },
    };
    expect(fields({ ...volume, metadata: { name: 'v'.repeat(128) } })).toEqual([]);
    expect(fields({ ...volume, metadata: { name: 'v'.repeat(129) } })).toEqual([
      'metadata.name (TooLong)',
    ]);
  });

  test('virtKindOf and isVirtGroup tell our objects apart', () => {
    expect(virtKindOf(vm())).toBe('VirtualMachine');
    expect(virtKindOf({ apiVersion: 'virt.dev/v1', kind: 'VirtualMachine' })).toBeUndefined();
    expect(virtKindOf({ apiVersion: 'virt.dev/v1alpha1', kind: 'toString' })).toBeUndefined();
    expect(isVirtGroup({ apiVersion: 'virt.dev/v2', kind: 'X' })).toBe(true);
    expect(isVirtGroup({ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine' })).toBe(false);
  });
});

describe('applyDefaults', () => {
  const manifest: VirtualMachineManifest = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'web-1', namespace: 'prod', uid: '6f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d' },
    spec: {
      nodeName: 'node-1',
      vcpus: 2,
      memory: '2Gi',
      disks: [{ name: 'root', volume: 'root' }],
      interfaces: [{ name: 'eth0', network: 'lab' }],
    },
  };

  test('fills the schema defaults and the ones a schema cannot express', () => {
    const vmObject = applyDefaults(manifest);
    expect(vmObject.spec).toMatchObject({
      runStrategy: 'Always',
      domainType: 'kvm',
      firmware: 'bios',
      terminationGracePeriodSeconds: 60,
      updatePolicy: 'Manual',
      maxVcpus: 2,
      maxMemory: '2Gi',
      uuid: '6f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d',
    });
    expect(vmObject.spec.disks?.[0]).toEqual({
      name: 'root',
      volume: 'root',
      device: 'disk',
      bus: 'virtio',
      readOnly: false,
    });
    expect(vmObject.spec.interfaces?.[0]).toEqual({
      name: 'eth0',
      network: 'lab',
      model: 'virtio',
      macAddress: defaultMacAddress('6f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d', 'eth0'),
    });
    expect(validateManifest(vmObject)).toEqual([]);
  });

  test('keeps what the user set, and does not change its input', () => {
    const before = JSON.stringify(manifest);
    const custom = applyDefaults({
      ...manifest,
      spec: {
        ...manifest.spec,
        maxVcpus: 8,
        runStrategy: 'Halted',
        uuid: '0f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d',
      },
    });
    expect(custom.spec).toMatchObject({
      maxVcpus: 8,
      runStrategy: 'Halted',
      uuid: '0f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d',
    });
    expect(JSON.stringify(manifest)).toBe(before);
  });

  test('without a uid (not yet created) no uuid or MAC is invented', () => {
    const { uid: _uid, ...metadata } = manifest.metadata;
    const vmObject = applyDefaults({ ...manifest, metadata });
    expect(vmObject.spec.uuid).toBeUndefined();
    expect(vmObject.spec.interfaces?.[0]?.macAddress).toBeUndefined();
  });

  test('works for every kind', () => {
    const volume: VolumeManifest = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'Volume',
      metadata: { name: 'v' },
      spec: { nodeName: 'n', pool: 'p', capacity: '1Gi' },
    };
    expect(applyDefaults(volume).spec).toMatchObject({ format: 'qcow2', deletionPolicy: 'Delete' });
    expect(() => applyDefaults({ apiVersion: 'v1', kind: 'Pod' } as never)).toThrow(
      'not a virt.dev/v1alpha1 object',
    );
  });
});

describe('names on the host', () => {
  test('domain and volume file names are <namespace>_<name>, never a path', () => {
    const obj = { metadata: { name: 'web-1', namespace: 'prod' } };
    expect(domainName(obj)).toBe('prod_web-1');
    expect(volumeFileName(obj)).toBe('prod_web-1');
    expect(
      Buffer.byteLength(
        volumeFileName({ metadata: { name: 'v'.repeat(128), namespace: 'n'.repeat(63) } }),
      ),
    ).toBeLessThanOrEqual(255);
    expect(() => volumeFileName({ metadata: { name: 'v' } })).toThrow(
      "Volume 'v' has no metadata.namespace",
    );
  });

  test('the UUID is spec.uuid when set, else metadata.uid', () => {
    expect(libvirtUuid({ metadata: { uid: 'AAA' } })).toBe('aaa');
    expect(libvirtUuid({ metadata: { uid: 'aaa' }, spec: { uuid: 'bbb' } })).toBe('bbb');
    expect(() => libvirtUuid({ metadata: { name: 'x' } })).toThrow(
      'x has neither spec.uuid nor metadata.uid',
    );
  });

  test('default MACs are stable, unicast, locally administered and differ per interface', () => {
    const a = defaultMacAddress('uid-1', 'eth0');
    expect(a).toBe(defaultMacAddress('uid-1', 'eth0'));
    expect(a).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(defaultMacAddress('uid-1', 'eth1')).not.toBe(a);
    expect(defaultMacAddress('uid-2', 'eth0')).not.toBe(a);
    expect(
      validateManifest(vm({ interfaces: [{ name: 'eth0', network: 'n', macAddress: a }] })),
    ).toEqual([]);
  });
});
