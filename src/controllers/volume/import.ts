// HTTP import: download in the background into the agent's state directory while hashing,
// verify the SHA-256, check the image, and only then hand it to libvirt (create + upload,
// under the pool lock). A download takes minutes, a reconcile must not: reconcile starts the
// job, then looks at it every few seconds (progress in status) until it is verified.
// Jobs live in this process only; after an agent restart a download starts over.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { VolumeSpecSourceHttp, VolumeStatusProgress } from '../../api/generated/types.js';
import type { Problem } from '../kit.js';

export interface ImageInfo {
  format: 'qcow2' | 'raw';
  /** The size the guest sees: the qcow2 header's size, or the raw file's length. */
  virtualSize: bigint;
  fileSize: bigint;
}

export class ImportError extends Error {
  constructor(
    readonly reason:
      'ImportFailed' | 'SourceRefused' | 'ChecksumMismatch' | 'FormatMismatch' | 'InvalidImage',
    message: string,
  ) {
    super(message);
    this.name = 'ImportError';
  }
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 v3 incompatible feature bit 2: the guest's data lives in an external file. */
const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
/** Where a v3 header keeps its incompatible feature bits, and where they end. */
const QCOW2_INCOMPAT_OFFSET = 72;
/** Enough of the file to read a qcow2 header's fields we check. */
const HEAD_BYTES = 512;

/**
 * What the downloaded bytes are. A qcow2 image that names a backing file or an external data
 * file is refused: QEMU opens that path on the host, so an image from the internet could read
 * any host file into the guest, and through a data file (opened read-write, measured on QEMU
 * 7.2) write it too.
 */
export function sniffImage(head: Buffer, fileSize: bigint): ImageInfo | Problem {
  const other = otherFormat(head);
  if (other) {
    return {
      reason: 'FormatMismatch',
      message: `the image is ${other}, neither raw nor qcow2; images are not converted`,
    };
  }
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC) {
    if (head.length < 32) {
      return {
        reason: 'InvalidImage',
        message: `the image is a truncated qcow2 file (${fileSize} bytes)`,
      };
    }
    if (head.readBigUInt64BE(8) !== 0n) {
      return {
        reason: 'InvalidImage',
        message: 'the qcow2 image names a backing file; only self-contained images are imported',
      };
    }
    if (head.readUInt32BE(4) >= 3) {
      if (head.length < QCOW2_INCOMPAT_OFFSET + 8) {
        return {
          reason: 'InvalidImage',
          message: `the image is a truncated qcow2 file (${fileSize} bytes)`,
        };
      }
      if ((head.readBigUInt64BE(QCOW2_INCOMPAT_OFFSET) & QCOW2_INCOMPAT_DATA_FILE) !== 0n) {
        return {
          reason: 'InvalidImage',
          message:
            'the qcow2 image keeps its data in an external data file that it names; only ' +
            'self-contained images are imported',
        };
      }
    }
    return { format: 'qcow2', virtualSize: head.readBigUInt64BE(24), fileSize };
  }
  return { format: 'raw', virtualSize: fileSize, fileSize };
}

/** What a qcow2 header says QEMU opens besides the file itself. */
export interface Qcow2Layers {
  /** The backing file's name as the header holds it, when it names one. */
  backingFile?: { offset: number; length: number };
  /** The image keeps the guest's data in an external file (v3 incompatible bit 2). */
  dataFile: boolean;
}

/**
 * The layers a qcow2 header names: where its backing file name is (read separately; it lies
 * after the header) and whether it uses an external data file. Undefined for anything that
 * is not a qcow2 header, or too short to tell.
 */
