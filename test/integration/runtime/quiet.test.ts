// After convergence, with nothing changing, a controller built on the runtime (finalizer,
// status writes, per-node status, events, frequent resyncs) makes no write requests at all:
// the Lease renewals are the only writes. Counted from kube-apiserver's own
// apiserver_request_total. The window is RUNTIME_QUIET_WINDOW_SECONDS (default 60, the
// acceptance's minute).
import { describe, expect, it } from 'vitest';
import { useControlPlane } from '../../harness/control-plane.js';
import { done } from '../../../src/runtime/controller.js';
import { reconcileWithFinalizer } from '../../harness/finalizer.js';
import type { KubeObject } from '../../../src/runtime/resource.js';
import { referenceTo } from '../../../src/runtime/resource.js';
import { startRuntime } from '../../../src/runtime/runtime.js';
import { nodeFieldManager } from '../../../src/runtime/status-writer.js';
import {
  createWidget,
  gadgets,
  GROUP,
  installTestCRDs,
  listWidgets,
  metricSum,
  sleepMs,
  testClient,
  testLogger,
  waitFor,
  widgets,
  type Widget,
} from './fixtures.js';

const WINDOW_SECONDS = Number(process.env.RUNTIME_QUIET_WINDOW_SECONDS ?? '60');
const NS = 'quiet';
const WRITE_VERBS = /^(POST|PUT|PATCH|APPLY|DELETE|DELETECOLLECTION)$/;

