// What `up` (npm start) decides before it starts anything: the line it prints for another
// shell (pasted into sh, it must give exactly these values, whatever characters the paths
// hold), and where it serves health and metrics when the default port is taken.
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { canListen } from '../../../src/commands/local/control-plane.js';
import {
  exportLine,
  localLibvirt,
  shellWord,
  testDriverDemoNote,
  type LocalLibvirtIO,
  upSettings,
  upRequestError,
} from '../../../src/commands/up.js';
import { UsageError } from '../../../src/commands/flags.js';
import { startHealthServer } from '../../../src/runtime/health.js';

const inShell = (line: string, print: string) =>
  execFileSync('sh', ['-c', `${line}; printf '%s\\n' ${print}`], {
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
  });

describe("up's export line", () => {
  it('sets KUBECONFIG and puts the kubectl directory first on PATH', () => {
    const out = inShell(
      exportLine('/root/.cache/lvo/kubeconfig', '/root/.cache/k8s'),
      '"$KUBECONFIG" "$PATH"',
    );
    expect(out).toBe('/root/.cache/lvo/kubeconfig\n/root/.cache/k8s:/usr/bin:/bin\n');
  });

  it('quotes paths with spaces, quotes and dollars so the shell keeps them as they are', () => {
    for (const path of ["/tmp/my cache/it's", '/tmp/$HOME/`x`', '/tmp/a"b', '/plain/path-1.2_x']) {
      expect(inShell(`v=${shellWord(path)}`, '"$v"')).toBe(`${path}\n`);
    }
    expect(shellWord('/plain/path-1.2_x')).toBe('/plain/path-1.2_x');
  });
});

describe("up's health address", () => {
  const listening = async (port: number) => {
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
    return srv;
  };
  const serve = (port: number, anyPortIfTaken?: boolean) =>
    startHealthServer({
      host: '127.0.0.1',
      port,
      anyPortIfTaken,
      registry: new Registry(),
      readiness: { run: () => Promise.resolve({ ready: true, lines: [] }) },
    });

  it('takes what the user asked for, else 127.0.0.1:8081 on any free port when taken', () => {
    expect(upSettings({ 'health-addr': '0.0.0.0:9000' })).toMatchObject({
      agent: { healthAddr: { host: '0.0.0.0', port: 9000 } },
      defaultHealth: false,
    });
    expect(upSettings({})).toMatchObject({
      agent: { healthAddr: { host: '127.0.0.1', port: 8081 } },
      defaultHealth: true,
    });
  });

  // Decided when the agent listens, not by a look beforehand: two npm start at the same
  // instant both saw 8081 free, and the second agent then failed on it.
  it('serves on another port when the default one is taken at listen time', async () => {
    const holder = await listening(0);
    const { port } = holder.address() as AddressInfo;
    const health = await serve(port, true);
    expect(health.port).not.toBe(port);
    expect(await (await fetch(`${health.url}/healthz`)).text()).toBe('ok');
    await health.close();
    await expect(serve(port)).rejects.toThrow(`health port ${port} is already in use`);
    await new Promise((r) => holder.close(r));
  });

  it('sees a port another listener holds as taken', async () => {
    const srv = await listening(0);
    const { port } = srv.address() as AddressInfo;
    expect(await canListen(port, '127.0.0.1')).toBe(false);
    await new Promise((r) => srv.close(r));
    expect(await canListen(port, '127.0.0.1')).toBe(true);
  });
});

describe("up's flags", () => {
  // upSettings does no I/O: main checks every flag before it looks for (or starts) libvirtd.
  it('refuses a bad node name, health address or libvirt URI before doing anything', () => {
    expect(() => upSettings({ 'node-name': 'Bad_Name' })).toThrow(UsageError);
    expect(() => upSettings({ 'node-name': 'Bad_Name' })).toThrow(/node-name/);
    expect(() => upSettings({ 'health-addr': 'nope' })).toThrow(/health-addr/);
    expect(() => upSettings({ 'quiet-ms': '5s' })).toThrow(/--quiet-ms/);
    expect(upSettings({ 'quiet-ms': '500' }).quietMs).toBe(500);
    expect(upSettings({}).quietMs).toBe(5_000);
    expect(upSettings({ 'request-timeout': '750ms' }).requestTimeoutMs).toBe(750);
    expect(upSettings({}).requestTimeoutMs).toBe(10_000);
    expect(() => upSettings({ 'request-timeout': '0' })).toThrow(/^up: --request-timeout/);
    expect(() => upSettings({ 'examples-name': 'Demo' })).toThrow(/--examples-name/);
    // Without --examples there is no demo to name: said, not ignored.
    expect(() => upSettings({ 'examples-name': 'web' })).toThrow(
      "up: --examples-name names the demo's objects: give --examples too",
    );
    expect(upSettings({ examples: true, 'examples-name': 'web' }).demoName).toBe('web');
    expect(() => upSettings({ dir: '/tmp/x', kubeconfig: '/tmp/k' })).toThrow(/--kubeconfig/);
  });

  it('builds the agent configuration with the libvirt URI the user gave', () => {
    expect(upSettings({ 'libvirt-uri': 'test:///default', 'node-name': 'n1' })).toMatchObject({
      demoName: 'demo',
      agent: { nodeName: 'n1', libvirtUri: 'test:///default' },
    });
  });
});

