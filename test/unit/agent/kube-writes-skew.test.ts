// The status writers' part in the outdated-CRD bookkeeping (src/agent/kube-writes.ts with
// src/agent/crd-skew.ts): a refused write holds readiness back until this writer no longer
// needs to write, which includes a pass that finds nothing to write. The status writer is a
// stand-in (the unit tier); the real API server's refusal is exercised in
// test/integration/agent/outdated-crd.test.ts.
import { describe, expect, it } from 'vitest';
import { createCrdSkew } from '../../../src/agent/crd-skew.js';
import { kubeWrites } from '../../../src/agent/kube-writes.js';
import type { KubeClient } from '../../../src/runtime/kube-client.js';
import { KubeApiError } from '../../../src/runtime/kube-client.js';
import type { EventRecorder } from '../../../src/runtime/events.js';
import { createLogger } from '../../../src/runtime/log.js';

const refusal = new KubeApiError(
  500,
  'InternalError',
  'failed to create typed patch object (virt.dev/v1alpha1, Kind=Volume): .status.x: field not declared in schema',
  'PATCH',
  '/apis/virt.dev/v1alpha1/namespaces/d/volumes/v/status',
);

describe('kubeWrites with an outdated CRD', () => {
  it('is ready again when the refused writer finds nothing left to write', async () => {
    const log = createLogger({ level: 'silent' });
    const skew = createCrdSkew({ log, event: () => undefined });
    let answer: 'refuse' | 'unchanged' = 'refuse';
    const writes = kubeWrites({
      client: {} as KubeClient,
      events: { publish: () => Promise.resolve() } as unknown as EventRecorder,
      nodeName: 'n',
      log,
      crdSkew: skew,
      statusWriter: () => ({
        plan: () => undefined,
        apply: () => (answer === 'refuse' ? Promise.reject(refusal) : Promise.resolve(undefined)),
      }),
    });
    const vol = { metadata: { name: 'v', namespace: 'd', uid: 'u1' } };
    await expect(writes.applyStatus('Volume', vol, { phase: 'Ready' })).rejects.toThrow(
      /CustomResourceDefinition for Volume is older/,
    );
    expect(skew.readiness()).not.toBe(true);
    // The CRDs applied, and the status already says what this writer would write (another
    // writer put it there): no write is made, and none is needed.
    answer = 'unchanged';
    await expect(writes.applyStatus('Volume', vol, { phase: 'Ready' })).resolves.toBeUndefined();
    expect(skew.readiness()).toBe(true);
  });
});
