import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  hostBridgeExists,
  hostDeviceExists,
} from '../../../../src/controllers/virtual-network/observe.js';
import type { Connect } from '../../../../src/libvirt/connection.js';

describe('hostBridgeExists', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('cannot tell inside a pod, whose /sys/class/net shows the pod, not the host', async () => {
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '10.96.0.1');
    const neverAsked = {} as Connect; // a call on it would throw
    expect(await hostBridgeExists(neverAsked, 'lo')).toBeUndefined();
  });

  it('on the host, looks at the host: lo is no bridge, a name with a slash never is', async () => {
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '');
    const qemu = { getType: async () => 'QEMU' } as unknown as Connect;
    expect(await hostBridgeExists(qemu, 'lo')).toBe(false);
    expect(await hostBridgeExists(qemu, '../lo')).toBe(false);
  });
});

describe('hostDeviceExists', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('sees any device (lo is one), cannot tell in a pod or on the test driver', async () => {
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '');
    const qemu = { getType: async () => 'QEMU' } as unknown as Connect;
    expect(await hostDeviceExists(qemu, 'lo')).toBe(true);
    expect(await hostDeviceExists(qemu, 'hnet-no-such-dev')).toBe(false);
    expect(await hostDeviceExists(qemu, '../lo')).toBe(false);
    const test = { getType: async () => 'Test' } as unknown as Connect;
    expect(await hostDeviceExists(test, 'lo')).toBeUndefined();
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '10.96.0.1');
    expect(await hostDeviceExists(qemu, 'lo')).toBeUndefined();
  });
});
