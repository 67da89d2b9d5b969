import { describe, expect, it } from 'vitest';
import { parseDomainStats } from '../../../src/libvirt/stats.js';

describe('parseDomainStats', () => {
  it('groups libvirt typed parameters into typed records with bigint counters', () => {
    const rec = parseDomainStats({
      name: 'ns_vm',
      uuid: '4b2f0c6e-0000-4000-8000-000000000001',
      params: {
        'state.state': 1,
        'state.reason': 1,
        'cpu.time': 18446744073709551615n,
        'cpu.user': 10n,
        'balloon.current': 262144n,
        'balloon.maximum': 262144n,
        'balloon.rss': 100000n,
        'vcpu.current': 2,
        'vcpu.maximum': 4,
        'net.count': 1,
        'net.0.name': 'vnet3',
        'net.0.rx.bytes': 1234n,
        'net.0.tx.bytes': 99n,
        'block.count': 2,
        'block.0.name': 'vda',
        'block.0.path': '/var/lib/x.qcow2',
        'block.0.rd.bytes': 4096n,
        'block.0.wr.bytes': 0n,
        'block.1.name': 'vda',
        'block.1.backingIndex': 1,
      },
    });
    expect(rec.state).toEqual({ state: 1, reason: 1, stateName: 'running', reasonName: 'booted' });
    expect(rec.cpu).toEqual({ time: 18446744073709551615n, user: 10n });
    expect(rec.balloon).toEqual({ current: 262144n, maximum: 262144n, rss: 100000n });
    expect(rec.vcpu).toEqual({ current: 2, maximum: 4 });
    expect(rec.interfaces).toEqual([{ name: 'vnet3', rxBytes: 1234n, txBytes: 99n }]);
    expect(rec.blocks[0]).toEqual({
      name: 'vda',
      path: '/var/lib/x.qcow2',
      rdBytes: 4096n,
      wrBytes: 0n,
    });
    expect(rec.blocks[1]).toEqual({ name: 'vda', backingIndex: 1 });
  });

  it('leaves groups the driver did not report undefined (the test driver reports only state)', () => {
    const rec = parseDomainStats({
      name: 'test',
      uuid: 'u',
      params: { 'state.state': 5, 'state.reason': 0 },
    });
    expect(rec.cpu).toBeUndefined();
    expect(rec.balloon).toBeUndefined();
    expect(rec.vcpu).toBeUndefined();
    expect(rec.interfaces).toEqual([]);
    expect(rec.blocks).toEqual([]);
    expect(rec.state?.stateName).toBe('shutoff');
  });
});
