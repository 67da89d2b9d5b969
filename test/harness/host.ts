// Host commands the end-to-end tests run beside the operator: a command's exit code and output,
// virsh on the system libvirtd, a disk image made by qemu-img, a qcow2 file's internal
// snapshots, and a free /24 for a NAT network.
import { execFile } from 'node:child_process';
import { SYSTEM_URI } from '../../src/commands/local/libvirtd.js';

export interface CommandResult {
  /** 0 on success, 1 on any failure (exit status, signal or timeout). */
  code: number;
  /** stdout followed by stderr. */
  stdout: string;
}

/** Runs a command to its end; never rejects, so a test can assert on the failure's output. */
export function runCommand(
  cmd: string,
  args: string[],
  timeoutMs = 30_000,
): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? 1 : 0, stdout: String(stdout) + String(stderr) });
    });
  });
}

export const virsh = (...args: string[]) => runCommand('virsh', ['-c', SYSTEM_URI, ...args]);

/**
 * Makes a disk image with `qemu-img create` (`options` goes to `-o`, e.g.
 * `backing_file=...,backing_fmt=vmdk`). Throws with qemu-img's output when it fails.
 */
export async function createImage(
  file: string,
  format: string,
  size: string,
  options?: string,
): Promise<void> {
  const opts = options === undefined ? [] : ['-o', options];
  const made = await runCommand('qemu-img', ['create', '-q', '-f', format, ...opts, file, size]);
  if (made.code !== 0) throw new Error(`qemu-img create ${file}: ${made.stdout}`);
}

/**
 * The names of the internal snapshots inside a qcow2 file, sorted, as `qemu-img snapshot -l`
 * lists them (`-U`: also while a QEMU holds the file). A name that appears twice is listed
 * twice. Throws with qemu-img's output when it fails.
 */
export async function qcow2Snapshots(file: string): Promise<string[]> {
  const listed = await runCommand('qemu-img', ['snapshot', '-U', '-l', file]);
  if (listed.code !== 0) throw new Error(`qemu-img snapshot -l ${file}: ${listed.stdout}`);
  // "ID  TAG  VM SIZE  DATE  VM CLOCK  ICOUNT" rows after two header lines.
  return listed.stdout
    .split('\n')
    .slice(2)
    .map((line) => line.trim().split(/\s+/)[1])
    .filter((tag): tag is string => tag !== undefined && tag !== '')
    .sort();
}

/**
 * A /24 in 192.168.200-254 that no host interface uses, so a NAT network can start; chosen at
 * random so a network left behind by an interrupted run does not block the next one.
 */
export async function freeSubnet(): Promise<number> {
  const used = (await runCommand('ip', ['-4', 'addr'])).stdout;
  const candidates: number[] = [];
  for (let n = 200; n <= 254; n++) if (!used.includes(`192.168.${n}.`)) candidates.push(n);
  if (candidates.length === 0) throw new Error('no free 192.168.2xx.0/24 subnet on this host');
  return candidates[Math.floor(Math.random() * candidates.length)]!;
}
