// What a whole Node process sees: it exits by itself once nothing is registered, stays alive
// while an event registration exists, libvirt prints nothing to stderr, and a throwing event
// listener surfaces as an uncaught exception.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileFacade, runScript, type CompiledFacade } from './child-process.js';
import { TEST_URI } from './fixtures.js';

let facade: CompiledFacade;

beforeAll(async () => {
  facade = await compileFacade({ withAddon: true });
});

afterAll(async () => {
  await facade?.remove();
});

function script(body: string): string {
  return `import * as lv from ${JSON.stringify(facade.indexUrl)};\n${body}`;
}

describe('a process using the binding', () => {
  it('exits by itself after opening, using and closing a connection', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        const d = await conn.lookupDomainByName('test');
        console.log(d.getName(), (await d.getState()).stateName);
        await conn.close();
      `),
      { timeoutMs: 10_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('test running');
    expect(r.exited).toBe(true);
    expect(r.code).toBe(0);
  });

  it('exits by itself even when the connection is never closed', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        await conn.getType();
      `),
      { timeoutMs: 10_000 },
    );
    expect(r.exited).toBe(true);
    expect(r.code).toBe(0);
  });

  it('exits once its event registration is deregistered, not before', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        const id = await conn.domainEventLifecycleRegister(() => {});
        const t0 = Date.now();
        setTimeout(async () => {
          await conn.domainEventDeregister(id);
          console.log('deregistered after', Date.now() - t0);
        }, 1000).unref();
      `),
      { timeoutMs: 10_000 },
    );
    expect(r.exited).toBe(true);
    // The unref'd timer alone would not keep the process alive: the registration did.
    expect(r.stdout).toMatch(/deregistered after (\d{4})/);
  });

  it('stays alive while an event registration exists', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        await conn.networkEventLifecycleRegister(() => {});
        console.log('registered');
      `),
      { timeoutMs: 2_000 },
    );
    expect(r.stdout.trim()).toBe('registered');
    expect(r.exited).toBe(false);
  });

  it('prints nothing to stderr when calls fail', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        const results = await Promise.allSettled([
          conn.lookupDomainByName('nope'),
          conn.defineDomainXML('<domain'),
          conn.setKeepAlive(1, 1),
          conn.lookupNetworkByUUID('00000000-0000-0000-0000-000000000000'),
        ]);
        await conn.close();
        console.log(results.map((r) => r.reason.codeName).join(','));
      `),
      { timeoutMs: 10_000 },
    );
    expect(r.stdout.trim()).toBe(
      'VIR_ERR_NO_DOMAIN,VIR_ERR_XML_DETAIL,VIR_ERR_NO_SUPPORT,VIR_ERR_NO_NETWORK',
    );
    expect(r.stderr).toBe('');
  });

  it('surfaces a throwing event listener as an uncaught exception', async () => {
    const r = await runScript(
      script(`
        const conn = await lv.Connect.open(${JSON.stringify(TEST_URI)});
        await conn.domainEventLifecycleRegister(() => { throw new Error('listener bug'); });
        const d = await conn.lookupDomainByName('test');
        await d.suspend();
      `),
      { timeoutMs: 10_000 },
    );
    expect(r.exited).toBe(true);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('listener bug');
  });
});
