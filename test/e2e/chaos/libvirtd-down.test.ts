// What happens on the host while libvirtd is down reaches the agent by no event: the daemon
// finds the change when it starts again, before the agent's new connection has subscribed or
// while it takes its first look (its QEMU driver reconnects to its guests in threads of their
// own, and marks a dead one shut off without an event). So the agent must look at every object
// again once its libvirt connection is back, and again once the daemon has settled
// (src/agent/reconnect-looks.ts), instead of trusting its statuses until the next resync (10
// minutes in production).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  processAlive,
  startPrivateLibvirtd,
  type LibvirtDaemon,
} from '../../../src/commands/local/libvirtd.js';
import { Connect } from '../../../src/libvirt/index.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { getJSON, startTestAgent, until, type TestAgent } from '../../harness/agent.js';

const NODE = 'chaos-libvirtd-down';
const NS = 'chaos-libvirtd-down';

interface Vm {
  metadata: { uid: string };
  status?: {
    phase?: string;
    restartCount?: number;
    conditions?: Array<{ type: string; status: string }>;
  };
}

async function waitGone(pid: number): Promise<void> {
  await until(`process ${pid} gone`, async () => !processAlive(pid), 15_000);
}

describe('a guest that died while libvirtd was down', () => {
  const cp = useControlPlane();
  let daemon: LibvirtDaemon;
  let agent: TestAgent;
  let conn: Connect | undefined;

  beforeAll(async () => {
    daemon = await startPrivateLibvirtd();
    // Longer than the test: only the reconnect itself may bring the agent to look again.
    agent = await startTestAgent(cp(), {
      nodeName: NODE,
      libvirtUri: daemon.uri,
      resyncMs: 600_000,
    });
    const ns = await cp().kubectl(['create', 'namespace', NS]);
    if (ns.code !== 0) throw new Error(`creating namespace ${NS}: ${ns.stderr}`);
  });

  afterAll(async () => {
    await agent?.stop();
    conn ??= daemon && (await Connect.open(daemon.uri).catch(() => undefined));
    for (const d of (await conn?.listAllDomains().catch(() => [])) ?? []) {
      await d.destroy().catch(() => undefined);
      await d.undefine().catch(() => undefined);
    }
    await conn?.close().catch(() => undefined);
    await daemon?.stop();
  });

  it('is started again by the agent as soon as libvirtd is back', async () => {
    const manifest = {
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'always', namespace: NS },
      spec: {
        nodeName: NODE,
        domainType: 'qemu',
        runStrategy: 'Always',
        vcpus: 1,
        memory: '32Mi',
      },
    };
    const res = await cp().kubectl(['apply', '--server-side', '-f', '-'], {
      input: JSON.stringify(manifest),
    });
    expect(res.stderr).toBe('');
    const running = await until(
      'vm/always Running',
      async () => {
        const vm = await getJSON<Vm>(cp(), ['vm', 'always', '-n', NS]);
        return vm.status?.phase === 'Running' && vm;
      },
      60_000,
    );
    // The private daemon's /run/libvirt is <dir>/run: QEMU's pid file is there.
    const runDir = path.dirname(daemon.uri.replace(/^.*socket=/, ''));
    const pidFile = path.join(runDir, 'qemu', `${NS}_always.pid`);
    const qemuPid = Number((await readFile(pidFile, 'utf8')).trim());
    expect(processAlive(qemuPid)).toBe(true);

    const daemonPid = daemon.pid();
    process.kill(daemonPid, 'SIGKILL');
    await waitGone(daemonPid);
    process.kill(qemuPid, 'SIGKILL');
    await waitGone(qemuPid);
    await daemon.restart();

    conn = await Connect.open(daemon.uri);
    const domain = await conn.lookupDomainByUUIDString(running.metadata.uid);
    await until(
      'the agent started the guest again after libvirtd came back (no event tells it)',
      async () => {
        const vm = await getJSON<Vm>(cp(), ['vm', 'always', '-n', NS]);
        return (
          (await domain.isActive()) &&
          vm.status?.phase === 'Running' &&
          (vm.status.restartCount ?? 0) >= 1
        );
      },
      // The reconnect's backoff reaches 10 s (±20%), and a try that meets a daemon still
      // starting may wait out the 10 s open timeout: about 25 s at worst before the start.
      60_000,
    );
  });
});
