// The controller's handling of changes a pass made itself: the watch event of its own status
// write, and host changes (libvirt's events) its own calls caused. Neither may run the key
// again for nothing (a second pass per new machine was a fifth of the agent's CPU in a burst,
// bench/README.md), and neither may swallow a change someone else made. A state-based informer
// (a real object cache, changes delivered when the test says) makes the orderings exact.
import { describe, expect, it } from 'vitest';
import { createObjectCache, type CacheChange } from '../../../src/runtime/cache.js';
import {
  createController,
  done,
  PermanentError,
  type Controller,
  type ReconcileContext,
} from '../../../src/runtime/controller.js';
import type { Informer } from '../../../src/runtime/informer.js';
import { createLogger } from '../../../src/runtime/log.js';
import type { KubeObject } from '../../../src/runtime/resource.js';

type Obj = KubeObject & { status?: { n?: number; by?: string } };

function fakeInformer() {
  const cache = createObjectCache<Obj>();
  const handlers = new Set<(c: CacheChange<Obj>) => void>();
  let rv = 1;
  const informer: Informer<Obj> = {
    resource: {
      group: 'test.dev',
      version: 'v1',
      plural: 'things',
      kind: 'Thing',
      namespaced: true,
    },
    cache,
    subscribe(h) {
      handlers.add(h);
      return () => handlers.delete(h);
    },
    hasSynced: () => true,
    synced: Promise.resolve(),
    stop: async () => {},
  };
  /** What the API server and the watch do for a write: a new resourceVersion, then the event. */
  const write = (obj: Obj, change: Partial<Obj>): Obj => {
    const next = {
      ...obj,
      ...change,
      metadata: { ...obj.metadata, ...change.metadata, resourceVersion: String(++rv) },
    } as Obj;
    return next;
  };
  const deliver = (obj: Obj) => {
    const change = cache.upsert(obj);
    if (change) for (const h of handlers) h(change);
  };
  return { informer, write, deliver };
}

const thing = (): Obj => ({
  apiVersion: 'test.dev/v1',
  kind: 'Thing',
  metadata: { name: 'a', namespace: 'ns', uid: 'u1', generation: 1, resourceVersion: '1' },
});

/** Resolves once `cond` holds, checking after each macrotask (the queue runs on promises). */
async function settle(cond: () => boolean = () => true, rounds = 50): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise((r) => setImmediate(r));
    if (cond()) return;
  }
}

function harness(
  onPass: (
    n: number,
    pass: ReconcileContext,
    api: ReturnType<typeof fakeInformer>,
    controller: Controller,
  ) => Promise<void>,
) {
  const api = fakeInformer();
  let passes = 0;
  const controller: Controller = createController<Obj>(
    {
      name: 'things',
      for: api.informer,
      resyncMs: 0,
      reconcile: async (_key, pass) => {
        passes++;
        await onPass(passes, pass, api, controller);
        return done();
      },
    },
    { log: createLogger({ level: 'silent' }) },
  );
  return { api, controller, passes: () => passes };
}

/**
 * A pass that writes status on its first run only (with `finalizer`, a finalizer patch first),
 * as the API server would answer; the watch brings the writes back when the test delivers them
 * from `pending`. Every pass records the resourceVersion it read.
 */
function firstPassWrites(pending: Obj[], read: string[] = [], finalizer = false) {
  return async (n: number, pass: ReconcileContext, api: ReturnType<typeof fakeInformer>) => {
    let current = api.informer.cache.get('ns/a')!;
    read.push(current.metadata.resourceVersion!);
    if (n !== 1) return;
    if (finalizer) {
      const patched = api.write(current, {
        metadata: { ...current.metadata, finalizers: ['test.dev/cleanup'] },
      });
      pass.wrote(current.metadata.resourceVersion, patched.metadata.resourceVersion);
      pending.push(patched);
      current = patched;
    }
    const written = api.write(current, { status: { n, by: 'us' } });
    pass.wrote(current.metadata.resourceVersion, written.metadata.resourceVersion);
    pending.push(written);
  };
}

/** The object created, processing started, its first pass done. */
async function firstPass(h: ReturnType<typeof harness>): Promise<void> {
  h.api.deliver(thing());
  await h.controller.startProcessing();
  await settle(() => h.passes() === 1);
}

