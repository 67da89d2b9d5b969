// Test kinds for the runtime's integration tests: a namespaced Widget and a cluster-scoped
// Gadget (with a per-node status list-map), in their own group so they never collide with
// the project's CRDs. Plus small helpers shared by the runtime test files.
import type { ControlPlane } from '../../../src/commands/local/control-plane.js';
import { createKubeClient, type KubeClient } from '../../../src/runtime/kube-client.js';
import { createLogger, type Logger } from '../../../src/runtime/log.js';
import type { KubeObject, ResourceDescription } from '../../../src/runtime/resource.js';

export const GROUP = 'test.runtime.virt.dev';

export const widgets: ResourceDescription = {
  group: GROUP,
  version: 'v1',
  plural: 'widgets',
  kind: 'Widget',
  namespaced: true,
};
export const gadgets: ResourceDescription = {
  group: GROUP,
  version: 'v1',
  plural: 'gadgets',
  kind: 'Gadget',
  namespaced: false,
};

export interface Widget extends KubeObject {
  spec: { value?: number; nodeName?: string; fail?: boolean; permanent?: boolean; uses?: string[] };
  status?: { observedValue?: number; observedGeneration?: number; conditions?: unknown[] };
}

const condition = {
  type: 'object',
  required: ['type', 'status', 'lastTransitionTime'],
  properties: {
    type: { type: 'string' },
    status: { type: 'string' },
    lastTransitionTime: { type: 'string', format: 'date-time' },
    reason: { type: 'string' },
    message: { type: 'string' },
  },
};
const conditions = {
  type: 'array',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  items: condition,
};

export function crd(
  kind: string,
  plural: string,
  scope: 'Namespaced' | 'Cluster',
  spec: object,
  status: object,
  selectable: string[] = [],
) {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${GROUP}` },
    spec: {
      group: GROUP,
      scope,
      names: { plural, singular: kind.toLowerCase(), kind },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          subresources: { status: {} },
          ...(selectable.length
            ? { selectableFields: selectable.map((jsonPath) => ({ jsonPath })) }
            : {}),
          schema: {
            openAPIV3Schema: {
              type: 'object',
              properties: {
                spec: { type: 'object', properties: spec },
                status: { type: 'object', properties: status },
              },
            },
          },
        },
      ],
    },
  };
}

export const testCRDs = [
  crd(
    'Widget',
    'widgets',
    'Namespaced',
    {
      value: { type: 'integer' },
      nodeName: { type: 'string' },
      fail: { type: 'boolean' },
      permanent: { type: 'boolean' },
      uses: { type: 'array', items: { type: 'string' } },
    },
    {
      observedValue: { type: 'integer' },
      observedGeneration: { type: 'integer' },
      holder: { type: 'string' },
      conditions,
    },
    ['.spec.nodeName'],
  ),
  crd(
    'Gadget',
    'gadgets',
    'Cluster',
    { size: { type: 'integer' } },
    {
      conditions,
      nodes: {
        type: 'array',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['nodeName'],
        items: {
          type: 'object',
          required: ['nodeName'],
          properties: {
            nodeName: { type: 'string' },
            size: { type: 'integer' },
            note: { type: 'string' },
            conditions,
          },
        },
      },
    },
  ),
];

export async function installTestCRDs(cp: ControlPlane, crds: object[] = testCRDs): Promise<void> {
  const input = crds.map((c) => JSON.stringify(c)).join('\n---\n');
  const applied = await cp.kubectl(['apply', '-f', '-'], { input });
  if (applied.code !== 0) throw new Error(`installing the test CRDs failed: ${applied.stderr}`);
  for (const c of crds)
    await cp.waitEstablished((c as { metadata: { name: string } }).metadata.name);
}

export function testClient(cp: ControlPlane): KubeClient {
  return createKubeClient(cp.kubeConfig, { userAgent: 'runtime-test-driver' });
}

/** Quiet unless LOG_LEVEL says otherwise; the runtime's lines are for debugging failures. */
export function testLogger(base: Record<string, unknown> = {}): Logger {
  return createLogger({ level: process.env.LOG_LEVEL ?? 'silent', base });
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`,
  );
}

export const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function createWidget(
  client: KubeClient,
  name: string,
  spec: Widget['spec'],
  namespace = 'default',
): Promise<Widget> {
  return client.request<Widget>({
    method: 'POST',
    path: `/apis/${GROUP}/v1/namespaces/${namespace}/widgets`,
    body: { apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name, namespace }, spec },
  });
}

export async function patchWidget(
  client: KubeClient,
  name: string,
  spec: Widget['spec'],
  namespace = 'default',
): Promise<Widget> {
  return client.request<Widget>({
    method: 'PATCH',
    path: `/apis/${GROUP}/v1/namespaces/${namespace}/widgets/${name}`,
    body: { spec },
    contentType: 'application/merge-patch+json',
  });
}

export async function listWidgets(client: KubeClient, namespace = 'default'): Promise<Widget[]> {
  const list = await client.request<{ items: Widget[] }>({
    method: 'GET',
    path: `/apis/${GROUP}/v1/namespaces/${namespace}/widgets`,
  });
  return list.items;
}

/** A counter's value from Prometheus text, summed over the series matching every label given. */
export function metricSum(
  text: string,
  name: string,
  labels: Record<string, string | RegExp> = {},
): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const m = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    const ok = Object.entries(labels).every(([k, v]) =>
      typeof v === 'string' ? have[k] === v : v.test(have[k] ?? ''),
    );
    if (ok) sum += Number(m[3]);
  }
  return sum;
}

/**
 * Direct etcd access, standing in for "another API server replica took these writes while
 * ours was down". Custom resources are stored as JSON, so a read-modify-write keeps them
 * valid for the API server.
 */
export async function etcdUpdateWidget(
  cp: ControlPlane,
  name: string,
  mutate: (obj: Widget) => void,
  namespace = 'default',
): Promise<void> {
  const key = Buffer.from(`/registry/${GROUP}/widgets/${namespace}/${name}`).toString('base64');
  const range = await fetch(`${cp.etcdEndpoint}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key }),
  });
  const body = (await range.json()) as { kvs?: { value: string }[] };
  const value = body.kvs?.[0]?.value;
  if (!value) throw new Error(`etcd has no widget ${namespace}/${name}`);
  const obj = JSON.parse(Buffer.from(value, 'base64').toString()) as Widget;
  mutate(obj);
  const put = await fetch(`${cp.etcdEndpoint}/v3/kv/put`, {
    method: 'POST',
    body: JSON.stringify({ key, value: Buffer.from(JSON.stringify(obj)).toString('base64') }),
  });
  if (!put.ok) throw new Error(`etcd put failed: ${put.status} ${await put.text()}`);
}

export async function etcdDeleteWidget(
  cp: ControlPlane,
  name: string,
  namespace = 'default',
): Promise<void> {
  const key = Buffer.from(`/registry/${GROUP}/widgets/${namespace}/${name}`).toString('base64');
  const res = await fetch(`${cp.etcdEndpoint}/v3/kv/deleterange`, {
    method: 'POST',
    body: JSON.stringify({ key }),
  });
  const body = (await res.json()) as { deleted?: string };
  if (body.deleted !== '1')
    throw new Error(`etcd did not delete widget ${namespace}/${name}: ${JSON.stringify(body)}`);
}
