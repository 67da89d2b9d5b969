// Guest metrics against a slow libvirtd: libvirt cannot cancel a call, so a bulk stats call
// that outlives its scrape keeps a binding worker busy until libvirtd answers. Scrapes that
// keep coming (every interval, a second Prometheus) must not add one busy worker each: they
// wait for the call in flight. The connection here stands in for the binding's: a call with a
// timeout rejects in time while its worker stays busy, as src/libvirt/README.md describes.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerGuestMetrics } from '../../../src/agent/guest-metrics.js';
import type { Connect, DomainStatsRecord } from '../../../src/libvirt/index.js';

/** A libvirtd that answers only when told to; counts the calls its workers are busy with. */
function slowLibvirt() {
  const answers: Array<(records: DomainStatsRecord[]) => void> = [];
  const state = { calls: 0, busy: 0 };
  const conn = {
    getAllDomainStats(_stats: number, _flags: number, opts?: { timeoutMs?: number }) {
      state.calls++;
      state.busy++;
      const answered = new Promise<DomainStatsRecord[]>((resolve) =>
        answers.push((records) => {
          state.busy--;
          resolve(records);
        }),
      );
      const timeoutMs = opts?.timeoutMs;
      if (!timeoutMs) return answered;
      return Promise.race([
        answered,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('operation timed out')), timeoutMs),
        ),
      ]);
    },
  };
  return {
    conn: conn as unknown as Connect,
    state,
    answerAll: () => answers.splice(0).forEach((answer) => answer([])),
  };
}

describe('guest metrics while libvirtd is slow', () => {
  it('keeps one bulk call in flight however many scrapes come', async () => {
    const libvirt = slowLibvirt();
    const errors: unknown[] = [];
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => libvirt.conn,
      vm: () => undefined,
      timeoutMs: 20,
      onError: (err) => errors.push(err),
    });
    // Four scrapes, each given up on after its timeout; the page is still served.
    for (let i = 0; i < 4; i++) {
      const text = await registry.metrics();
      expect(text).toContain('# TYPE virt_vm_vcpus gauge');
      expect(text).not.toMatch(/^virt_vm_/m);
    }
    expect(libvirt.state.busy).toBe(1);
    expect(errors).toHaveLength(4);
    expect(String(errors[0])).toMatch(/no answer within 20 ms/);

    // Once libvirtd answers, the next scrape makes a call of its own again.
    libvirt.answerAll();
    await new Promise((resolve) => setTimeout(resolve, 0));
    await registry.metrics();
    expect(libvirt.state.calls).toBe(2);
    libvirt.answerAll();
  });
});
