// Which failed status writes still owe the Events that follow them (after-write.ts): a write
// the API server may have applied tells them, one it refused does not, or each retry of a
// lasting refusal would send them again.
import { describe, expect, it } from 'vitest';
import { OutdatedCrdError } from '../../../../src/agent/crd-skew.js';
import { tellAfterWrite } from '../../../../src/controllers/shared/after-write.js';
import { KubeApiError } from '../../../../src/runtime/kube-client.js';

const PATH = '/apis/virt.dev/v1alpha1/volumes/v/status';
const schemaRefusal = () =>
  new KubeApiError(
    500,
    'InternalError',
    'failed to create typed patch object (virt.dev/v1alpha1, Kind=Volume): ' +
      '.status.usedBy: field not declared in schema',
    'PATCH',
    PATH,
  );

/** How many times `tell` ran for a write failing with `err`. */
async function toldFor(err: unknown): Promise<number> {
  let told = 0;
  await tellAfterWrite(
    () => Promise.reject(err),
    () => told++,
  ).catch(() => undefined);
  return told;
}

describe('tellAfterWrite', () => {
  it('tells after a write that may have been applied: no answer, a 5xx', async () => {
    expect(await toldFor(new Error('request timed out'))).toBe(1);
    expect(await toldFor(new KubeApiError(503, 'ServiceUnavailable', 'x', 'PATCH', PATH))).toBe(1);
  });

  it('does not tell after a refusal: a 4xx, or an apply the CRD schema cannot take', async () => {
    expect(await toldFor(new KubeApiError(409, 'Conflict', 'x', 'PATCH', PATH))).toBe(0);
    // Refused whole at every retry while the CRDs are older than the agent.
    expect(await toldFor(schemaRefusal())).toBe(0);
    const outdated = new OutdatedCrdError('Volume', ['.status.usedBy'], {
      cause: schemaRefusal(),
    });
    expect(await toldFor(outdated)).toBe(0);
  });
});
