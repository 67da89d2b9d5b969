import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  ConnectListAllDomainsFlags,
  ErrorCode,
  LibvirtError,
  isConnectionError,
  isUnsupported,
  type Domain,
} from '../../../src/libvirt/index.js';
import { TEST_URI, domainXML, uniqueName } from './fixtures.js';

let conn: Connect;

beforeAll(async () => {
  conn = await Connect.open(TEST_URI);
});

afterAll(async () => {
  await conn?.close();
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('Connect on test:///default', () => {
  it('reports the driver, versions, host and URI', async () => {
    expect(await conn.getType()).toBe('TEST');
    expect(await conn.getVersion()).toBeGreaterThan(0);
    expect(await conn.getLibVersion()).toBeGreaterThanOrEqual(9_000_000);
    expect((await conn.getHostname()).length).toBeGreaterThan(0);
    expect(await conn.getURI()).toBe(TEST_URI);
    expect(await conn.isAlive()).toBe(true);
    expect(await conn.getMaxVcpus(null)).toBeGreaterThan(0);
  });

  it('returns capabilities XML and node information with 64-bit sizes as bigint', async () => {
    expect(await conn.getCapabilities()).toContain('<capabilities>');
    const node = await conn.nodeGetInfo();
    expect(node).toMatchObject({ model: 'i686', cpus: 16, nodes: 2 });
    expect(typeof node.memory).toBe('bigint');
    expect(node.memory).toBeGreaterThan(0n);
    expect(typeof (await conn.nodeGetFreeMemory())).toBe('bigint');
  });

  it('rejects keepalive on the test driver as unsupported', async () => {
    const err = await rejection(conn.setKeepAlive(5, 3));
    expect(err).toBeInstanceOf(LibvirtError);
    expect(isUnsupported(err)).toBe(true);
    expect((err as LibvirtError).codeName).toBe('VIR_ERR_NO_SUPPORT');
  });

  it('rejects domain capabilities on the test driver as unsupported', async () => {
    // The agent then leaves a custom CPU model for libvirt to judge at the start.
    const err = await rejection(conn.getDomainCapabilities('qemu'));
    expect(err).toBeInstanceOf(LibvirtError);
    expect(isUnsupported(err as LibvirtError)).toBe(true);
  });

  it('counts and lists the objects the test driver ships', async () => {
    expect(await conn.numOfDomains()).toBeGreaterThanOrEqual(1);
    expect(await conn.numOfDefinedDomains()).toBeGreaterThanOrEqual(0);
    expect(await conn.numOfNetworks()).toBeGreaterThanOrEqual(1);
    expect(await conn.numOfDefinedNetworks()).toBeGreaterThanOrEqual(0);
    expect(await conn.numOfStoragePools()).toBeGreaterThanOrEqual(1);
    expect(await conn.numOfDefinedStoragePools()).toBeGreaterThanOrEqual(0);
    const active = await conn.listAllDomains(ConnectListAllDomainsFlags.ACTIVE);
    expect(active.map((d) => d.getName())).toContain('test');
    const inactive = await conn.listAllDomains(ConnectListAllDomainsFlags.INACTIVE);
    expect(inactive.map((d) => d.getName())).not.toContain('test');
    expect((await conn.listAllNetworks()).map((n) => n.getName())).toContain('default');
    expect((await conn.listAllStoragePools()).map((p) => p.getName())).toContain('default-pool');
  });

  it('fails to open an unreachable daemon with a connection error', async () => {
    const err = await rejection(Connect.open('qemu+unix:///system?socket=/nonexistent/sock'));
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).codeName).toBe('VIR_ERR_SYSTEM_ERROR');
    expect((err as LibvirtError).domainName).toBe('VIR_FROM_RPC');
    expect((err as LibvirtError).message).toContain('/nonexistent/sock');
    expect(isConnectionError(err)).toBe(true);
  });

  it('fails to open a test driver file that is not XML with an XML error', async () => {
    const err = await rejection(Connect.open('test:///nonexistent/file.xml'));
    expect((err as LibvirtError).code).toBe(ErrorCode.VIR_ERR_XML_ERROR);
    expect(isConnectionError(err)).toBe(false);
  });

  it('refuses writes on a read-only connection', async () => {
    const ro = await Connect.open(TEST_URI, { readOnly: true });
    try {
      const err = await rejection(ro.defineDomainXML(domainXML({ name: uniqueName('ro') })));
      expect((err as LibvirtError).code).toBe(ErrorCode.VIR_ERR_OPERATION_DENIED);
      expect((await ro.lookupDomainByName('test')).getName()).toBe('test');
    } finally {
      await ro.close();
    }
  });

  it('rejects calls on a closed connection and on objects obtained through it', async () => {
    const c = await Connect.open(TEST_URI);
    const dom: Domain = await c.lookupDomainByName('test');
    expect(await c.close()).toBeGreaterThanOrEqual(0);
    expect(c.isClosed).toBe(true);
    // One at a time: a rejection nobody awaits yet would be an unhandled rejection.
    const calls = [
      () => c.getType(),
      () => c.lookupDomainByName('test'),
      () => dom.getInfo(),
      () => dom.getXMLDesc(),
    ];
    for (const call of calls) {
      const err = await rejection(call());
      expect(err).toBeInstanceOf(LibvirtError);
      expect((err as LibvirtError).code).toBe(ErrorCode.VIR_ERR_INVALID_CONN);
      expect(isConnectionError(err)).toBe(true);
    }
    // Local accessors keep working on a live handle, as in libvirt.
    expect(dom.getName()).toBe('test');
    expect(await c.close()).toBe(0);
  });

  it('rejects bad arguments with a TypeError instead of crashing', async () => {
    const bad = (v: unknown) => v as never;
    const cases: (() => Promise<unknown>)[] = [
      () => conn.lookupDomainByName(bad(123)),
      () => conn.lookupDomainByID(bad('x')),
      () => conn.lookupDomainByID(1.5),
      () => conn.lookupDomainByUUID(new Uint8Array(3)),
      () => conn.lookupDomainByUUID(bad({})),
      () => conn.defineDomainXML(bad(undefined)),
      () => conn.listAllDomains(-1),
      () => conn.listAllDomains(bad('all')),
      () => conn.getType({ timeoutMs: -5 }),
      () => conn.setKeepAlive(bad(null), 3),
      () => Connect.open(bad(42)),
    ];
    for (const call of cases) expect(await rejection(call())).toBeInstanceOf(TypeError);
    const dom = await conn.lookupDomainByName('test');
    expect(await rejection(dom.setMemory(bad('lots')))).toBeInstanceOf(TypeError);
    expect(await rejection(dom.setMemory(-1))).toBeInstanceOf(TypeError);
    expect(await rejection(dom.setMemory(2n ** 64n))).toBeInstanceOf(TypeError);
    expect(await rejection(dom.setAutostart(bad('yes')))).toBeInstanceOf(TypeError);
    expect(await conn.isAlive()).toBe(true);
  });

  it('honours a per-call timeout that is long enough', async () => {
    expect(await conn.getType({ timeoutMs: 10_000 })).toBe('TEST');
    const c = await Connect.open(TEST_URI, { timeoutMs: 10_000, callTimeoutMs: 10_000 });
    expect(c.callTimeoutMs).toBe(10_000);
    expect(await c.getType()).toBe('TEST');
    await c.close();
  });
});