describe('changes a pass made itself', () => {
  it('the watch event of its own status write does not run it again; one by someone else does', async () => {
    const pending: Obj[] = [];
    const h = harness(async (n, pass, api) => {
      const current = api.informer.cache.get('ns/a')!;
      const written = api.write(current, { status: { n, by: 'us' } });
      pass.wrote(current.metadata.resourceVersion, written.metadata.resourceVersion);
      pending.push(written); // the watch brings it back later
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => h.passes() === 1);
    expect(h.passes()).toBe(1);

    h.api.deliver(pending.shift()!); // our own write comes back: nothing to do
    await settle();
    expect(h.passes()).toBe(1);

    // Someone else's status change wakes the key.
    const theirs = h.api.write(h.api.informer.cache.get('ns/a')!, { status: { by: 'them' } });
    h.api.deliver(theirs);
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2);
    h.api.deliver(pending.shift()!);
    await settle();
    expect(h.passes()).toBe(2);
    await h.controller.close(1_000);
  });

  it.each([
    ['its status write', false],
    ['every write, a finalizer patch and then status', true],
  ])(
    'the next pass waits for its predecessor’s writes to come back before it reads: %s',
    async (_what, finalizer) => {
      const pending: Obj[] = [];
      const read: string[] = [];
      const h = harness(firstPassWrites(pending, read, finalizer));
      await firstPass(h);
      h.controller.enqueue('ns/a'); // woken by something else before the writes came back
      await settle(); // the next pass is waiting
      // The finalizer patch comes back, the status write not yet.
      for (; pending.length > 1; await settle()) h.api.deliver(pending.shift()!);
      expect(h.passes()).toBe(1);
      const written = pending.shift()!;
      h.api.deliver(written);
      await settle(() => h.passes() === 2);
      // It read the copy with its predecessor's writes, whose events woke nothing more.
      expect(read).toEqual(['1', written.metadata.resourceVersion]);
      await settle();
      expect(h.passes()).toBe(2);
      await h.controller.close(1_000);
    },
  );

  it('a pass whose wait for that write ran out (2 s) is run again when the write comes back', async () => {
    const pending: Obj[] = [];
    const h = harness(firstPassWrites(pending));
    await firstPass(h);
    h.controller.enqueue('ns/a');
    await new Promise((r) => setTimeout(r, 2_100));
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2); // it read the copy from before the write
    h.api.deliver(pending.shift()!);
    await settle(() => h.passes() === 3);
    expect(h.passes()).toBe(3);
    await h.controller.close(1_000);
  });

  it('a host change during a pass runs it again unless the pass looked at the host after it', async () => {
    let release!: () => void;
    let look: 'after' | 'before' | 'none' = 'after';
    const h = harness(async (n, pass, _api, controller) => {
      const mode = look;
      if (mode === 'none') return;
      // The pass's own call: its event arrives during the pass.
      controller.hostChanged('ns/a', performance.now());
      const lookedAt = performance.now();
      await new Promise<void>((r) => (release = r));
      pass.sawHostAt(mode === 'after' ? lookedAt : lookedAt - 1_000);
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => release !== undefined);
    release();
    await settle();
    expect(h.passes()).toBe(1); // the look began after the change: covered

    look = 'before';
    h.controller.enqueue('ns/a');
    await settle(() => h.passes() === 2);
    look = 'none';
    release();
    await settle(() => h.passes() === 3);
    expect(h.passes()).toBe(3); // the look predates the change: run again

    // A change while no pass runs queues the key at once.
    h.controller.hostChanged('ns/a', performance.now());
    await settle(() => h.passes() === 4);
    expect(h.passes()).toBe(4);
    await h.controller.close(1_000);
  });

  it('a change the pass named as its own is no news once, even when it comes after the pass', async () => {
    const h = harness(async (n, pass, _api, controller) => {
      if (n !== 1) return;
      // The pass booted its domain; libvirt's event for it is still on its way.
      controller.hostChanged('ns/a', performance.now(), 'defined/added');
      pass.sawHostAt(performance.now(), ['defined/added', 'started/booted']);
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => h.passes() === 1);
    h.controller.hostChanged('ns/a', performance.now(), 'started/booted');
    await settle();
    expect(h.passes()).toBe(1);
    // Each named change counts once: the same again is someone else's.
    h.controller.hostChanged('ns/a', performance.now(), 'started/booted');
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2);
    // A pass that names nothing leaves nothing to swallow.
    h.controller.hostChanged('ns/a', performance.now(), 'defined/added');
    await settle(() => h.passes() === 3);
    expect(h.passes()).toBe(3);
    await h.controller.close(1_000);
  });

  it('a change named as its own that does not come within 10 s hides nothing afterwards', async () => {
    const h = harness(async (n, pass) => {
      if (n === 1) pass.sawHostAt(performance.now(), ['started/booted']);
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => h.passes() === 1);
    // Seen 11 s after the pass's look (the timestamps are the caller's).
    h.controller.hostChanged('ns/a', performance.now() + 11_000, 'started/booted');
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2);
    await h.controller.close(1_000);
  });

  it('a pass that failed names nothing: its own change still wakes the key', async () => {
    const h = harness(async (n, pass) => {
      if (n !== 1) return;
      pass.sawHostAt(performance.now(), ['started/booted']);
      // Parked until something changes: no retry of its own comes to hide the difference.
      throw new PermanentError('the host refused');
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => h.passes() === 1);
    h.controller.hostChanged('ns/a', performance.now(), 'started/booted');
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2);
    await h.controller.close(1_000);
  });

  it('its own finalizer patch, whose event comes in before the answer, does not run it again', async () => {
    const h = harness(async (n, pass, api) => {
      if (n !== 1) return;
      const current = api.informer.cache.get('ns/a')!;
      const patched = api.write(current, {
        metadata: { ...current.metadata, finalizers: ['test.dev/cleanup'] },
      });
      api.deliver(patched); // the watch is quicker than the answer
      pass.wrote(current.metadata.resourceVersion, patched.metadata.resourceVersion);
    });
    h.api.deliver(thing());
    await h.controller.startProcessing();
    await settle(() => h.passes() === 1);
    await settle();
    expect(h.passes()).toBe(1);
    // Someone else's label is a change like any other.
    const current = h.api.informer.cache.get('ns/a')!;
    h.api.deliver(h.api.write(current, { metadata: { ...current.metadata, labels: { a: 'b' } } }));
    await settle(() => h.passes() === 2);
    expect(h.passes()).toBe(2);
    await h.controller.close(1_000);
  });
});
