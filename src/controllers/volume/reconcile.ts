// Volume: the agent of spec.nodeName keeps a file <namespace>_<name> in the pool spec.pool
// (blank, a clone, a qcow2 overlay or an HTTP import), grows it when spec.capacity grows, and
// on deletion removes it (deletionPolicy Delete) or leaves it (Retain) once nothing uses it.
import { findCondition } from '../../api/conditions.js';
import type { StoragePool, VirtualMachine, Volume } from '../../api/generated/types.js';
import { volumeFileName } from '../../api/names.js';
import {
  done,
  HOST_FINALIZER,
  requeueAfter,
  VOLUME_PROTECTION_FINALIZER,
  type Action,
  type ControllerContext,
} from '../context.js';
import { forgetFigures, steadyFigure } from '../shared/figures.js';
import { cachedByKey, newProblem, retryDelay, withFinalizer, type Problem } from '../kit.js';
import { applyVolumeSteps, deleteVolumeFile, uploadImage } from './act.js';
import { desiredVolume, sourceKind, sourceVolumeName } from './desired.js';
import { checkHeader, fileIdentity } from './header-check.js';
import {
  cancelImport,
  failImport,
  finishImport,
  forgetImport,
  importJob,
  importRetryDelay,
  progressOf,
  shownProgress,
  startImport,
} from './import.js';
import {
  holderNames,
  liveDisksOf,
  usablePool,
  observeSource,
  fileBornAt,
  observeVolume,
  plannedPath,
  readImageLayers,
  refreshListing,
  type HostVolume,
  type ReadyPool,
  type ReadySource,
} from './observe.js';
import {
  IMPORTED,
  liveGrowth,
  layersProblem,
  birthTimeDecides,
  lostBaseOfOverlay,
  lostBaseProblem,
  ownsVolume,
  planImport,
  planVolume,
  READ_ONLY_IN_USE,
  RESIZED,
  type FileFacts,
  type VolumeStep,
} from './plan.js';
import type { ObservedVolume } from '../../libvirt/xml/volume.js';
import { DELETION_BLOCKED, READY, usedByList, volumeStatus, type VolumeFacts } from './status.js';
import { machinesThatMayHold, sourceHeld, usersOf } from './users.js';
import { tellAfterWrite } from '../shared/after-write.js';

const KIND = 'Volume';
/** How often an import's progress is looked at (and written to status when it moved). */
const PROGRESS_INTERVAL_MS = 3_000;
// ResizeRefused too: a user ends it outside the spec (deleting snapshots), so it is looked at
// again with backoff rather than suspended for the generation as ResizeUnsupported is.
const RETRIED_RESIZE = new Set(['ResizeFailed', 'ResizeRefused', READ_ONLY_IN_USE]);

/**
 * How soon a pass whose header read did not answer looks again (a read still under way is
 * not repeated: the look only tells whether it answered since).
 */
const HEADER_RETRY_MS = 30_000;

/** `vol`: the object as a status write in the pass left it, for the pass's last write. */
type Pass = { facts: VolumeFacts; requeueMs?: number; vol?: Volume };

/** What a pass knows once the pool is ready: the Volume, its pool, its file if any, its users. */
interface FileInputs {
  vol: Volume;
  pool: ReadyPool;
  found: HostVolume | undefined;
  usedBy: VolumeFacts['usedBy'];
}

export async function reconcileVolume(key: string, ctx: ControllerContext): Promise<Action> {
  const cached = cachedByKey<Volume>(ctx, KIND, key);
  if (!cached || cached.spec.nodeName !== ctx.nodeName) return done;
  const usedBy = usersOf(cached, ctx);
  // Both finalizers before the file exists, the host one first since it guards the file.
  // Deletion runs while either is left: the host one comes off once the file is dealt with,
  // the protection one in the pass after.
  return withFinalizer(ctx, KIND, cached, [HOST_FINALIZER, VOLUME_PROTECTION_FINALIZER], {
    apply: (vol) => converge(vol, usedBy, ctx),
    cleanup: (vol) => removeVolume(vol, usedBy, ctx),
  });
}