export function qcow2Layers(head: Buffer): Qcow2Layers | undefined {
  if (head.length < 32 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const offset = head.readBigUInt64BE(8);
  const length = head.readUInt32BE(16);
  const v3 = head.readUInt32BE(4) >= 3;
  if (v3 && head.length < QCOW2_INCOMPAT_OFFSET + 8) return undefined;
  const dataFile =
    v3 && (head.readBigUInt64BE(QCOW2_INCOMPAT_OFFSET) & QCOW2_INCOMPAT_DATA_FILE) !== 0n;
  return offset === 0n
    ? { dataFile }
    : { backingFile: { offset: Number(offset), length }, dataFile };
}

/**
 * Image formats libvirt's storage driver recognises by their header (besides qcow2 and ISO),
 * as `[name, offset, magic]`. An upload is a raw file until the pool refresh, whose probe then
 * calls it by that format: a download of one of these was never Available (the agent could not
 * read the volume's format; Importing at 100% for ever), and libvirt would follow the backing
 * file a vmdk names when it copies the volume.
 */
const OTHER_FORMATS: ReadonlyArray<readonly [string, number, Buffer]> = [
  ['vmdk', 0, Buffer.from('KDMV')],
  ['vpc', 0, Buffer.from('conectix')],
  ['qed', 0, Buffer.from('QED\0', 'latin1')],
  ['cow', 0, Buffer.from('OOOM')],
  ['luks', 0, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe])],
  ['bochs', 0, Buffer.from('Bochs Virtual HD Image')],
  ['vdi', 64, Buffer.from([0x7f, 0x10, 0xda, 0xbe])],
];

function otherFormat(head: Buffer): string | undefined {
  for (const [name, offset, magic] of OTHER_FORMATS) {
    if (head.subarray(offset, offset + magic.length).equals(magic)) return name;
  }
  // qcow (version 1) shares qcow2's magic.
  if (head.length >= 8 && head.readUInt32BE(0) === QCOW2_MAGIC && head.readUInt32BE(4) < 2)
    return 'qcow (version 1)';
  return undefined;
}

export function progressOf(
  bytesDone: number,
  bytesTotal: number | undefined,
): VolumeStatusProgress {
  if (bytesTotal === undefined || bytesTotal <= 0) return { bytesDone };
  return {
    bytesDone,
    bytesTotal,
    percent: Math.min(100, Math.floor((bytesDone * 100) / bytesTotal)),
  };
}

export interface DownloadOptions {
  url: string;
  sha256: string;
  file: string;
  /** The Volume's spec.format: an image of another format is refused, never converted. */
  format?: 'qcow2' | 'raw';
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number | undefined) => void;
}

/**
 * Streams `url` into `file`, hashing on the way. Resolves with what the image is once the
 * digest matches; on any failure the partial file is removed and an ImportError (or the
 * abort) is thrown.
 */
export async function downloadVerified(opts: DownloadOptions): Promise<ImageInfo> {
  await mkdir(path.dirname(opts.file), { recursive: true, mode: 0o700 });
  try {
    const res = await fetch(opts.url, { signal: opts.signal ?? null, redirect: 'follow' }).catch(
      (err: unknown) => {
        if (opts.signal?.aborted) throw err;
        throw new ImportError('ImportFailed', `GET ${opts.url} failed: ${causeOf(err)}`);
      },
    );
    if (!res.ok || !res.body) {
      const answer = `GET ${opts.url} answered HTTP ${res.status} ${res.statusText}`.trim();
      throw refusedStatus(res.status)
        ? new ImportError(
            'SourceRefused',
            `${answer}: the server refuses this URL, and retrying does not change that; ` +
              'publish the image there, or re-create the Volume with a URL that serves it ' +
              '(spec.source is immutable)',
          )
        : new ImportError('ImportFailed', answer);
    }
    const length = Number(res.headers.get('content-length'));
    const total = Number.isSafeInteger(length) && length > 0 ? length : undefined;
    const hash = createHash('sha256');
    const head: Buffer[] = [];
    let headLength = 0;
    let done = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, callback) {
        hash.update(chunk);
        if (headLength < HEAD_BYTES) {
          head.push(chunk.subarray(0, HEAD_BYTES - headLength));
          headLength += Math.min(chunk.length, HEAD_BYTES - headLength);
        }
        done += chunk.length;
        opts.onProgress?.(done, total);
        callback(null, chunk);
      },
    });
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    await pipeline(body, meter, createWriteStream(opts.file, { mode: 0o600 }), {
      signal: opts.signal,
    }).catch((err: unknown) => {
      if (opts.signal?.aborted) throw err;
      throw new ImportError(
        'ImportFailed',
        `downloading ${opts.url} failed after ${done} bytes: ${causeOf(err)}`,
      );
    });
    const digest = hash.digest('hex');
    if (digest !== opts.sha256.toLowerCase()) {
      throw new ImportError(
        'ChecksumMismatch',
        `the download's SHA-256 is ${digest}, spec.source.http.sha256 says ${opts.sha256}; the file was discarded`,
      );
    }
    const image = sniffImage(Buffer.concat(head), BigInt(done));
    if ('reason' in image) {
      const reason = image.reason === 'FormatMismatch' ? 'FormatMismatch' : 'InvalidImage';
      throw new ImportError(reason, image.message);
    }
    if (opts.format && image.format !== opts.format) {
      throw new ImportError(
        'FormatMismatch',
        `the image is ${image.format} but spec.format is ${opts.format}; images are not converted`,
      );
    }
    return image;
  } catch (err) {
    await rm(opts.file, { force: true });
    throw err;
  }
}

