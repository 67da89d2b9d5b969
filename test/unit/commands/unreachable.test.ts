// Which errors mean the API server was never reached, and what the CLI says then.
import { describe, expect, it } from 'vitest';
import {
  COMMAND_REQUEST_TIMEOUT_MS,
  requestTimeoutMs,
  UsageError,
  unreachableServer,
} from '../../../src/commands/flags.js';
import { KubeApiError } from '../../../src/runtime/kube-client.js';

const SERVER = 'https://10.0.0.1:6443';
const coded = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('unreachableServer', () => {
  it('names the server, the kubeconfig and what to check for a connection that failed', () => {
    const err = unreachableServer(
      coded('getaddrinfo ENOTFOUND cp.example', 'ENOTFOUND'),
      SERVER,
      '/home/u/kc',
    );
    expect(err?.message).toBe(
      'cannot reach the API server https://10.0.0.1:6443 (from the kubeconfig /home/u/kc): getaddrinfo ENOTFOUND cp.example; is the cluster running, and is that the kubeconfig you meant (--kubeconfig, KUBECONFIG)?',
    );
  });

  it.each([
    ['connect ECONNREFUSED 10.0.0.1:6443', 'ECONNREFUSED'],
    ['self-signed certificate', 'DEPTH_ZERO_SELF_SIGNED_CERT'],
    ["Hostname/IP does not match certificate's altnames", 'ERR_TLS_CERT_ALTNAME_INVALID'],
    ['connect EHOSTUNREACH 10.0.0.1:6443', 'EHOSTUNREACH'],
  ])('takes %s (%s) for an unreachable server', (message, code) => {
    expect(unreachableServer(coded(message, code), SERVER, '/kc')?.message).toContain(
      `cannot reach the API server ${SERVER} (from the kubeconfig /kc): ${message};`,
    );
  });

  it("takes the client's response deadline for one, and names an in-cluster source", () => {
    const err = unreachableServer(
      new Error('GET /apis/virt.dev/v1alpha1: no response within 30000 ms'),
      SERVER,
      undefined,
    );
    expect(err?.message).toContain("(from this pod's service account): GET /apis");
  });

  it('leaves the answers of a server that was reached, and anything else, alone', () => {
    const answered = new KubeApiError(404, 'NotFound', 'not found', 'GET', '/x');
    expect(unreachableServer(answered, SERVER, '/kc')).toBeUndefined();
    expect(unreachableServer(coded('EACCES', 'EACCES'), SERVER, '/kc')).toBeUndefined();
    expect(unreachableServer('a string', SERVER, '/kc')).toBeUndefined();
  });
});

describe('requestTimeoutMs (--request-timeout)', () => {
  it('reads a duration as kubectl does: a unit, or seconds without one', () => {
    expect(requestTimeoutMs('vm', undefined)).toBe(COMMAND_REQUEST_TIMEOUT_MS);
    expect(requestTimeoutMs('vm', '500ms')).toBe(500);
    expect(requestTimeoutMs('vm', '30s')).toBe(30_000);
    expect(requestTimeoutMs('vm', '2m')).toBe(120_000);
    expect(requestTimeoutMs('vm', '1h')).toBe(3_600_000);
    expect(requestTimeoutMs('vm', '7')).toBe(7_000);
  });

  it.each(['0', '0s', '', '1.5s', '-1s', '10 s', 'soon', '25d', '600h'])(
    "refuses '%s', naming the flag and the form it takes",
    (value) => {
      expect(() => requestTimeoutMs('forget-node', value)).toThrow(UsageError);
      expect(() => requestTimeoutMs('forget-node', value)).toThrow(
        `forget-node: --request-timeout must be a duration more than 0 and under 24 days, such as 500ms, 5s or 2m, got '${value}'`,
      );
    },
  );
});
