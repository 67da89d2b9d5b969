// The controller loop, finalizers, status writes, events, selectors, indexes and the health
// endpoints, against a real kube-apiserver. Each test works in its own namespace.
import { describe, expect, it } from 'vitest';
import { useControlPlane } from '../../harness/control-plane.js';
import {
  done,
  PermanentError,
  requeueAfter,
  type Reconcile,
} from '../../../src/runtime/controller.js';
import { FinalizerConflict } from '../../../src/runtime/finalizer.js';
import { reconcileWithFinalizer } from '../../harness/finalizer.js';
import { isConflict, type KubeClient } from '../../../src/runtime/kube-client.js';
import type { KubeObject } from '../../../src/runtime/resource.js';
import { referenceTo } from '../../../src/runtime/resource.js';
import { createLogger } from '../../../src/runtime/log.js';
import { startRuntime, type Runtime, type RuntimeOptions } from '../../../src/runtime/runtime.js';
import { nodeFieldManager } from '../../../src/runtime/status-writer.js';
import {
  createWidget,
  crd,
  gadgets,
  GROUP,
  installTestCRDs,
  metricSum,
  patchWidget,
  sleepMs,
  testClient,
  testLogger,
  waitFor,
  widgets,
  type Widget,
} from './fixtures.js';

// Long enough that updates arrive faster than one key's reconciles even on a loaded machine:
// at 50 ms a CI run whose 1,000 updates took 28 s reconciled 450 times, past the bound below,
// though every reconcile ran back to back as it should.
const RECONCILE_MS = 100;