/** One pass towards the file the spec asks for, both finalizers on. */
async function converge(
  vol: Volume,
  usedBy: VolumeFacts['usedBy'],
  ctx: ControllerContext,
): Promise<Action> {
  const pool = await usablePool(ctx, vol.spec.pool);
  if ('reason' in pool) return report(vol, { facts: { problem: pool, usedBy } }, ctx);
  // A clashing file that a user removed stays in the pool's listing until the pool is
  // refreshed: while the clash is reported, each retry reads the directory again, or the
  // Volume stayed NameConflict (kstatus Failed) after the user had resolved it.
  if (findCondition(vol.status?.conditions, 'Ready')?.reason === 'NameConflict')
    await refreshListing(pool);
  const found = await observeVolume(pool, volumeFileName(vol));
  const deleting = found ? undefined : poolDeleting(vol, ctx);
  if (deleting) {
    // A download under way would only be thrown away: its file could never go in this pool.
    await cancelImport(ctx.host.imports, String(vol.metadata.uid), ctx.stateDir);
    return report(vol, { facts: { problem: deleting, usedBy } }, ctx);
  }
  const pass =
    sourceKind(vol) === 'http'
      ? await convergeImport({ vol, pool, found, usedBy }, ctx)
      : await convergeFile({ vol, pool, found, usedBy }, ctx);
  return report(pass.vol ?? vol, pass, ctx);
}

/**
 * A pool being deleted gets no new file: a Volume made after the deletion began would fill a
 * pool its owner is emptying. A Volume whose file is already there keeps it (the pool's
 * deletion waits for it).
 */
function poolDeleting(vol: Volume, ctx: ControllerContext): Problem | undefined {
  const pool = ctx.get<StoragePool>('StoragePool', undefined, vol.spec.pool);
  if (!pool?.metadata.deletionTimestamp) return undefined;
  return {
    reason: 'PoolDeleting',
    message:
      `StoragePool ${vol.spec.pool} is being deleted, so no file is made in it; its deletion ` +
      `waits for this Volume: delete the Volume, and create it again once the pool is back`,
  };
}

/** Blank, clone and overlay volumes: create the file once, grow it when asked. */
async function convergeFile(
  { vol, pool, found, usedBy }: FileInputs,
  ctx: ControllerContext,
): Promise<Pass> {
  const kind = sourceKind(vol);
  const recorded = found !== undefined && vol.status?.path === found.doc.path;
  let source: ReadySource | undefined;
  // The source matters only to create the file or to prove an unrecorded file is ours.
  if (!recorded && (kind === 'clone' || kind === 'backingVolume')) {
    const observed = await observeSource(ctx, vol, String(sourceVolumeName(vol)));
    if ('reason' in observed) return { facts: { problem: observed, usedBy } };
    source = observed;
  }
  if (!found) {
    const lost = lostBaseProblem(vol.status?.path, overlaysWithFiles(vol, usedBy, ctx));
    if (lost) return { facts: { problem: lost, usedBy } };
  }
  const desired = recorded ? undefined : desiredVolume(vol, source?.image);
  const uid = String(vol.metadata.uid);
  const made = ctx.host.filesMade.get(uid);
  if (made !== undefined && made === vol.status?.path) ctx.host.filesMade.delete(uid);
  const plan = planVolume(vol, kind, desired, found?.doc, await fileFacts(vol, found, made));
  if ('conflict' in plan)
    return { facts: { problem: { reason: 'NameConflict', message: plan.conflict }, usedBy } };
  let unchecked = false;
  if (recorded && found.doc.path) {
    const header = await replacedImage(vol, kind, found.doc.path, found.doc, ctx);
    if (header.problem) return { facts: { problem: header.problem, usedBy, observed: found.doc } };
    unchecked = header.unchecked;
    // A base that cannot be opened (its status says so): neither can this overlay, which
    // said Available. From that status, not a look at the base's file on every pass.
    if (kind === 'backingVolume') {
      const name = String(sourceVolumeName(vol));
      const base = ctx.get<Volume>('Volume', vol.metadata.namespace, name);
      const lost = lostBaseOfOverlay(found.doc.path, name, base);
      if (lost) return { facts: { problem: lost, usedBy, observed: found.doc } };
    }
  }
  const use = plan.steps.some((s) => s.op === 'clone')
    ? 'copy'
    : plan.steps.some((s) => s.op === 'create' && s.doc.backingStore)
      ? 'overlay'
      : undefined;
  if (source && use) {
    const name = String(sourceVolumeName(vol));
    const held = await sourceHeld(vol, name, source.image.path, ctx, use);
    if (held) return { facts: { problem: held, usedBy } };
  }
  // A copy can take minutes: say so before it starts, or the Volume shows no status at all
  // meanwhile (and kstatus, so Flux, takes an object without status for Current).
  if (use === 'copy') {
    const written = await ctx.applyStatus(KIND, vol, volumeStatus(vol, { usedBy }, ctx.now()));
    if (written) vol = written as Volume;
  }
  const growing = plan.steps.some((s) => s.op === 'resize') ? found?.doc.path : undefined;
  const machines = usedBy
    .filter((u) => u.kind === 'VirtualMachine')
    .map((u) => ctx.get<VirtualMachine>('VirtualMachine', vol.metadata.namespace, u.name))
    .filter((vm): vm is VirtualMachine => vm !== undefined);
  const grow = plan.steps.find((s) => s.op === 'resize');
  const route =
    growing && grow ? liveGrowth(await liveDisksOf(ctx, machines, growing), grow.capacity) : {};
  const waiting = 'wait' in route ? route.wait : undefined;
  const steps = waiting ? plan.steps.filter((s) => s.op !== 'resize') : plan.steps;
  const live = 'through' in route ? route.through : undefined;
  const outcome = await applyVolumeSteps(pool, found?.handle, source?.handle, steps, live);
  if (outcome.problem) return { facts: { problem: outcome.problem, usedBy }, vol };
  recordChanges(vol, steps, outcome.done, ctx);
  const after = steps.length > 0 ? await observeVolume(pool, volumeFileName(vol)) : found;
  // Until status records it: a pass from an older cached status (or after a failed status
  // write) knows the file for this Volume's, however close to its creation it was made.
  if ((outcome.done.includes('clone') || outcome.done.includes('create')) && after?.doc.path)
    ctx.host.filesMade.set(uid, after.doc.path);
  const facts: VolumeFacts = { usedBy, ...(after ? { observed: after.doc } : {}) };
  const resizeProblem = outcome.resizeProblem ?? waiting;
  if (resizeProblem) facts.resizeProblem = resizeProblem;
  // A header that could not be read is looked at again, where a converged pass would wait
  // for the next change (a grow's retry has its own backoff).
  if (unchecked && !resizeProblem) return { facts, vol, requeueMs: HEADER_RETRY_MS };
  return { facts, vol };
}

