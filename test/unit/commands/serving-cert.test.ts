// Whether the local control plane keeps the serving certificate it finds in its --dir:
// kube-apiserver reuses whatever is there, so one of another address, or one made more than a
// year before (its own last a year), made every client refuse it and the start time out.
import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { servingCertUsable } from '../../../src/commands/local/control-plane.js';

// Self-signed, as kube-apiserver's: IP 127.0.0.1 and 10.0.0.1 (the service IP), DNS kubernetes.
const CERT = `-----BEGIN CERTIFICATE-----
MIIBpDCCAUqgAwIBAgIUXXCR1UZ/G40MBMCivfpAXfk3XikwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLMTI3LjAuMC4xQDEwHhcNMjYxMjA3MjIzMDQ0WhcNMjcxMjA3
MjIzMDQ0WjAWMRQwEgYDVQQDDAsxMjcuMC4wLjFAMTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABHQRO+gA8oiryyVV+6ahgG2nFZwT45LTE3RfAB261Q7ozlgMt6Dc
jWKCQ5Zl3CGG09nNCnZi7YOxflg4PZU5NZGjdjB0MB0GA1UdDgQWBBTdxjMuJMa7
NIUgIPBD8qDz1iulfDAfBgNVHSMEGDAWgBTdxjMuJMa7NIUgIPBD8qDz1iulfDAP
BgNVHRMBAf8EBTADAQH/MCEGA1UdEQQaMBiHBH8AAAGHBAoAAAGCCmt1YmVybmV0
ZXMwCgYIKoZIzj0EAwIDSAAwRQIgLVZSjp3z11lLORmOFNAAJO0+0+1sp5w3Iw1F
so+GGzECIQDFf3HtVIAFNK+lY8Z9ko9lXvtf3pN3Vzu03xUOPdmGgA==
-----END CERTIFICATE-----
`;
const x509 = new X509Certificate(CERT);
const from = new Date(x509.validFrom);
const to = new Date(x509.validTo);
const during = new Date(from.getTime() + 86_400_000);

describe('servingCertUsable', () => {
  it('keeps a certificate naming the address, within its validity', () => {
    expect(servingCertUsable(CERT, '127.0.0.1', during)).toBe(true);
  });

  it('forgets one of another address, an unreadable one, and one named for it by DNS only', () => {
    expect(servingCertUsable(CERT, '127.0.0.2', during)).toBe(false);
    expect(servingCertUsable('not a certificate', '127.0.0.1', during)).toBe(false);
    // Clients check an IP host against IP names only: "kubernetes" does not cover 10.0.0.2.
    expect(servingCertUsable(CERT, '10.0.0.2', during)).toBe(false);
  });

  it('forgets an expired one, and one not valid yet', () => {
    expect(servingCertUsable(CERT, '127.0.0.1', new Date(to.getTime() + 1000))).toBe(false);
    expect(servingCertUsable(CERT, '127.0.0.1', new Date(from.getTime() - 1000))).toBe(false);
  });
});
