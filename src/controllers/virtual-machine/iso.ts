// Writes a cloud-init NoCloud ISO with genisoimage. I/O only. The ISO appears atomically: it is
// built under a temporary name in the same directory and renamed into place, so QEMU (or a
// concurrent pass) never sees half an image; a crash leaves at most the scratch directory,
// which has a fixed name per ISO and is cleared by the next write.
//
// user-data may hold secrets: the directory is traversable but not listable, the ISO readable by
// its owner only. libvirt's DAC security driver gives it to the QEMU user while the domain runs.
import { execFile } from 'node:child_process';
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CLOUD_INIT_LABEL, type CloudInitImage } from './cloud-init.js';

const run = promisify(execFile);

/** genisoimage is missing or failed; the message says which and what to do. */
export class CloudInitError extends Error {
  override name = 'CloudInitError';
}

export async function writeCloudInitISO(image: CloudInitImage): Promise<void> {
  const dir = dirname(image.path);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const scratch = join(dir, `.${basename(image.path)}.tmp`);
  await rm(scratch, { recursive: true, force: true });
  await mkdir(join(scratch, 'files'), { recursive: true, mode: 0o700 });
  try {
    const names = Object.keys(image.files).sort();
    for (const name of names) {
      await writeFile(join(scratch, 'files', name), image.files[name] ?? '', { mode: 0o600 });
    }
    const partial = join(scratch, 'seed.iso');
    try {
      await run(
        'genisoimage',
        ['-quiet', '-output', partial, '-volid', CLOUD_INIT_LABEL, '-joliet', '-rock', ...names],
        { cwd: join(scratch, 'files'), timeout: 60_000 },
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') {
        throw new CloudInitError(
          'genisoimage is not installed on this node; install it (Debian: apt-get install genisoimage)',
        );
      }
      throw new CloudInitError(`genisoimage failed: ${(e.stderr ?? e.message).trim()}`);
    }
    await chmod(partial, 0o600);
    await rename(partial, image.path);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
