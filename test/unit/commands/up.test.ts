// What `up` (npm start) decides before it starts anything: the line it prints for another
// shell (pasted into sh, it must give exactly these values, whatever characters the paths
// hold), and where it serves health and metrics when the default port is taken.
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { canListen } from '../../../src/commands/local/control-plane.js';
import {
  exportLine,
  healthAddr,
  localLibvirt,
  shellWord,
  type LocalLibvirtIO,
} from '../../../src/commands/up.js';

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
  it('takes what the user asked for without looking at ports', async () => {
    const asked: number[] = [];
    const free = (port: number) => (asked.push(port), Promise.resolve(false));
    expect(await healthAddr('0.0.0.0:9000', free)).toEqual({
      addr: '0.0.0.0:9000',
      fallback: false,
    });
    expect(asked).toEqual([]);
  });

  it('serves on 127.0.0.1:8081 when it is free, on any free port when it is taken', async () => {
    const free = (taken: boolean) => (port: number) => Promise.resolve(!(taken && port === 8081));
    expect(await healthAddr(undefined, free(false))).toEqual({
      addr: '127.0.0.1:8081',
      fallback: false,
    });
    expect(await healthAddr(undefined, free(true))).toEqual({
      addr: '127.0.0.1:0',
      fallback: true,
    });
  });

  it('sees a port another listener holds as taken', async () => {
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const { port } = srv.address() as { port: number };
    expect(await canListen(port, '127.0.0.1')).toBe(false);
    await new Promise((r) => srv.close(r));
    expect(await canListen(port, '127.0.0.1')).toBe(true);
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
