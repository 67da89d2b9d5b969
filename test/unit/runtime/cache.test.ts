import { describe, expect, it } from 'vitest';
import { createObjectCache } from '../../../src/runtime/cache.js';
import type { KubeObject } from '../../../src/runtime/resource.js';

type Obj = KubeObject & { spec?: { uses: string[] } };
const obj = (name: string, rv: string, uses: string[] = [], ns = 'ns'): Obj => ({
  metadata: { name, namespace: ns, resourceVersion: rv },
  spec: { uses },
});
const uses = (o: Obj) => o.spec?.uses ?? [];

describe('object cache', () => {
  it('keys namespaced objects ns/name and cluster objects by name', () => {
    const c = createObjectCache<Obj>();
    c.upsert(obj('a', '1'));
    c.upsert({ metadata: { name: 'cluster-wide', resourceVersion: '1' } });
    expect(c.keys().sort()).toEqual(['cluster-wide', 'ns/a']);
  });

  it('reports added, updated, and nothing for an unchanged resourceVersion', () => {
    const c = createObjectCache<Obj>();
    expect(c.upsert(obj('a', '1'))?.type).toBe('added');
    expect(c.upsert(obj('a', '1'))).toBeUndefined();
    const change = c.upsert(obj('a', '2'));
    expect(change?.type).toBe('updated');
    expect(change?.type === 'updated' && change.old.metadata.resourceVersion).toBe('1');
    expect(c.remove(obj('a', '3'))?.type).toBe('deleted');
    expect(c.remove(obj('a', '3'))).toBeUndefined();
  });

  it('after a relist reports only what moved: new, changed and vanished objects', () => {
    const c = createObjectCache<Obj>();
    c.replace([obj('same', '1'), obj('changed', '1'), obj('gone', '1')]);
    const changes = c.replace([obj('same', '1'), obj('changed', '5'), obj('new', '6')]);
    expect(changes.map((ch) => `${ch.type}:${ch.obj.metadata.name}`).sort()).toEqual([
      'added:new',
      'deleted:gone',
      'updated:changed',
    ]);
    expect(c.keys().sort()).toEqual(['ns/changed', 'ns/new', 'ns/same']);
  });

  it('keeps named indexes current through updates, deletes and relists', () => {
    const c = createObjectCache<Obj>();
    c.upsert(obj('vm1', '1', ['disk-a', 'disk-b']));
    c.addIndex('byVolume', uses);
    c.upsert(obj('vm2', '1', ['disk-b']));
    expect(c.keysByIndex('byVolume', 'disk-b').sort()).toEqual(['ns/vm1', 'ns/vm2']);
    c.upsert(obj('vm1', '2', ['disk-c']));
    expect(c.keysByIndex('byVolume', 'disk-a')).toEqual([]);
    expect(c.keysByIndex('byVolume', 'disk-b')).toEqual(['ns/vm2']);
    expect(c.byIndex('byVolume', 'disk-c').map((o) => o.metadata.name)).toEqual(['vm1']);
    c.remove(obj('vm2', '3'));
    expect(c.keysByIndex('byVolume', 'disk-b')).toEqual([]);
    c.replace([obj('vm3', '9', ['disk-c'])]);
    expect(c.keysByIndex('byVolume', 'disk-c')).toEqual(['ns/vm3']);
  });

  it('hands out frozen objects, so a reader cannot change what others see', () => {
    const c = createObjectCache<Obj>();
    c.upsert(obj('a', '1', ['x']));
    const got = c.get('ns/a')!;
    expect(() => {
      got.spec!.uses.push('y');
    }).toThrow(TypeError);
    expect(() => {
      got.metadata.name = 'b';
    }).toThrow(TypeError);
  });

  it('names the index that is missing or defined twice', () => {
    const c = createObjectCache<Obj>();
    expect(() => c.byIndex('nope', 'x')).toThrow(/no index named 'nope'/);
    c.addIndex('i', () => []);
    expect(() => c.addIndex('i', () => [])).toThrow(/'i' is already defined/);
  });

  it('survives an index function that throws on a malformed object', () => {
    const c = createObjectCache<Obj>();
    c.addIndex('byVolume', uses);
    expect(c.upsert({ metadata: { name: 'odd', resourceVersion: '1' } })?.type).toBe('added');
    expect(c.get('odd')).toBeDefined();
  });
});