/** The Volumes among `usedBy` layered on `vol` (backingVolume) that have made their file. */
function overlaysWithFiles(
  vol: Volume,
  usedBy: VolumeFacts['usedBy'],
  ctx: ControllerContext,
): string[] {
  return usedBy
    .filter((u) => u.kind === 'Volume')
    .map((u) => ctx.get<Volume>('Volume', vol.metadata.namespace, u.name))
    .filter(
      (v): v is Volume =>
        v?.spec.source?.backingVolume?.volume === vol.metadata.name && !!v?.status?.path,
    )
    .map((v) => String(v.metadata.name));
}

/**
 * A qcow2 file this Volume made, checked again from its header whenever libvirt describes the
 * file otherwise than at the last check (header-check.ts): it was judged when made (imports)
 * or made by libvirt from the spec, but a file replaced on the host later could name a host
 * file that QEMU then opens. A raw Volume's header is the guest's data and never read as
 * qcow2 by QEMU. A read that does not answer in time (a hung network file system) is logged
 * and leaves the last verdict standing: not being able to look is no fault of the file.
 */
async function replacedImage(
  vol: Volume,
  kind: ReturnType<typeof sourceKind>,
  path: string,
  file: ObservedVolume,
  ctx: ControllerContext,
): Promise<{ problem?: Problem; unchecked: boolean }> {
  if ((vol.spec.format ?? 'qcow2') !== 'qcow2') return { unchecked: false };
  const base = kind === 'backingVolume' ? String(sourceVolumeName(vol)) : undefined;
  const backing = base
    ? ctx.get<Volume>('Volume', vol.metadata.namespace, base)?.status?.path
    : undefined;
  const header = await checkHeader(
    ctx.host.headerChecks,
    String(vol.metadata.uid),
    path,
    fileIdentity(file),
    ctx.readImageLayers ?? readImageLayers,
    ctx.headerReadTimeoutMs,
  );
  if (header.unchecked) {
    ctx.log.warn(
      { volume: `${vol.metadata.namespace}/${vol.metadata.name}`, path },
      `the volume file's header could not be checked: ${header.unchecked}; checked again later`,
    );
  }
  const unchecked = header.unchecked !== undefined;
  const layers = header.layers;
  const problem = layersProblem(path, kind, layers, backing);
  return { ...(problem ? { problem } : {}), unchecked };
}

