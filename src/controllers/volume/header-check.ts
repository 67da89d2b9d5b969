// The re-check of a recorded qcow2 file's header (reconcile.ts replacedImage), made only when
// the file changed. Its read is the agent's one direct access to a pool's files (everything
// else goes through libvirt): on a hung NFS pool an open or read never answers and holds one
// of libuv's few threads (which DNS and other file work share) for good. So a file libvirt
// describes as before is not read again, a read is waited for a few seconds at most, and a
// read that has not answered is never joined by a second one for the same Volume.
import type { ObservedVolume } from '../../libvirt/xml/volume.js';
import type { ImageLayers } from './observe.js';

/** How long a pass waits for the header read before it goes on without it. */
export const HEADER_READ_TIMEOUT_MS = 5_000;

/**
 * `look`'s answer, or undefined once `timeoutMs` passed without one (the look goes on in the
 * background, its answer dropped): how a pass looks at a pool's file without being held by a
 * hung file system. The timer is cleared either way, so none is left behind per pass.
 */
export async function answeredWithin<T>(
  look: Promise<T>,
  timeoutMs: number,
): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  try {
    return await Promise.race([look, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** What this agent last learnt of a Volume's header (HostState.headerChecks, by uid). */
export interface HeaderCheck {
  /** The file as libvirt described it when the read began (fileIdentity). */
  identity: string | undefined;
  /** The layers the last read that answered found (kept while a newer read is pending). */
  layers: ImageLayers | undefined;
  /** A read began and has not answered yet. */
  pending: boolean;
}
export type HeaderChecks = Map<string, HeaderCheck>;

/**
 * The file as libvirt's volume XML describes it, enough to notice a replacement or rewrite:
 * libvirt refreshes a volume from its stat on every getXMLDesc (measured on 9.0), and a new
 * file, a rename into place and any write all give it a new ctime (nanoseconds), which no
 * user can set. atime is left out: the header read itself moves it. Undefined when libvirt
 * reports no ctime (its test driver): the header is then read every pass.
 */
export function fileIdentity(doc: ObservedVolume): string | undefined {
  if (!doc.path || !doc.changed) return undefined;
  const { ctime, mtime } = doc.changed;
  return `${doc.path} ${doc.capacity} ${ctime} ${mtime ?? ''}`;
}

/**
 * Whether the header must be read again: 'reuse' the last answer (the file is as it was
 * then), 'wait' for a read still under way (a second one would hold a second thread), or
 * 'read' it (never read, changed since, or a file libvirt cannot describe).
 */
export function headerCheckDue(
  last: HeaderCheck | undefined,
  identity: string | undefined,
): 'reuse' | 'wait' | 'read' {
  if (last?.pending) return 'wait';
  if (!last || identity === undefined || last.identity !== identity) return 'read';
  return 'reuse';
}

/** The header's layers, or why they could not be read this pass (with the last ones known). */
export type HeaderOutcome = { layers: ImageLayers | undefined; unchecked?: string };

/**
 * The layers of the header of `path` (Volume `uid`, file `identity`), read with `read` only
 * when headerCheckDue says so, and waited for at most `timeoutMs`. A read that does not
 * answer in time goes on in the background and records its answer when it comes.
 */
export async function checkHeader(
  checks: HeaderChecks,
  uid: string,
  path: string,
  identity: string | undefined,
  read: (path: string) => Promise<ImageLayers | undefined>,
  timeoutMs = HEADER_READ_TIMEOUT_MS,
): Promise<HeaderOutcome> {
  const last = checks.get(uid);
  const due = headerCheckDue(last, identity);
  if (due === 'reuse') return { layers: last?.layers };
  if (due === 'wait') {
    return {
      layers: last?.layers,
      unchecked: `an earlier read of ${path}'s header has not answered yet`,
    };
  }
  const entry: HeaderCheck = { identity, layers: last?.layers, pending: true };
  checks.set(uid, entry);
  // Recorded only while the entry is still this read's (not forgotten with the Volume).
  const answered = (layers: ImageLayers | undefined) => {
    if (checks.get(uid) === entry) checks.set(uid, { identity, layers, pending: false });
    return { layers };
  };
  const reading = read(path).then(answered, () => answered(undefined));
  return (
    (await answeredWithin(reading, timeoutMs)) ?? {
      layers: last?.layers,
      unchecked: `reading ${path}'s header did not answer within ${timeoutMs} ms`,
    }
  );
}
