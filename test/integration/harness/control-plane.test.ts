import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  Watch,
  ApiextensionsV1Api,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import {
  servingCertUsable,
  startControlPlane,
  startReaper,
} from '../../../src/commands/local/control-plane.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { annotate, kubectlOk } from '../../harness/kubectl.js';
import { processesNaming, recordedPids } from '../../harness/processes.js';

const widgetCRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.harness.virt.dev' },
  spec: {
    group: 'harness.virt.dev',
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: { type: 'object', properties: { size: { type: 'integer' } } },
              status: { type: 'object', properties: { seen: { type: 'integer' } } },
            },
          },
        },
      },
    ],
  },
};

describe('control plane (real etcd + kube-apiserver)', () => {
  // Without the watch cache, so a compaction is seen as 410 at once (see ControlPlaneOptions).
  const cp = useControlPlane({ installCRDs: false, watchCache: false });

  it('answers /readyz and /version with the pinned release', async () => {
    expect((await cp().getRaw('/readyz')).body).toBe('ok');
    const version = JSON.parse((await cp().getRaw('/version')).body) as { gitVersion: string };
    expect(version.gitVersion).toMatch(/^v1\.(3[4-9]|[4-9]\d)\./);
    const kubectl = await cp().kubectl(['get', '--raw', '/readyz']);
    expect(kubectl).toMatchObject({ code: 0, stdout: 'ok' });
  });

  it('enforces RBAC: an unprivileged user is forbidden', async () => {
    const res = await cp().kubectl(['get', 'secrets', '-A'], { asUser: 'nobody' });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/forbidden/i);
  });

  it('creates a custom resource, watches it, patches its status, and sees 410 Gone after compaction', async () => {
    const ext = cp().kubeConfig.makeApiClient(ApiextensionsV1Api);
    await ext.createCustomResourceDefinition({ body: widgetCRD });
    await cp().waitEstablished('widgets.harness.virt.dev', 30_000);

    const co = cp().kubeConfig.makeApiClient(CustomObjectsApi);
    const created = (await co.createNamespacedCustomObject({
      group: 'harness.virt.dev',
      version: 'v1',
      namespace: 'default',
      plural: 'widgets',
      body: {
        apiVersion: 'harness.virt.dev/v1',
        kind: 'Widget',
        metadata: { name: 'w1' },
        spec: { size: 1 },
      },
    })) as { metadata: { resourceVersion: string } };

    // Watch from the creation's resourceVersion and see the status patch arrive.
    const seen: Array<{ type: string; status?: { seen?: number } }> = [];
    const watch = new Watch(cp().kubeConfig);
    const gotStatus = new Promise<void>((resolve, reject) => {
      void watch
        .watch(
          '/apis/harness.virt.dev/v1/namespaces/default/widgets',
          { resourceVersion: created.metadata.resourceVersion },
          (type, obj: { status?: { seen?: number } }) => {
            seen.push({ type, status: obj.status });
            if (obj.status?.seen === 7) resolve();
          },
          (err) => (err ? reject(err) : undefined),
        )
        .then((req) => gotStatus.finally(() => req.abort()));
    });
    await co.patchNamespacedCustomObjectStatus(
      {
        group: 'harness.virt.dev',
        version: 'v1',
        namespace: 'default',
        plural: 'widgets',
        name: 'w1',
        body: { status: { seen: 7 } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await gotStatus;
    expect(seen.at(-1)).toEqual({ type: 'MODIFIED', status: { seen: 7 } });

    // After a compaction, a watch from the old resourceVersion is answered with 410 Gone.
    await co.patchNamespacedCustomObject(
      {
        group: 'harness.virt.dev',
        version: 'v1',
        namespace: 'default',
        plural: 'widgets',
        name: 'w1',
        body: { spec: { size: 2 } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await cp().compactEtcd();
    const gone = await new Promise<{ type: string; obj: { code?: number } }>((resolve, reject) => {
      void watch
        .watch(
          '/apis/harness.virt.dev/v1/namespaces/default/widgets',
          { resourceVersion: created.metadata.resourceVersion },
          (type, obj: { code?: number }) => resolve({ type, obj }),
          (err) => (err ? reject(err) : undefined),
        )
        .catch(reject);
    });
    expect(gone.type).toBe('ERROR');
    expect(gone.obj.code).toBe(410);
  });

  // On the port of this file's control plane: a kube-apiserver holds it as well as one started
  // for the purpose would, without the seconds of starting and stopping another.
  it("the annotate helper sets, overwrites and removes with kubectl, and fails with kubectl's words", async () => {
    const ns = 'annotate-helper';
    await kubectlOk(cp(), ['create', 'namespace', ns]);
    const annotations = async () =>
      (
        JSON.parse((await cp().getRaw(`/api/v1/namespaces/${ns}`)).body) as {
          metadata: { annotations?: Record<string, string> };
        }
      ).metadata.annotations ?? {};
    await annotate(cp(), ['namespace', ns], { 'a.virt.dev/x': '1', 'a.virt.dev/y': 'kept' });
    expect(await annotations()).toMatchObject({ 'a.virt.dev/x': '1', 'a.virt.dev/y': 'kept' });
    await annotate(cp(), [`namespace/${ns}`], { 'a.virt.dev/x': '2' });
    expect(await annotations()).toMatchObject({ 'a.virt.dev/x': '2', 'a.virt.dev/y': 'kept' });
    await annotate(cp(), ['namespace', ns], { 'a.virt.dev/x': undefined });
    expect(await annotations()).not.toHaveProperty('a.virt.dev/x');
    expect(await annotations()).toHaveProperty('a.virt.dev/y', 'kept');
    await expect(
      annotate(cp(), ['namespace', `${ns}-missing`], { 'a.virt.dev/x': '1' }),
    ).rejects.toThrow(
      `kubectl annotate --overwrite namespace ${ns}-missing a.virt.dev/x=1 failed (1): Error from server (NotFound)`,
    );
  });

  it('names a busy port in a one-line error', async () => {
    await expect(startControlPlane({ installCRDs: false, port: cp().port })).rejects.toThrow(
      new RegExp(`^port ${cp().port} on 127.0.0.1 is already in use`),
    );
  });

  it('survives kill -9 of the API server and restarts it on the same port', async () => {
    const core = cp().kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'before-kill' } } });
    await cp().killApiServer();
    await expect(cp().getRaw('/readyz')).rejects.toThrow();
    await cp().startApiServer();
    const ns = await core.readNamespace({ name: 'before-kill' });
    expect(ns.metadata?.name).toBe('before-kill');
  });
});

describe('control plane lifecycle', () => {
  it('keeps its watchdog through rewrites of the pids file, and ends it on a clean stop', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lvo-reaper-'));
    try {
      const reaper = startReaper(dir, false);
      // The watchdog looks at the file every 300 ms; a look that found it half-written (emptied
      // by writeFileSync) made it quit within a few hundred rewrites.
      const until = Date.now() + 2_000;
      for (let i = 0; Date.now() < until; i++) {
        reaper.record([100_000 + (i % 7), 200_000]);
        await new Promise((r) => setTimeout(r, 1));
      }
      expect(await processesNaming(dir, 0), 'the watchdog, after 2 s of rewrites').toHaveLength(1);
      reaper.disarm();
      expect(await processesNaming(dir), 'the watchdog, after disarm').toEqual([]);
      expect(existsSync(join(dir, 'pids'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs side by side with another one, and stop() leaves no process and no directory', async () => {
    const [a, b] = await Promise.all([
      startControlPlane({ installCRDs: false }),
      startControlPlane({ installCRDs: false }),
    ]);
    expect(a.server).not.toBe(b.server);
    const pids = recordedPids(a.dir);
    expect(pids).toHaveLength(2);
    await Promise.all([a.stop(), b.stop()]);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(a.dir)).toBe(false);
    expect(existsSync(b.dir)).toBe(false);
  });

  // A --dir used by a plain local-cluster (127.0.0.1), then by `local-cluster --node` (the
  // bridge's address; 127.0.0.2 stands in for it here): the API server reused the serving
  // certificate it had made for the first address, no client took it, and the start timed out.
  it('serves a folder used before at another address with a certificate for the new one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lvo-readdress-'));
    try {
      const first = await startControlPlane({ dir, installCRDs: false });
      await first.stop({ discard: true });
      const second = await startControlPlane({ dir, installCRDs: false, address: '127.0.0.2' });
      try {
        expect(second.server).toMatch(/^https:\/\/127\.0\.0\.2:/);
        const cert = readFileSync(join(dir, 'certs', 'apiserver.crt'));
        expect(servingCertUsable(cert, '127.0.0.2', new Date())).toBe(true);
        const res = await second.getRaw('/readyz');
        expect(res.status).toBe(200);
      } finally {
        await second.stop({ discard: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  // A --dir used more than a year before: kube-apiserver's own certificate lasts a year, and it
  // reused the expired one it found; no client took it and the start timed out after 60 s.
  it('serves a folder whose serving certificate has expired with a new one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lvo-expired-'));
    try {
      const certs = join(dir, 'certs');
      mkdirSync(certs);
      // For 127.0.0.1, valid for one day in 2020: `openssl ca` is what sets past dates.
      writeFileSync(
        join(certs, 'ca.cnf'),
        '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n' +
          'default_md=sha256\npolicy=p\ncopy_extensions=copy\nunique_subject=no\n' +
          '[p]\ncommonName=supplied\n',
      );
      writeFileSync(join(certs, 'index.txt'), '');
      writeFileSync(join(certs, 'serial'), '01\n');
      const openssl = (args: string[]) =>
        execFileSync('openssl', args, { cwd: certs, stdio: ['ignore', 'ignore', 'pipe'] });
      openssl([
        'req',
        '-new',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'apiserver.key',
        '-out',
        'r.csr',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ]);
      openssl([
        'ca',
        '-batch',
        '-config',
        'ca.cnf',
        '-selfsign',
        '-keyfile',
        'apiserver.key',
        '-in',
        'r.csr',
        '-out',
        'apiserver.crt',
        '-startdate',
        '20200101000000Z',
        '-enddate',
        '20200102000000Z',
        '-notext',
      ]);
      const cp = await startControlPlane({ dir, installCRDs: false });
      try {
        const cert = readFileSync(join(certs, 'apiserver.crt'));
        expect(servingCertUsable(cert, '127.0.0.1', new Date())).toBe(true);
        const res = await cp.getRaw('/readyz');
        expect(res.status).toBe(200);
      } finally {
        await cp.stop({ discard: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  // The time it saves (a graceful stop takes ~1.1 s, ~56 files) is not asserted here: a timed
  // bound fails on a loaded host; the test checks that nothing is left behind.
  it('stop({ discard: true }) leaves no process and no folder behind', async () => {
    const cp = await startControlPlane({ installCRDs: false });
    const pids = recordedPids(cp.dir);
    await cp.stop({ discard: true });
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(cp.dir)).toBe(false);
  });
});
