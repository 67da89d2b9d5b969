// A custom CPU model the host's QEMU does not know: libvirt defines such a domain and refuses
// only its start, so a running guest would be shut down (updatePolicy Restart, or any restart)
// for a start that cannot succeed. The agent judges the model against the host's domain
// capabilities first and leaves the domain as it is.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { unknownCpuModel } from '../../../../src/controllers/virtual-machine/desired.js';
import { customCpuModels } from '../../../../src/libvirt/xml/capabilities.js';
import { vm } from './machines.js';

const domcaps = readFileSync(
  join(import.meta.dirname, '../../../fixtures/xml/libvirt/qemu-domcaps-tcg.xml'),
  'utf8',
);

describe('customCpuModels', () => {
  it("lists every model of mode custom in libvirt's domain capabilities, usable or not", () => {
    const models = customCpuModels(domcaps);
    expect(models).toContain('qemu64');
    expect(models).toContain('Skylake-Client');
    // usable='no' on this host, and still started under TCG (measured): known, so accepted.
    expect(models).toContain('phenom');
    // host-model's expansion (EPYC, listed under its own mode) is not counted twice.
    expect(models).toHaveLength(53);
  });

  it('is undefined when the document lists no custom models', () => {
    expect(customCpuModels('<domainCapabilities><cpu/></domainCapabilities>')).toBeUndefined();
    expect(
      customCpuModels(
        "<domainCapabilities><cpu><mode name='custom' supported='no'/></cpu></domainCapabilities>",
      ),
    ).toBeUndefined();
  });
});

describe('unknownCpuModel', () => {
  const models = customCpuModels(domcaps);

  it('refuses a custom model the host does not know, naming the field, the node and the type', () => {
    const problem = unknownCpuModel(
      vm({ cpu: { mode: 'custom', model: 'Skylake-Clientt' } }),
      models,
      'node-a',
    );
    expect(problem?.reason).toBe('Unsupported');
    expect(problem?.message).toMatch(
      /^spec\.cpu\.model: QEMU on node node-a has no CPU model 'Skylake-Clientt' for domainType qemu/,
    );
    // Close names first, so the typo is easy to see.
    expect(problem?.message).toContain('Skylake-Client');
  });

  it('accepts a known model, other modes, and hosts that cannot tell', () => {
    expect(unknownCpuModel(vm({ cpu: { mode: 'custom', model: 'qemu64' } }), models, 'n')).toBe(
      undefined,
    );
    expect(unknownCpuModel(vm({ cpu: { mode: 'host-model' } }), models, 'n')).toBeUndefined();
    expect(unknownCpuModel(vm(), models, 'n')).toBeUndefined();
    expect(
      unknownCpuModel(vm({ cpu: { mode: 'custom', model: 'NoSuchCPU' } }), undefined, 'n'),
    ).toBeUndefined();
  });

  it('compares names exactly, as QEMU does', () => {
    expect(
      unknownCpuModel(vm({ cpu: { mode: 'custom', model: 'QEMU64' } }), models, 'n'),
    ).toBeDefined();
  });
});