/** HTTP sources: download and verify in the background, then create and upload the file. */
async function convergeImport(
  { vol, pool, found, usedBy }: FileInputs,
  ctx: ControllerContext,
): Promise<Pass> {
  const uid = String(vol.metadata.uid);
  const http = vol.spec.source!.http!;
  const job = importJob(ctx.host.imports, uid);
  const name = volumeFileName(vol);
  const planned =
    !found && job?.state === 'verified' ? await plannedPath(pool.handle, name) : undefined;
  const decision = planImport(vol, found?.doc, job, ctx.now().getTime(), planned);
  const importing = (path?: string) => ({
    progress: job
      ? shownProgress(job, ctx.now().getTime(), PROGRESS_INTERVAL_MS)
      : progressOf(0, undefined),
    ...(path ? { path } : {}),
  });
  switch (decision.do) {
    case 'converged':
      if (findCondition(vol.status?.conditions, IMPORTED)?.status === 'True')
        forgetImport(ctx.host.imports, uid);
      return convergeFile({ vol, pool, found, usedBy }, ctx);
    case 'conflict':
      return { facts: { problem: { reason: 'NameConflict', message: decision.message }, usedBy } };
    case 'discard':
      await deleteVolumeFile(pool, found!.handle);
      ctx.event(
        KIND,
        vol,
        'Normal',
        'PartialImportDiscarded',
        `${found!.doc.path} was an interrupted upload; importing again`,
      );
      return { facts: { importing: importing(vol.status?.path), usedBy }, requeueMs: 0 };
    case 'download':
      startImport(ctx.host.imports, uid, http, vol.spec.format ?? 'qcow2', ctx.stateDir, () =>
        ctx.now(),
      );
      return {
        facts: { importing: { progress: progressOf(0, undefined) }, usedBy },
        requeueMs: PROGRESS_INTERVAL_MS,
      };
    case 'wait':
      if (job?.state === 'failed' && job.problem) {
        // planImport waits only while no file is there: the failed import left none.
        return {
          facts: { problem: job.problem, usedBy, noFile: true },
          requeueMs: Math.max(0, (job.retryAt ?? 0) - ctx.now().getTime()),
        };
      }
      return { facts: { importing: importing(), usedBy }, requeueMs: PROGRESS_INTERVAL_MS };
    case 'record':
      return { facts: { importing: importing(decision.path), usedBy }, requeueMs: 0 };
    case 'upload': {
      const image = job!.image!;
      const problem = await uploadImage(pool, name, job!.file, image.fileSize);
      if (problem) {
        const shown = await failImport(
          ctx.host.imports,
          uid,
          ctx.stateDir,
          problem,
          ctx.now().getTime(),
        );
        // uploadImage removes the file it began; should that removal have failed, the file
        // is still ours and status.path, its record, stays for the next attempt to discard it.
        const left = await observeVolume(pool, name);
        return {
          facts: { problem: shown, usedBy, ...(left ? {} : { noFile: true }) },
          requeueMs: importRetryDelay(job!.attempts, shown.reason),
        };
      }
      await finishImport(ctx.host.imports, uid, ctx.stateDir);
      const after = await observeVolume(pool, name);
      ctx.event(
        KIND,
        vol,
        'Normal',
        'Imported',
        `${http.url} verified and imported as ${after?.doc.path ?? name}`,
      );
      const imported = { sha256: http.sha256, bytes: image.fileSize, format: image.format };
      return {
        facts: { usedBy, imported, ...(after ? { observed: after.doc } : {}) },
        requeueMs: 0,
      };
    }
  }
}

/**
 * Deletion, once nothing uses the Volume: remove the file (Delete, and only a file that is
 * provably ours) or leave it (Retain), then drop the host finalizer; the protection finalizer
 * goes in the next pass. Safe to repeat, and it never waits for a pool or file that is gone.
 * "Nothing" includes running domains that still hold the file although their machine's spec
 * no longer names it (a GitOps prune removes the disk and its Volume in one go).
 */
