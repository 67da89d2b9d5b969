import { describe, expect, it } from 'vitest';
import {
  agentConfig,
  defaultLibvirtUri,
  parseHostPort,
  type ConfigInput,
} from '../../../src/agent/config.js';

const defaults = { hostname: () => 'Host-A', libvirtUri: () => 'test:///default' };
const cfg = (flags: ConfigInput['flags'], env: ConfigInput['env'] = {}) =>
  agentConfig({ flags, env }, defaults);

describe('agent configuration', () => {
  it('prefers flags over environment over defaults', () => {
    expect(cfg({}).nodeName).toBe('host-a');
    expect(cfg({}, { NODE_NAME: 'env-node' }).nodeName).toBe('env-node');
    expect(cfg({ 'node-name': 'flag-node' }, { NODE_NAME: 'env-node' }).nodeName).toBe('flag-node');
    expect(cfg({}, { LIBVIRT_URI: 'qemu:///system' }).libvirtUri).toBe('qemu:///system');
    expect(
      cfg({ 'libvirt-uri': 'test:///default' }, { LIBVIRT_URI: 'qemu:///system' }).libvirtUri,
    ).toBe('test:///default');
    expect(cfg({}, { KUBECONFIG: '/k' }).kubeconfig).toBe('/k');
    expect(cfg({}, { KUBECONFIG: '' }).kubeconfig).toBeUndefined();
    expect(cfg({}, { POD_NAMESPACE: 'ops' }).leaseNamespace).toBe('ops');
    expect(cfg({}, { POD_NAME: 'agent-x7k2p' }).leaseIdentity).toBe('agent-x7k2p');
    expect(cfg({}).leaseIdentity).toBeUndefined();
    expect(cfg({}).leaseDurationSeconds).toBeUndefined();
    expect(cfg({}, { LEASE_DURATION: '15' }).leaseDurationSeconds).toBe(15);
    expect(cfg({ 'lease-duration': '8' }, { LEASE_DURATION: '15' }).leaseDurationSeconds).toBe(8);
  });

  it('rejects a lease duration that is not whole seconds from 4 to 3600, naming where it came from', () => {
    for (const bad of ['', 'x', '2.5', '3', '3601', '-40']) {
      expect(() => cfg({ 'lease-duration': bad })).toThrow(
        `--lease-duration must be whole seconds from 4 to 3600 (default 40), got '${bad}'`,
      );
    }
    expect(() => cfg({}, { LEASE_DURATION: '1m' })).toThrow(/^LEASE_DURATION must be whole/);
  });

  it('parses listen addresses and names the flag when one is wrong', () => {
    expect(parseHostPort('metrics-addr', '127.0.0.1:8080')).toEqual({
      host: '127.0.0.1',
      port: 8080,
    });
    expect(parseHostPort('metrics-addr', ':9090')).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(parseHostPort('metrics-addr', '[::1]:1')).toEqual({ host: '::1', port: 1 });
    expect(() => parseHostPort('health-addr', 'localhost')).toThrow(
      /^--health-addr must be HOST:PORT/,
    );
    expect(() => parseHostPort('health-addr', 'x:99999')).toThrow(
      /^--health-addr must be HOST:PORT/,
    );
    expect(cfg({ 'metrics-addr': '0' }).metricsAddr).toBeUndefined();
    // A wrong value from the environment names the variable: no flag was given to look at.
    expect(() => cfg({}, { HEALTH_ADDR: 'nonsense' })).toThrow(/^HEALTH_ADDR must be HOST:PORT/);
    expect(() => cfg({}, { METRICS_ADDR: 'x' })).toThrow(/^METRICS_ADDR must be HOST:PORT/);
    expect(() => cfg({ 'health-addr': 'x' }, { HEALTH_ADDR: ':1' })).toThrow(/^--health-addr /);
  });

  it('rejects a node name Kubernetes would reject', () => {
    expect(() => cfg({ 'node-name': 'bad_name' })).toThrow(
      /node name 'bad_name' is not a valid Kubernetes node name/,
    );
    expect(() => cfg({ 'node-name': 'x'.repeat(254) })).toThrow(/not a valid/);
  });

  it('rejects an unknown log level', () => {
    expect(() => cfg({ 'log-level': 'loud' })).toThrow(/--log-level must be one of/);
    expect(() => cfg({}, { LOG_LEVEL: 'loud' })).toThrow(/^LOG_LEVEL must be one of/);
  });

  it('uses the local libvirtd only when its socket exists', () => {
    expect(defaultLibvirtUri(() => true)).toBe('qemu:///system');
    expect(defaultLibvirtUri(() => false)).toBe('test:///default');
  });
});