describe("up's libvirt without --libvirt-uri", () => {
  const REFUSED = 'internal error: Unable to get system bus connection';
  const host = (h: { socket: boolean; root: boolean; refused?: string }) => {
    const said: string[] = [];
    const calls: string[] = [];
    const io: LocalLibvirtIO = {
      socketExists: () => h.socket,
      isRoot: () => h.root,
      connectError: (uri) => (calls.push(`connect ${uri}`), Promise.resolve(h.refused)),
      start: () => (calls.push('start'), Promise.resolve('qemu:///system')),
      say: (line) => said.push(line),
    };
    return { io, said, calls };
  };

  it('uses the local libvirtd when a connection to it opens, root or not', async () => {
    for (const root of [true, false]) {
      const h = host({ socket: true, root });
      expect(await localLibvirt(h.io)).toBe('qemu:///system');
      expect(h.said).toEqual([]);
    }
  });

  it('falls back to the test driver, saying why, when this user may not connect', async () => {
    const h = host({ socket: true, root: false, refused: REFUSED });
    expect(await localLibvirt(h.io)).toBe('test:///default');
    expect(h.said).toEqual([
      `cannot connect to qemu:///system (${REFUSED}); using test:///default: run as root or in libvirt's group, or give --libvirt-uri`,
    ]);
  });

  it('starts libvirtd as root when none answers, and uses the test driver otherwise', async () => {
    const root = host({ socket: true, root: true, refused: 'Connection refused' });
    expect(await localLibvirt(root.io)).toBe('qemu:///system');
    expect(root.calls).toEqual(['connect qemu:///system', 'start']);
    const noSocket = host({ socket: false, root: false });
    expect(await localLibvirt(noSocket.io)).toBe('test:///default');
    expect(noSocket.calls).toEqual([]);
  });
});

describe("up's examples on libvirt's test driver", () => {
  it('names both ways to a real libvirtd, not only root (a root user gave --libvirt-uri)', () => {
    expect(testDriverDemoNote('test:///default')).toBe(
      "examples: test:///default is libvirt's in-process test driver: it runs no guest and " +
        'cannot import volumes; the demo guest needs a real libvirtd (npm start as root ' +
        'without --libvirt-uri starts one, or --libvirt-uri qemu:///system)',
    );
    expect(testDriverDemoNote('qemu:///system')).toBeUndefined();
    expect(testDriverDemoNote('qemu+unix:///system?socket=/run/x')).toBeUndefined();
  });
});

describe("up's requests that get no answer", () => {
  const SERVER = 'https://127.0.0.1:6443';
  const silent = new Error('GET /api/v1/nodes/n1: no response within 10000 ms');
  it("name its own control plane's API server and its log", () => {
    const err = upRequestError(silent, SERVER, { controlPlaneDir: '/home/u/cluster' }) as Error;
    expect(err.message).toBe(
      "the local control plane's API server https://127.0.0.1:6443 did not answer: " +
        'GET /api/v1/nodes/n1: no response within 10000 ms; see /home/u/cluster/kube-apiserver.log',
    );
    expect(err.cause).toBe(silent);
  });

  it('name the kubeconfig of a cluster given with --kubeconfig', () => {
    const err = upRequestError(silent, SERVER, { kubeconfig: '/kc' }) as Error;
    expect(err.message).toMatch(
      /^cannot reach the API server https:\/\/127\.0\.0\.1:6443 \(from the kubeconfig \/kc\)/,
    );
  });

  it('leave an answer (a 403, a 500) as it is', () => {
    const answered = new Error("cannot read this host's Node n1: forbidden");
    expect(upRequestError(answered, SERVER, { controlPlaneDir: '/d' })).toBe(answered);
    expect(upRequestError(answered, SERVER, { kubeconfig: '/kc' })).toBe(answered);
  });
});
