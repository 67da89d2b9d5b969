import { afterAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import {
  connectedClients,
  daemonAnswers,
  ensureLibvirtd,
  startPrivateLibvirtd,
  withQemuSettings,
  type LibvirtDaemon,
} from '../../../src/commands/local/libvirtd.js';
import { Connect } from '../../../src/libvirt/index.js';

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
});
