// `libvirt-operator up --examples` (what `npm start -- --examples` runs) against the real
// libvirtd: with no network beyond loopback it builds or finds the tiny guest, serves it to the
// demo Volumes, and the demo VirtualMachine reaches Running, Ready=True with an address from
// its NAT network's DHCP; the progress lines say so. The demo objects get this run's own
// name (--examples-name) so they never meet a user's demo on the shared libvirtd.
import { execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoNames } from '../../../src/commands/demo.js';
import { ensureLibvirtd, SYSTEM_URI } from '../../../src/commands/local/libvirtd.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { collect, spawnCli, waitForLine } from '../../harness/processes.js';

const RUN = randomBytes(3).toString('hex');
const NAME = `demo-${RUN}`;
const NODE = `e2e-up-${RUN}`;
const names = demoNames(NAME);

function virsh(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('virsh', ['-c', SYSTEM_URI, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }),
    );
  });
}

describe('up --examples boots the offline demo on the real libvirtd', () => {
  const cp = useControlPlane();
  let up: ChildProcess | undefined;
  let printed = '';

  beforeAll(async () => {
    await ensureLibvirtd();
  });

  afterAll(async () => {
    // The operator removes what it made while it still runs; virsh only catches leftovers.
    if (up && up.exitCode === null) {
      await cp()
        .kubectl([
          'delete',
          '--ignore-not-found',
          '--wait=true',
          '--timeout=90s',
          `vm/${names.vm}`,
          `vol/${names.kernel}`,
          `vol/${names.initrd}`,
          `virtualnetwork/${names.network}`,
          `storagepool/${names.pool}`,
        ])
        .catch(() => undefined);
      const done = collect(up, 60_000);
      up.kill('SIGTERM');
      await done;
    }
    const domain = `default_${names.vm}`;
    if ((await virsh('dominfo', domain)).code === 0) {
      await virsh('destroy', domain);
      await virsh('undefine', domain);
    }
    if ((await virsh('net-info', names.network)).code === 0) {
      await virsh('net-destroy', names.network);
      await virsh('net-undefine', names.network);
    }
    if ((await virsh('pool-info', names.pool)).code === 0) {
      await virsh('pool-destroy', names.pool);
      await virsh('pool-undefine', names.pool);
    }
    await rm(`/var/lib/libvirt-operator/${names.pool}`, { recursive: true, force: true });
  }, 180_000);

  it('prints the VM Running, Ready=True with a DHCP address, and status agrees', async () => {
    up = spawnCli(
      [
        'up',
        '--examples',
        '--examples-name',
        NAME,
        '--node-name',
        NODE,
        '--libvirt-uri',
        SYSTEM_URI,
        '--health-addr',
        '127.0.0.1:0',
        '--kubeconfig',
        cp().kubeconfigPath,
      ],
      process.env,
    );
    up.stdout?.setEncoding('utf8').on('data', (c: string) => (printed += c));
    up.stderr?.setEncoding('utf8').on('data', (c: string) => (printed += c));
    const line = await waitForLine(
      up,
      new RegExp(
        `^up: examples: VirtualMachine default/${NAME} is Running, Ready=True, address (\\S+) from ${names.network}'s DHCP`,
      ),
      // Seconds on an idle host; minutes when the host's two cores are shared by many runs.
      270_000,
    ).catch((err: Error) => {
      err.message += `\nup printed:\n${printed}`;
      throw err;
    });
    const ip = line[1]!;
    expect(ip).toMatch(/^192\.168\.1\d\d\.1\d\d(\/\d+)?$/);
    // The progress lines on the way: the Volumes imported, the VM with its address.
    expect(printed).toMatch(
      new RegExp(`up: Volume default/${names.kernel}: (Available|InUse), Ready=True`),
    );
    expect(printed).toMatch(
      new RegExp(`up: VirtualMachine default/${NAME}: Running, Ready=True \\(Running\\), IP `),
    );

    const got = await cp().kubectl(['get', 'vm', NAME, '-n', 'default', '-o', 'json']);
    expect(got.code, got.stderr).toBe(0);
    const vm = JSON.parse(got.stdout) as {
      spec: { domainType: string; boot?: { kernel?: { volume: string } } };
      status: {
        phase: string;
        conditions: Array<{ type: string; status: string }>;
        interfaces?: Array<{ ipAddresses?: string[] }>;
      };
    };
    expect(vm.spec.domainType).toBe('qemu');
    expect(vm.spec.boot?.kernel?.volume).toBe(names.kernel);
    expect(vm.status.phase).toBe('Running');
    expect(vm.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(vm.status.interfaces?.[0]?.ipAddresses).toContain(ip);
    // No placeholder digests: the Volumes carry the served files' real ones and are imported.
    const vol = await cp().kubectl(['get', 'vol', names.kernel, '-n', 'default', '-o', 'json']);
    const volume = JSON.parse(vol.stdout) as {
      spec: { source: { http: { url: string; sha256: string } } };
      status: { conditions: Array<{ type: string; status: string }> };
    };
    expect(volume.spec.source.http.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/vmlinuz$/);
    expect(volume.status.conditions.find((c) => c.type === 'Imported')?.status).toBe('True');
  });
});
