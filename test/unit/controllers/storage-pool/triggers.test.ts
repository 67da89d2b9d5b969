import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../../../src/controllers/context.js';
import type { KeyLookup } from '../../../../src/controllers/module.js';
import type { CacheChange } from '../../../../src/runtime/cache.js';
import { storagePool } from '../../../../src/controllers/storage-pool/index.js';

const pool = (name: string): KubeObject =>
  ({ metadata: { name, uid: `uid-${name}` }, spec: { path: '/srv/same' } }) as KubeObject;

const cache: KeyLookup = {
  keysByIndex: () => [],
  keys: (kind) => (kind === 'StoragePool' ? ['first', 'second'] : []),
};

const woken = (change: CacheChange<KubeObject>) =>
  storagePool.triggers
    .filter((t) => t.from === 'StoragePool')
    .flatMap((t) => t.keys(change, cache))
    .sort();

describe('which StoragePools a StoragePool change wakes', () => {
  it('a deleted pool wakes the others: one refused for its path (PathConflict) retries at once', () => {
    expect(woken({ type: 'deleted', obj: pool('gone') })).toEqual(['first', 'second']);
  });
  it('other changes wake no other pool', () => {
    expect(woken({ type: 'added', obj: pool('new') })).toEqual([]);
    expect(woken({ type: 'updated', obj: pool('first'), old: pool('first') })).toEqual([]);
  });
});
