// The tiny real guest for end-to-end tests: Debian's cloud kernel and a busybox initramfs,
// built by scripts/build-tiny-guest.sh into the cache outside the repository. The guest
// talks to tests through marker lines on its serial console (a log file of the serial port).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { packageRoot } from './package-root.js';

export interface TinyGuest {
  /** Absolute path of the kernel (bzImage) for direct kernel boot. */
  kernel: string;
  /** Absolute path of the gzip'd newc initramfs. */
  initrd: string;
  /** Kernel release, e.g. 6.1.0-56-cloud-amd64 (the cache folder adds the recipe hash). */
  version: string;
  /** For a Volume with `source.http` served by a test: the digests it must declare. */
  sha256: { kernel: string; initrd: string };
}

/**
 * Kernel command line the guest expects. console=ttyS0 sends both the kernel log and the
 * markers to the first serial port; earlyprintk writes there from the kernel's first
 * instructions, so a guest stuck before its console driver starts still leaves a trace
 * (an empty console then means QEMU never ran the kernel); panic=-1 turns a kernel panic into
 * an immediate reboot, which libvirt reports, instead of a guest that hangs silently.
 */
export const TINY_GUEST_CMDLINE = 'earlyprintk=serial,ttyS0 console=ttyS0 panic=-1';

/** The console lines the guest prints (see the /init in scripts/build-tiny-guest.sh). */
export const GUEST_MARKER = {
  /**
   * Drivers loaded, acpid answers the power button: an ACPI shutdown works from now on. The
   * capture is the kernel's boot id, new on every boot, so a test can tell a restart apart.
   */
  ready: /^LVO-GUEST-READY (\S+)$/m,
  /** A DHCP lease bound: address, interface, MAC. One line per interface and lease. */
  ip: /^LVO-GUEST-IP (\S+) (\S+) (\S+)$/m,
  /** Online CPU count, printed at start and whenever it changes (hot-plugged CPUs are onlined). */
  cpus: /^LVO-GUEST-CPUS (\d+)$/m,
  /** virtio disk names (vda ...), printed at start and whenever the set changes. */
  disks: /^LVO-GUEST-DISKS ?(.*)$/m,
  /** The ACPI power button reached the guest; it powers off right after. */
  poweroff: /^LVO-GUEST-POWEROFF$/m,
  /** A DHCPv6 lease bound: address, interface, MAC. */
  ip6: /^LVO-GUEST-IP6 (\S+) (\S+) (\S+)$/m,
  /** Whether UEFI firmware booted the guest (/sys/firmware/efi exists): yes or no. */
  efi: /^LVO-GUEST-EFI (yes|no)$/m,
  /** Under UEFI: 1 when the kernel found secure boot enabled, else 0. */
  secureBoot: /^LVO-GUEST-SECUREBOOT ([01])$/m,
  /** The TPMs the kernel found, as `<dev> <driver> <major version>` triples, or `none`. */
  tpm: /^LVO-GUEST-TPM (.+)$/m,
  /**
   * With `lvo.data=<disk>` on the command line: the first 64 bytes of that disk at boot
   * ('none' when blank), then what this boot wrote there (`boot-<boot id>`).
   */
  data: /^LVO-GUEST-DATA (\S+)$/m,
  dataWrote: /^LVO-GUEST-DATA-WROTE (\S+)$/m,
  /** With `lvo.tick`: a counter kept in guest memory only, printed every second. */
  tick: /^LVO-GUEST-TICK (\d+)$/m,
  /** CPU topology the guest sees: sockets, cores per socket, threads per core. */
  topology: /^LVO-GUEST-TOPOLOGY (\d+) (\d+) (\d+)$/m,
  /** The first line of lvo-cdrom.txt on the CD-ROM (sr0), once it is mounted. */
  cdrom: /^LVO-GUEST-CDROM (.*)$/m,
  /** Every 2 s: the guest's /proc/uptime seconds; no ticks while the guest is paused. */
  uptime: /^LVO-GUEST-UPTIME (\d+(?:\.\d+)?)$/m,
  /** `lvo-suspend` typed on the console: the guest suspends itself to RAM (S3) right after. */
  suspend: /^LVO-GUEST-SUSPEND$/m,
  /** ... and it is back from S3, its power button working again (see build-tiny-guest.sh). */
  resumed: /^LVO-GUEST-RESUMED$/m,
} as const;

let building: Promise<TinyGuest> | undefined;

/**
 * The guest's kernel and initrd, built on first use (~5 s cold, needs the Debian mirror) and
 * reused from the cache afterwards (~10 ms). Shared by every caller in this process.
 */