describe('steady state (real kube-apiserver)', () => {
  const cp = useControlPlane({ installCRDs: false });

  it(
    `zero writes over ${WINDOW_SECONDS} s after convergence for the watched kinds and Events, with resyncs every 5 s; Lease renewals are the only writes`,
    async () => {
      if (!(WINDOW_SECONDS > 0))
        throw new Error(
          `RUNTIME_QUIET_WINDOW_SECONDS must be a positive number, got '${process.env.RUNTIME_QUIET_WINDOW_SECONDS}'`,
        );
      await installTestCRDs(cp());
      const client = testClient(cp());
      await client.request({
        method: 'POST',
        path: '/api/v1/namespaces',
        body: { metadata: { name: NS } },
      });
      for (let i = 0; i < 10; i++) await createWidget(client, `w-${i}`, { value: i }, NS);
      for (let i = 0; i < 3; i++) {
        await client.request({
          method: 'POST',
          path: `/apis/${GROUP}/v1/gadgets`,
          body: {
            apiVersion: `${GROUP}/v1`,
            kind: 'Gadget',
            metadata: { name: `quiet-g-${i}` },
            spec: { size: i },
          },
        });
      }

      const rt = await startRuntime({
        kubeConfig: cp().kubeConfig,
        log: testLogger({ test: 'quiet' }),
        lease: { namespace: NS, name: 'runtime-quiet-node-a' },
        health: false,
        events: { reportingController: `${GROUP}/quiet`, reportingInstance: 'node-a' },
      });
      try {
        const widgetInformer = rt.informer<Widget>(widgets, { namespace: NS });
        const gadgetInformer = rt.informer<KubeObject & { spec: { size?: number } }>(gadgets);
        const widgetStatus = rt.statusWriter({ resource: widgets, fieldManager: 'quiet-test' });
        const gadgetStatus = rt.statusWriter({
          resource: gadgets,
          fieldManager: nodeFieldManager('quiet-test', 'node-a'),
          listMapKeys: { nodes: ['nodeName'], 'nodes.conditions': ['type'] },
        });
        rt.controller({
          name: 'quiet-widgets',
          for: widgetInformer,
          resyncMs: 5_000,
          reconcile: async (key) => {
            const w = widgetInformer.cache.get(key);
            if (!w) return done();
            return reconcileWithFinalizer(
              rt.client,
              widgets,
              `${GROUP}/quiet`,
              w,
              async (event) => {
                if (event.kind === 'cleanup') return done();
                const written = await widgetStatus.apply(w, {
                  observedValue: w.spec.value ?? 0,
                  observedGeneration: w.metadata.generation,
                  conditions: [
                    {
                      type: 'Ready',
                      status: 'True',
                      reason: 'Reconciled',
                      message: `value ${w.spec.value}`,
                    },
                  ],
                });
                // An event says what was done; a pass that did nothing says nothing.
                if (written) {
                  await rt.events.publish(referenceTo(widgets, w), {
                    type: 'Normal',
                    reason: 'StatusUpdated',
                    action: 'Reconcile',
                    note: `value ${w.spec.value}`,
                  });
                }
                return done();
              },
            );
          },
        });
        rt.controller({
          name: 'quiet-gadgets',
          for: gadgetInformer,
          resyncMs: 5_000,
          reconcile: async (key) => {
            const g = gadgetInformer.cache.get(key);
            if (!g || !g.metadata.name?.startsWith('quiet-')) return done();
            const size = g.spec.size ?? 0;
            await gadgetStatus.apply(g, {
              nodes: [
                {
                  nodeName: 'node-a',
                  size,
                  conditions: [{ type: 'Ready', status: 'True', reason: 'Present', message: '' }],
                },
              ],
            });
            return done();
          },
        });
        rt.start();

        await waitFor(
          'every widget to carry the finalizer and a current status',
          async () =>
            (await listWidgets(client, NS)).every(
              (w) =>
                w.metadata.finalizers?.includes(`${GROUP}/quiet`) &&
                w.status?.observedValue === w.spec.value,
            ),
          60_000,
          200,
        );
        await waitFor('every gadget to carry node-a status', async () => {
          const list = await client.request<{
            items: (KubeObject & { status?: { nodes?: unknown[] } })[];
          }>({ method: 'GET', path: `/apis/${GROUP}/v1/gadgets` });
          return list.items
            .filter((g) => g.metadata.name?.startsWith('quiet-'))
            .every((g) => g.status?.nodes?.length === 1);
        });
        // Let the echoes of the last writes come back through the watch and be reconciled.
        await sleepMs(3_000);

        const writes = (text: string, resource: string) =>
          metricSum(text, 'apiserver_request_total', { verb: WRITE_VERBS, resource });
        const reconciles = async () =>
          metricSum(await rt.metrics.registry.metrics(), 'controller_runtime_reconcile_total');
        const leaseRenewTime = async () =>
          (
            await client.request<{ spec: { renewTime: string } }>({
              method: 'GET',
              path: `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/runtime-quiet-node-a`,
            })
          ).spec.renewTime;

        const before = await cp().apiServerMetrics();
        const reconcilesBefore = await reconciles();
        const renewBefore = await leaseRenewTime();
        await sleepMs(WINDOW_SECONDS * 1000);
        const after = await cp().apiServerMetrics();
        const reconcilesDuring = (await reconciles()) - reconcilesBefore;
        const renewAfter = await leaseRenewTime();

        const delta = Object.fromEntries(
          ['widgets', 'gadgets', 'events', 'leases'].map((r) => [
            r,
            writes(after, r) - writes(before, r),
          ]),
        );
        console.log(
          `quiet window ${WINDOW_SECONDS} s: writes by resource ${JSON.stringify(delta)}; reconciles during the window ${reconcilesDuring}`,
        );
        expect(delta.widgets).toBe(0);
        expect(delta.gadgets).toBe(0);
        expect(delta.events).toBe(0);
        // The controller was not idle: resyncs reconciled every object, and decided to write nothing.
        expect(reconcilesDuring).toBeGreaterThanOrEqual(13 * Math.floor(WINDOW_SECONDS / 6));
        expect(delta.leases).toBeGreaterThan(0);
        expect(Date.parse(renewAfter)).toBeGreaterThan(Date.parse(renewBefore));
      } finally {
        await rt.stop({ drainMs: 2_000 });
      }
    },
    WINDOW_SECONDS * 1000 + 120_000,
  );
});
