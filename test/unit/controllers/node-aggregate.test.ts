import { describe, expect, it } from 'vitest';
import { setCondition, type Condition } from '../../../src/api/conditions.js';
import {
  aggregateReady,
  aggregateStatus,
  entriesHoldingBack,
  entriesWith,
  lookupKey,
  NODE_LOOKUP_TTL_MS,
  nodesToLookUp,
  pruneLookups,
  summaryEvent,
  withoutGoneNodes,
  type NodeEntryLike,
  type NodeLookups,
} from '../../../src/controllers/node-aggregate.js';

const NOW = new Date('2026-12-03T10:00:00Z');
const LATER = new Date('2026-12-03T11:00:00Z');

function entry(nodeName: string, status: 'True' | 'False', reason: string, gen = 2): NodeEntryLike {
  return {
    nodeName,
    observedGeneration: gen,
    conditions: setCondition(
      undefined,
      { type: 'Ready', status, reason, message: `${nodeName} says ${reason}` },
      NOW,
    ),
  };
}

const find = (c: Condition[], t: string) => c.find((x) => x.type === t);

describe('top-level Ready over the nodes of a VirtualNetwork or StoragePool', () => {
  it('is True when every selected node is Ready, ignoring nodes the selector dropped', () => {
    const r = aggregateReady([
      entry('b', 'True', 'Active'),
      entry('a', 'True', 'Active'),
      entry('c', 'False', 'NotSelected'),
    ]);
    expect(r).toMatchObject({
      status: 'True',
      reason: 'AllNodesReady',
      message: 'ready on 2 node(s): a, b',
    });
  });

  it('is False naming the nodes that are not, with their reason', () => {
    const r = aggregateReady([entry('a', 'True', 'Active'), entry('b', 'False', 'Inactive')]);
    expect(r.status).toBe('False');
    expect(r.reason).toBe('Inactive');
    expect(r.message).toContain('not ready on 1 of 2 node(s): b (Inactive: b says Inactive)');
  });

  it('prefers a user-fixable reason when nodes disagree, so kstatus reads Stalled', () => {
    const r = aggregateReady([
      entry('a', 'False', 'Inactive'),
      entry('b', 'False', 'NameConflict'),
    ]);
    expect(r.reason).toBe('NameConflict');
    const s = aggregateStatus(
      2,
      undefined,
      [entry('a', 'False', 'Inactive'), entry('b', 'False', 'NameConflict')],
      NOW,
    );
    expect(find(s.conditions, 'Stalled')?.status).toBe('True');
    expect(find(s.conditions, 'Reconciling')?.status).toBe('False');
  });

  it('counts the ready nodes of the selected ones for the Nodes column, not naming one', () => {
    const entries = [
      entry('a', 'True', 'Active'),
      entry('b', 'False', 'Inactive'),
      entry('c', 'True', 'Active'),
      entry('d', 'False', 'NodeNotSelected'),
    ];
    expect(aggregateStatus(2, undefined, entries, NOW).readyNodes).toBe('2/3');
    expect(aggregateStatus(2, undefined, [], NOW).readyNodes).toBe('0/0');
  });

  it('is False (NoNodes, Reconciling) when no selected node has reported', () => {
    const s = aggregateStatus(4, undefined, [entry('c', 'False', 'NodeNotSelected')], NOW);
    expect(find(s.conditions, 'Ready')).toMatchObject({ status: 'False', reason: 'NoNodes' });
    expect(find(s.conditions, 'Reconciling')?.status).toBe('True');
    expect(s.observedGeneration).toBe(4);
  });

  it('is False (NoMatchingNodes, Stalled) when an agent found that no Node matches', () => {
    const left = [entry('c', 'False', 'NodeNotSelected')];
    for (const entries of [[], left]) {
      const s = aggregateStatus(4, undefined, entries, NOW, { matchingNodes: [] });
      expect(find(s.conditions, 'Ready')).toMatchObject({
        status: 'False',
        reason: 'NoMatchingNodes',
      });
      expect(find(s.conditions, 'Stalled')?.status).toBe('True');
      expect(find(s.conditions, 'Reconciling')?.status).toBe('False');
      expect(s.observedGeneration).toBe(4);
    }
    // Matching Nodes that have not reported: waiting, and named.
    const waiting = aggregateReady(left, { matchingNodes: ['d', 'e'] });
    expect(waiting).toMatchObject({ status: 'False', reason: 'NoNodes' });
    expect(waiting.message).toContain('selects d, e');
    // A selected node's entry decides, whatever an unselected agent found.
    expect(aggregateReady([entry('a', 'True', 'Active')], { matchingNodes: [] }).status).toBe(
      'True',
    );
  });

  it('observedGeneration is the oldest generation a selected node acted on', () => {
    const s = aggregateStatus(
      3,
      undefined,
      [entry('a', 'True', 'Active', 3), entry('b', 'True', 'Active', 2)],
      NOW,
    );
    expect(s.observedGeneration).toBe(2);
  });

  it('every agent computes the same value from the same object, whatever its clock: no flapping', () => {
    const stored = [entry('a', 'True', 'Active'), entry('b', 'True', 'Active')];
    const first = aggregateStatus(2, undefined, stored, NOW);
    // Agent b, an hour later, rewrites its unchanged entry: the aggregate it computes from the
    // stored object is the stored aggregate, so its write changes nothing.
    const fromB = aggregateStatus(
      2,
      first.conditions,
      entriesWith(stored, entry('b', 'True', 'Active')),
      LATER,
    );
    expect(fromB).toEqual(first);
    const fromA = aggregateStatus(
      2,
      first.conditions,
      entriesWith(stored, entry('a', 'True', 'Active')),
      LATER,
    );
    expect(fromA).toEqual(first);
  });

  it('entriesWith replaces the writer node’s stored entry', () => {
    const out = entriesWith(
      [entry('a', 'False', 'Inactive'), entry('b', 'True', 'Active')],
      entry('a', 'True', 'Active'),
    );
    expect(out.map((e) => e.nodeName).sort()).toEqual(['a', 'b']);
    expect(aggregateReady(out).status).toBe('True');
  });
});

