// `vm`, `console` and `forget-node` with a kubeconfig whose API server is not there (a local
// control plane that has stopped, a stale KUBECONFIG): the error names the server and the
// kubeconfig it came from, and says what to check, instead of Node's bare
// "connect ECONNREFUSED 127.0.0.1:PORT". A server that accepts the connection and never
// answers is given up on within the commands' own bound, not the client's 30 s; so is one
// that up --kubeconfig asks for its Node. That bound is --request-timeout's: 1 s here, so that
// the test does not wait out the default 10 s (unit tests check the default is what it reads).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../src/commands/local/control-plane.js';
import { collect, spawnCli } from '../../harness/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'lvo-unreach-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const COMMANDS = [
  ['vm', 'pause', 'web'],
  ['console', 'web'],
  ['forget-node', 'n1'],
];
// up's own requests (its Node, its Lease's namespace) are bounded alike: a person waits on them.
const SILENT_COMMANDS = [...COMMANDS, ['up', '--libvirt-uri', 'test:///default']];
const REQUEST_TIMEOUT_MS = 1_000;

function writeKubeconfig(port: number): string {
  const kubeconfig = join(dir, `kubeconfig-${port}`);
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
  return kubeconfig;
}

describe('commands whose API server does not answer', () => {
  it('name the server and the kubeconfig, exit 1', async () => {
    const port = await freePort(); // free: nothing listens there
    const kubeconfig = writeKubeconfig(port);
    for (const command of COMMANDS) {
      const res = await collect(spawnCli([...command, '--kubeconfig', kubeconfig]), 30_000);
      expect(res.stderr.trim(), command.join(' ')).toBe(
        `libvirt-operator ${command[0]}: cannot reach the API server https://127.0.0.1:${port} ` +
          `(from the kubeconfig ${kubeconfig}): connect ECONNREFUSED 127.0.0.1:${port}; ` +
          'is the cluster running, and is that the kubeconfig you meant (--kubeconfig, KUBECONFIG)?',
      );
      expect(res.code, command.join(' ')).toBe(1);
    }
  });

  it('up --kubeconfig names them too', async () => {
    const port = await freePort();
    const kubeconfig = writeKubeconfig(port);
    const res = await collect(
      spawnCli(['up', '--kubeconfig', kubeconfig, '--libvirt-uri', 'test:///default']),
      60_000,
    );
    expect(res.stderr.trim()).toBe(
      `libvirt-operator up: cannot reach the API server https://127.0.0.1:${port} ` +
        `(from the kubeconfig ${kubeconfig}): connect ECONNREFUSED 127.0.0.1:${port}; ` +
        'is the cluster running, and is that the kubeconfig you meant (--kubeconfig, KUBECONFIG)?',
    );
    expect(res.code).toBe(1);
  });

  it('give up on a server that accepts and never answers within their bound, naming it', async () => {
    // One listener per command, that takes the connection and reads nothing back: TLS never
    // completes. Its own listener tells when each command first reached the server.
    const listeners = await Promise.all(
      SILENT_COMMANDS.map(async () => {
        const sockets = new Set<Socket>();
        let connectedAt: number | undefined;
        const server = createServer((s) => {
          connectedAt ??= Date.now();
          sockets.add(s);
        });
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
        const port = (server.address() as { port: number }).port;
        return { server, sockets, port, connectedAt: () => connectedAt };
      }),
    );
    try {
      // All at once: each only waits out its bound on an idle socket, and four in a row spent
      // ~45 s of the suite waiting. Timed from the first connection, not the spawn: four CLIs
      // starting together on a busy 2-core host take seconds to get there, and are not the
      // thing under test.
      const results = await Promise.all(
        SILENT_COMMANDS.map(async (command, i) => {
          const { port, connectedAt } = listeners[i]!;
          const kubeconfig = writeKubeconfig(port);
          const res = await collect(
            spawnCli([
              ...command,
              '--kubeconfig',
              kubeconfig,
              '--request-timeout',
              `${REQUEST_TIMEOUT_MS}ms`,
            ]),
            60_000,
          );
          const took = Date.now() - (connectedAt() ?? Number.NaN);
          return { command, port, kubeconfig, res, took };
        }),
      );
      for (const { command, port, kubeconfig, res, took } of results) {
        expect(res.stderr.trim(), command.join(' ')).toMatch(
          new RegExp(
            `^libvirt-operator ${command[0]}: cannot reach the API server https://127\\.0\\.0\\.1:${port} ` +
              `\\(from the kubeconfig ${kubeconfig}\\): GET \\S+: no response within ${REQUEST_TIMEOUT_MS} ms; ` +
              'is the cluster running',
          ),
        );
        expect(res.code, command.join(' ')).toBe(1);
        // The bound, plus the exit; short of the commands' default 10 s, and well short of the
        // client's 30 s.
        expect(took, command.join(' ')).toBeLessThan(REQUEST_TIMEOUT_MS + 8_000);
      }
    } finally {
      for (const { server, sockets } of listeners) {
        for (const s of sockets) s.destroy();
        await new Promise((r) => server.close(r));
      }
    }
  }, 120_000);
});
