// The light kubeconfig reader: the options it gives the transport for each kind of
// credential, relative paths, token files read again, and the in-cluster service account.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  loadKubeAccessFromFile,
  loadKubeAccessInCluster,
} from '../../../src/runtime/kube-config.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lvo-kubeconfig-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(cluster: object, user: object): string {
  const path = join(dir, 'config');
  writeFileSync(
    path,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'main',
      contexts: [
        { name: 'other', context: { cluster: 'nope', user: 'nope' } },
        { name: 'main', context: { cluster: 'c', user: 'u' } },
      ],
      clusters: [{ name: 'c', cluster }],
      users: [{ name: 'u', user }],
    }),
  );
  return path;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('loadKubeAccessFromFile', () => {
  it('reads the current context: server, CA and client certificate data', async () => {
    const access = await loadKubeAccessFromFile(
      kubeconfig(
        { server: 'https://10.0.0.1:6443', 'certificate-authority-data': b64('CA') },
        { 'client-certificate-data': b64('CERT'), 'client-key-data': b64('KEY') },
      ),
    );
    expect(access.getCurrentCluster()?.server).toBe('https://10.0.0.1:6443');
    const opts: Record<string, unknown> = {};
    await access.applyToHTTPSOptions(opts);
    expect(String(opts.ca)).toBe('CA');
    expect(String(opts.cert)).toBe('CERT');
    expect(String(opts.key)).toBe('KEY');
    expect(opts.rejectUnauthorized).toBeUndefined();
    expect(opts.headers).toBeUndefined();
  });

  it('reads files relative to the kubeconfig, a token, TLS options and basic auth', async () => {
    writeFileSync(join(dir, 'ca.crt'), 'FILE-CA');
    const withToken = await loadKubeAccessFromFile(
      kubeconfig(
        {
          server: 'https://api',
          'certificate-authority': 'ca.crt',
          'insecure-skip-tls-verify': true,
          'tls-server-name': 'kubernetes',
        },
        { token: 'abc' },
      ),
    );
    const opts: Record<string, unknown> = { headers: { 'x-keep': '1' } };
    await withToken.applyToHTTPSOptions(opts);
    expect(String(opts.ca)).toBe('FILE-CA');
    expect(opts.rejectUnauthorized).toBe(false);
    expect(opts.servername).toBe('kubernetes');
    expect(opts.headers).toEqual({ 'x-keep': '1', Authorization: 'Bearer abc' });

    const basic = await loadKubeAccessFromFile(
      kubeconfig({ server: 'https://api' }, { username: 'admin', password: 'pw' }),
    );
    const o2: Record<string, unknown> = {};
    await basic.applyToHTTPSOptions(o2);
    expect(o2.auth).toBe('admin:pw');
  });

  it('reads a token file relative to the kubeconfig', async () => {
    writeFileSync(join(dir, 'token'), 'first\n');
    const access = await loadKubeAccessFromFile(
      kubeconfig({ server: 'https://api' }, { tokenFile: 'token' }),
    );
    const opts: Record<string, unknown> = {};
    await access.applyToHTTPSOptions(opts);
    expect(opts.headers).toEqual({ Authorization: 'Bearer first' });
  });

  it('refuses a kubeconfig without a current cluster', async () => {
    const path = join(dir, 'empty');
    writeFileSync(path, stringify({ apiVersion: 'v1', kind: 'Config' }));
    await expect(loadKubeAccessFromFile(path)).rejects.toThrow(/names no current cluster/);
  });

  it('hands exec plugins to client-node', async () => {
    const access = await loadKubeAccessFromFile(
      kubeconfig(
        { server: 'https://api' },
        { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'true' } },
      ),
    );
    // client-node's KubeConfig, which knows how to run the plugin.
    expect(access.constructor.name).toBe('KubeConfig');
    expect(access.getCurrentCluster()?.server).toBe('https://api');
    // Loading the whole client takes seconds on a busy machine.
  }, 60_000);
});

describe('loadKubeAccessInCluster', () => {
  it('uses the service account token and CA, and the service host (IPv6 in brackets)', async () => {
    writeFileSync(join(dir, 'ca.crt'), 'SA-CA');
    writeFileSync(join(dir, 'token'), 'sa-token');
    const access = loadKubeAccessInCluster(
      { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' },
      dir,
    );
    expect(access.getCurrentCluster()?.server).toBe('https://[fd00::1]:443');
    const opts: Record<string, unknown> = {};
    await access.applyToHTTPSOptions(opts);
    expect(String(opts.ca)).toBe('SA-CA');
    expect(opts.headers).toEqual({ Authorization: 'Bearer sa-token' });
  });

  it('fails outside a cluster', () => {
    expect(() => loadKubeAccessInCluster({}, dir)).toThrow(/KUBERNETES_SERVICE_HOST/);
  });
});
