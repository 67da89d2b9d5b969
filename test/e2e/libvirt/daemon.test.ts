import { afterAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  connectedClients,
  daemonAnswers,
  ensureLibvirtd,
  parentOf,
  processAlive,
  startPrivateLibvirtd,
  withQemuSettings,
  type LibvirtDaemon,
} from '../../../src/commands/local/libvirtd.js';
import { Connect } from '../../../src/libvirt/index.js';
import { qemuDomainXML, uniqueName } from './fixtures.js';

const daemons: LibvirtDaemon[] = [];

afterAll(async () => {
  for (const d of daemons) await d.stop();
});

describe('libvirtd harness', () => {
  it('ensureLibvirtd returns a daemon answering on qemu:///system, idempotently', async () => {
    const first = await ensureLibvirtd();
    daemons.push(first);
    expect(first.uri).toBe('qemu:///system');
    expect(first.pid()).toBeGreaterThan(0);
    expect(await daemonAnswers(first.uri)).toBe(true);
    const second = await ensureLibvirtd();
    expect(second.startedByUs).toBe(false);
    expect(second.pid()).toBe(first.pid());
    const conf = await readFile('/etc/libvirt/qemu.conf', 'utf8');
    expect(withQemuSettings(conf)).toBe(conf);
    const conn = await Connect.open(first.uri);
    expect(await conn.getType()).toBe('QEMU');
    await conn.close();
  });

  it('counts the clients connected to a daemon', async () => {
    const priv = await startPrivateLibvirtd();
    daemons.push(priv);
    const admin = priv.uri.replace(/^.*socket=/, '').replace(/libvirt-sock$/, 'libvirt-admin-sock');
    expect(await connectedClients(admin)).toBe(0);
    const conn = await Connect.open(priv.uri);
    expect(await connectedClients(admin)).toBe(1);
    await conn.close();
    const deadline = Date.now() + 5_000;
    while ((await connectedClients(admin)) > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await connectedClients(admin)).toBe(0);
    await priv.stop();
  });

  it('a private libvirtd is isolated from the system one and can be paused and restarted', async () => {
    const priv = await startPrivateLibvirtd();
    daemons.push(priv);
    expect(priv.uri).toMatch(/^qemu\+unix:\/\/\/system\?socket=\/tmp\/lvo-libvirtd-/);
    const conn = await Connect.open(priv.uri);
    expect(await conn.getType()).toBe('QEMU');
    // Its own state: the system daemon's networks are not defined here.
    expect(await conn.numOfDefinedNetworks()).toBe(0);
    await conn.close();

    const pid = priv.pid();
    priv.pause();
    expect(await daemonAnswers(priv.uri, 1_000)).toBe(false);
    priv.resume();
    expect(await daemonAnswers(priv.uri)).toBe(true);

    await priv.restart();
    expect(priv.pid()).not.toBe(pid);
    expect(await daemonAnswers(priv.uri)).toBe(true);
    await priv.stop();
    expect(() => priv.pid()).toThrow(/not running/);
  });

  it("QEMU's parent is the daemon's reaper (tini), not PID 1, and is gone once destroy returns", async () => {
    const priv = await startPrivateLibvirtd();
    daemons.push(priv);
    const conn = await Connect.open(priv.uri);
    const name = uniqueName('reaped');
    const dom = await conn.createDomainXML(qemuDomainXML(name));
    // The private daemon's /run/libvirt is <dir>/run: QEMU's pid file is there.
    const runDir = path.dirname(priv.uri.replace(/^.*socket=/, ''));
    const qemuPid = Number(
      (await readFile(path.join(runDir, 'qemu', `${name}.pid`), 'utf8')).trim(),
    );
    const reaper = await parentOf(qemuPid);
    // libvirt daemonizes QEMU: its parent is the nearest child subreaper, which must be the
    // tini libvirtd runs under (libvirtd's own parent); under PID 1, a destroy waits for PID 1.
    expect(reaper).toBe(await parentOf(priv.pid()));
    expect((await readFile(`/proc/${reaper}/comm`, 'utf8')).trim()).toBe('tini');
    await dom.destroy();
    expect(processAlive(qemuPid)).toBe(false);
    await conn.close();
    await priv.stop();
  }, 60_000);
});