async function removeVolume(
  vol: Volume,
  usedBy: VolumeFacts['usedBy'],
  ctx: ControllerContext,
): Promise<Action> {
  if (usedBy.length > 0) return reportBlocked(vol, usedBy, ctx);
  const path = vol.status?.path;
  const held = path ? await liveDisksOf(ctx, machinesThatMayHold(vol, ctx), path) : [];
  const holders = holderNames(held);
  if (holders.length > 0) return reportBlocked(vol, usedByList(holders, []), ctx);
  if (vol.metadata.finalizers?.includes(HOST_FINALIZER)) {
    await cancelImport(ctx.host.imports, String(vol.metadata.uid), ctx.stateDir);
    // What a kept file is told with: after the finalizer is gone, as a removal refused (a
    // conflict, the API server down) is retried and would say it again at each retry.
    let kept: (() => void) | undefined;
    if ((vol.spec.deletionPolicy ?? 'Delete') === 'Delete') {
      const pool = await usablePool(ctx, vol.spec.pool);
      if ('reason' in pool && !pool.gone)
        return report(vol, { facts: { problem: pool, usedBy } }, ctx);
      if (!('reason' in pool)) kept = await deleteIfOurs(vol, pool, ctx);
    } else {
      kept = () =>
        ctx.event(
          KIND,
          vol,
          'Normal',
          'VolumeRetained',
          `deletionPolicy Retain: ${vol.status?.path ?? volumeFileName(vol)} is kept`,
        );
    }
    forgetFigures(ctx.host.figures, `${KIND}/${vol.metadata.uid}`);
    ctx.host.filesMade.delete(String(vol.metadata.uid));
    ctx.host.headerChecks.delete(String(vol.metadata.uid));
    await tellAfterWrite(
      () => ctx.removeFinalizer(KIND, vol, HOST_FINALIZER),
      () => kept?.(),
    );
    return done;
  }
  await ctx.removeFinalizer(KIND, vol, VOLUME_PROTECTION_FINALIZER);
  return done;
}

/**
 * The pool file's facts for ownsVolume/planVolume: its ctime from the listing, what this
 * process made, and its birth time only for a file last changed within the creation second
 * that nothing records (birthTimeDecides): the one extra look at the file.
 */
async function fileFacts(
  vol: Volume,
  found: HostVolume | undefined,
  made: string | undefined,
): Promise<FileFacts> {
  const file: FileFacts = { made, changedAt: found?.changedAt };
  if (!found?.doc.path || !birthTimeDecides(vol, found.doc, file)) return file;
  return { ...file, bornAt: await fileBornAt(found.doc.path) };
}

/**
 * Deletes the Volume's file when it is provably ours. A file that is not is left, and what
 * tells so is returned for the caller to send once the deletion is recorded (removeVolume).
 */
async function deleteIfOurs(
  vol: Volume,
  pool: ReadyPool,
  ctx: ControllerContext,
): Promise<(() => void) | undefined> {
  const found = await observeVolume(pool, volumeFileName(vol));
  if (!found) return undefined;
  const made = ctx.host.filesMade.get(String(vol.metadata.uid));
  let ours =
    found.doc.path !== undefined &&
    (vol.status?.path === found.doc.path || made === found.doc.path);
  // A kept file changed within the creation second is not deleted either (convergeFile).
  const file = ours ? {} : await fileFacts(vol, found, made);
  if (!ours && sourceKind(vol) === 'blank')
    ours = ownsVolume(vol, found.doc, desiredVolume(vol), file);
  if (!ours && sourceVolumeName(vol)) {
    const source = await observeSource(ctx, vol, String(sourceVolumeName(vol)));
    ours =
      !('reason' in source) && ownsVolume(vol, found.doc, desiredVolume(vol, source.image), file);
  }
  if (!ours) {
    return () =>
      ctx.event(
        KIND,
        vol,
        'Warning',
        'FileKept',
        `${found.doc.path ?? found.doc.name} was not created by this Volume; left in place`,
      );
  }
  await deleteVolumeFile(pool, found.handle);
  ctx.event(KIND, vol, 'Normal', 'VolumeDeleted', `deleted ${found.doc.path ?? found.doc.name}`);
  return undefined;
}

