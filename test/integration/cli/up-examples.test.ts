// `libvirt-operator up --examples` run again after an earlier run applied the demo (libvirt's
// test driver: nothing imports or boots, which the decision here does not need). A demo object
// whose deletion has begun is on its way out: the later run reported it "kept" and did not
// apply it again, so the demo could never come up. Now it says so and makes it anew, with what
// holds its delete (the machine on the network). A finalizer of the test's own stands in for
// what holds a delete on a real host (a running guest using the network or a Volume).
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { demoManifests, demoNames } from '../../../src/commands/demo.js';
import { cacheRoot } from '../../../src/commands/local/control-plane.js';
import { until } from '../../harness/agent.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { kubectlOk } from '../../harness/kubectl.js';
import { collect, output, spawnCli, stopAll, waitForLine } from '../../harness/processes.js';

const RUN = randomBytes(3).toString('hex');
const NAME = `rerun-${RUN}`;
const NODE = `up-rerun-${RUN}`;
const HOLD = 'test.virt.dev/hold';
const names = demoNames(NAME);

// up keeps the agent's state (import files, pool records) under its cache: this test's own
// folder, so a failed run leaves nothing in the user's. The tiny guest is the shared one.
const home = mkdtempSync(join(tmpdir(), 'lvo-up-rerun-'));
const guests = join(cacheRoot(), 'guest');
mkdirSync(guests, { recursive: true });
symlinkSync(guests, join(home, 'guest'));
const env = { ...process.env, LIBVIRT_OPERATOR_CACHE: home };

