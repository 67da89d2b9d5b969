import { describe, expect, it } from 'vitest';
import { subnetConflict } from '../../../src/commands/local/local-node.js';

// `ip -4 -o addr show` as this host prints it.
const addrShow = (extra: string) =>
  [
    '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever',
    '2: eth0    inet 10.1.2.3/16 brd 10.1.255.255 scope global eth0\\       valid_lft forever',
    extra,
  ].join('\n');
const conflict = (extra: string) => subnetConflict('10.244.0.0/24', addrShow(extra));

describe('the pod subnet against the host’s interfaces', () => {
  it('is free when no interface is inside it', () => {
    expect(conflict('')).toBeUndefined();
    expect(conflict('5: virbr0    inet 192.168.122.1/24 scope global virbr0')).toBeUndefined();
  });

  it('names the interface that overlaps, and says how to choose another', () => {
    const m = conflict('6: cni0    inet 10.244.0.1/16 scope global cni0');
    expect(m).toBe(
      'pod subnet 10.244.0.0/24 overlaps 10.244.0.1/16 on this host (cni0); choose another with --pod-subnet',
    );
  });

  it('tells how to remove a bridge of ours that a killed local node left behind', () => {
    const m = conflict('9: lvo-90846843    inet 10.244.0.1/24 scope global lvo-90846843');
    expect(m).toContain('(lvo-90846843); choose another with --pod-subnet');
    expect(m).toContain(
      'if no other local node runs, it is one left behind: ip link delete lvo-90846843',
    );
  });

  it('refuses a pod subnet that is not an IPv4 CIDR from /8 to /28, naming it', () => {
    for (const bad of ['10.244.0.0/30', '10.244.0.0/4', '10.244.0.0', 'fd00::/64'])
      expect(() => subnetConflict(bad, addrShow(''))).toThrow(
        `pod subnet must be an IPv4 CIDR from /8 to /28, got '${bad}'`,
      );
  });
});