/** Deletion requested while in use: keep everything, say why, look again later. */
async function reportBlocked(
  vol: Volume,
  usedBy: VolumeFacts['usedBy'],
  ctx: ControllerContext,
): Promise<Action> {
  const pool = await usablePool(ctx, vol.spec.pool);
  const found = 'reason' in pool ? undefined : await observeVolume(pool, volumeFileName(vol));
  const ours = found && found.doc.path === vol.status?.path ? found.doc : undefined;
  // A base waiting for its overlays whose file is gone says so as it did before its deletion:
  // its overlays learn from this status that they cannot be opened.
  const lost =
    'reason' in pool || found
      ? undefined
      : lostBaseProblem(vol.status?.path, overlaysWithFiles(vol, usedBy, ctx));
  const told = !!findCondition(vol.status?.conditions, DELETION_BLOCKED);
  const tell = () => {
    if (told) return;
    const users = usedBy.map((u) => `${u.kind} ${u.name}`).join(', ');
    ctx.event(
      KIND,
      vol,
      'Warning',
      'DeletionBlocked',
      `deletion waits until no longer used by ${users}`,
    );
  };
  // After the write: one refused is retried, and would send the Warning again each time.
  await tellAfterWrite(
    () =>
      ctx.applyStatus(
        KIND,
        vol,
        volumeStatus(
          vol,
          {
            usedBy,
            deletionBlocked: true,
            ...(ours ? { observed: ours } : {}),
            ...(lost ? { problem: lost } : {}),
          },
          ctx.now(),
        ),
      ),
    tell,
    { skipUnwritten: true },
  );
  return requeueAfter(retryDelay(undefined, ctx.now(), ctx.retryMinMs));
}

function recordChanges(
  vol: Volume,
  steps: VolumeStep[],
  done: VolumeStep['op'][],
  ctx: ControllerContext,
): void {
  for (const step of steps.filter((s) => done.includes(s.op))) {
    if (step.op === 'resize') {
      ctx.event(KIND, vol, 'Normal', 'VolumeResized', `grown to ${step.capacity} bytes`);
    } else if (step.op === 'discard') {
      ctx.event(
        KIND,
        vol,
        'Normal',
        'PartialCopyDiscarded',
        `${volumeFileName(vol)} was not recorded as a finished copy (a crash may have cut it short); copying again`,
      );
    } else {
      const again = vol.status?.path ? ` (the recorded file ${vol.status.path} was gone)` : '';
      const what =
        step.op === 'clone'
          ? 'cloned'
          : step.doc.backingStore
            ? 'created as an overlay'
            : 'created';
      ctx.event(
        KIND,
        vol,
        again ? 'Warning' : 'Normal',
        'VolumeCreated',
        `${step.doc.name} ${what}${again}`,
      );
    }
  }
}

async function report(vol: Volume, pass: Pass, ctx: ControllerContext): Promise<Action> {
  const facts = steady(vol, pass.facts, ctx);
  const status = volumeStatus(vol, facts, ctx.now());
  // After the write: one refused is retried, and would send the Warnings again each time.
  await tellAfterWrite(
    () => ctx.applyStatus(KIND, vol, status),
    () => {
      for (const type of [READY, RESIZED]) {
        const problem = newProblem(vol.status?.conditions, status.conditions, type);
        if (problem && (type === RESIZED || facts.problem))
          ctx.event(KIND, vol, 'Warning', problem.reason, problem.message);
      }
    },
    { skipUnwritten: true },
  );
  if (pass.requeueMs !== undefined) return requeueAfter(pass.requeueMs);
  if (facts.problem)
    return requeueAfter(
      retryDelay(findCondition(status.conditions, READY), ctx.now(), ctx.retryMinMs),
    );
  // A failed grow and one that waits for machines to let go of the file are tried again.
  if (facts.resizeProblem && RETRIED_RESIZE.has(facts.resizeProblem.reason)) {
    return requeueAfter(
      retryDelay(findCondition(status.conditions, RESIZED), ctx.now(), ctx.retryMinMs),
    );
  }
  return done;
}

/** Allocation moves as the guest writes: shown as last time unless a minute has passed. */
function steady(vol: Volume, facts: VolumeFacts, ctx: ControllerContext): VolumeFacts {
  if (!facts.observed) return facts;
  const key = `${KIND}/${vol.metadata.uid}`;
  const allocation = steadyFigure(
    ctx.host.figures,
    key,
    facts.observed.allocation,
    ctx.now().getTime(),
  );
  return { ...facts, observed: { ...facts.observed, allocation } };
}