describe('controller runtime (real kube-apiserver)', () => {
  const cp = useControlPlane({ installCRDs: false });
  let crdsInstalled: Promise<void> | undefined;

  async function setUp(
    namespace: string,
    extra: Partial<RuntimeOptions> = {},
  ): Promise<{ rt: Runtime; client: KubeClient }> {
    crdsInstalled ??= installTestCRDs(cp());
    await crdsInstalled;
    const client = testClient(cp());
    await client.request({
      method: 'POST',
      path: '/api/v1/namespaces',
      body: { metadata: { name: namespace } },
    });
    const rt = await startRuntime({
      kubeConfig: cp().kubeConfig,
      log: testLogger({ test: namespace }),
      lease: false,
      health: false,
      events: { reportingController: `${GROUP}/test`, reportingInstance: namespace },
      ...extra,
    });
    return { rt, client };
  }

  it('1,000 rapid updates to one object: reconciles coalesce far below 1,000 and never overlap for that key, while other keys run in parallel', async () => {
    const ns = 'coalesce';
    const { rt, client } = await setUp(ns);
    try {
      await createWidget(client, 'hot', { value: 0 }, ns);
      for (let i = 0; i < 4; i++) await createWidget(client, `cold-${i}`, { value: 0 }, ns);
      const informer = rt.informer<Widget>(widgets, { namespace: ns });
      const inFlight = new Map<string, number>();
      let maxPerKey = 0;
      let running = 0;
      let maxRunning = 0;
      let hotReconciles = 0;
      let lastHotValue = -1;
      rt.controller({
        name: 'coalesce',
        for: informer,
        concurrency: 4,
        reconcile: async (key) => {
          const n = (inFlight.get(key) ?? 0) + 1;
          inFlight.set(key, n);
          maxPerKey = Math.max(maxPerKey, n);
          maxRunning = Math.max(maxRunning, ++running);
          try {
            const value = informer.cache.get(key)?.spec.value ?? -1;
            // A reconcile with a few API and libvirt calls takes tens of ms; events pile up meanwhile.
            await sleepMs(RECONCILE_MS);
            if (key === `${ns}/hot`) {
              hotReconciles++;
              lastHotValue = value;
            }
            return done();
          } finally {
            inFlight.set(key, inFlight.get(key)! - 1);
            running--;
          }
        },
      });
      rt.start();
      await waitFor('the first reconcile of hot', () => hotReconciles > 0);
      const startCount = hotReconciles;

      const updatesStarted = Date.now();
      const lanes = 8;
      const perLane = 999 / lanes;
      await Promise.all(
        Array.from({ length: lanes }, async (_, lane) => {
          for (let i = 0; i < perLane; i++) {
            await patchWidget(client, 'hot', { value: lane * 1000 + i + 1 }, ns);
            if (i % 50 === 0) await patchWidget(client, `cold-${lane % 4}`, { value: i }, ns);
          }
        }),
      );
      await patchWidget(client, 'hot', { value: 1_000_000 }, ns);
      const updateWindowMs = Date.now() - updatesStarted;
      await waitFor('hot reconciled at its final value', () => lastHotValue === 1_000_000, 30_000);
      await sleepMs(200);
      const reconciles = hotReconciles - startCount;
      console.log(
        `1,000 updates to one object in ${updateWindowMs} ms -> ${reconciles} reconciles of ${RECONCILE_MS} ms; max in flight per key ${maxPerKey}, across keys ${maxRunning}`,
      );
      expect(maxPerKey).toBe(1);
      expect(reconciles).toBeGreaterThan(0);
      // One key is reconciled at most back to back: never more often than the window allows,
      // however many events arrived, plus the one queued behind the last event.
      expect(reconciles).toBeLessThanOrEqual(Math.ceil(updateWindowMs / RECONCILE_MS) + 2);
      // Far below one per update, however slow the machine made the updates.
      expect(reconciles).toBeLessThan(500);
      expect(maxRunning).toBeGreaterThan(1);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('a failing key backs off exponentially while other keys are reconciled at once; fixing it is picked up without waiting out the backoff', async () => {
    const ns = 'backoff';
    const lines: Record<string, unknown>[] = [];
    const { rt, client } = await setUp(ns, {
      log: createLogger({
        level: 'info',
        destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
      }),
    });
    try {
      await createWidget(client, 'broken', { fail: true }, ns);
      const informer = rt.informer<Widget>(widgets, { namespace: ns });
      const attempts: number[] = [];
      const healthyLatency: number[] = [];
      const changedAt = new Map<string, number>();
      rt.controller({
        name: 'backoff',
        for: informer,
        concurrency: 2,
        reconcile: async (key) => {
          const w = informer.cache.get(key);
          if (key === `${ns}/broken` && w?.spec.fail) {
            attempts.push(Date.now());
            throw new Error('the host refused (on purpose)');
          }
          const at = changedAt.get(key);
          if (at !== undefined && w?.spec.value === 1) {
            healthyLatency.push(Date.now() - at);
            changedAt.delete(key);
          }
          return done();
        },
      });
      rt.start();
      await waitFor('the first failure', () => attempts.length > 0);
      for (let i = 0; i < 10; i++) {
        await sleepMs(150);
        changedAt.set(`${ns}/ok-${i}`, Date.now());
        await createWidget(client, `ok-${i}`, { value: 1 }, ns);
      }
      await sleepMs(2_600 - (Date.now() - attempts[0]!));
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
      console.log(
        `failing key: ${attempts.length} attempts in 2.6 s, gaps ${gaps.join(', ')} ms; healthy keys reconciled after ${healthyLatency.join(', ')} ms`,
      );
      // 5, 10, 20, ... ms: about 10 attempts in 2.6 s, not hundreds.
      expect(attempts.length).toBeGreaterThanOrEqual(7);
      expect(attempts.length).toBeLessThanOrEqual(12);
      // Each retry waits its delay (DEFAULT_KEY_BACKOFF: 5 ms doubling; Date.now() may read a
      // millisecond short). Compared with the nominal delay, not with the previous gap, so
      // that one late timer on a busy host is no failure.
      for (let i = 4; i < gaps.length; i++)
        expect(gaps[i]!).toBeGreaterThanOrEqual(5 * 2 ** i * 0.95);
      expect(healthyLatency).toHaveLength(10);
      expect(Math.max(...healthyLatency)).toBeLessThan(2_000);
      // Structured logs: each failure is one JSON line naming the controller and the object key.
      const failures = lines.filter((l) => l.msg === 'reconcile failed; retrying');
      expect(failures.length).toBe(attempts.length);
      expect(failures[0]).toMatchObject({
        level: 'error',
        controller: 'backoff',
        key: `${ns}/broken`,
        error: { type: 'Error', message: 'the host refused (on purpose)' },
      });
      expect(failures.map((l) => l.retries)).toEqual(failures.map((_, i) => i));

      const fixedAt = Date.now();
      changedAt.set(`${ns}/broken`, fixedAt);
      await patchWidget(client, 'broken', { fail: false, value: 1 }, ns);
      await waitFor(
        'the fixed key to be reconciled',
        () => !changedAt.has(`${ns}/broken`),
        5_000,
        10,
      );
      // The next backoff step would have been more than 2.5 s away.
      expect(Date.now() - fixedAt).toBeLessThan(2_000);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('PermanentError parks a key (no retries, no resync) until its spec changes; requeueAfter brings a key back on time', async () => {
    const ns = 'permanent';
    const { rt, client } = await setUp(ns);
    try {
      await createWidget(client, 'bad', { permanent: true }, ns);
      const ticker = await createWidget(client, 'ticker', { value: 0 }, ns);
      await createWidget(client, 'plain', { value: 0 }, ns);
      const informer = rt.informer<Widget>(widgets, { namespace: ns });
      const status = rt.statusWriter({ resource: widgets, fieldManager: 'permanent-test' });
      const count = new Map<string, number>();
      const reconcile: Reconcile = async (key) => {
        count.set(key, (count.get(key) ?? 0) + 1);
        const w = informer.cache.get(key);
        if (!w) return done();
        if (key.endsWith('/ticker')) return done();
        const ok = !w.spec.permanent;
        await status.apply(w, {
          observedGeneration: w.metadata.generation,
          conditions: [
            {
              type: 'Ready',
              status: ok ? 'True' : 'False',
              reason: ok ? 'Reconciled' : 'BadInput',
              message: ok ? '' : 'spec.permanent is set',
            },
          ],
        });
        if (!ok) throw new PermanentError('spec.permanent is set; only a spec change can help');
        return done();
      };
      rt.controller({ name: 'permanent', for: informer, reconcile, resyncMs: 300 });
      // requeueAfter, in a controller without resync so that only the requeue brings it back.
      const tickerInformer = rt.informer<Widget>(widgets, {
        namespace: ns,
        fieldSelector: 'metadata.name=ticker',
      });
      const ticks: number[] = [];
      rt.controller({
        name: 'ticker',
        for: tickerInformer,
        resyncMs: 0,
        reconcile: async () => {
          ticks.push(Date.now());
          return requeueAfter(200);
        },
      });
      expect(ticker.metadata.name).toBe('ticker');
      rt.start();
      await waitFor('bad to be reconciled once', () => count.get(`${ns}/bad`) === 1);
      const plainStart = count.get(`${ns}/plain`) ?? 0;
      await sleepMs(1_500);
      // The status write of the failed pass and five resyncs did not wake the parked key.
      expect(count.get(`${ns}/bad`)).toBe(1);
      expect((count.get(`${ns}/plain`) ?? 0) - plainStart).toBeGreaterThanOrEqual(3);
      const tickGaps = ticks.slice(1).map((t, i) => t - ticks[i]!);
      expect(tickGaps.length).toBeGreaterThanOrEqual(5);
      for (const gap of tickGaps) {
        expect(gap).toBeGreaterThanOrEqual(195);
        expect(gap).toBeLessThan(400);
      }
      const failed = await client.request<Widget>({
        method: 'GET',
        path: `/apis/${GROUP}/v1/namespaces/${ns}/widgets/bad`,
      });
      expect(failed.status?.conditions).toMatchObject([
        { type: 'Ready', status: 'False', reason: 'BadInput' },
      ]);

      await patchWidget(client, 'bad', { permanent: false }, ns);
      await waitFor(
        'bad to be reconciled after its spec changed',
        () => (count.get(`${ns}/bad`) ?? 0) >= 2,
      );
      await waitFor('bad to become Ready', async () => {
        const w = await client.request<Widget>({
          method: 'GET',
          path: `/apis/${GROUP}/v1/namespaces/${ns}/widgets/bad`,
        });
        return (w.status?.conditions?.[0] as { status?: string } | undefined)?.status === 'True';
      });
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('a status-only update does not cut short the wait a pass chose, but wakes a key whose pass returned done', async () => {
    const ns = 'status-only';
    const { rt, client } = await setUp(ns);
    try {
      await createWidget(client, 'failing', { value: 0 }, ns);
      await createWidget(client, 'settled', { value: 0 }, ns);
      const informer = rt.informer<Widget>(widgets, { namespace: ns });
      const status = rt.statusWriter({ resource: widgets, fieldManager: 'status-only-test' });
      const other = rt.statusWriter({ resource: widgets, fieldManager: 'someone-else' });
      const passes = new Map<string, number>();
      rt.controller({
        name: 'status-only',
        for: informer,
        resyncMs: 0,
        reconcile: async (key) => {
          const n = (passes.get(key) ?? 0) + 1;
          passes.set(key, n);
          const w = informer.cache.get(key);
          if (!w) return done();
          if (key.endsWith('/settled')) return done();
          // A failure whose message differs every pass (as QEMU's timestamps made it), so
          // every pass writes status, and a backoff of 1 s.
          await status.apply(w, {
            conditions: [
              { type: 'Ready', status: 'False', reason: 'StartFailed', message: `try ${n}` },
            ],
          });
          return requeueAfter(1_000);
        },
      });
      rt.start();
      await waitFor('both keys reconciled', () => passes.size === 2);
      const start = passes.get(`${ns}/failing`)!;
      await sleepMs(3_500);
      // One pass per second: its own status writes did not wake it in between (before, each
      // did, and it ran as fast as the API server answered).
      const made = passes.get(`${ns}/failing`)! - start;
      expect(made).toBeGreaterThanOrEqual(2);
      expect(made).toBeLessThanOrEqual(4);

      const settledBefore = passes.get(`${ns}/settled`)!;
      const settled = informer.cache.get(`${ns}/settled`)!;
      await other.apply(settled, { observedValue: 7 });
      await waitFor(
        'the settled key woken by a status change it did not make',
        () => passes.get(`${ns}/settled`)! > settledBefore,
        5_000,
      );
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('finalizer helper: adds the finalizer before apply, runs cleanup on delete (retrying a failed cleanup), then removes it; a stale copy gets FinalizerConflict', async () => {
    const ns = 'finalizers';
    const { rt, client } = await setUp(ns);
    const finalizer = `${GROUP}/cleanup`;
    try {
      const informer = rt.informer<Widget>(widgets, { namespace: ns });
      const applied: string[] = [];
      const cleanups: string[] = [];
      rt.controller({
        name: 'finalizers',
        for: informer,
        reconcile: async (key) => {
          const w = informer.cache.get(key);
          if (!w) return done();
          return reconcileWithFinalizer(rt.client, widgets, finalizer, w, async (event) => {
            if (event.kind === 'apply') {
              expect(event.obj.metadata.finalizers).toContain(finalizer);
              applied.push(key);
              return done();
            }
            cleanups.push(key);
            if (key.endsWith('/flaky') && cleanups.filter((k) => k === key).length === 1) {
              throw new Error('cleanup failed the first time (on purpose)');
            }
            return done();
          });
        },
      });
      rt.start();
      await createWidget(client, 'a', { value: 1 }, ns);
      await createWidget(client, 'flaky', { value: 1 }, ns);
      const path = (n: string) => `/apis/${GROUP}/v1/namespaces/${ns}/widgets/${n}`;
      await waitFor(
        'both applied',
        () => applied.includes(`${ns}/a`) && applied.includes(`${ns}/flaky`),
      );
      const a = await client.request<Widget>({ method: 'GET', path: path('a') });
      expect(a.metadata.finalizers).toEqual([finalizer]);

      await client.request({ method: 'DELETE', path: path('a') });
      await client.request({ method: 'DELETE', path: path('flaky') });
      for (const n of ['a', 'flaky']) {
        await waitFor(`${n} to disappear`, async () => {
          try {
            await client.request({ method: 'GET', path: path(n) });
            return false;
          } catch (err) {
            return (err as { status?: number }).status === 404;
          }
        });
      }
      expect(cleanups.filter((k) => k === `${ns}/a`)).toHaveLength(1);
      expect(cleanups.filter((k) => k === `${ns}/flaky`)).toHaveLength(2);

      // Someone else adds a finalizer after we read the object: our add must fail, not duplicate.
      const created = await createWidget(client, 'raced', { value: 1 }, ns);
      await client.request({
        method: 'PATCH',
        path: path('raced'),
        body: { metadata: { finalizers: ['other.example.com/keep', finalizer] } },
        contentType: 'application/merge-patch+json',
      });
      await expect(
        reconcileWithFinalizer(client, widgets, finalizer, created as KubeObject, async () =>
          done(),
        ),
      ).rejects.toBeInstanceOf(FinalizerConflict);
      const raced = await client.request<Widget>({ method: 'GET', path: path('raced') });
      expect(raced.metadata.finalizers).toEqual(['other.example.com/keep', finalizer]);
      await expect(
        reconcileWithFinalizer(client, widgets, 'no-slash', created, async () => done()),
      ).rejects.toThrow(/qualified name/);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('status writer: per-node field managers keep each agent to its own status.nodes[] entry; unchanged status is not written; lastTransitionTime moves only with the condition status', async () => {
    const { rt, client } = await setUp('status');
    try {
      const g = await client.request<KubeObject>({
        method: 'POST',
        path: `/apis/${GROUP}/v1/gadgets`,
        body: {
          apiVersion: `${GROUP}/v1`,
          kind: 'Gadget',
          metadata: { name: 'g1' },
          spec: { size: 1 },
        },
      });
      let clock = Date.parse('2030-01-01T00:00:00Z');
      const now = () => new Date(clock);
      const listMapKeys = { nodes: ['nodeName'], 'nodes.conditions': ['type'] };
      const writerA = rt.statusWriter({
        resource: gadgets,
        fieldManager: nodeFieldManager('runtime-test', 'node-a'),
        listMapKeys,
        now,
      });
      const writerB = rt.statusWriter({
        resource: gadgets,
        fieldManager: nodeFieldManager('runtime-test', 'node-b'),
        listMapKeys,
        now,
      });
      const entry = (node: string, ready: string, extra: Record<string, unknown> = {}) => ({
        nodes: [
          {
            nodeName: node,
            ...extra,
            conditions: [
              { type: 'Ready', status: ready, reason: 'Test', message: String(extra.note ?? '') },
            ],
          },
        ],
      });
      type Gadget = KubeObject & {
        status: {
          nodes: {
            nodeName: string;
            size?: number;
            conditions: { lastTransitionTime: string; status: string }[];
          }[];
        };
      };
      const nodeOf = (o: KubeObject | undefined, n: string) =>
        (o as Gadget).status.nodes.find((x) => x.nodeName === n);

      const a1 = (await writerA.apply(g, entry('node-a', 'True', { size: 1 }))) as Gadget;
      expect(a1).toBeDefined();
      clock += 60_000;
      // B writes from the object as it was before A's write: SSA still keeps A's entry.
      const b1 = (await writerB.apply(g, entry('node-b', 'True', { size: 2 }))) as Gadget;
      expect(b1.status.nodes.map((n) => n.nodeName).sort()).toEqual(['node-a', 'node-b']);
      const managers = b1.metadata.managedFields?.map((m) => m.manager);
      expect(managers).toEqual(
        expect.arrayContaining(['runtime-test/node-a', 'runtime-test/node-b']),
      );

      // Same status again: no request at all, so no new resourceVersion.
      expect(await writerA.apply(b1, entry('node-a', 'True', { size: 1 }))).toBeUndefined();
      const unchanged = await client.request<KubeObject>({
        method: 'GET',
        path: `/apis/${GROUP}/v1/gadgets/g1`,
      });
      expect(unchanged.metadata.resourceVersion).toBe(b1.metadata.resourceVersion);

      clock += 60_000;
      const a2 = await writerA.apply(b1, entry('node-a', 'True', { size: 1, note: 'new message' }));
      expect(nodeOf(a2, 'node-a')?.conditions[0]?.lastTransitionTime).toBe(
        nodeOf(a1, 'node-a')?.conditions[0]?.lastTransitionTime,
      );
      clock += 60_000;
      const a3 = await writerA.apply(
        a2!,
        entry('node-a', 'False', { size: 1, note: 'new message' }),
      );
      expect(nodeOf(a3, 'node-a')?.conditions[0]?.lastTransitionTime).toBe('2030-01-01T00:03:00Z');

      // Dropping a field we own (size) is a change: the apply removes it from our entry only.
      const a4 = await writerA.apply(a3!, entry('node-a', 'False', { note: 'new message' }));
      expect(a4).toBeDefined();
      expect(nodeOf(a4, 'node-a')?.size).toBeUndefined();
      expect(nodeOf(a4, 'node-b')?.size).toBe(2);
      expect(
        await writerA.apply(a4!, entry('node-a', 'False', { note: 'new message' })),
      ).toBeUndefined();
      expect(
        metricSum(await rt.metrics.registry.metrics(), 'runtime_status_writes_total', {
          result: 'unchanged',
        }),
      ).toBe(2);

      // With optimistic concurrency, a status computed from a stale copy is refused (409), not
      // written over newer status; from the current copy it goes through.
      const strict = rt.statusWriter({
        resource: gadgets,
        fieldManager: nodeFieldManager('runtime-test', 'node-c'),
        listMapKeys,
        now,
        optimisticConcurrency: true,
      });
      const stale = strict.apply(g, entry('node-c', 'True', { size: 3 }));
      await expect(stale).rejects.toSatisfy(isConflict);
      const fresh = await strict.apply(a4!, entry('node-c', 'True', { size: 3 }));
      expect(nodeOf(fresh, 'node-c')?.size).toBe(3);

      // A pass whose cache has not seen that write yet (still a4) computing the same status
      // sends nothing (no certain 409); a different status from it is refused with the same
      // Conflict the server would give, without being sent.
      const unchangedWrites = () =>
        rt.metrics.registry
          .metrics()
          .then((m) => metricSum(m, 'runtime_status_writes_total', { result: 'unchanged' }));
      const before = await unchangedWrites();
      expect(await strict.apply(a4!, entry('node-c', 'True', { size: 3 }))).toBeUndefined();
      expect(await unchangedWrites()).toBe(before + 1);
      const requests = () =>
        cp()
          .apiServerMetrics()
          .then((m) =>
            m
              .split('\n')
              .filter((l) => l.startsWith('apiserver_request_total{') && l.includes('"gadgets"'))
              .join('\n'),
          );
      const sentBefore = await requests();
      expect(sentBefore).toContain('verb="APPLY"');
      await expect(strict.apply(a4!, entry('node-c', 'True', { size: 4 }))).rejects.toSatisfy(
        isConflict,
      );
      expect(await requests()).toBe(sentBefore);
      expect(
        metricSum(await rt.metrics.registry.metrics(), 'runtime_status_writes_total', {
          result: 'stale',
        }),
      ).toBe(1);
      // The copy with our write in it goes through.
      const newer = await strict.apply(fresh!, entry('node-c', 'True', { size: 4 }));
      expect(nodeOf(newer, 'node-c')?.size).toBe(4);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('events: repeats of one event become one Event with a series count; a different note is a new Event; the rate limit drops a burst', async () => {
    const ns = 'events';
    const { rt, client } = await setUp(ns, {
      events: {
        reportingController: `${GROUP}/test`,
        reportingInstance: 'events-test-node',
        seriesFlushMs: 300,
      },
    });
    try {
      const w = await createWidget(client, 'noisy', { value: 1 }, ns);
      const ref = referenceTo(widgets, w);
      for (let i = 0; i < 30; i++) {
        await rt.events.publish(ref, {
          type: 'Warning',
          reason: 'HostRefused',
          action: 'Reconcile',
          note: 'the host said no',
        });
      }
      await rt.events.publish(ref, {
        type: 'Normal',
        reason: 'Reconciled',
        action: 'Reconcile',
        note: 'all good',
      });
      await rt.events.flush();
      type Ev = {
        reason: string;
        note: string;
        series?: { count: number };
        reportingController: string;
        reportingInstance: string;
        regarding: { name: string; uid: string };
      };
      const list = await client.request<{ items: Ev[] }>({
        method: 'GET',
        path: `/apis/events.k8s.io/v1/namespaces/${ns}/events`,
      });
      expect(list.items).toHaveLength(2);
      const refused = list.items.find((e) => e.reason === 'HostRefused')!;
      expect(refused.series?.count).toBe(30);
      expect(refused).toMatchObject({
        reportingController: `${GROUP}/test`,
        reportingInstance: 'events-test-node',
        regarding: { name: 'noisy', uid: w.metadata.uid },
      });
      expect(list.items.find((e) => e.reason === 'Reconciled')?.series).toBeUndefined();
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }

    const limited = await startRuntime({
      kubeConfig: cp().kubeConfig,
      log: testLogger(),
      lease: false,
      health: false,
      events: {
        reportingController: `${GROUP}/test`,
        reportingInstance: 'limited',
        rateLimit: { perSecond: 0.001, burst: 3 },
      },
    });
    try {
      const w = await createWidget(client, 'burst', { value: 1 }, ns);
      for (let i = 0; i < 10; i++) {
        await limited.events.publish(referenceTo(widgets, w), {
          type: 'Warning',
          reason: 'Distinct',
          action: 'Reconcile',
          note: `attempt ${i}`,
        });
      }
      // The bucket is per object: another object's first Event still gets through.
      const other = await createWidget(client, 'burst-other', { value: 1 }, ns);
      await limited.events.publish(referenceTo(widgets, other), {
        type: 'Warning',
        reason: 'Distinct',
        action: 'Reconcile',
        note: 'attempt 0',
      });
      const text = await limited.metrics.registry.metrics();
      expect(metricSum(text, 'runtime_events_total', { result: 'created' })).toBe(4);
      expect(metricSum(text, 'runtime_events_total', { result: 'dropped' })).toBe(7);
    } finally {
      await limited.stop();
    }
  });

  it('field and label selectors limit what is cached; an index maps changes of a referenced object to the keys that use it', async () => {
    const ns = 'selectors';
    const { rt, client } = await setUp(ns);
    try {
      await createWidget(client, 'on-a', { nodeName: 'node-a', uses: ['g-shared'] }, ns);
      await createWidget(client, 'also-on-a', { nodeName: 'node-a', uses: [] }, ns);
      await createWidget(client, 'on-b', { nodeName: 'node-b', uses: ['g-shared'] }, ns);
      await client.request({
        method: 'PATCH',
        path: `/apis/${GROUP}/v1/namespaces/${ns}/widgets/on-b`,
        body: { metadata: { labels: { tier: 'gold' } } },
        contentType: 'application/merge-patch+json',
      });
      const mine = rt.informer<Widget>(widgets, {
        namespace: ns,
        fieldSelector: 'spec.nodeName=node-a',
      });
      const gold = rt.informer<Widget>(widgets, { namespace: ns, labelSelector: 'tier=gold' });
      expect(rt.informer(widgets, { namespace: ns, fieldSelector: 'spec.nodeName=node-a' })).toBe(
        mine,
      );
      mine.cache.addIndex('byGadget', (w) => w.spec.uses ?? []);
      const gadgetInformer = rt.informer(gadgets, { fieldSelector: 'metadata.name=g-shared' });
      const reconciled: string[] = [];
      const controller = rt.controller({
        name: 'selectors',
        for: mine,
        reconcile: async (key) => {
          reconciled.push(key);
          return done();
        },
      });
      controller.watch(gadgetInformer, (g) => mine.cache.keysByIndex('byGadget', g.metadata.name!));
      rt.start();
      await Promise.all([mine.synced, gold.synced, gadgetInformer.synced]);
      expect(mine.cache.keys().sort()).toEqual([`${ns}/also-on-a`, `${ns}/on-a`]);
      expect(gold.cache.keys()).toEqual([`${ns}/on-b`]);
      await waitFor('the initial reconciles', () => reconciled.length >= 2);
      reconciled.length = 0;

      await client.request({
        method: 'POST',
        path: `/apis/${GROUP}/v1/gadgets`,
        body: {
          apiVersion: `${GROUP}/v1`,
          kind: 'Gadget',
          metadata: { name: 'g-shared' },
          spec: { size: 1 },
        },
      });
      await waitFor('the widget that uses the gadget to be reconciled', () =>
        reconciled.includes(`${ns}/on-a`),
      );
      await sleepMs(300);
      expect(reconciled).toEqual([`${ns}/on-a`]);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('a watch of a kind whose CRD is not installed yet keeps retrying (404 is an error like any other) and syncs once the CRD appears', async () => {
    const { rt, client } = await setUp('late-crd', {
      watch: { backoff: { initialMs: 100, maxMs: 400, jitter: 0.5 } },
    });
    try {
      const doodads = {
        group: GROUP,
        version: 'v1',
        plural: 'doodads',
        kind: 'Doodad',
        namespaced: true,
      };
      const informer = rt.informer(doodads, { namespace: 'late-crd' });
      const seen: string[] = [];
      rt.controller({
        name: 'doodads',
        for: informer,
        reconcile: async (key) => {
          seen.push(key);
          return done();
        },
      });
      rt.start();
      // Until the third failed watch (at about 0.1, 0.3 and 0.7 s), not a fixed 1.5 s.
      const failures = async () =>
        metricSum(await rt.metrics.registry.metrics(), 'runtime_watch_restarts_total', {
          resource: `doodads.${GROUP}`,
          reason: 'error',
        });
      await waitFor('three failed watches of doodads', async () => (await failures()) >= 3);
      expect(informer.hasSynced()).toBe(false);
      const ready = await rt.ready();
      expect(ready.ready).toBe(false);
      expect(ready.lines).toContain('[-]informers-synced failed: not synced yet: doodads');
      expect(await failures()).toBeGreaterThanOrEqual(3);

      await installTestCRDs(cp(), [
        crd('Doodad', 'doodads', 'Namespaced', { value: { type: 'integer' } }, {}),
      ]);
      await client.request({
        method: 'POST',
        path: `/apis/${GROUP}/v1/namespaces/late-crd/doodads`,
        body: {
          apiVersion: `${GROUP}/v1`,
          kind: 'Doodad',
          metadata: { name: 'd1' },
          spec: { value: 1 },
        },
      });
      await waitFor(
        'the late informer to sync and reconcile',
        () => seen.includes('late-crd/d1'),
        15_000,
      );
      expect((await rt.ready()).ready).toBe(true);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('a controller that reads another kind’s cache starts only once that informer has listed', async () => {
    const { rt, client } = await setUp('reads-from', {
      watch: { backoff: { initialMs: 100, maxMs: 400, jitter: 0.5 } },
    });
    try {
      // The other kind's CRD is installed late, so its informer cannot list for a while.
      const gizmos = {
        group: GROUP,
        version: 'v1',
        plural: 'gizmos',
        kind: 'Gizmo',
        namespaced: true,
      };
      const other = rt.informer(gizmos, { namespace: 'reads-from' });
      const own = rt.informer(widgets, { namespace: 'reads-from' });
      const passes: boolean[] = [];
      rt.controller({
        name: 'reads-from',
        for: own,
        readsFrom: [other],
        reconcile: async () => {
          passes.push(other.hasSynced());
          return done();
        },
      });
      await createWidget(client, 'w1', { value: 1 }, 'reads-from');
      rt.start();
      await waitFor('the widget informer to list', () => own.hasSynced(), 15_000);
      // The gizmo informer failing again after that (its watch backs off 100 to 400 ms): a
      // controller that did not wait for it would have run by then. Not a fixed 1 s.
      const gizmoFailures = async () =>
        metricSum(await rt.metrics.registry.metrics(), 'runtime_watch_restarts_total', {
          resource: `gizmos.${GROUP}`,
          reason: 'error',
        });
      const failedBefore = await gizmoFailures();
      await waitFor(
        'two more failed watches of gizmos',
        async () => (await gizmoFailures()) >= failedBefore + 2,
      );
      expect(passes).toEqual([]);
      await installTestCRDs(cp(), [
        crd('Gizmo', 'gizmos', 'Namespaced', { value: { type: 'integer' } }, {}),
      ]);
      await waitFor('the widget reconciled', () => passes.length > 0, 15_000);
      expect(passes.every(Boolean)).toBe(true);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });

  it('stop() waits for a running reconcile up to the drain bound, then aborts its signal and returns', async () => {
    const ns = 'drain';
    const { rt, client } = await setUp(ns);
    await createWidget(client, 'stuck', { value: 1 }, ns);
    const informer = rt.informer<Widget>(widgets, { namespace: ns });
    let started = false;
    let abortedAt: number | undefined;
    rt.controller({
      name: 'drain',
      for: informer,
      reconcile: async (_key, ctx) => {
        started = true;
        ctx.signal.addEventListener('abort', () => (abortedAt = Date.now()));
        // Stuck (a libvirt call that hangs), and deaf to the signal.
        await sleepMs(5_000);
        return done();
      },
    });
    rt.start();
    await waitFor('the reconcile to start', () => started);
    const stopAt = Date.now();
    await rt.stop({ drainMs: 300 });
    const tookMs = Date.now() - stopAt;
    expect(abortedAt! - stopAt).toBeGreaterThanOrEqual(290);
    expect(tookMs).toBeLessThan(2_000);
  });

  it('/healthz, /readyz and /metrics: ready only with synced caches, the lease held and every registered check passing', async () => {
    const { rt } = await setUp('health', {
      health: { host: '127.0.0.1', port: 0 },
      lease: {
        namespace: 'health',
        name: 'runtime-health-test',
        leaseDurationSeconds: 3,
        renewDeadlineMs: 2_000,
        retryPeriodMs: 500,
      },
    });
    try {
      const url = rt.health!.url;
      const get = async (p: string) => {
        const res = await fetch(url + p);
        return {
          status: res.status,
          body: await res.text(),
          type: res.headers.get('content-type'),
        };
      };
      expect(await get('/healthz')).toMatchObject({ status: 200, body: 'ok' });
      const informer = rt.informer<Widget>(widgets, { namespace: 'health' });
      rt.controller({ name: 'health', for: informer, reconcile: async () => done() });
      const before = await get('/readyz');
      expect(before.status).toBe(503);
      expect(before.body).toContain('[-]lease failed');

      rt.start();
      await waitFor('/readyz to pass', async () => (await get('/readyz')).status === 200);
      expect((await get('/readyz')).body).toBe('ok');
      expect((await get('/readyz?verbose')).body).toContain('[+]informers-synced ok\n[+]lease ok');

      let libvirtUp = false;
      rt.addReadinessCheck('libvirt', () => libvirtUp || 'not connected to qemu:///system');
      const notReady = await get('/readyz');
      expect(notReady.status).toBe(503);
      expect(notReady.body).toContain('[-]libvirt failed: not connected to qemu:///system');
      libvirtUp = true;
      expect((await get('/readyz')).status).toBe(200);

      rt.metrics.observeCall('libvirt', 'virDomainCreate', 0.004);
      await rt.metrics.timeCall('libvirt', 'virConnectOpen', async () => sleepMs(2));
      const metrics = await get('/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.type).toContain('text/plain');
      expect(metrics.body).toMatch(
        /libvirt_call_duration_seconds_bucket\{le="0.005",method="virDomainCreate"\} 1/,
      );
      expect(metrics.body).toContain(
        'libvirt_call_duration_seconds_count{method="virConnectOpen"} 1',
      );
      for (const name of [
        'controller_runtime_reconcile_total',
        'controller_runtime_reconcile_time_seconds',
        'workqueue_depth',
        'workqueue_queue_duration_seconds',
        'runtime_watch_relists_total{resource="widgets.test.runtime.virt.dev",reason="initial"} 1',
        'runtime_lease_held{lease="health/runtime-health-test"} 1',
        'process_cpu_seconds_total',
      ]) {
        expect(metrics.body).toContain(name);
      }
      expect((await get('/nope')).status).toBe(404);
    } finally {
      await rt.stop({ drainMs: 2_000 });
    }
  });
});
