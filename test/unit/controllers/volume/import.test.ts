import { describe, expect, it } from 'vitest';
import {
  importRetryDelay,
  progressOf,
  refusedStatus,
  shownProgress,
  sniffImage,
  withRetry,
  type ImportJob,
} from '../../../../src/controllers/volume/import.js';

function qcow2Header(virtualSize: bigint, backingOffset = 0n): Buffer {
  const b = Buffer.alloc(512);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  b.writeBigUInt64BE(backingOffset, 8);
  b.writeBigUInt64BE(virtualSize, 24);
  return b;
}

describe('refusedStatus', () => {
  it('calls a 4xx a refusal of the URL, except 408 and 429, which say "later"', () => {
    for (const code of [400, 401, 403, 404, 410, 451]) expect(refusedStatus(code)).toBe(true);
    for (const code of [408, 429, 500, 502, 503, 504, 304]) expect(refusedStatus(code)).toBe(false);
  });
});

describe('sniffImage', () => {
  it('reads a qcow2 image virtual size from its header', () => {
    expect(sniffImage(qcow2Header(2n ** 30n), 196_608n)).toEqual({
      format: 'qcow2',
      virtualSize: 2n ** 30n,
      fileSize: 196_608n,
    });
  });
  it('refuses a qcow2 image that names a backing file', () => {
    expect(sniffImage(qcow2Header(2n ** 30n, 0x200n), 4096n)).toMatchObject({
      reason: 'InvalidImage',
      message: expect.stringContaining('backing file'),
    });
  });
  it('refuses a qcow2 image whose data is in an external file it names', () => {
    const header = qcow2Header(2n ** 30n);
    header.writeBigUInt64BE(1n << 2n, 72);
    expect(sniffImage(header, 4096n)).toMatchObject({
      reason: 'InvalidImage',
      message: expect.stringContaining('external data file'),
    });
    // A version 2 header ends at byte 72: what follows is no feature field.
    header.writeUInt32BE(2, 4);
    expect(sniffImage(header, 4096n)).toMatchObject({ format: 'qcow2' });
  });
  it('refuses images of the other formats libvirt recognises, naming the format', () => {
    const at = (offset: number, magic: Buffer) => {
      const b = Buffer.alloc(512);
      magic.copy(b, offset);
      return b;
    };
    const qcow1 = qcow2Header(2n ** 20n);
    qcow1.writeUInt32BE(1, 4);
    for (const [head, name] of [
      [at(0, Buffer.from('KDMV')), 'vmdk'],
      [at(0, Buffer.from('conectix')), 'vpc'],
      [at(64, Buffer.from([0x7f, 0x10, 0xda, 0xbe])), 'vdi'],
      [qcow1, 'qcow (version 1)'],
    ] as const) {
      expect(sniffImage(head, 512n)).toEqual({
        reason: 'FormatMismatch',
        message: `the image is ${name}, neither raw nor qcow2; images are not converted`,
      });
    }
  });
  it('refuses a truncated qcow2 header', () => {
    expect(sniffImage(qcow2Header(1n).subarray(0, 16), 16n)).toMatchObject({
      reason: 'InvalidImage',
    });
  });
  it('takes anything else as raw, sized by the file', () => {
    expect(sniffImage(Buffer.from('hello'), 5n)).toEqual({
      format: 'raw',
      virtualSize: 5n,
      fileSize: 5n,
    });
    expect(sniffImage(Buffer.alloc(0), 0n)).toEqual({
      format: 'raw',
      virtualSize: 0n,
      fileSize: 0n,
    });
  });
});

describe('progressOf', () => {
  it('gives a whole percentage when the size is known', () => {
    expect(progressOf(42, 100)).toEqual({ bytesDone: 42, bytesTotal: 100, percent: 42 });
    expect(progressOf(999, 1000)).toEqual({ bytesDone: 999, bytesTotal: 1000, percent: 99 });
  });
  it('never says more than 100%', () => {
    expect(progressOf(200, 100).percent).toBe(100);
  });
  it('gives bytes only when the server did not announce a size', () => {
    expect(progressOf(42, undefined)).toEqual({ bytesDone: 42 });
  });
});

describe('importRetryDelay', () => {
  it('doubles from 10 s up to 5 min', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => importRetryDelay(n))).toEqual([
      10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000,
    ]);
    expect(importRetryDelay(7, 'ImportFailed')).toBe(300_000);
    expect(importRetryDelay(7, 'SourceRefused')).toBe(300_000);
  });
  it('waits from 1 min up to 1 h after a verdict on the bytes (each try downloads it all)', () => {
    for (const reason of ['ChecksumMismatch', 'FormatMismatch', 'InvalidImage']) {
      expect([1, 2, 3, 6, 7, 8].map((n) => importRetryDelay(n, reason))).toEqual([
        60_000, 120_000, 240_000, 1_920_000, 3_600_000, 3_600_000,
      ]);
    }
  });
});

describe('withRetry', () => {
  it('says which attempt failed and when the next one is, fixed per attempt', () => {
    const at = Date.parse('2026-12-03T15:04:05.678Z');
    expect(withRetry('GET http://x/ failed: ECONNREFUSED', 2, 20_000, at)).toBe(
      'GET http://x/ failed: ECONNREFUSED; attempt 2 failed, next try in 20 s (at 2026-12-03T15:04:05Z)',
    );
  });
});

describe('shownProgress', () => {
  it('moves at most once per interval, so status is not rewritten on every wake-up', () => {
    const job: ImportJob = {
      state: 'downloading',
      file: 'f',
      bytesDone: 10,
      bytesTotal: 100,
      attempts: 1,
      abort: new AbortController(),
    };
    expect(shownProgress(job, 1_000, 3_000)).toEqual({
      bytesDone: 10,
      bytesTotal: 100,
      percent: 10,
    });
    job.bytesDone = 50;
    expect(shownProgress(job, 3_999, 3_000)).toEqual({
      bytesDone: 10,
      bytesTotal: 100,
      percent: 10,
    });
    expect(shownProgress(job, 4_000, 3_000)).toEqual({
      bytesDone: 50,
      bytesTotal: 100,
      percent: 50,
    });
  });
});
