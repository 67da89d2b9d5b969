import { describe, expect, it } from 'vitest';
import { stableMessage } from '../../../src/controllers/kit.js';

describe('stableMessage', () => {
  it('reads the same for two failed starts of one machine, whose QEMU lines carry their own times', () => {
    const at = (t: string) =>
      `internal error: process exited while connecting to monitor: ${t} qemu-system-x86_64: ` +
      `-device {"driver":"virtio-blk-pci"}: Failed to get "write" lock\n` +
      `${t} Is another process using the image [/srv/data.img]?`;
    const first = stableMessage(at('2026-12-04T22:09:54.361404Z'));
    expect(stableMessage(at('2026-12-04T22:09:55.047911Z'))).toBe(first);
    expect(first).not.toMatch(/2026/);
    expect(first).toContain('qemu-system-x86_64: -device');
    expect(first).toContain('\nIs another process using the image [/srv/data.img]?');
  });

  it('says one thing for the two ways libvirt words a QEMU that exits while starting', () => {
    const tail = 'qemu-system-x86_64: cannot set up guest memory: Cannot allocate memory';
    const raced = [
      `internal error: process exited while connecting to monitor: ${tail}`,
      `internal error: qemu unexpectedly closed the monitor: ${tail}`,
    ].map(stableMessage);
    expect(raced[0]).toBe(raced[1]);
    expect(raced[0]).toBe(`internal error: QEMU exited while starting: ${tail}`);
  });

  it('leaves a message without timestamps alone', () => {
    const m = "cannot open directory '/var/lib/dpkg/status': Not a directory";
    expect(stableMessage(m)).toBe(m);
  });
});
