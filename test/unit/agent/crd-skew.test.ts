// The outdated-CRD bookkeeping (src/agent/crd-skew.ts): which answers are that refusal, one log
// line per kind and fields, one Event per object, and readiness that recovers once the
// refused writes go through or lapse. The real API server's answer is exercised in
// test/integration/agent/outdated-crd.test.ts.
import { describe, expect, it } from 'vitest';
import { createCrdSkew, OutdatedCrdError } from '../../../src/agent/crd-skew.js';
import { createLogger } from '../../../src/runtime/log.js';
import {
  fieldsNotInSchema,
  isAlreadyReported,
  KubeApiError,
} from '../../../src/runtime/kube-client.js';

const PATH = '/apis/virt.dev/v1alpha1/storagepools/p/status';
const refusal = (detail: string) =>
  new KubeApiError(
    500,
    'InternalError',
    `failed to create typed patch object (virt.dev/v1alpha1, Kind=StoragePool): ${detail}`,
    'PATCH',
    PATH,
  );

describe('fieldsNotInSchema', () => {
  it('reads one field, several, and list entries without their keys', () => {
    expect(fieldsNotInSchema(refusal('.status.readyNodes: field not declared in schema'))).toEqual([
      '.status.readyNodes',
    ]);
    expect(
      fieldsNotInSchema(
        refusal(
          'errors:\n  .status.nodes[nodeName="a"].pressure: field not declared in schema\n  .status.readyNodes: field not declared in schema',
        ),
      ),
    ).toEqual(['.status.nodes[].pressure', '.status.readyNodes']);
  });
  it('is empty for other errors', () => {
    expect(
      fieldsNotInSchema(new KubeApiError(500, 'InternalError', 'etcd', 'PATCH', PATH)),
    ).toEqual([]);
    expect(fieldsNotInSchema(new Error('.status.x: field not declared in schema'))).toEqual([]);
  });
});

describe('createCrdSkew', () => {
  const setup = () => {
    const lines: Array<{ level: string; msg: string }> = [];
    const events: string[] = [];
    let now = 0;
    const skew = createCrdSkew({
      log: createLogger({
        level: 'debug',
        destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
      }),
      event: (_kind, obj, reason, note) =>
        events.push(`${String(obj.metadata.uid)} ${reason} ${note}`),
      now: () => now,
    });
    return { skew, lines, events, advance: (ms: number) => (now += ms) };
  };
  const obj = (uid: string) => ({ metadata: { name: uid, uid } });
  const err = refusal('.status.readyNodes: field not declared in schema');

  it('logs once per kind and fields, tells each object once, and passes other errors on', () => {
    const { skew, lines, events } = setup();
    const other = new Error('boom');
    expect(skew.failed('StoragePool', obj('a'), 'summary', other)).toBe(other);
    const first = skew.failed('StoragePool', obj('a'), 'summary', err);
    expect(first).toBeInstanceOf(OutdatedCrdError);
    expect(isAlreadyReported(first)).toBe(true);
    skew.failed('StoragePool', obj('a'), 'summary', err);
    skew.failed('StoragePool', obj('b'), 'summary', err);
    skew.failed('VirtualNetwork', obj('n'), 'summary', err);
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [
        'error',
        "the installed CustomResourceDefinition for StoragePool is older than this agent: it lacks .status.readyNodes; apply this version's CRDs: kubectl apply -k manifests/ (docs/deploy.md, Upgrading)",
      ],
      ['error', expect.stringContaining('for VirtualNetwork is older')],
    ]);
    expect(events.map((e) => e.split(' ').slice(0, 2).join(' '))).toEqual([
      'a CRDOutdated',
      'b CRDOutdated',
      'n CRDOutdated',
    ]);
  });

  it('stays not ready until every refused write went through, by its own writer', () => {
    const { skew } = setup();
    skew.failed('StoragePool', obj('a'), 'summary', err);
    skew.failed('StoragePool', obj('b'), 'summary', err);
    expect(skew.readiness()).toMatch(/^the installed CustomResourceDefinition for StoragePool/);
    // Another writer of the same object (its node entry) says nothing about the summary.
    skew.written(obj('a'), 'node-a');
    skew.written(obj('a'), 'summary');
    expect(skew.readiness()).not.toBe(true);
    skew.written(obj('b'), 'summary');
    expect(skew.readiness()).toBe(true);
  });

  it('lets a refusal lapse when no write was refused for longer than the backoff cap', () => {
    const { skew, advance } = setup();
    skew.failed('StoragePool', obj('gone'), 'summary', err);
    advance(5 * 60_000);
    expect(skew.readiness()).not.toBe(true);
    advance(61_000 + 60_000);
    expect(skew.readiness()).toBe(true);
  });
});

describe('createCrdSkew: a refused write that will not be made again', () => {
  const err = refusal('.status.readyNodes: field not declared in schema');
  const obj = (uid: string) => ({ metadata: { name: uid, uid } });

  it('no longer holds readiness back once its object is deleted', () => {
    let now = 0;
    const skew = createCrdSkew({
      log: createLogger({ level: 'silent' }),
      event: () => undefined,
      now: () => now,
    });
    skew.failed('StoragePool', obj('gone'), 'summary', err);
    skew.failed('StoragePool', obj('kept'), 'summary', err);
    // The CRDs applied: the kept object's write goes through at its next retry; the deleted
    // one is never written again. Readiness must not wait for the 6-minute lapse.
    now += 1_000;
    skew.forget(obj('gone'));
    skew.written(obj('kept'), 'summary');
    expect(skew.readiness()).toBe(true);
  });
});
