import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import { customResources, type VirtKind } from '../../../src/api/generated/crds.js';
import { validateManifest, virtKindOf } from '../../../src/api/validate.js';
import { packageRoot } from '../../../src/commands/local/package-root.js';
import type { ControlPlane } from '../../../src/commands/local/control-plane.js';
import { loadCorpus, type BadManifestCase } from '../../fixtures/bad-manifests/corpus.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { kubectlOk } from '../../harness/kubectl.js';

// The API (issue 4) against a real kube-apiserver 1.36: the CRDs install, the examples apply
// both ways, kubectl shows what users meet, and every bad manifest is refused by the server
// exactly where validateManifest (the offline validator) says it would be.
const controlPlane = useControlPlane();
const root = packageRoot();
const examples = join(root, 'manifests', 'examples');
const NAMESPACE = 'default';

const kubectl = (args: string[], input?: string): Promise<string> =>
  kubectlOk(controlPlane(), args, { input });

interface ApiResponse {
  status: number;
  body: Record<string, unknown>;
}

/** One request to the API server as the admin user, as kubectl makes it (strict field validation). */
function api(
  cp: ControlPlane,
  method: string,
  path: string,
  body: unknown,
  contentType = 'application/json',
): Promise<ApiResponse> {
  const ca = Buffer.from(cp.kubeConfig.getCurrentCluster()?.caData ?? '', 'base64');
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      `${cp.server}${path}`,
      {
        method,
        ca,
        headers: {
          authorization: `Bearer ${cp.token}`,
          'content-type': contentType,
          accept: 'application/json',
        },
        timeout: 20_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(text) as Record<string, unknown>;
          } catch {
            parsed = { message: text };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function collectionPath(obj: Record<string, unknown>): string {
  const kind = virtKindOf(obj) as VirtKind;
  const info = customResources[kind];
  const ns = info.scope === 'Namespaced' ? `/namespaces/${NAMESPACE}` : '';
  return `/apis/${info.apiVersion}${ns}/${info.plural}`;
}

function objectPath(obj: Record<string, unknown>): string {
  const name = (obj.metadata as { name: string }).name;
  return `${collectionPath(obj)}/${encodeURIComponent(name)}`;
}

const create = (obj: Record<string, unknown>, dryRun: boolean) =>
  api(
    controlPlane(),
    'POST',
    `${collectionPath(obj)}?fieldValidation=Strict${dryRun ? '&dryRun=All' : ''}`,
    obj,
  );

// An update that replaces the whole object (kubectl replace, or kubectl apply computing a patch
// that removes fields), without persisting it. Server-side apply would not do for removals: a
// field it does not mention stays with the manager that set it.
const replaceDryRun = (obj: Record<string, unknown>, resourceVersion: string) =>
  api(controlPlane(), 'PUT', `${objectPath(obj)}?fieldValidation=Strict&dryRun=All`, {
    ...obj,
    metadata: { ...(obj.metadata as object), resourceVersion },
  });

/** The field paths a refusal names: the Status causes, or the fields of a strict-decoding error. */
function refusedFields(r: ApiResponse): string[] {
  const details = r.body.details as { causes?: { field?: string }[] } | undefined;
  const fields = (details?.causes ?? [])
    .map((c) => c.field ?? '')
    .filter((f) => f !== '' && f !== '<nil>');
  for (const m of String(r.body.message ?? '').matchAll(/unknown field "([^"]+)"/g))
    fields.push(m[1] as string);
  return [...new Set(fields)].sort();
}

async function serverVerdict(c: BadManifestCase): Promise<ApiResponse> {
  const docs = c.documents;
  if (c.operation === 'update') {
    const created = await create(docs[0] as Record<string, unknown>, false);
    if (created.status !== 201)
      throw new Error(`${c.id}: creating the original failed: ${String(created.body.message)}`);
    const { resourceVersion } = created.body.metadata as { resourceVersion: string };
    return replaceDryRun(docs[1] as Record<string, unknown>, resourceVersion);
  }
  let last: ApiResponse | undefined;
  for (const doc of docs) last = await create(doc, true);
  return last as ApiResponse;
}

describe('CRDs on kube-apiserver', () => {
  test('every CRD installs and becomes Established, with names, scope, categories and selectable fields', async () => {
    const list = JSON.parse(await kubectl(['get', 'crd', '-o', 'json'])) as {
      items: {
        metadata: { name: string };
        spec: {
          scope: string;
          names: { shortNames: string[]; categories: string[] };
          versions: {
            selectableFields?: { jsonPath: string }[];
            subresources?: { status?: object };
          }[];
        };
        status: { conditions: { type: string; status: string }[] };
      }[];
    };
    for (const info of Object.values(customResources)) {
      const crd = list.items.find((i) => i.metadata.name === `${info.plural}.${info.group}`);
      expect(crd, `${info.kind} CRD`).toBeDefined();
      expect(crd?.status.conditions.find((c) => c.type === 'Established')?.status).toBe('True');
      expect(crd?.spec.scope).toBe(info.scope);
      expect(crd?.spec.names.categories).toEqual(['virt']);
      expect(crd?.spec.names.shortNames).toEqual(info.shortNames);
      expect(crd?.spec.versions[0]?.subresources?.status).toEqual({});
      const selectable = crd?.spec.versions[0]?.selectableFields?.map((f) => f.jsonPath) ?? [];
      // Snapshots and restores name their machine, not a node.
      const byMachine = ['VirtualMachineSnapshot', 'VirtualMachineRestore'].includes(info.kind);
      expect(selectable).toEqual(
        byMachine ? ['.spec.vmName'] : info.scope === 'Namespaced' ? ['.spec.nodeName'] : [],
      );
    }
  });

  test('every example applies with kubectl apply and with kubectl apply --server-side', async () => {
    const csa = await kubectl(['apply', '-n', NAMESPACE, '-f', examples]);
    expect(csa.match(/ created$/gm)?.length).toBe(5);
    await kubectl(['delete', '-n', NAMESPACE, '-f', examples, '--wait=true']);
    const ssa = await kubectl(['apply', '--server-side', '-n', NAMESPACE, '-f', examples]);
    expect(ssa.match(/ serverside-applied$/gm)?.length).toBe(5);
    // And again over the objects kubectl apply (client-side) would find: no conflicts.
    await kubectl(['apply', '-n', NAMESPACE, '-f', examples]);
  });

  test('kubectl get virt lists all four kinds', async () => {
    const out = await kubectl(['get', 'virt', '-A', '-o', 'name']);
    for (const name of [
      'virtualmachine.virt.dev/web-1',
      'volume.virt.dev/web-1-root',
      'volume.virt.dev/debian-12-base',
      'virtualnetwork.virt.dev/lab',
      'storagepool.virt.dev/images',
    ]) {
      expect(out).toContain(name);
    }
  });

  test('the printer columns show', async () => {
    const condition = (status: string, reason: string) => ({
      type: 'Ready',
      status,
      reason,
      message: reason,
      lastTransitionTime: '2026-12-06T00:00:00Z',
    });
    const table = async (resource: string) => {
      const [head = '', ...rows] = (await kubectl(['get', resource, '-n', NAMESPACE]))
        .trim()
        .split('\n');
      return { head: head.split(/\s+/), rows: rows.map((r) => r.split(/\s+/)) };
    };
    const vm = await table('vm');
    expect(vm.head).toEqual(['NAME', 'NODE', 'PHASE', 'VCPUS', 'MEMORY', 'IP', 'AGE']);
    expect(vm.rows[0]?.slice(0, 4)).toEqual(['web-1', 'node-1', '2', '2Gi']);
    // CAPACITY is the file's size as the agent last saw it (as a PVC's column is), not the
    // request: an imported Volume may have no spec.capacity, and a growth may be pending.
    await kubectl([
      'patch',
      'vol',
      'web-1-root',
      '-n',
      NAMESPACE,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { phase: 'Available', capacity: '10Gi' } }),
    ]);
    const vol = await table('vol');
    expect(vol.head).toEqual(['NAME', 'NODE', 'POOL', 'CAPACITY', 'FORMAT', 'PHASE', 'AGE']);
    expect(vol.rows.find((r) => r[0] === 'web-1-root')?.slice(1, 6)).toEqual([
      'node-1',
      'images',
      '10Gi',
      'qcow2',
      'Available',
    ]);
    // A dual-stack network shows its IPv6 subnet too: an IPv6-only one showed no address at all.
    const ipv6 = (value: unknown) =>
      kubectl([
        'patch',
        'vnet',
        'lab',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { ipv6: value } }),
      ]);
    await ipv6({ cidr: 'fd00:150::/64' });
    // BRIDGE is the device on the node (as its agent reports it), also when the operator chose
    // the name: spec.bridge is empty then, and the column was too.
    await kubectl([
      'patch',
      'vnet',
      'lab',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          // READY is the summary over every selected node: the first node's own Ready (True
          // here) said nothing of a second node that is not ready.
          conditions: [condition('False', 'NodesNotReady')],
          // NODES counts the ready ones: a list's column showed only the first node's name.
          readyNodes: '1/2',
          nodes: [
            {
              nodeName: 'node-1',
              bridge: 'lvo0123456789',
              conditions: [condition('True', 'Ready')],
            },
            {
              nodeName: 'node-2',
              bridge: 'lvo0123456789',
              conditions: [condition('False', 'Inactive')],
            },
          ],
        },
      }),
    ]);
    const vnet = await table('vnet');
    await ipv6(null);
    expect(vnet.head).toEqual(['NAME', 'MODE', 'CIDR', 'IPV6', 'BRIDGE', 'NODES', 'READY', 'AGE']);
    expect(vnet.rows[0]?.slice(0, 7)).toEqual([
      'lab',
      'nat',
      '192.168.150.1/24',
      'fd00:150::/64',
      'lvo0123456789',
      '1/2',
      'False',
    ]);
    const pool = await table('pool');
    expect(pool.head).toEqual(['NAME', 'TYPE', 'PATH', 'NODES', 'READY', 'AGE']);
    expect(pool.rows[0]?.slice(0, 3)).toEqual([
      'images',
      'dir',
      '/var/lib/libvirt-operator/images',
    ]);
  });

  test('kubectl explain vm.spec.memory prints the schema description', async () => {
    const out = await kubectl(['explain', 'vm.spec.memory']);
    const schema = customResources.VirtualMachine.openAPIV3Schema as {
      properties: { spec: { properties: { memory: { description: string } } } };
    };
    const description = schema.properties.spec.properties.memory.description;
    expect(out.replace(/\s+/g, ' ')).toContain(description.replace(/\s+/g, ' '));
  });

  test('a field selector on spec.nodeName picks the VMs and Volumes of one node', async () => {
    const onNode1 = await kubectl([
      'get',
      'vm,vol',
      '-n',
      NAMESPACE,
      '--field-selector',
      'spec.nodeName=node-1',
      '-o',
      'name',
    ]);
    expect(onNode1.trim().split('\n').sort()).toEqual([
      'virtualmachine.virt.dev/web-1',
      'volume.virt.dev/debian-12-base',
      'volume.virt.dev/web-1-root',
    ]);
    const onNode2 = await kubectl([
      'get',
      'vm',
      '-n',
      NAMESPACE,
      '--field-selector',
      'spec.nodeName=node-2',
      '-o',
      'name',
    ]);
    expect(onNode2.trim()).toBe('');
  });

  test('agents on two nodes keep their own status.nodes entries under server-side apply', async () => {
    for (const node of ['node-1', 'node-2']) {
      const status = {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: 'images' },
        status: {
          nodes: [
            {
              nodeName: node,
              state: 'running',
              capacity: '100Gi',
              conditions: [
                {
                  type: 'Ready',
                  status: 'True',
                  reason: 'Running',
                  message: 'ok',
                  lastTransitionTime: '2026-01-01T00:00:00Z',
                },
              ],
            },
          ],
        },
      };
      await kubectl(
        [
          'apply',
          '--server-side',
          '--subresource=status',
          `--field-manager=agent-${node}`,
          '-f',
          '-',
        ],
        JSON.stringify(status),
      );
    }
    const pool = parse(await kubectl(['get', 'pool', 'images', '-o', 'yaml'])) as {
      status: { nodes: { nodeName: string }[] };
    };
    expect(pool.status.nodes.map((n) => n.nodeName).sort()).toEqual(['node-1', 'node-2']);
  });

  test('kubectl apply --dry-run=server refuses every rejected case file, naming its field', async () => {
    const cases = loadCorpus().filter((c) => c.verdict === 'rejected' && c.operation === 'create');
    const dir = mkdtempSync(join(tmpdir(), 'lvo-rejected-'));
    try {
      for (const c of cases) copyFileSync(c.file, join(dir, basename(c.file)));
      const r = await controlPlane().kubectl([
        'apply',
        '--dry-run=server',
        '-n',
        NAMESPACE,
        '-f',
        dir,
      ]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe(''); // nothing was accepted
      // kubectl reports each file's refusal after naming the file; cut stderr at those names.
      const mentions = [...r.stderr.matchAll(/"([^"]+\.yaml)"/g)].filter((m) =>
        m[1]?.startsWith(dir),
      );
      const errors = new Map<string, string>();
      mentions.forEach((m, i) => {
        const text = r.stderr.slice(m.index, mentions[i + 1]?.index ?? r.stderr.length);
        errors.set(basename(m[1] as string), (errors.get(basename(m[1] as string)) ?? '') + text);
      });
      const unnamed = cases.filter((c) => {
        const text = errors.get(basename(c.file)) ?? '';
        // A name with '/' is refused by kubectl itself before it reaches the server.
        const namesIt =
          text.includes(c.field as string) ||
          (c.field === 'metadata.name' && text.includes('invalid resource name'));
        return !namesIt;
      });
      expect(
        unnamed.map((c) => `${c.id}: ${errors.get(basename(c.file)) ?? '(no error)'}`),
      ).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every bad manifest gets the same verdict from the API server and from validateManifest', async () => {
    const corpus = loadCorpus();
    expect(corpus.filter((c) => c.verdict === 'rejected').length).toBeGreaterThanOrEqual(40);
    const disagreements: string[] = [];
    // A few at a time: fast, and gentle on the shared 2-core machine.
    const queue = [...corpus];
    const worker = async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const docs = c.documents;
        const subject = docs[docs.length - 1] as Record<string, unknown>;
        const offline =
          c.operation === 'update' ? validateManifest(subject, docs[0]) : validateManifest(subject);
        const offlineFields = [...new Set(offline.map((p) => p.field))].sort();
        const r = await serverVerdict(c);
        const message = String(r.body.message ?? '');
        if (c.verdict === 'accepted') {
          if (r.status !== 201 && r.status !== 200)
            disagreements.push(`${c.id}: API server refused an accepted case: ${message}`);
          if (offline.length > 0)
            disagreements.push(
              `${c.id}: validateManifest refused an accepted case: ${offlineFields.join(', ')}`,
            );
          continue;
        }
        const fields = refusedFields(r);
        if (r.status < 400)
          disagreements.push(
            `${c.id}: API server accepted it (expected a refusal naming ${c.field})`,
          );
        else if (!fields.includes(c.field as string) || !message.includes(c.field as string)) {
          disagreements.push(`${c.id}: API server did not name ${c.field}: ${message}`);
        }
        if (JSON.stringify(fields) !== JSON.stringify(offlineFields)) {
          disagreements.push(
            `${c.id}: fields differ: API server [${fields.join(', ')}], validateManifest [${offlineFields.join(', ')}]`,
          );
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    expect(disagreements).toEqual([]);
  });
});
