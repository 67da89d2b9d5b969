// Which kubeconfig `libvirt-operator vm` reads: kubectl's order, so a shell where kubectl
// reaches the cluster reaches it with this command too.
import { describe, expect, it } from 'vitest';
import { kubeconfigPath } from '../../../src/commands/flags.js';

const HOME_CONFIG = '/home/u/.kube/config';
const exists = (present: boolean) => (p: string) => present && p === HOME_CONFIG;

describe("vm's kubeconfig", () => {
  it('takes --kubeconfig, then KUBECONFIG, then ~/.kube/config', () => {
    const env = { KUBECONFIG: '/env/kc' };
    expect(kubeconfigPath('/flag/kc', env, '/home/u', exists(true))).toBe('/flag/kc');
    expect(kubeconfigPath(undefined, env, '/home/u', exists(true))).toBe('/env/kc');
    expect(kubeconfigPath(undefined, {}, '/home/u', exists(true))).toBe(HOME_CONFIG);
    // An empty KUBECONFIG is unset, as for kubectl.
    expect(kubeconfigPath(undefined, { KUBECONFIG: '' }, '/home/u', exists(true))).toBe(
      HOME_CONFIG,
    );
  });

  it("falls back to the pod's service account only when there is no file to read", () => {
    expect(kubeconfigPath(undefined, {}, '/home/u', exists(false))).toBeUndefined();
  });
});
