// When the kube client needs a new keep-alive agent (and SecureContext): only when the TLS
// material the kubeconfig hands over changes, whether it comes back as the same Buffers (the
// agent's own reader) or as equal copies (client-node).
import { describe, expect, it } from 'vitest';
import { sameTlsIdentity, type TlsIdentity } from '../../../src/runtime/kube-client.js';

const ca = Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
const base: TlsIdentity = { ca, cert: undefined, key: undefined, servername: 'kubernetes' };

describe('sameTlsIdentity', () => {
  it('keeps the agent for the same Buffers and for equal copies', () => {
    expect(sameTlsIdentity(base, { ...base })).toBe(true);
    expect(sameTlsIdentity(base, { ...base, ca: Buffer.from(ca) })).toBe(true);
    expect(sameTlsIdentity({ ...base, ca: [ca] }, { ...base, ca: [Buffer.from(ca)] })).toBe(true);
    const key = [{ pem: 'k', passphrase: 'p' }];
    expect(
      sameTlsIdentity({ ...base, key }, { ...base, key: [{ pem: 'k', passphrase: 'p' }] }),
    ).toBe(true);
  });

  it('asks for a new agent when a certificate, the key or a TLS setting changes', () => {
    expect(sameTlsIdentity(base, { ...base, ca: Buffer.from('other') })).toBe(false);
    expect(sameTlsIdentity(base, { ...base, cert: Buffer.from('cert') })).toBe(false);
    expect(sameTlsIdentity({ ...base, key: 'a' }, { ...base, key: 'b' })).toBe(false);
    expect(sameTlsIdentity(base, { ...base, rejectUnauthorized: false })).toBe(false);
    expect(sameTlsIdentity(base, { ...base, servername: 'other' })).toBe(false);
    expect(sameTlsIdentity({ ...base, ca: [ca] }, { ...base, ca: [ca, ca] })).toBe(false);
    const key = [{ pem: 'k', passphrase: 'p' }];
    expect(
      sameTlsIdentity({ ...base, key }, { ...base, key: [{ pem: 'k', passphrase: 'q' }] }),
    ).toBe(false);
  });
});
