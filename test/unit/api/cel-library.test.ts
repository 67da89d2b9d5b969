import { describe, expect, test } from 'vitest';
import {
  cidrContainsIP,
  cidrFamily,
  cidrPrefixLength,
  ipFamily,
  ipv4CidrMasked,
  ipv4Number,
  isCIDR,
  isIP,
  isURL,
  urlHostname,
} from '../../../src/api/cel-library.js';

// Expected values were measured with the same inputs in CEL rules on kube-apiserver 1.36, so
// these twins of the Kubernetes CEL library agree with the server where it matters to us.
describe('isURL and getHostname, like the API server (Go url.ParseRequestURI)', () => {
  test.each([
    ['https://cloud.example.com/images/a.qcow2', true, 'cloud.example.com'],
    ['http:///foo', true, ''],
    ['http://a<b>/x', true, 'a<b>'],
    ['http://a{b}/', false, undefined],
    ['http://h:abc/', false, undefined],
    ['http://h:8080/x', true, 'h'],
    ['http://h:/x', true, 'h'],
    ['http://h/%zz', false, undefined],
    ['http://h/a#b', true, 'h'],
    ['http://h?x=%zz', true, 'h'],
    ['http://user@/', true, ''],
    ['http://user:pw@host/x', true, 'host'],
    ['http://[fd00::1]:80/x', true, 'fd00::1'],
    ['http://example.com/a\r\nX: 1', false, undefined],
    ['1.5', false, undefined],
    ['/just/a/path', true, ''],
    ['fd00::1', true, ''], // scheme "fd00", opaque part ":1"
    ['mailto:ops@example.com', true, ''],
    ['::1', false, undefined],
    ['', false, undefined],
  ] as const)('%j: isURL %s, hostname %j', (s, valid, hostname) => {
    expect(isURL(s)).toBe(valid);
    if (hostname !== undefined) expect(urlHostname(s)).toBe(hostname);
    else expect(() => urlHostname(s)).toThrow('is not a URL');
  });
});

describe('isIP and ip().family()', () => {
  test.each([
    ['1.2.3.4', 4],
    ['255.255.255.255', 4],
    ['01.2.3.4', undefined],
    ['300.1.1.1', undefined],
    ['::1', 6],
    ['fd00::1', 6],
    ['::ffff:1.2.3.4', undefined],
    ['fe80::1%eth0', undefined],
    ['1.2.3.4/24', undefined],
    ['', undefined],
  ] as const)('%s: %s', (s, family) => {
    expect(ipFamily(s)).toBe(family);
    expect(isIP(s)).toBe(family !== undefined);
  });
});

describe('cidr()', () => {
  test.each([
    ['1.2.3.4/24', true],
    ['1.2.3.4/33', false],
    ['1.2.3.04/24', false],
    ['1.2.3.4/024', false],
    ['fd00::1/64', true],
    ['fd00::1/129', false],
    ['1.2.3.4', false],
  ] as const)('isCIDR(%s) is %s', (s, valid) => {
    expect(isCIDR(s)).toBe(valid);
  });

  test('family, prefix length and the masked network', () => {
    expect(cidrFamily('192.168.1.1/24')).toBe(4);
    expect(cidrFamily('fd00::1/64')).toBe(6);
    expect(cidrPrefixLength('192.168.1.1/24')).toBe(24);
    expect(ipv4CidrMasked('192.168.1.77/24')).toBe('192.168.1.0/24');
    expect(ipv4CidrMasked('10.1.2.3/8')).toBe('10.0.0.0/8');
    expect(ipv4CidrMasked('192.168.1.77/32')).toBe('192.168.1.77/32');
    expect(ipv4CidrMasked('255.255.255.255/30')).toBe('255.255.255.252/30');
    expect(() => cidrFamily('nope')).toThrow("'nope' is not a CIDR");
  });

  test.each([
    ['192.168.1.1/24', '192.168.1.200', true],
    ['192.168.1.1/24', '192.168.2.1', false],
    ['192.168.1.1/24', '192.168.1.0', true],
    ['192.168.1.1/24', '192.168.1.255', true],
    ['10.0.0.1/8', '10.255.255.255', true],
    ['192.168.1.1/24', '::1', false],
    ['fd00::1/64', 'fd00::abcd', true],
    ['fd00::1/64', 'fd01::1', false],
    ['fd00::1/64', '10.0.0.1', false],
  ] as const)('cidr(%s).containsIP(%s) is %s', (c, ip, inside) => {
    expect(cidrContainsIP(c, ip)).toBe(inside);
  });

  test('IPv4 addresses order as numbers', () => {
    expect(ipv4Number('0.0.0.1')).toBe(1);
    expect(ipv4Number('192.168.1.10')).toBeGreaterThan(ipv4Number('192.168.1.9'));
    expect(ipv4Number('255.255.255.255')).toBe(2 ** 32 - 1);
  });
});
