// Reading the guest's console log while QEMU writes it: a marker counts only once its line is
// complete. A CI run read `LVO-GUEST-READY cf89581a-7b71-` mid-write and took half a boot id
// for the new boot's.
import { describe, expect, it } from 'vitest';
import {
  completeLines,
  GUEST_MARKER,
  matchLine,
  withoutGuestStatus,
} from '../../../src/commands/local/tiny-guest.js';

const BOOT = 'cf89581a-7b71-468a-bbbd-ee72f81463ce';

describe('console lines', () => {
  it('leaves out a last line that has no newline yet', () => {
    expect(completeLines('a\r\nb\r\nLVO-GUEST-READY cf89')).toEqual(['a', 'b']);
    expect(completeLines('a\r\nb\r\n')).toEqual(['a', 'b']);
    expect(completeLines('')).toEqual([]);
    expect(completeLines('no newline yet')).toEqual([]);
  });

  it('does not match a marker until its line is complete', () => {
    const partial = `boot\r\nLVO-GUEST-READY ${BOOT.slice(0, 14)}`;
    expect(matchLine(partial, GUEST_MARKER.ready)).toBeUndefined();
    expect(matchLine(`${partial}${BOOT.slice(14)}\r\n`, GUEST_MARKER.ready)?.[1]).toBe(BOOT);
  });

  it('does not take a disk list that is still being written for an empty one', () => {
    expect(matchLine('LVO-GUEST-DISKS ', /^LVO-GUEST-DISKS $/)).toBeUndefined();
    expect(matchLine('LVO-GUEST-DISKS \r\n', /^LVO-GUEST-DISKS $/)).toBeDefined();
  });

  // The guest's tty echoes typed bytes as they arrive while its own status lines keep coming:
  // shaped like the serial output a CI run recorded (LVO-GUEST-UPTIME inside the echo).
  const MARK = 'LVO-CLI-3fa2c1d0';
  const typed = `echo ${MARK}-$((6*7))`;
  const inside = `echo ${MARK}-$((6LVO-GUEST-UPTIME 41.07\r\n*7))\r\n${MARK}-42\r\n`;
  // ... and the echo going on behind the uptime's value before the marker's own line break
  // (echoed digits there would read as part of the value: no test types a line that way).
  const behind = `echo LVO-GUEST-UPTIME 43.07${MARK}-$((6*7))\r\n\r\n${MARK}-42\r\n`;
  // ... and a marker without a value.
  const bare = `echo ${MARK}LVO-GUEST-POWEROFF\r\n-$((6*7))\r\n${MARK}-42\r\n`;

  it('finds a status line that landed inside an echoed command', () => {
    expect(matchLine(inside, GUEST_MARKER.uptime)?.[1]).toBe('41.07');
    expect(matchLine(behind, GUEST_MARKER.uptime)?.[1]).toBe('43.07');
    expect(matchLine(bare, GUEST_MARKER.poweroff)).toBeDefined();
    const tick = `lvo-susLVO-GUEST-TICK 17\r\npend &\r\nLVO-GUEST-TICK 18\r\n`;
    expect(completeLines(tick).flatMap((l) => l.match(GUEST_MARKER.tick)?.[1] ?? [])).toEqual([
      '17',
      '18',
    ]);
    // The shell's answer keeps its own line.
    expect(matchLine(inside, new RegExp(`^${MARK}-42$`))).toBeDefined();
  });

  it('gives back the echo of a typed command whole, the status lines taken out', () => {
    for (const stream of [inside, behind, bare]) {
      expect(stream).not.toContain(typed);
      expect(withoutGuestStatus(stream)).toContain(typed);
      expect(withoutGuestStatus(stream)).toContain(`${MARK}-42\r\n`);
      expect(withoutGuestStatus(stream)).not.toContain('LVO-GUEST-');
    }
    // Lines of its own go whole, other text stays.
    expect(withoutGuestStatus('a\r\nLVO-GUEST-DISKS vda vdb\r\nLVO-GUEST-CPUS 2\nb\r\n')).toBe(
      'a\r\nb\r\n',
    );
  });
});
