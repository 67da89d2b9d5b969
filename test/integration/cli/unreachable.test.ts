// `vm`, `console` and `forget-node` with a kubeconfig whose API server is not there (a local
// control plane that has stopped, a stale KUBECONFIG): the error names the server and the
// kubeconfig it came from, and says what to check, instead of Node's bare
// "connect ECONNREFUSED 127.0.0.1:PORT".
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../src/commands/local/control-plane.js';
import { collect, spawnCli } from '../../harness/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-unreach-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('commands whose API server does not answer', () => {
  it('name the server and the kubeconfig, exit 1', async () => {
    const port = await freePort(); // free: nothing listens there
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: gone, cluster: {server: "https://127.0.0.1:' + port + '"}}]',
        'users: [{name: admin, user: {token: t}}]',
        'contexts: [{name: gone, context: {cluster: gone, user: admin}}]',
        'current-context: gone',
      ].join('\n'),
    );
    for (const command of [
      ['vm', 'pause', 'web'],
      ['console', 'web'],
      ['forget-node', 'n1'],
    ]) {
      const res = await collect(spawnCli([...command, '--kubeconfig', kubeconfig]), 30_000);
      expect(res.stderr.trim(), command.join(' ')).toBe(
        `libvirt-operator ${command[0]}: cannot reach the API server https://127.0.0.1:${port} ` +
          `(from the kubeconfig ${kubeconfig}): connect ECONNREFUSED 127.0.0.1:${port}; ` +
          'is the cluster running, and is that the kubeconfig you meant (--kubeconfig, KUBECONFIG)?',
      );
      expect(res.code, command.join(' ')).toBe(1);
    }
  });
});
