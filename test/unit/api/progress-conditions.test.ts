import { describe, expect, it } from 'vitest';
import {
  isStalledReason,
  progressConditions,
  REASON_CLASSES,
  setCondition,
  withProgressConditions,
} from '../../../src/api/conditions.js';

const NOW = new Date('2026-12-03T10:00:00Z');

describe('progressConditions (kstatus Reconciling / Stalled from Ready)', () => {
  it('Ready=True: neither Reconciling nor Stalled', () => {
    const [rec, stalled] = progressConditions({
      status: 'True',
      reason: 'Running',
      message: 'the domain is running',
      observedGeneration: 3,
    });
    expect(rec).toMatchObject({
      type: 'Reconciling',
      status: 'False',
      reason: 'Ready',
      observedGeneration: 3,
    });
    expect(stalled).toMatchObject({
      type: 'Stalled',
      status: 'False',
      reason: 'Ready',
      observedGeneration: 3,
    });
  });

  it.each([
    'NameConflict',
    'UUIDConflict',
    'ChecksumMismatch',
    'Unsupported',
    'MACAddressInUse',
    'InvalidAddress',
  ])('a user-fixable reason (%s) is Stalled, not Reconciling', (reason) => {
    const [rec, stalled] = progressConditions({ status: 'False', reason, message: 'fix it' });
    expect(stalled).toMatchObject({ status: 'True', reason, message: 'fix it' });
    expect(rec.status).toBe('False');
  });

  it.each(['Importing', 'NotCreated', 'VolumeNotReady', 'StartFailed', 'SomethingNew'])(
    'a transient or unknown reason (%s) is Reconciling',
    (reason) => {
      const [rec, stalled] = progressConditions({ status: 'False', reason, message: 'wait' });
      expect(rec).toMatchObject({ status: 'True', reason, message: 'wait' });
      expect(stalled.status).toBe('False');
    },
  );

  it('classifies every reason in one table, with unknown reasons on the waiting side', () => {
    for (const [reason, cls] of Object.entries(REASON_CLASSES)) {
      expect(isStalledReason(reason)).toBe(cls === 'stalled');
    }
    expect(isStalledReason('NeverHeardOf')).toBe(false);
  });

  it('withProgressConditions follows the Ready condition of a list and keeps transition times', () => {
    let list = setCondition(
      undefined,
      { type: 'Ready', status: 'False', reason: 'NameConflict', message: 'x' },
      NOW,
    );
    list = withProgressConditions(list, NOW);
    expect(list.find((c) => c.type === 'Stalled')?.status).toBe('True');
    const later = new Date(NOW.getTime() + 60_000);
    const again = withProgressConditions(list, later);
    expect(again).toEqual(list);
    expect(withProgressConditions([], NOW)).toEqual([]);
  });
});