describe('the summary Event', () => {
  it('is a Warning when the summary turns to NoMatchingNodes, and only then', () => {
    const none = aggregateStatus(4, undefined, [], NOW, { matchingNodes: [] }).conditions;
    const waiting = aggregateStatus(4, undefined, [], NOW).conditions;
    expect(summaryEvent(undefined, none)).toMatchObject({ reason: 'NoMatchingNodes' });
    expect(summaryEvent(waiting, none)?.message).toContain('selects no Node');
    expect(summaryEvent(none, none)).toBeUndefined();
    expect(summaryEvent(none, waiting)).toBeUndefined();
  });
});

describe('entries of deleted Nodes', () => {
  const entries = [
    entry('self', 'False', 'Inactive', 1),
    entry('current', 'True', 'Active', 3),
    entry('behind', 'True', 'Active', 2),
    entry('failing', 'False', 'StartFailed', 3),
    entry('dropped', 'False', 'NotSelected', 1),
  ];

  it('looks up only the other selected nodes that hold the summary back', () => {
    expect(entriesHoldingBack(3, entries, 'self', 10)).toEqual(['behind', 'failing']);
    expect(entriesHoldingBack(3, entries, 'self', 1)).toEqual(['behind']);
    // A converged object asks nothing.
    expect(entriesHoldingBack(3, [entry('current', 'True', 'Active', 3)], 'self', 10)).toEqual([]);
  });

  it('leaves a deleted Node out of Ready, observedGeneration and readyNodes', () => {
    const counted = withoutGoneNodes(
      [entry('a', 'True', 'Active', 3), entry('gone', 'False', 'StartFailed', 2)],
      ['gone'],
    );
    const s = aggregateStatus(3, undefined, counted, NOW);
    expect(s.observedGeneration).toBe(3);
    expect(s.readyNodes).toBe('1/1');
    expect(find(s.conditions, 'Ready')).toMatchObject({ status: 'True' });
  });
});

describe('nodesToLookUp', () => {
  const key = (name: string) => lookupKey('uid-1', 3, name);
  const t = 1_000_000;

  it('asks once, then keeps the answer for this object at this generation', () => {
    const known: NodeLookups = new Map([
      [key('stuck'), { exists: true, at: t }],
      [key('dead'), { exists: false, at: t }],
    ]);
    // A node stuck on a lasting state is not asked about again at every pass.
    expect(nodesToLookUp(['stuck', 'dead', 'new'], known, key, t + 60_000)).toEqual({
      ask: ['new'],
      gone: ['dead'],
    });
    // Past the answer's life both are asked again: a Node deleted or re-created meanwhile.
    expect(nodesToLookUp(['stuck', 'dead'], known, key, t + NODE_LOOKUP_TTL_MS)).toEqual({
      ask: ['stuck', 'dead'],
      gone: [],
    });
    // A spec change (another generation) asks at once: a dead host's entry is now behind.
    const next = (name: string) => lookupKey('uid-1', 4, name);
    expect(nodesToLookUp(['stuck'], known, next, t + 1)).toEqual({ ask: ['stuck'], gone: [] });
  });

  it('prunes answers past their life', () => {
    const known: NodeLookups = new Map([
      [key('old'), { exists: true, at: t }],
      [key('fresh'), { exists: true, at: t + NODE_LOOKUP_TTL_MS }],
    ]);
    pruneLookups(known, t + NODE_LOOKUP_TTL_MS);
    expect([...known.keys()]).toEqual([key('fresh')]);
  });
});
