// A controller waits for its informers' first list before it processes anything. One whose
// informer never lists (its CRD not installed: `up --kubeconfig` on a fresh cluster) must
// still stop: Ctrl-C printed "up: stopping" and the process then waited forever, since
// stopProcessing awaited the start that waited for the list.
import { describe, expect, it } from 'vitest';
import { createObjectCache } from '../../../src/runtime/cache.js';
import { createController, done } from '../../../src/runtime/controller.js';
import type { Informer } from '../../../src/runtime/informer.js';
import { createLogger } from '../../../src/runtime/log.js';

function neverListed(): Informer {
  return {
    resource: {
      group: 'test.dev',
      version: 'v1',
      plural: 'things',
      kind: 'Thing',
      namespaced: true,
    },
    cache: createObjectCache(),
    subscribe: () => () => undefined,
    hasSynced: () => false,
    synced: new Promise<void>(() => undefined),
    stop: async () => {},
  };
}

describe('a controller whose informer never lists', () => {
  it('closes at once, and never starts processing afterwards', async () => {
    const informer = neverListed();
    const controller = createController(
      { name: 'things', for: informer, reconcile: () => Promise.resolve(done()) },
      { log: createLogger({ level: 'silent' }) },
    );
    void controller.startProcessing();
    const closed = await Promise.race([
      controller.close(1_000).then(() => 'closed'),
      new Promise((r) => setTimeout(() => r('still waiting'), 2_000)),
    ]);
    expect(closed).toBe('closed');
    expect(controller.isProcessing()).toBe(false);
  });
});
