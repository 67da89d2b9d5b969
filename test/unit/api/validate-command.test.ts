import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { checkManifests, main, type ValidateIO } from '../../../src/commands/validate.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-validate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
}

async function run(
  argv: string[],
  stdin = '',
): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: ValidateIO = {
    readStdin: () => stdin,
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  };
  const code = await main(argv, io);
  return { code, out, err };
}

const goodVm = `apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web-1}
spec: {nodeName: node-1, vcpus: 1, memory: 1Gi}
`;
const badVm = `apiVersion: virt.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web-2}
spec: {nodeName: node-1, vcpus: 4, maxVcpus: 2, memory: 2Gi, maxMemory: 1Gi}
`;
const pod = `apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, image: x}]}
`;

describe('libvirt-operator validate', () => {
  test('the examples are valid: exit 0, nothing on stdout', async () => {
    const r = await run(['-f', join(packageRoot(), 'manifests', 'examples')]);
    expect(r).toEqual({
      code: 0,
      out: [],
      err: ['validate: 5 virt.dev objects in 5 files: no problems'],
    });
  });

  test('prints file: kind/name: field: message per problem and exits 1', async () => {
    const path = file('vms.yaml', `${goodVm}---\n${badVm}---\n${pod}`);
    const r = await run(['-f', path]);
    expect(r.code).toBe(1);
    expect(r.out).toEqual([
      `${path}: VirtualMachine/web-2: spec.vcpus: vcpus must be less than or equal to maxVcpus`,
      `${path}: VirtualMachine/web-2: spec.memory: memory must be less than or equal to maxMemory`,
    ]);
    expect(r.err).toEqual(['validate: 2 virt.dev objects in 1 file: 2 problems']);
  });

  test('directories are searched recursively for .yaml, .yml and .json, other files ignored', async () => {
    const tree = join(dir, 'tree');
    file('tree/a.yaml', goodVm);
    file('tree/sub/b.yml', badVm);
    file(
      'tree/sub/deeper/c.json',
      JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: 'p' },
        spec: { path: 'relative' },
      }),
    );
    file('tree/notes.txt', 'not yaml: [');
    const r = await run(['--filename', tree]);
    expect(r.code).toBe(1);
    expect(r.out.map((l) => l.slice(tree.length + 1))).toEqual([
      'sub/b.yml: VirtualMachine/web-2: spec.vcpus: vcpus must be less than or equal to maxVcpus',
      'sub/b.yml: VirtualMachine/web-2: spec.memory: memory must be less than or equal to maxMemory',
      'sub/deeper/c.json: StoragePool/p: spec.path: Invalid value: "relative": should match \'^(/[A-Za-z0-9._+-]+)+$\'',
    ]);
    expect(r.err).toEqual(['validate: 3 virt.dev objects in 3 files: 3 problems']);
  });

  test('a directory without any manifest file is a problem, not a pass', async () => {
    const empty = join(dir, 'no-manifests');
    file('no-manifests/deep/notes.txt', 'not a manifest');
    const r = await run(['-f', empty]);
    expect(r).toEqual({
      code: 1,
      out: [`${empty}: no *.yaml, *.yml or *.json file in this directory or below`],
      err: ['validate: 0 virt.dev objects in 0 files: 1 problem'],
    });
  });

  test("'-' reads standard input", async () => {
    expect((await run(['-f', '-'], goodVm)).code).toBe(0);
    const r = await run(['-f', '-'], badVm);
    expect(r.code).toBe(1);
    expect(r.out[0]).toMatch(/^<stdin>: VirtualMachine\/web-2: spec\.vcpus: /);
  });

  test('kinds outside virt.dev are ignored; a v1 List is looked into', async () => {
    expect((await run(['-f', file('pod.yaml', pod)])).code).toBe(0);
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        JSON.parse(
          JSON.stringify({
            apiVersion: 'virt.dev/v1alpha1',
            kind: 'Volume',
            metadata: { name: 'v' },
            spec: { nodeName: 'n', pool: 'p' },
          }),
        ),
      ],
    };
    const r = await run(['-f', file('list.json', JSON.stringify(list))]);
    expect(r.out).toEqual([
      `${join(dir, 'list.json')}: Volume/v: spec.capacity: capacity is required for a blank volume (one without a source)`,
    ]);
  });

  test('bad YAML and unreadable files are one-line problems (exit 1)', async () => {
    const broken = file('broken.yaml', 'apiVersion: virt.dev/v1alpha1\nkind: [VirtualMachine\n');
    const r = await run(['-f', broken, '-f', join(dir, 'missing.yaml')]);
    expect(r.code).toBe(1);
    expect(r.out).toHaveLength(2);
    expect(r.out[0]).toMatch(new RegExp(`^${broken}: line \\d+, column \\d+: invalid YAML: `));
    expect(r.out[1]).toBe(`${join(dir, 'missing.yaml')}: cannot read: no such file or directory`);
    const dup = file('dup.yaml', 'a: 1\na: 2\n');
    expect((await run(['-f', dup])).out[0]).toMatch(/invalid YAML: Map keys must be unique/);
  });

  test('YAML is read as kubectl reads it (1.1: an unquoted no is false)', () => {
    const text = goodVm.replace('spec: {', 'spec: {interfaces: [{name: eth0, network: no}], ');
    expect(checkManifests('x.yaml', text).lines).toEqual([
      'x.yaml: VirtualMachine/web-1: spec.interfaces[0].network: Invalid value: false: must be of type string',
    ]);
  });

  test('names with control characters are quoted, so each problem stays on one line', () => {
    const text =
      'apiVersion: virt.dev/v1alpha1\nkind: StoragePool\nmetadata: {name: "a\\nb"}\nspec: {path: /srv/pool}\n';
    const [line] = checkManifests('x.yaml', text).lines;
    expect(line).toMatch(
      /^x\.yaml: StoragePool\/"a\\nb": metadata\.name: Invalid value: "a\\nb": a lowercase RFC 1123 subdomain/,
    );
    expect(line).not.toContain('\n');
  });

  test('a document without a name is still reported', () => {
    const text = 'apiVersion: virt.dev/v1alpha1\nkind: StoragePool\nspec: {path: /srv/pool}\n';
    expect(checkManifests('x.yaml', text).lines).toEqual([
      'x.yaml: StoragePool/<document 1>: metadata.name: Required value: name or generateName is required',
    ]);
  });

  test('usage errors exit 2', async () => {
    expect((await run([])).code).toBe(2);
    expect((await run(['-f', '-', '-f', '-'])).code).toBe(2);
    expect((await run(['--frobnicate'])).code).toBe(2);
    expect((await run(['extra-positional'])).code).toBe(2);
    expect((await run(['--help'])).code).toBe(0);
  });
});
