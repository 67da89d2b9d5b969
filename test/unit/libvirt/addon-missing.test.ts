// Loading the binding without a built addon must fail with an instruction, not a stack of
// module-resolution noise. Runs the transpiled facade in a child process from a tree that
// has no build/ directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  compileFacade,
  runScript,
  type CompiledFacade,
} from '../../integration/libvirt/child-process.js';

let facade: CompiledFacade;

beforeAll(async () => {
  facade = await compileFacade({ withAddon: false });
});

afterAll(async () => {
  await facade?.remove();
});

describe('loading the binding without its addon', () => {
  it('throws an Error telling to run npm run build:native and that libvirt-dev is needed', async () => {
    const r = await runScript(
      `try { await import(${JSON.stringify(facade.indexUrl)}); console.log('loaded'); }
       catch (e) { console.log(e.message); }`,
      { timeoutMs: 10_000 },
    );
    expect(r.stdout).toContain('libvirt native addon not built');
    expect(r.stdout).toContain('build/Release/libvirt_native.node is missing');
    expect(r.stdout).toContain('npm run build:native');
    expect(r.stdout).toContain('libvirt-dev');
    expect(r.stdout).not.toContain('loaded');
  });
});