export function ensureTinyGuest(): Promise<TinyGuest> {
  building ??= buildTinyGuest().catch((err: unknown) => {
    building = undefined; // let a later call retry, e.g. after the mirror comes back
    throw err;
  });
  return building;
}

async function buildTinyGuest(): Promise<TinyGuest> {
  const script = join(packageRoot(), 'scripts', 'build-tiny-guest.sh');
  const dir = await new Promise<string>((resolve, reject) => {
    execFile(
      'bash',
      [script, '--print-dir'],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const why = stderr.trim().split('\n').at(-1) || err.message;
          reject(new Error(`building the tiny guest failed: ${why}`));
          return;
        }
        resolve(stdout.trim().split('\n').at(-1) ?? '');
      },
    );
  });
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.img');
  for (const file of [kernel, initrd]) {
    const size = await stat(file).then(
      (s) => s.size,
      () => 0,
    );
    if (size === 0) throw new Error(`${script} reported ${dir} but ${file} is missing or empty`);
  }
  return {
    kernel,
    initrd,
    // The directory is <kernel version>-<12 hex digits of the recipe's hash>.
    version: basename(dir).replace(/-[0-9a-f]{12}$/, ''),
    sha256: { kernel: await fileSha256(kernel), initrd: await fileSha256(initrd) },
  };
}

async function fileSha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

export interface TinyGuestServer {
  /** http://<host>:<port>; the files are at /vmlinuz and /initrd.img. */
  base: string;
  close(): Promise<void>;
}

/**
 * Serves the guest's kernel and initrd over HTTP, for Volumes with `source.http` (their
 * digests are in `TinyGuest.sha256`): the way a user's images reach a pool. Loopback by
 * default; an agent in a pod reaches the host at its node's address instead (`host`).
 */
