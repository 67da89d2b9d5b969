// An agent stopped before its libvirt ever answered (a wrong --libvirt-uri, a libvirtd that is
// down) stops like any other: `libvirt-operator run` got SIGTERM and, instead of exiting 0,
// died with a stack trace ("the reconnecting connection was closed"), the rejection of its
// `synced` promise, which nobody awaits under `run`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startAgent } from '../../../src/agent/agent.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode } from '../../harness/agent.js';

const NODE = 'node-no-libvirt';

describe('an agent whose libvirt is unreachable', () => {
  const cp = useControlPlane();
  const stateDir = mkdtempSync(join(tmpdir(), 'lvo-agent-'));
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  it('stops cleanly, without an unhandled rejection', async () => {
    await ensureNode(cp(), NODE);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const agent = await startAgent({
        libvirtUri: `qemu+unix:///system?socket=${join(stateDir, 'no-such-socket')}`,
        kubeConfig: cp().kubeConfig,
        stateDir,
        lease: false,
        log: { level: process.env.LVO_TEST_LOG ?? 'silent' },
        nodeName: NODE,
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(agent.libvirt.state).not.toBe('open');
      await agent.stop();
      // Node reports an unhandled rejection after the microtasks of the tick it happened in.
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled.map(String)).toEqual([]);
  });
});