describe('a later up --examples', () => {
  const cp = useControlPlane();
  const children: ChildProcess[] = [];
  afterAll(async () => {
    await stopAll(children);
    rmSync(home, { recursive: true, force: true });
  }, 60_000);

  const startUp = (name = NAME) => {
    const up = spawnCli(
      [
        'up',
        '--examples',
        '--examples-name',
        name,
        '--node-name',
        NODE,
        '--libvirt-uri',
        'test:///default',
        '--health-addr',
        '127.0.0.1:0',
        '--kubeconfig',
        cp().kubeconfigPath,
      ],
      env,
    );
    children.push(up);
    return { up, printed: output(up) };
  };
  const running = (up: ChildProcess, printed: () => string) =>
    waitForLine(up, /^up: running/, 120_000).catch((err: Error) => {
      err.message += `\nup printed:\n${printed()}`;
      throw err;
    });
  const stop = async (up: ChildProcess) => {
    const done = collect(up, 60_000);
    up.kill('SIGTERM');
    expect((await done).code).toBe(0);
  };

  it('replaces a demo object being deleted, with the machine using it, and does not call it kept', async () => {
    const first = startUp();
    await running(first.up, first.printed);
    expect(first.printed()).toContain(`up: applied VirtualNetwork ${names.network}`);
    // A user's own machine on the demo's kernel Volume, listed in its status by the agent.
    const mine = `mine-${RUN}`;
    await kubectlOk(cp(), ['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualMachine',
        metadata: { name: mine, namespace: 'default' },
        spec: {
          nodeName: NODE,
          vcpus: 1,
          memory: '64Mi',
          disks: [{ name: 'root', volume: names.kernel }],
        },
      }),
    });
    const kernel = `volume/${names.kernel}`;
    await until(`${kernel} used by ${mine} in its status`, async () =>
      (await kubectlOk(cp(), ['get', kernel, '-o', 'jsonpath={.status.usedBy}'])).includes(mine),
    );
    await stop(first.up);

    // The next run is to make that Volume anew (the test driver imports nothing): it stops at
    // once, saying what holds it, and deletes nothing (it waited 180 s for a deletion that only
    // the user could end, without a word, after deleting the demo's machine).
    const held = startUp();
    const heldDone = await collect(held.up, 120_000);
    expect(heldDone.code, held.printed()).not.toBe(0);
    expect(held.printed()).toContain(
      `examples: Volume default/${names.kernel} of an earlier run is to be made anew, but ` +
        `VirtualMachine default/${mine} uses it`,
    );
    expect(held.printed()).not.toMatch(/^up: examples: replacing /m);
    const deleting = await kubectlOk(cp(), [
      'get',
      `vm/${mine}`,
      `vm/${names.vm}`,
      kernel,
      '-o',
      'jsonpath={.items[*].metadata.deletionTimestamp}',
    ]);
    expect(deleting).toBe('');
    // Gone without an agent (the test driver kept no domain of it): its status stays on the
    // Volume, which the next run must not take for a user still there.
    await kubectlOk(cp(), [
      'patch',
      `vm/${mine}`,
      '--type=merge',
      '-p',
      '{"metadata":{"finalizers":null}}',
    ]);
    await kubectlOk(cp(), ['delete', '--wait=true', '--timeout=60s', `vm/${mine}`]);

    // Deleted while no agent runs (up stopped before it finished), and held there.
    const net = `virtualnetwork/${names.network}`;
    await kubectlOk(cp(), [
      'patch',
      net,
      '--type=json',
      '-p',
      JSON.stringify([{ op: 'add', path: '/metadata/finalizers/-', value: HOLD }]),
    ]);
    await kubectlOk(cp(), ['delete', net, '--wait=false']);

    const second = startUp();
    await waitForLine(second.up, /^up: examples: replacing /, 120_000).catch((err: Error) => {
      err.message += `\nup printed:\n${second.printed()}`;
      throw err;
    });
    // Let it go: the agent's own finalizer has gone by now or goes once it looks.
    const got = await kubectlOk(cp(), ['get', net, '-o', 'jsonpath={.metadata.finalizers}']);
    const index = (JSON.parse(got || '[]') as string[]).indexOf(HOLD);
    await kubectlOk(cp(), [
      'patch',
      net,
      '--type=json',
      '-p',
      JSON.stringify([{ op: 'remove', path: `/metadata/finalizers/${index}` }]),
    ]);
    await running(second.up, second.printed);

    const lines = second.printed();
    expect(lines).toMatch(
      new RegExp(
        `^up: examples: replacing VirtualMachine default/${NAME} \\(it uses what is replaced\\), .*VirtualNetwork ${names.network} \\(being deleted\\) of an earlier run$`,
        'm',
      ),
    );
    expect(lines.indexOf(`up: applied VirtualNetwork ${names.network}`)).toBeGreaterThan(
      lines.indexOf('up: examples: replacing '),
    );
    expect(lines).toContain(`up: applied VirtualMachine default/${NAME}`);
    expect(lines).not.toMatch(/^up: examples: kept .*VirtualNetwork\//m);
    const now = await kubectlOk(cp(), ['get', net, '-o', 'jsonpath={.metadata.deletionTimestamp}']);
    expect(now).toBe('');

    // The agent removes what it made while it still runs.
    await kubectlOk(cp(), [
      'delete',
      '--wait=true',
      '--timeout=60s',
      `vm/${names.vm}`,
      `vol/${names.kernel}`,
      `vol/${names.initrd}`,
      net,
      `storagepool/${names.pool}`,
    ]);
    await stop(second.up);
  }, 300_000);

  it("stops at a user's objects under the demo's names and deletes none of them", async () => {
    // A user's cluster (up --kubeconfig), --examples-name naming their own machine and network,
    // the network being deleted (held by their machine, here by a finalizer). up replaced a
    // demo object being deleted with the machine using it: it deleted the user's machine.
    const theirs = `theirs-${RUN}`;
    const own = demoManifests({
      name: theirs,
      nodeName: NODE,
      base: 'http://127.0.0.1:9',
      sha256: { kernel: 'a'.repeat(64), initrd: 'b'.repeat(64) },
      cidr: '192.168.151.1/24',
      poolPath: `/var/lib/libvirt-operator/${theirs}-pool`,
    })
      .filter((m) => m.kind === 'VirtualMachine' || m.kind === 'VirtualNetwork')
      .map((m) => ({
        ...m,
        metadata: {
          ...m.metadata,
          labels: {},
          ...(m.kind === 'VirtualNetwork' ? { finalizers: [HOLD] } : {}),
        },
        // On another node: up's agent leaves it alone, only up's demo code meets it.
        ...(m.kind === 'VirtualMachine'
          ? { spec: { ...m.spec, nodeName: `elsewhere-${RUN}` } }
          : {}),
      }));
    await kubectlOk(cp(), ['apply', '-f', '-'], {
      input: own.map((m) => JSON.stringify(m)).join('\n'),
    });
    const net = `virtualnetwork/${theirs}-net`;
    await kubectlOk(cp(), ['delete', net, '--wait=false']);

    const { up, printed } = startUp(theirs);
    const done = await collect(up, 120_000);
    expect(done.code, printed()).not.toBe(0);
    expect(printed()).toContain(
      `VirtualNetwork ${theirs}-net, VirtualMachine default/${theirs} are not the demo's`,
    );
    expect(printed()).not.toMatch(/^up: examples: replacing /m);
    const vm = await kubectlOk(cp(), [
      'get',
      `vm/${theirs}`,
      '-o',
      'jsonpath={.metadata.deletionTimestamp}',
    ]);
    expect(vm).toBe('');

    await kubectlOk(cp(), [
      'patch',
      net,
      '--type=json',
      '-p',
      JSON.stringify([{ op: 'remove', path: '/metadata/finalizers' }]),
    ]);
    await kubectlOk(cp(), [
      'patch',
      `vm/${theirs}`,
      '--type=merge',
      '-p',
      '{"metadata":{"finalizers":null}}',
    ]);
    await kubectlOk(cp(), ['delete', '--wait=true', '--timeout=60s', `vm/${theirs}`]);
  }, 300_000);
});
