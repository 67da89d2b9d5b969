// `libvirt-operator validate` and the real API server give the same verdict on the same
// manifests, for every ordinary metadata field on every kind: what the server accepts
// (namespace, labels, annotations, generateName, finalizers, ownerReferences, the fields
// `kubectl get -o yaml` prints) validate accepts, and what it refuses validate refuses.
// The server is asked with a create under strict field validation, as `kubectl apply` creates
// (a dry run would skip the storage layer's own check of resourceVersion).
import { beforeAll, describe, expect, it } from 'vitest';
import { customResources, type VirtKind } from '../../../src/api/generated/crds.js';
import { checkManifests } from '../../../src/commands/validate.js';
import { createKubeClient, KubeApiError, type KubeClient } from '../../../src/runtime/index.js';
import { useControlPlane } from '../../harness/control-plane.js';

const cp = useControlPlane();
let client: KubeClient;

const SPECS: Record<VirtKind, Record<string, unknown>> = {
  VirtualMachine: { nodeName: 'node-1', vcpus: 1, memory: '256Mi' },
  Volume: { nodeName: 'node-1', pool: 'images', capacity: '1Gi' },
  VirtualNetwork: { mode: 'isolated' },
  StoragePool: { path: '/var/lib/lvo-parity' },
  VirtualMachineSnapshot: { vmName: 'vm-1' },
  VirtualMachineRestore: { vmName: 'vm-1', snapshotName: 'snap-1' },
};

interface Case {
  name: string;
  metadata: Record<string, unknown>;
}

const UID = '6f3c1c0a-8e55-4c55-9d7a-0b8e6a1b2c3d';
const CASES: Case[] = [
  { name: 'namespace', metadata: { name: 'm1', namespace: 'apps' } },
  {
    name: 'labels',
    metadata: {
      name: 'm2',
      labels: { app: 'web', 'example.com/tier': 'db', empty: '', 'a.b_c-d': 'X.y_z-1' },
    },
  },
  {
    name: 'annotations',
    metadata: {
      name: 'm3',
      annotations: {
        'example.com/note': 'anything: spaces, ✓, {"json": true}',
        'kubectl.kubernetes.io/last-applied-configuration': '{}',
        Mixed: 'case key',
      },
    },
  },
  { name: 'generateName', metadata: { generateName: 'web-' } },
  { name: 'finalizers', metadata: { name: 'm4', finalizers: ['example.com/keep'] } },
  {
    name: 'ownerReferences',
    metadata: {
      name: 'm5',
      ownerReferences: [
        { apiVersion: 'v1', kind: 'ConfigMap', name: 'cm', uid: UID, controller: true },
        {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          name: 'd',
          uid: UID,
          blockOwnerDeletion: true,
        },
      ],
    },
  },
  {
    name: 'what kubectl get -o yaml prints',
    metadata: {
      name: 'm6',
      namespace: 'apps',
      uid: UID,
      generation: 3,
      creationTimestamp: '2026-12-01T10:00:00Z',
      selfLink: '',
    },
  },
  { name: 'creationTimestamp null', metadata: { name: 'm7', creationTimestamp: null } },
  // Refused by the server:
  { name: 'unknown metadata field', metadata: { name: 'r1', colour: 'blue' } },
  {
    name: 'unknown ownerReference field',
    metadata: {
      name: 'r2',
      ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'cm', uid: UID, extra: 1 }],
    },
  },
  { name: 'label key with a space', metadata: { name: 'r3', labels: { 'bad key': 'x' } } },
  { name: 'label value too long', metadata: { name: 'r4', labels: { a: 'v'.repeat(64) } } },
  { name: 'label value not a string', metadata: { name: 'r5', labels: { a: 1 } } },
  { name: 'label value with a slash', metadata: { name: 'r6', labels: { a: 'x/y' } } },
  {
    name: 'annotation key with two slashes',
    metadata: { name: 'r7', annotations: { 'a/b/c': 'x' } },
  },
  {
    name: 'annotations over 256 KiB',
    metadata: { name: 'r8', annotations: { big: 'x'.repeat(262_144) } },
  },
  { name: 'generateName not a name prefix', metadata: { generateName: 'Web_' } },
  { name: 'no name and no generateName', metadata: { labels: { a: 'b' } } },
  { name: 'finalizer with a space', metadata: { name: 'r9', finalizers: ['bad finalizer'] } },
  {
    name: 'ownerReference without uid',
    metadata: {
      name: 'r10',
      ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'cm' }],
    },
  },
  {
    name: 'two controller ownerReferences',
    metadata: {
      name: 'r11',
      ownerReferences: [
        { apiVersion: 'v1', kind: 'ConfigMap', name: 'a', uid: UID, controller: true },
        { apiVersion: 'v1', kind: 'ConfigMap', name: 'b', uid: UID, controller: true },
      ],
    },
  },
  { name: 'resourceVersion on create', metadata: { name: 'r12', resourceVersion: '12345' } },
  { name: 'generation not a number', metadata: { name: 'r13', generation: 'three' } },
  { name: 'finalizers not a list', metadata: { name: 'r14', finalizers: 'example.com/keep' } },
];

/** The server's verdict: '' when it accepts, else its message. */
async function serverVerdict(obj: Record<string, unknown>): Promise<string> {
  const kind = obj.kind as VirtKind;
  const info = customResources[kind];
  const meta = obj.metadata as { namespace?: string };
  const ns = info.scope === 'Namespaced' ? `namespaces/${meta.namespace ?? 'default'}/` : '';
  try {
    await client.request({
      method: 'POST',
      path: `/apis/virt.dev/v1alpha1/${ns}${info.plural}`,
      query: { fieldValidation: 'Strict' },
      body: obj,
    });
    return '';
  } catch (err) {
    // 500: the storage layer's refusal of a resourceVersion on create comes as an internal error.
    if (err instanceof KubeApiError && [400, 422, 500].includes(err.status)) return err.message;
    throw err;
  }
}

/** validate's verdict, through the command's own checking of a manifest file's text. */
function validateVerdict(obj: Record<string, unknown>): string {
  return checkManifests('case.json', JSON.stringify(obj)).lines.join('\n');
}

beforeAll(async () => {
  client = createKubeClient(cp().kubeConfig);
  await client.request({
    method: 'POST',
    path: '/api/v1/namespaces',
    body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } },
  });
});

describe('validate and the API server agree on metadata, for every kind', () => {
  for (const kind of Object.keys(SPECS) as VirtKind[]) {
    it(`${kind}`, async () => {
      const disagreements: string[] = [];
      let accepted = 0;
      for (const c of CASES) {
        const obj = {
          apiVersion: 'virt.dev/v1alpha1',
          kind,
          metadata: c.metadata,
          spec: SPECS[kind],
        };
        const server = await serverVerdict(obj);
        const offline = validateVerdict(obj);
        if ((server === '') !== (offline === '')) {
          disagreements.push(
            `${c.name}: server ${server === '' ? 'accepts' : `refuses (${server.slice(0, 300)})`}, ` +
              `validate ${offline === '' ? 'accepts' : `refuses (${offline.slice(0, 300)})`}`,
          );
        }
        if (server === '') accepted++;
      }
      expect(disagreements).toEqual([]);
      // Both sides of the corpus are exercised: the first 8 cases are accepted, the rest refused.
      expect(accepted).toBe(8);
    });
  }
});
