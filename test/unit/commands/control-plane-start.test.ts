// Two start-up races of the local control plane, each seen in a CI run: a listen port from the
// kernel's ephemeral range taken by an outgoing connection before kube-apiserver bound it, and
// `kubectl wait` failing on a new CRD whose status.conditions was still null. And where kubectl
// keeps what it knows of a server, which a new server at the same address must not inherit.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  established,
  ephemeralPortLow,
  etcdUsing,
  etcdOutlasting,
  freePort,
  kubectlDiscoveryCache,
} from '../../../src/commands/local/control-plane.js';

describe('freePort', () => {
  it('reads where the ephemeral range starts, or assumes Linux’s default', () => {
    expect(ephemeralPortLow(() => '40000\t60999\n')).toBe(40_000);
    expect(ephemeralPortLow(() => 'garbage')).toBe(32_768);
    expect(
      ephemeralPortLow(() => {
        throw new Error('ENOENT');
      }),
    ).toBe(32_768);
  });

  it('picks ports below the ephemeral range that can be listened on', async () => {
    const below = ephemeralPortLow();
    for (let i = 0; i < 20; i++) {
      const port = await freePort();
      expect(port).toBeGreaterThanOrEqual(10_000);
      expect(port).toBeLessThan(below);
      const srv = createServer();
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(port, '127.0.0.1', resolve);
      });
      await new Promise((r) => srv.close(r));
    }
  });
});

describe('kubectlDiscoveryCache', () => {
  it('names the folder as kubectl does, under KUBECACHEDIR or ~/.kube/cache', () => {
    expect(kubectlDiscoveryCache('https://127.0.0.1:19816', {}, '/home/u')).toBe(
      '/home/u/.kube/cache/discovery/127.0.0.1_19816',
    );
    expect(kubectlDiscoveryCache('https://[::1]:6443', { KUBECACHEDIR: '/c' }, '/home/u')).toBe(
      '/c/discovery/___1__6443',
    );
    expect(
      kubectlDiscoveryCache('http://host-a.example:8080/path', { KUBECACHEDIR: '' }, '/h'),
    ).toBe('/h/.kube/cache/discovery/host_a.example_8080/path');
  });
});

describe('etcdUsing', () => {
  it('finds the etcd that runs on a data directory, and only an etcd on exactly that one', () => {
    const proc = mkdtempSync(join(tmpdir(), 'lvo-proc-'));
    const fake = (pid: string, ...args: string[]) => {
      mkdirSync(join(proc, pid));
      writeFileSync(join(proc, pid, 'cmdline'), args.join('\0') + '\0');
    };
    try {
      fake('10', '/usr/bin/vim', '--data-dir=/a/etcd');
      fake('11', '/bin/etcd', '--name=default', '--data-dir=/a/etcd-other');
      mkdirSync(join(proc, 'sys'));
      expect(etcdUsing('/a/etcd', proc)).toBeUndefined();
      fake('12', '/c/k8s/etcd', '--name=default', '--data-dir=/a/etcd');
      expect(etcdUsing('/a/etcd', proc)).toBe(12);
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });
});

describe('etcdOutlasting', () => {
  // `up` killed with SIGKILL and started again at once (a supervisor, a user's up-arrow):
  // the dead run's etcd lives until its reaper, which looks every 300 ms, kills it. The new
  // run refused the folder as in use instead of waiting those few hundred milliseconds.
  const fakeProc = () => {
    const proc = mkdtempSync(join(tmpdir(), 'lvo-proc-'));
    mkdirSync(join(proc, '12'));
    writeFileSync(
      join(proc, '12', 'cmdline'),
      ['/c/k8s/etcd', '--data-dir=/a/etcd', ''].join('\0'),
    );
    return proc;
  };

  it('waits for an etcd that goes away within the wait (reaped after its owner was killed)', async () => {
    const proc = fakeProc();
    try {
      setTimeout(() => rmSync(join(proc, '12'), { recursive: true, force: true }), 400);
      expect(await etcdOutlasting('/a/etcd', 3_000, proc)).toBeUndefined();
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });

  it('names an etcd that is still there after the wait (another run holds the folder)', async () => {
    const proc = fakeProc();
    try {
      expect(await etcdOutlasting('/a/etcd', 300, proc)).toBe(12);
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
  });
});

describe('established', () => {
  const crd = (conditions: unknown) =>
    JSON.stringify({ kind: 'CustomResourceDefinition', status: { conditions } });

  it('is false while the conditions are null, missing or not yet True', () => {
    expect(established(crd(null))).toBe(false);
    expect(established(JSON.stringify({ kind: 'CustomResourceDefinition' }))).toBe(false);
    expect(established(crd([{ type: 'NamesAccepted', status: 'True' }]))).toBe(false);
    expect(established(crd([{ type: 'Established', status: 'False' }]))).toBe(false);
  });

  it('is true once Established is True', () => {
    expect(
      established(
        crd([
          { type: 'NamesAccepted', status: 'True' },
          { type: 'Established', status: 'True' },
        ]),
      ),
    ).toBe(true);
  });
});
