import { describe, expect, it } from 'vitest';
import {
  covers,
  ownsFieldsBeyond,
  settleTransitionTimes,
  type Condition,
} from '../../../src/runtime/status-diff.js';
import { ownedStatusFields } from '../../../src/runtime/status-writer.js';

const keys = { nodes: ['nodeName'], 'nodes.conditions': ['type'] };

describe('status comparison', () => {
  it('a status that holds every desired field with the same value needs no write, extra fields of others notwithstanding', () => {
    const current = { phase: 'Running', extra: 'someone else', memory: { target: 1, actual: 2 } };
    expect(covers(current, { phase: 'Running', memory: { target: 1 } })).toBe(true);
    expect(covers(current, { phase: 'Stopped' })).toBe(false);
    expect(covers(current, { memory: { target: 3 } })).toBe(false);
    expect(covers(undefined, { phase: 'Running' })).toBe(false);
    expect(covers({}, {})).toBe(true);
  });

  it('atomic lists compare whole; list-maps compare entry by key, ignoring entries of other nodes', () => {
    expect(covers({ ips: ['a', 'b'] }, { ips: ['a', 'b'] })).toBe(true);
    expect(covers({ ips: ['a', 'b'] }, { ips: ['a'] })).toBe(false);
    const current = {
      nodes: [
        { nodeName: 'b', size: 2 },
        { nodeName: 'a', size: 1, conditions: [{ type: 'Ready', status: 'True' }] },
      ],
    };
    expect(covers(current, { nodes: [{ nodeName: 'a', size: 1 }] }, keys)).toBe(true);
    expect(covers(current, { nodes: [{ nodeName: 'a', size: 9 }] }, keys)).toBe(false);
    expect(covers(current, { nodes: [{ nodeName: 'c' }] }, keys)).toBe(false);
    // Without the declaration the list is atomic, and then it differs.
    expect(covers(current, { nodes: [{ nodeName: 'a', size: 1 }] })).toBe(false);
  });

  it('conditions lists are keyed by type without being declared', () => {
    const current = {
      conditions: [
        { type: 'Synced', status: 'True' },
        { type: 'Ready', status: 'False' },
      ],
    };
    expect(covers(current, { conditions: [{ type: 'Ready', status: 'False' }] })).toBe(true);
  });

  it('a field our manager owns but no longer wants is a change (apply would remove it)', () => {
    const owned = { 'f:phase': {}, 'f:memory': { '.': {}, 'f:target': {}, 'f:actual': {} } };
    expect(ownsFieldsBeyond(owned, { phase: 'x', memory: { target: 1, actual: 1 } })).toBe(false);
    expect(ownsFieldsBeyond(owned, { phase: 'x', memory: { target: 1 } })).toBe(true);
    expect(ownsFieldsBeyond(owned, { memory: { target: 1, actual: 1 } })).toBe(true);
    const listMap = {
      'f:nodes': { 'k:{"nodeName":"a"}': { '.': {}, 'f:nodeName': {}, 'f:size': {} } },
    };
    expect(ownsFieldsBeyond(listMap, { nodes: [{ nodeName: 'a', size: 1 }] })).toBe(false);
    expect(ownsFieldsBeyond(listMap, { nodes: [{ nodeName: 'a' }] })).toBe(true);
    expect(ownsFieldsBeyond(listMap, { nodes: [{ nodeName: 'b', size: 1 }] })).toBe(true);
    const set = { 'f:tags': { 'v:"x"': {} } };
    expect(ownsFieldsBeyond(set, { tags: ['x', 'y'] })).toBe(false);
    expect(ownsFieldsBeyond(set, { tags: ['y'] })).toBe(true);
    expect(ownsFieldsBeyond(undefined, { anything: 1 })).toBe(false);
  });

  it("finds our manager's status fields in managedFields, not another manager's or the main resource's", () => {
    const obj = {
      metadata: {
        managedFields: [
          { manager: 'me', operation: 'Apply', fieldsV1: { 'f:spec': {} } },
          {
            manager: 'me',
            operation: 'Apply',
            subresource: 'status',
            fieldsV1: { 'f:status': { 'f:phase': {} } },
          },
          {
            manager: 'other',
            operation: 'Apply',
            subresource: 'status',
            fieldsV1: { 'f:status': { 'f:x': {} } },
          },
        ],
      },
    };
    expect(ownedStatusFields(obj, 'me')).toEqual({ 'f:phase': {} });
    expect(ownedStatusFields(obj, 'nobody')).toBeUndefined();
  });
});

describe('condition transition times', () => {
  const now = '2030-01-01T00:00:00Z';
  const old = '2020-01-01T00:00:00Z';

  it('keeps the current time when the status is unchanged, stamps now when it changed or is new', () => {
    const current = {
      conditions: [
        { type: 'Ready', status: 'True', lastTransitionTime: old },
        { type: 'Synced', status: 'True', lastTransitionTime: old },
      ],
    };
    const desired = {
      conditions: [
        { type: 'Ready', status: 'True', reason: 'StillFine', lastTransitionTime: 'ignored' },
        { type: 'Synced', status: 'False' },
        { type: 'New', status: 'Unknown' },
      ],
    };
    expect(
      settleTransitionTimes(desired, current, now).conditions.map((c) => c.lastTransitionTime),
    ).toEqual([old, now, now]);
  });

  it('matches nested per-node conditions to the same node', () => {
    const current = {
      nodes: [
        { nodeName: 'a', conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: old }] },
        {
          nodeName: 'b',
          conditions: [{ type: 'Ready', status: 'False', lastTransitionTime: old }],
        },
      ],
    };
    type PerNode = { nodes: { nodeName: string; conditions: Condition[] }[] };
    const desired: PerNode = {
      nodes: [{ nodeName: 'b', conditions: [{ type: 'Ready', status: 'False' }] }],
    };
    expect(
      settleTransitionTimes(desired, current, now, keys).nodes[0]!.conditions[0]!
        .lastTransitionTime,
    ).toBe(old);
    const flipped: PerNode = {
      nodes: [{ nodeName: 'a', conditions: [{ type: 'Ready', status: 'False' }] }],
    };
    expect(
      settleTransitionTimes(flipped, current, now, keys).nodes[0]!.conditions[0]!
        .lastTransitionTime,
    ).toBe(now);
  });

  it('leaves everything else untouched', () => {
    const desired = { phase: 'Running', list: [1, 2], nested: { a: { b: 1 } } };
    expect(settleTransitionTimes(desired, {}, now)).toEqual(desired);
  });
});
