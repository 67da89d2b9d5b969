import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { reconnectLooks, SETTLE_LOOKS_MS } from '../../../src/agent/reconnect-looks.js';

describe('looks at every object after libvirt reconnects', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('looks at once, then again after each settle delay, and no more', () => {
    const look = vi.fn();
    const looks = reconnectLooks(look);
    looks.opened();
    expect(look).toHaveBeenCalledTimes(1);
    const [first, second] = SETTLE_LOOKS_MS as [number, number];
    vi.advanceTimersByTime(first - 1);
    expect(look).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1);
    expect(look).toHaveBeenCalledTimes(2);
    vi.advanceTimersByTime(second - first);
    expect(look).toHaveBeenCalledTimes(3);
    vi.advanceTimersByTime(10 * second);
    expect(look).toHaveBeenCalledTimes(3);
  });

  it('drops the pending looks when the connection goes again, and starts over when it is back', () => {
    const look = vi.fn();
    const looks = reconnectLooks(look, [100, 1_000]);
    looks.opened();
    vi.advanceTimersByTime(150);
    expect(look).toHaveBeenCalledTimes(2);
    looks.dropped();
    vi.advanceTimersByTime(5_000);
    expect(look).toHaveBeenCalledTimes(2);
    looks.opened();
    expect(look).toHaveBeenCalledTimes(3);
    vi.advanceTimersByTime(1_000);
    expect(look).toHaveBeenCalledTimes(5);
  });

  it("a second open replaces the first one's pending looks instead of adding to them", () => {
    const look = vi.fn();
    const looks = reconnectLooks(look, [100]);
    looks.opened();
    looks.opened();
    vi.advanceTimersByTime(1_000);
    expect(look).toHaveBeenCalledTimes(3);
  });

  it('leaves no timer behind once the connection is gone', () => {
    const looks = reconnectLooks(() => undefined);
    looks.opened();
    expect(vi.getTimerCount()).toBe(SETTLE_LOOKS_MS.length);
    looks.dropped();
    expect(vi.getTimerCount()).toBe(0);
  });
});