export async function serveTinyGuest(
  guest: TinyGuest,
  host = '127.0.0.1',
): Promise<TinyGuestServer> {
  const files: Record<string, string> = { '/vmlinuz': guest.kernel, '/initrd.img': guest.initrd };
  const server = createServer((req, res) => {
    const file = files[req.url ?? ''];
    if (!file) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    base: `http://${host}:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

export interface PoolFileNames {
  kernel: string;
  initrd: string;
}

const DEFAULT_POOL_NAMES: PoolFileNames = {
  kernel: 'tiny-guest-vmlinuz',
  initrd: 'tiny-guest-initrd.img',
};

/**
 * Puts the guest's kernel and initrd into a dir pool's directory under the given plain file
 * names and returns their paths. A test then refreshes the pool (virsh pool-refresh) so
 * libvirt lists them as volumes, and can point Volumes at them. Copies, never hard links: a
 * volume file may be resized or wiped in place, which must not reach the shared cache (a
 * reflink where the filesystem has them, ~20 ms for both files otherwise). An existing file
 * of that name is replaced atomically, so a running guest that has it open is not disturbed.
 */
export async function installTinyGuestIntoPool(
  poolDir: string,
  names: PoolFileNames = DEFAULT_POOL_NAMES,
): Promise<PoolFileNames> {
  const guest = await ensureTinyGuest();
  await mkdir(poolDir, { recursive: true });
  return {
    kernel: await placeFile(guest.kernel, poolDir, names.kernel, 'kernel'),
    initrd: await placeFile(guest.initrd, poolDir, names.initrd, 'initrd'),
  };
}

async function placeFile(
  source: string,
  dir: string,
  name: string,
  field: string,
): Promise<string> {
  if (name === '' || name.includes('/') || name === '.' || name === '..') {
    throw new Error(`installTinyGuestIntoPool: ${field} name '${name}' must be a plain file name`);
  }
  const target = join(dir, name);
  const temp = join(dir, `.${name}.${process.pid}.tmp`);
  await rm(temp, { force: true });
  await copyFile(source, temp, constants.COPYFILE_FICLONE);
  await rename(temp, target);
  return target;
}

/**
 * The console log as text ('' while QEMU has not created it yet). latin1 keeps one character
 * per byte, so string offsets are file offsets for `waitForConsoleLine`'s `after`.
 */
export async function readConsole(path: string): Promise<string> {
  try {
    return await readFile(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

export interface ConsoleWaitOptions {
  /**
   * Only look at text from this offset on (e.g. `(await readConsole(p)).length` before a live
   * change). Meant for changes within one boot; across a restart use `waitForGuestReady`.
   * A log shorter than this was emptied by a restart and is read from the start.
   */
  after?: number;
  /** Poll interval; the log is small, so re-reading it whole is cheap. Default 200 ms. */
  intervalMs?: number;
}

/**
 * Waits until a line of the console log matches `pattern` and returns the match. The
 * pattern is tested line by line, so `^` and `$` anchor to a line. On timeout the error shows
 * the last lines of the console, which is usually all one needs to see why.
 */
export async function waitForConsoleLine(
  path: string,
  pattern: RegExp,
  timeoutMs: number,
  opts: ConsoleWaitOptions = {},
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  let text: string;
  while (true) {
    text = await readConsole(path);
    const start = opts.after !== undefined && text.length >= opts.after ? opts.after : 0;
    const found = matchLine(text.slice(start), pattern);
    if (found) return found;
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
  throw new Error(
    `no console line matched ${pattern} within ${timeoutMs} ms in ${path}; last lines:\n` +
      consoleTail(text),
  );
}

/**
 * Waits for the guest's ready line and returns its boot id. Pass the id of an earlier boot as
 * `otherThan` to wait for the next boot: QEMU empties the log file when the domain starts
 * again, so the old ready line may still be there for a moment, or be gone, or the new log
 * may already be longer than the old one; the boot id is the one reliable difference.
 */
export async function waitForGuestReady(
  path: string,
  timeoutMs: number,
  opts: { otherThan?: string } = {},
): Promise<string> {
  const pattern = opts.otherThan
    ? new RegExp(`^LVO-GUEST-READY (?!${escapeRegExp(opts.otherThan)}$)(\\S+)$`)
    : GUEST_MARKER.ready;
  const m = await waitForConsoleLine(path, pattern, timeoutMs);
  return m[1]!;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The guest's status lines that come at its own pace (uptime every 2 s, the lvo.tick counter),
 * whatever a test is doing. Their values have a fixed form, so text after one on its line is
 * not part of it.
 */
const PERIODIC_MARKER = /^LVO-GUEST-(?:UPTIME \d+(?:\.\d+)?|TICK \d+)/;

/**
 * The lines of a console log the guest has finished writing, without their CR/LF. The last
 * line is left out until its newline arrives: read while QEMU is still writing it, a marker
 * such as `LVO-GUEST-READY 1b2c-` would match `(\S+)$` with half a boot id.
 *
 * A marker is its own line even where it did not start one: the guest's tty echoes typed input
 * as the bytes arrive, so a status line can land inside an echoed command
 * (`echo LVO-CLLVO-GUEST-UPTIME 12.34`), and the echo can even go on behind a periodic
 * marker's value before its line break. Such a line is split before each marker, and after a
 * periodic marker's value, so `^`-anchored marker patterns still find them (echoed digits
 * right behind a value would read as part of it: type lines that do not start with one).
 */
export function completeLines(text: string): string[] {
  return text
    .split('\n')
    .slice(0, -1)
    .flatMap((l) => splitAtMarkers(l.replace(/\r$/, '')));
}

function splitAtMarkers(line: string): string[] {
  return line.split(/(?=LVO-GUEST-)/).flatMap((part) => {
    const periodic = PERIODIC_MARKER.exec(part)?.[0];
    return periodic && periodic.length < part.length
      ? [periodic, part.slice(periodic.length)]
      : [part];
  });
}

/**
 * Serial output with the guest's status lines taken out, each with the line break that ends
 * it, so what the tty echoed of a typed command reads contiguously even where a status line
 * landed inside it (see `completeLines`): for comparing the echo of typed input. Text the echo
 * put between a periodic marker's value and its line break is kept.
 */
export function withoutGuestStatus(text: string): string {
  return text.replace(
    /LVO-GUEST-(?:UPTIME \d+(?:\.\d+)?|TICK \d+|[A-Z0-9-]+(?: [^\r\n]*)?)([^\r\n]*?)\r?\n/g,
    '$1',
  );
}

/** The first complete line of `text` that matches `pattern` (see `completeLines`). */
export function matchLine(text: string, pattern: RegExp): RegExpMatchArray | undefined {
  const line = new RegExp(pattern.source, pattern.flags.replace(/[gm]/g, ''));
  for (const l of completeLines(text)) {
    const m = l.match(line);
    if (m) return m;
  }
  return undefined;
}

/** The last `lines` lines of a console log, for error messages. */
export function consoleTail(text: string, lines = 25): string {
  const all = text.replace(/\r/g, '').trimEnd().split('\n');
  return all.slice(-lines).join('\n') || '(console empty: did the domain start?)';
}
