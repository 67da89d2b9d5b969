// What an informer's cache keeps of an object's metadata (reflector.ts, slim): the status
// appliers' managedFields entries (the status writer reads them), nothing else of
// managedFields, and no kubectl last-applied copy; everything else untouched.
import { describe, expect, it } from 'vitest';
import { slim } from '../../../src/runtime/reflector.js';
import { ownedStatusFields } from '../../../src/runtime/status-writer.js';
import type { KubeObject } from '../../../src/runtime/resource.js';

const statusApply = {
  manager: 'libvirt-operator',
  operation: 'Apply',
  subresource: 'status',
  fieldsType: 'FieldsV1',
  fieldsV1: { 'f:status': { 'f:phase': {} } },
};
type Obj = KubeObject & { spec?: unknown; status?: unknown };
const vm = (): Obj => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachine',
  metadata: {
    name: 'web',
    namespace: 'default',
    annotations: {
      'virt.dev/restart-requested-at': '2026-12-03T20:00:00Z',
      'kubectl.kubernetes.io/last-applied-configuration': '{"spec":{"vcpus":1}}',
    },
    finalizers: ['virt.dev/host'],
    managedFields: [
      { manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:spec': {} } },
      { manager: 'libvirt-operator', operation: 'Update', fieldsV1: { 'f:metadata': {} } },
      statusApply,
      { manager: 'kubectl', operation: 'Apply', fieldsV1: { 'f:spec': {} } },
    ],
  },
  spec: { vcpus: 1 },
  status: { phase: 'Running' },
});

describe('slim', () => {
  it('keeps only the status appliers of managedFields and drops the last-applied copy', () => {
    const slimmed = slim(vm()) as Obj;
    expect(slimmed.metadata.managedFields).toEqual([statusApply]);
    expect(slimmed.metadata.annotations).toEqual({
      'virt.dev/restart-requested-at': '2026-12-03T20:00:00Z',
    });
    expect(slimmed.metadata.finalizers).toEqual(['virt.dev/host']);
    expect(slimmed.spec).toEqual({ vcpus: 1 });
    expect(slimmed.status).toEqual({ phase: 'Running' });
    // What the status writer needs is still there.
    expect(ownedStatusFields(slimmed, 'libvirt-operator')).toEqual({ 'f:phase': {} });
  });

  it('drops managedFields altogether when no status apply owns anything', () => {
    const o = vm();
    o.metadata.managedFields = o.metadata.managedFields!.filter((e) => e !== statusApply);
    expect(slim(o).metadata).not.toHaveProperty('managedFields');
  });

  it('shares one frozen fieldsV1 tree between objects that own the same fields', () => {
    const a = slim(vm());
    const b = slim(vm());
    const tree = a.metadata.managedFields?.[0]?.fieldsV1;
    expect(tree).toEqual(statusApply.fieldsV1);
    expect(b.metadata.managedFields?.[0]?.fieldsV1).toBe(tree);
    expect(Object.isFrozen(tree)).toBe(true);
    expect(Object.isFrozen(tree?.['f:status'])).toBe(true);
  });

  it('returns an object without managedFields or last-applied copy as it is, and never changes its input', () => {
    const lean: KubeObject = { metadata: { name: 'n', annotations: { a: 'b' } } };
    expect(slim(lean)).toBe(lean);
    const o = vm();
    const copy = structuredClone(o);
    slim(o);
    expect(o).toEqual(copy);
  });
});
