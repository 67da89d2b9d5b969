import { describe, expect, it } from 'vitest';
import { KubeApiError } from '../../../src/runtime/kube-client.js';
import { acquisitionProblem, leaseDecision } from '../../../src/runtime/lease.js';

describe('acquisitionProblem', () => {
  const path = '/apis/coordination.k8s.io/v1/namespaces/libvirt-operator/leases';
  it('names a missing namespace and the two ways out, not "held by another process"', () => {
    const err = new KubeApiError(
      404,
      'NotFound',
      'namespaces "libvirt-operator" not found',
      'POST',
      path,
    );
    expect(acquisitionProblem(err, 'libvirt-operator')).toBe(
      'namespace libvirt-operator not found: create it (kubectl create namespace libvirt-operator) or pass --lease-namespace',
    );
  });
  it('names missing RBAC, and passes other answers on', () => {
    const forbidden = new KubeApiError(
      403,
      'Forbidden',
      'leases is forbidden: User "x"',
      'POST',
      path,
    );
    expect(acquisitionProblem(forbidden, 'ns')).toMatch(
      /^forbidden to read or write Leases in namespace ns/,
    );
    expect(acquisitionProblem(new Error('connect ECONNREFUSED'), 'ns')).toBe(
      'the API server refused or did not answer: connect ECONNREFUSED',
    );
  });
});

describe('lease decision', () => {
  const t = 1_000_000;
  it('renews our own lease, takes a free or released one', () => {
    expect(leaseDecision({ holderIdentity: 'me', leaseDurationSeconds: 15 }, 'me', t, t)).toBe(
      'renew',
    );
    expect(leaseDecision({}, 'me', t, t)).toBe('acquire');
    expect(leaseDecision({ holderIdentity: null, leaseDurationSeconds: 1 }, 'me', t, t)).toBe(
      'acquire',
    );
    expect(leaseDecision({ holderIdentity: '', leaseDurationSeconds: 1 }, 'me', t, t)).toBe(
      'acquire',
    );
  });

  it('waits for another holder until the lease went unchanged for its duration by our clock, whatever its renewTime says', () => {
    const spec = {
      holderIdentity: 'other',
      leaseDurationSeconds: 15,
      renewTime: '1970-01-01T00:00:00.000000Z',
    };
    expect(leaseDecision(spec, 'me', t, t + 14_999)).toBe('wait');
    expect(leaseDecision(spec, 'me', t, t + 15_000)).toBe('acquire');
  });
});
