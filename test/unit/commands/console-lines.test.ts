// Reading the guest's console log while QEMU writes it: a marker counts only once its line is
// complete. A CI run read `LVO-GUEST-READY cf89581a-7b71-` mid-write and took half a boot id
// for the new boot's.
import { describe, expect, it } from 'vitest';
import { completeLines, GUEST_MARKER, matchLine } from '../../../src/commands/local/tiny-guest.js';

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
});
