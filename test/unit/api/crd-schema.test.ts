import { spawnSync } from 'node:child_process';
import {
  cpSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import { customResources, type VirtKind } from '../../../src/api/generated/crds.js';
import { ruleTwins } from '../../../src/api/rules.js';
import { schemaRules, type Schema } from '../../../src/api/schema.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';

// The CRDs' own promises, checked on the files in crds/: what kubectl explain, the CEL cost
// budget, server-side apply and the generated code rely on.
const root = packageRoot();
const crdFiles = readdirSync(join(root, 'crds')).filter((f) => f.endsWith('.yaml'));

interface Crd {
  spec: {
    group: string;
    scope: string;
    names: { kind: VirtKind; plural: string; shortNames: string[]; categories: string[] };
    versions: {
      name: string;
      subresources?: { status?: object };
      selectableFields?: { jsonPath: string }[];
      additionalPrinterColumns?: { name: string; jsonPath: string }[];
      schema: { openAPIV3Schema: Schema };
    }[];
  };
}
const crds: Crd[] = crdFiles.map((f) => parse(readFileSync(join(root, 'crds', f), 'utf8')) as Crd);
const byKind = (kind: VirtKind): Crd => crds.find((c) => c.spec.names.kind === kind) as Crd;
const schemaOf = (kind: VirtKind): Schema =>
  byKind(kind).spec.versions[0]?.schema.openAPIV3Schema as Schema;

/** Every schema node with its path, "spec.disks[].name" style. */
function* nodes(schema: Schema, path: string): Generator<[string, Schema]> {
  yield [path, schema];
  for (const [key, sub] of Object.entries(schema.properties ?? {}))
    yield* nodes(sub, path ? `${path}.${key}` : key);
  if (schema.items) yield* nodes(schema.items, `${path}[]`);
  if (typeof schema.additionalProperties === 'object')
    yield* nodes(schema.additionalProperties, `${path}{}`);
}

function at(kind: VirtKind, path: string): Schema {
  let node: Schema | undefined = schemaOf(kind);
  for (const seg of path.split('.')) {
    const [name, items] = seg.endsWith('[]') ? [seg.slice(0, -2), true] : [seg, false];
    node = node?.properties?.[name];
    if (items) node = node?.items;
  }
  if (!node) throw new Error(`${kind}: no schema at ${path}`);
  return node;
}

describe('crds/', () => {
  test('one CRD per kind, group virt.dev, version v1alpha1, the documented scopes and short names', () => {
    expect(crds.map((c) => c.spec.names.kind).sort()).toEqual([
      'StoragePool',
      'VirtualMachine',
      'VirtualMachineRestore',
      'VirtualMachineSnapshot',
      'VirtualNetwork',
      'Volume',
    ]);
    const expected: Record<VirtKind, [string, string]> = {
      VirtualMachine: ['Namespaced', 'vm'],
      VirtualMachineSnapshot: ['Namespaced', 'vmsnap'],
      VirtualMachineRestore: ['Namespaced', 'vmrestore'],
      Volume: ['Namespaced', 'vol'],
      VirtualNetwork: ['Cluster', 'vnet'],
      StoragePool: ['Cluster', 'pool'],
    };
    for (const crd of crds) {
      const [scope, short] = expected[crd.spec.names.kind];
      expect(crd.spec.group).toBe('virt.dev');
      expect(crd.spec.versions.map((v) => v.name)).toEqual(['v1alpha1']);
      expect(crd.spec.scope).toBe(scope);
      expect(crd.spec.names.shortNames).toEqual([short]);
      expect(crd.spec.names.categories).toEqual(['virt']);
      expect(crd.spec.versions[0]?.subresources?.status).toEqual({});
    }
  });

  test('every field has a description (kubectl explain is useful everywhere)', () => {
    const missing: string[] = [];
    for (const kind of Object.keys(customResources) as VirtKind[]) {
      for (const [path, node] of nodes(schemaOf(kind), '')) {
        const isItem = path.endsWith('[]') || path.endsWith('{}');
        const isRootMeta = path === 'metadata' || path === 'metadata.name';
        if (!isItem && !isRootMeta && !node.description?.trim())
          missing.push(`${kind}: ${path || '<root>'}`);
      }
    }
    expect(missing).toEqual([]);
  });

  test('every spec string and list is bounded, so CEL rules stay within the cost budget', () => {
    const unbounded: string[] = [];
    for (const kind of Object.keys(customResources) as VirtKind[]) {
      for (const [path, node] of nodes(schemaOf(kind), '')) {
        if (!path.startsWith('spec')) continue;
        const s = node as Schema & {
          maxLength?: number;
          maxItems?: number;
          maxProperties?: number;
        };
        const stringy = s.type === 'string' || s['x-kubernetes-int-or-string'];
        if (stringy && s.maxLength === undefined && s.enum === undefined)
          unbounded.push(`${kind}: ${path} (maxLength)`);
        if (s.type === 'array' && s.maxItems === undefined)
          unbounded.push(`${kind}: ${path} (maxItems)`);
        if (
          s.type === 'object' &&
          typeof s.additionalProperties === 'object' &&
          s.maxProperties === undefined
        ) {
          unbounded.push(`${kind}: ${path} (maxProperties)`);
        }
      }
    }
    expect(unbounded).toEqual([]);
  });

  test.each([
    ['VirtualMachine', 'spec.runStrategy', 'Always'],
    ['VirtualMachine', 'spec.domainType', 'kvm'],
    ['VirtualMachine', 'spec.firmware', 'bios'],
    ['VirtualMachine', 'spec.disks[].readOnly', false],
    ['VirtualMachine', 'spec.interfaces[].model', 'virtio'],
    ['VirtualMachine', 'spec.terminationGracePeriodSeconds', 60],
    ['VirtualMachine', 'spec.updatePolicy', 'Manual'],
    ['Volume', 'spec.format', 'qcow2'],
    ['Volume', 'spec.deletionPolicy', 'Delete'],
    ['VirtualNetwork', 'spec.mode', 'nat'],
    ['VirtualNetwork', 'spec.autostart', true],
    ['VirtualNetwork', 'spec.dns.enabled', true],
    ['StoragePool', 'spec.type', 'dir'],
    ['StoragePool', 'spec.autostart', true],
  ] as const)('%s %s defaults to %s', (kind, path, value) => {
    expect(at(kind, path).default).toEqual(value);
  });

  test('VirtualMachine spec.disks[].bus and device have no schema default (cdrom: sata)', () => {
    // The bus default depends on the device, which a schema default cannot express.
    expect(at('VirtualMachine', 'spec.disks[].bus').default).toBeUndefined();
    expect(at('VirtualMachine', 'spec.disks[].device').enum).toEqual(['disk', 'cdrom']);
  });

  test.each([
    ['VirtualMachine', 'spec.uuid'],
    ['VirtualMachine', 'spec.nodeName'],
    ['Volume', 'spec.nodeName'],
    ['Volume', 'spec.pool'],
    ['Volume', 'spec.format'],
    ['Volume', 'spec.source'],
    ['StoragePool', 'spec.path'],
    ['StoragePool', 'spec.type'],
    ['VirtualMachineSnapshot', 'spec.vmName'],
    ['VirtualMachineSnapshot', 'spec.includeMemory'],
    ['VirtualMachineRestore', 'spec.vmName'],
    ['VirtualMachineRestore', 'spec.snapshotName'],
  ] as const)('%s %s is immutable (a self == oldSelf transition rule)', (kind, path) => {
    const rule = at(kind, path)['x-kubernetes-validations']?.find(
      (r) => r.rule === 'self == oldSelf',
    );
    expect(rule).toBeDefined();
    // The refusal says what to do instead: "nodeName is immutable" alone left a user to guess
    // that the way out is a new object.
    expect(rule?.message).toMatch(
      new RegExp(`^${path.split('.').at(-1)} is immutable: .*create (a new|it)`),
    );
  });

  test('VMs and Volumes are selectable by spec.nodeName; the cluster kinds have no node field', () => {
    // Snapshots and restores name their machine, not a node: selectable by spec.vmName.
    const byMachine = ['VirtualMachineSnapshot', 'VirtualMachineRestore'];
    for (const crd of crds) {
      const fields = crd.spec.versions[0]?.selectableFields?.map((f) => f.jsonPath);
      const want = byMachine.includes(crd.spec.names.kind)
        ? ['.spec.vmName']
        : crd.spec.scope === 'Namespaced'
          ? ['.spec.nodeName']
          : [];
      expect(fields ?? []).toEqual(want);
    }
  });

  test('status lists that agents write with server-side apply are maps with keys', () => {
    for (const kind of ['VirtualNetwork', 'StoragePool'] as const) {
      const list = at(kind, 'status.nodes');
      expect(list['x-kubernetes-list-type']).toBe('map');
      expect(list['x-kubernetes-list-map-keys']).toEqual(['nodeName']);
      expect(at(kind, 'status.nodes[].conditions')['x-kubernetes-list-map-keys']).toEqual(['type']);
    }
    for (const kind of Object.keys(customResources) as VirtKind[]) {
      const conditions = at(kind, 'status.conditions');
      expect(conditions['x-kubernetes-list-type']).toBe('map');
      expect(conditions['x-kubernetes-list-map-keys']).toEqual(['type']);
      expect([...(conditions.items?.required ?? [])].sort()).toEqual([
        'lastTransitionTime',
        'message',
        'reason',
        'status',
        'type',
      ]);
    }
  });

  test('the VM status covers everything the API reference lists', () => {
    const status = Object.keys(at('VirtualMachine', 'status').properties ?? {}).sort();
    expect(status).toEqual(
      [
        'phase',
        'conditions',
        'observedGeneration',
        'uuid',
        'domainName',
        'nodeName',
        'state',
        'memory',
        'vcpus',
        'interfaces',
        'startedAt',
        'restartCount',
        'lastRestartRequest',
      ].sort(),
    );
    expect(Object.keys(at('VirtualMachine', 'status.memory').properties ?? {})).toEqual([
      'target',
      'actual',
    ]);
    expect(Object.keys(at('VirtualMachine', 'status.vcpus').properties ?? {})).toEqual([
      'current',
      'max',
    ]);
    const vol = Object.keys(at('Volume', 'status').properties ?? {});
    for (const f of ['phase', 'path', 'capacity', 'allocation', 'usedBy', 'conditions', 'progress'])
      expect(vol).toContain(f);
  });

  test('the VM printer columns: node, phase, vCPUs, memory, IP, age', () => {
    const columns = byKind('VirtualMachine').spec.versions[0]?.additionalPrinterColumns?.map(
      (c) => c.name,
    );
    expect(columns).toEqual(['Node', 'Phase', 'vCPUs', 'Memory', 'IP', 'Age']);
  });

  test('every CEL rule has a TypeScript twin, and every twin still has its rule', () => {
    const rules = new Set<string>();
    for (const kind of Object.keys(customResources) as VirtKind[]) {
      for (const { rule } of schemaRules(schemaOf(kind))) rules.add(rule.rule);
    }
    expect([...rules].filter((r) => !ruleTwins.has(r))).toEqual([]);
    expect([...ruleTwins.keys()].filter((r) => !rules.has(r))).toEqual([]);
  });

  test('the generated table carries exactly the schemas in crds/', () => {
    for (const kind of Object.keys(customResources) as VirtKind[]) {
      expect(customResources[kind].openAPIV3Schema).toEqual(schemaOf(kind));
    }
  });
});

describe('npm run gen:check', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'lvo-gen-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  // A copy of the generator's inputs and outputs, so drift can be provoked without touching the
  // working tree that other tests read.
  function copyOfTree(): string {
    const dir = mkdtempSync(join(scratch, 'tree-'));
    for (const part of ['crds', 'scripts/gen-api.mjs', 'src/api/generated']) {
      cpSync(join(root, part), join(dir, part), { recursive: true });
    }
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    return dir;
  }
  const check = (dir: string) =>
    spawnSync(process.execPath, [join(dir, 'scripts/gen-api.mjs'), '--check'], {
      encoding: 'utf8',
    });

  test('passes on the committed files', () => {
    const r = check(root);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('fails naming the file when a generated file was edited by hand', () => {
    const dir = copyOfTree();
    const types = join(dir, 'src/api/generated/types.ts');
    writeFileSync(
      types,
      readFileSync(types, 'utf8').replace(
        'export interface VirtualMachineSpec {',
        'export interface VirtualMachineSpec {\n  extra?: string;',
      ),
    );
    const r = check(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('src/api/generated/types.ts is out of date with crds/');
    expect(r.stderr).not.toContain('crds.ts');
  });

  test('fails naming both files when a CRD changed without regenerating', () => {
    const dir = copyOfTree();
    const crd = join(dir, 'crds/volume.yaml');
    writeFileSync(
      crd,
      readFileSync(crd, 'utf8').replace(
        'enum: [Delete, Retain]',
        'enum: [Delete, Retain, Archive]',
      ),
    );
    const r = check(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('src/api/generated/types.ts is out of date');
    expect(r.stderr).toContain('src/api/generated/crds.ts is out of date');
  });

  test('regenerating is deterministic: gen then gen:check on a fresh copy passes and changes nothing', () => {
    const dir = copyOfTree();
    const before = readFileSync(join(dir, 'src/api/generated/types.ts'), 'utf8');
    const gen = spawnSync(process.execPath, [join(dir, 'scripts/gen-api.mjs')], {
      encoding: 'utf8',
    });
    expect(gen.status).toBe(0);
    expect(readFileSync(join(dir, 'src/api/generated/types.ts'), 'utf8')).toBe(before);
    expect(check(dir).status).toBe(0);
  });
});