/**
 * A client error says the request itself is refused (not found, gone, forbidden...): the same
 * GET gets the same answer until someone changes the server. 408 (timeout) and 429 (too many
 * requests) are the two 4xx that say "later".
 */
export function refusedStatus(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

function causeOf(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string; code?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause ? `${e.message ?? String(err)} (${cause})` : (e.message ?? String(err));
}

// ---- the jobs of this process, keyed by the Volume's uid ----

export interface ImportJob {
  /** uploaded: handed to libvirt; kept until the status with Imported=True is seen. */
  state: 'downloading' | 'verified' | 'failed' | 'uploaded';
  file: string;
  bytesDone: number;
  bytesTotal?: number;
  image?: ImageInfo;
  problem?: Problem;
  /** When a failed job may be tried again (ms since the epoch). */
  retryAt?: number;
  attempts: number;
  abort: AbortController;
  /** The progress last shown in status, and when. */
  shown?: { bytesDone: number; bytesTotal?: number; atMs: number };
}

/** Import jobs by Volume uid: the agent's HostState holds them for the process's life. */
export type ImportJobs = Map<string, ImportJob>;

/**
 * Reasons that judge the bytes the URL served, not the transfer: the same URL most likely
 * serves the same bytes again, and each try downloads the whole image once more.
 */
const CONTENT_VERDICTS = new Set(['ChecksumMismatch', 'FormatMismatch', 'InvalidImage']);

/**
 * Waits between failed downloads: 10 s, doubling, at most 5 min; after a verdict on the
 * content (`reason`), 1 min, doubling, at most 1 h, so an image of many GiB whose checksum
 * does not match is not fetched again every five minutes for ever (spec.source is immutable:
 * a user fixes a wrong digest with a new Volume, which starts its own import at once).
 */
export function importRetryDelay(attempts: number, reason?: string): number {
  const n = Math.max(0, attempts - 1);
  return reason !== undefined && CONTENT_VERDICTS.has(reason)
    ? Math.min(3_600_000, 60_000 * 2 ** n)
    : Math.min(300_000, 10_000 * 2 ** n);
}

/**
 * The progress to show in status: refreshed at most every `intervalMs`. Every status write
 * wakes the Volume's reconcile again (it is a watch event), so showing live byte counts
 * would write status as fast as the API server answers for the whole download.
 */
export function shownProgress(
  job: ImportJob,
  nowMs: number,
  intervalMs: number,
): VolumeStatusProgress {
  if (!job.shown || nowMs - job.shown.atMs >= intervalMs) {
    job.shown = { bytesDone: job.bytesDone, atMs: nowMs };
    if (job.bytesTotal !== undefined) job.shown.bytesTotal = job.bytesTotal;
  }
  return progressOf(job.shown.bytesDone, job.shown.bytesTotal);
}

export function importJob(jobs: ImportJobs, uid: string): ImportJob | undefined {
  return jobs.get(uid);
}

function importFile(stateDir: string, uid: string): string {
  return path.join(stateDir, 'imports', `${uid}.img`);
}

/** Starts the download unless one is running or verified; a failed one is started again. */
export function startImport(
  jobs: ImportJobs,
  uid: string,
  source: VolumeSpecSourceHttp,
  format: 'qcow2' | 'raw',
  stateDir: string,
  /** The context's clock, read when a download fails. */
  now: () => Date,
): ImportJob {
  const existing = jobs.get(uid);
  if (existing && (existing.state === 'downloading' || existing.state === 'verified'))
    return existing;
  const job: ImportJob = {
    state: 'downloading',
    file: importFile(stateDir, uid),
    bytesDone: 0,
    attempts: (existing?.attempts ?? 0) + 1,
    abort: new AbortController(),
  };
  jobs.set(uid, job);
  downloadVerified({
    url: source.url,
    sha256: source.sha256,
    format,
    file: job.file,
    signal: job.abort.signal,
    onProgress: (done, total) => {
      job.bytesDone = done;
      if (total !== undefined) job.bytesTotal = total;
    },
  }).then(
    (image) => {
      job.state = 'verified';
      job.image = image;
    },
    (err: unknown) => {
      if (job.abort.signal.aborted) return;
      markFailed(
        job,
        err instanceof ImportError
          ? { reason: err.reason, message: err.message }
          : { reason: 'ImportFailed', message: String(err) },
        now().getTime(),
      );
    },
  );
  return job;
}

/**
 * Records a failed attempt and when the next one starts. The message says both, so a user
 * watching status (or `npm start`'s progress lines) sees the waits grow instead of wondering
 * whether anything is still happening; it is fixed per attempt, so passes that wait for the
 * retry time write no status.
 */
function markFailed(job: ImportJob, problem: Problem, nowMs: number): Problem {
  const delay = importRetryDelay(job.attempts, problem.reason);
  job.state = 'failed';
  job.retryAt = nowMs + delay;
  job.problem = {
    reason: problem.reason,
    message: withRetry(problem.message, job.attempts, delay, job.retryAt),
  };
  return job.problem;
}

/** "<why>; attempt 2 failed, next try in 20 s (at 2026-12-03T15:04:05Z)". Pure. */
export function withRetry(
  message: string,
  attempts: number,
  delayMs: number,
  atMs: number,
): string {
  const at = new Date(atMs).toISOString().replace(/\.\d+Z$/, 'Z');
  return `${message}; attempt ${attempts} failed, next try in ${Math.round(delayMs / 1000)} s (at ${at})`;
}

/** Stops a download and removes its file; safe when there is none. */
export async function cancelImport(jobs: ImportJobs, uid: string, stateDir: string): Promise<void> {
  jobs.get(uid)?.abort.abort();
  jobs.delete(uid);
  await rm(importFile(stateDir, uid), { force: true });
}

/**
 * Marks a verified job failed after libvirt refused its file (the upload failed): the file is
 * removed and the next download waits for the retry time, as after a failed download.
 * Returns the problem as status shows it (with the retry time).
 */
export async function failImport(
  jobs: ImportJobs,
  uid: string,
  stateDir: string,
  problem: Problem,
  nowMs: number,
): Promise<Problem> {
  const job = jobs.get(uid);
  const shown = job ? markFailed(job, problem, nowMs) : problem;
  await rm(importFile(stateDir, uid), { force: true });
  return shown;
}

/**
 * After the upload: the downloaded copy goes, the job stays as 'uploaded' until the status
 * that says Imported is back through the watch (forgetImport), so no pass working from an
 * older cached status takes the finished file for an interrupted upload.
 */
export async function finishImport(jobs: ImportJobs, uid: string, stateDir: string): Promise<void> {
  const job = jobs.get(uid);
  if (job) job.state = 'uploaded';
  await rm(importFile(stateDir, uid), { force: true });
}

/** Drops a finished job once the cached status records the import. */
export function forgetImport(jobs: ImportJobs, uid: string): void {
  if (jobs.get(uid)?.state === 'uploaded') jobs.delete(uid);
}
