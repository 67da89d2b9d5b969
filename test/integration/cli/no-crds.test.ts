// `vm` and `console` against a cluster that does not serve virt.dev (its CRDs never applied,
// e.g. `npm start -- --kubeconfig` pointed at a fresh cluster): the API server's 404 is the
// same as for a missing machine, and the commands must not send the user hunting for a typo.
// `up --kubeconfig` there says what it waits for, and Ctrl-C stops it.
import { describe, expect, it } from 'vitest';
import { collect, output, spawnCli, waitForLine } from '../../harness/processes.js';
import { useControlPlane } from '../../harness/control-plane.js';

const NO_CRDS =
  'the cluster has no virtualmachines.virt.dev (virt.dev/v1alpha1): its CRDs are not installed (kubectl apply -k manifests/, docs/deploy.md)';

describe('vm and console on a cluster without the CRDs', () => {
  const cp = useControlPlane({ installCRDs: false });

  it('say the CRDs are missing, not that the machine is', async () => {
    for (const command of [['vm', 'pause'], ['console']]) {
      const res = await collect(
        spawnCli([...command, 'web', '--kubeconfig', cp().kubeconfigPath, '-n', 'default']),
      );
      expect(res.stderr.trim(), command.join(' ')).toBe(
        `libvirt-operator ${command[0]}: ${NO_CRDS}`,
      );
      expect(res.code, command.join(' ')).toBe(1);
    }
  });

  it('up names the kinds the cluster does not list, and stops on SIGINT', async () => {
    const up = spawnCli([
      'up',
      '--kubeconfig',
      cp().kubeconfigPath,
      '--node-name',
      'no-crds-node',
      '--libvirt-uri',
      'test:///default',
      '--health-addr',
      '127.0.0.1:0',
    ]);
    const printed = output(up);
    const done = collect(up, 30_000);
    await waitForLine(up, /^up: waiting for the cluster/, 30_000).catch((err: Error) => {
      up.kill('SIGKILL');
      err.message += `\nup printed:\n${printed()}`;
      throw err;
    });
    expect(printed()).toContain(
      'up: waiting for the cluster to list virtualmachines, volumes, virtualnetworks, storagepools, virtualmachinesnapshots, virtualmachinerestores: are its CRDs installed? (kubectl apply -k manifests/, docs/deploy.md); Ctrl-C stops',
    );
    up.kill('SIGINT');
    // Still starting (the agent never synced): a stop during start-up exits 128 + SIGINT.
    expect((await done).code, printed()).toBe(130);
    expect(printed()).toMatch(/^up: stopped during start-up \(SIGINT\)$/m);
  }, 60_000);
});
