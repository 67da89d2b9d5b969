import { describe, expect, it } from 'vitest';
import { microTime } from '../../../src/runtime/clock.js';
import { specOrMetadataChanged, type UpdatePredicate } from '../../../src/runtime/controller.js';
import { eventIdentity } from '../../../src/runtime/events.js';
import {
  keyPath,
  objectKey,
  parseKey,
  referenceTo,
  resourcePath,
  type KubeObject,
  type ResourceDescription,
} from '../../../src/runtime/resource.js';

const vm: ResourceDescription = {
  group: 'virt.dev',
  version: 'v1alpha1',
  plural: 'virtualmachines',
  kind: 'VirtualMachine',
  namespaced: true,
};
const cm: ResourceDescription = {
  group: '',
  version: 'v1',
  plural: 'configmaps',
  kind: 'ConfigMap',
  namespaced: true,
};
const pool: ResourceDescription = {
  group: 'virt.dev',
  version: 'v1alpha1',
  plural: 'storagepools',
  kind: 'StoragePool',
  namespaced: false,
};

describe('resource paths and keys', () => {
  it('builds collection, object and subresource paths for namespaced, core and cluster kinds', () => {
    expect(resourcePath(vm)).toBe('/apis/virt.dev/v1alpha1/virtualmachines');
    expect(resourcePath(vm, { namespace: 'ns' })).toBe(
      '/apis/virt.dev/v1alpha1/namespaces/ns/virtualmachines',
    );
    expect(keyPath(vm, 'ns/web', 'status')).toBe(
      '/apis/virt.dev/v1alpha1/namespaces/ns/virtualmachines/web/status',
    );
    expect(resourcePath(cm, { namespace: 'kube-system', name: 'x' })).toBe(
      '/api/v1/namespaces/kube-system/configmaps/x',
    );
    expect(keyPath(pool, 'default-pool')).toBe('/apis/virt.dev/v1alpha1/storagepools/default-pool');
  });

  it('refuses to address a namespaced object without its namespace, naming the kind', () => {
    expect(() => keyPath(vm, 'web')).toThrow(/VirtualMachine is namespaced/);
  });

  it('keys round-trip', () => {
    expect(objectKey({ metadata: { name: 'a', namespace: 'n' } })).toBe('n/a');
    expect(parseKey('n/a')).toEqual({ namespace: 'n', name: 'a' });
    expect(parseKey('a')).toEqual({ name: 'a' });
    expect(() => objectKey({ metadata: {} })).toThrow(/metadata.name/);
  });

  it('references carry apiVersion, kind and uid', () => {
    expect(
      referenceTo(vm, { metadata: { name: 'a', namespace: 'n', uid: 'u', resourceVersion: '5' } }),
    ).toEqual({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      name: 'a',
      namespace: 'n',
      uid: 'u',
      resourceVersion: '5',
    });
  });
});

describe('small pure pieces', () => {
  it('MicroTime has six fractional digits', () => {
    expect(microTime(Date.parse('2030-01-02T03:04:05.678Z'))).toBe('2030-01-02T03:04:05.678000Z');
  });

  it('the same event again has the same identity; another note is another event', () => {
    const ref = { apiVersion: 'v1', kind: 'X', name: 'a', uid: 'u' };
    const e = { type: 'Warning' as const, reason: 'R', action: 'A', note: 'n' };
    expect(eventIdentity(ref, e)).toBe(eventIdentity({ ...ref, resourceVersion: '9' }, { ...e }));
    expect(eventIdentity(ref, e)).not.toBe(eventIdentity(ref, { ...e, note: 'other' }));
  });

  it('specOrMetadataChanged drops status-only updates and passes spec and metadata changes', () => {
    type WithStatus = KubeObject & { status?: { x: number } };
    const changed: UpdatePredicate<WithStatus> = specOrMetadataChanged;
    const base: WithStatus = {
      metadata: { name: 'a', generation: 1, labels: { a: '1' } },
      status: { x: 1 },
    };
    expect(changed(base, { ...base, status: { x: 2 } })).toBe(false);
    expect(
      specOrMetadataChanged(base, { ...base, metadata: { ...base.metadata, generation: 2 } }),
    ).toBe(true);
    expect(
      specOrMetadataChanged(base, { ...base, metadata: { ...base.metadata, labels: { a: '2' } } }),
    ).toBe(true);
    expect(
      specOrMetadataChanged(base, { ...base, metadata: { ...base.metadata, finalizers: ['x/y'] } }),
    ).toBe(true);
    const cmChanged: UpdatePredicate<KubeObject & { data?: object }> = specOrMetadataChanged;
    expect(cmChanged({ metadata: { name: 'cm' } }, { metadata: { name: 'cm' }, data: {} })).toBe(
      true,
    );
  });
});
