import { describe, expect, it } from 'vitest';
import {
  ErrorCode,
  ErrorDomain,
  LibvirtError,
  isAlreadyExists,
  isConnectionError,
  isInvalidXML,
  isLibvirtError,
  isNameTooLong,
  isNotFound,
  isOperationInvalid,
  isRefusedDefinition,
  isTimeout,
  isUnsupported,
} from '../../../src/libvirt/errors.js';

function err(
  code: number,
  domain: number = ErrorDomain.VIR_FROM_NONE,
  message = 'x',
): LibvirtError {
  return new LibvirtError(message, { code, domain, level: 2 });
}

describe('LibvirtError', () => {
  it('carries libvirt fields and names its code and domain', () => {
    const e = new LibvirtError('Domain not found', {
      code: 42,
      domain: 10,
      level: 2,
      str1: 'a',
      int1: 7,
    });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('LibvirtError');
    expect(e.message).toBe('Domain not found');
    expect([e.code, e.domain, e.level, e.str1, e.str2, e.int1, e.int2]).toEqual([
      42,
      10,
      2,
      'a',
      undefined,
      7,
      0,
    ]);
    expect(e.codeName).toBe('VIR_ERR_NO_DOMAIN');
    expect(e.domainName).toBe('VIR_FROM_QEMU');
    expect(new LibvirtError('?', { code: 9999, domain: 999, level: 2 }).codeName).toBe(
      'VIR_ERR_9999',
    );
  });

  it('names the codes the operator relies on with libvirt numbers', () => {
    expect(ErrorCode).toMatchObject({
      VIR_ERR_NO_SUPPORT: 3,
      VIR_ERR_XML_ERROR: 27,
      VIR_ERR_XML_DETAIL: 35,
      VIR_ERR_NO_DOMAIN: 42,
      VIR_ERR_NO_NETWORK: 43,
      VIR_ERR_NO_STORAGE_POOL: 49,
      VIR_ERR_NO_STORAGE_VOL: 50,
      VIR_ERR_OPERATION_INVALID: 55,
      VIR_ERR_OPERATION_TIMEOUT: 68,
    });
  });
});

describe('error predicates', () => {
  it.each([
    ['domain', ErrorCode.VIR_ERR_NO_DOMAIN],
    ['network', ErrorCode.VIR_ERR_NO_NETWORK],
    ['storagePool', ErrorCode.VIR_ERR_NO_STORAGE_POOL],
    ['storageVol', ErrorCode.VIR_ERR_NO_STORAGE_VOL],
  ] as const)('isNotFound recognises a missing %s and only that kind', (kind, code) => {
    expect(isNotFound(err(code))).toBe(true);
    expect(isNotFound(err(code), kind)).toBe(true);
    for (const other of ['domain', 'network', 'storagePool', 'storageVol'] as const) {
      if (other !== kind) expect(isNotFound(err(code), other)).toBe(false);
    }
  });

  it('isNotFound is false for other errors and non-libvirt errors', () => {
    expect(isNotFound(err(ErrorCode.VIR_ERR_INTERNAL_ERROR))).toBe(false);
    expect(isNotFound(new Error('Domain not found'))).toBe(false);
    expect(isNotFound(undefined)).toBe(false);
  });

  it('isConnectionError covers dead transports, not server-side failures', () => {
    expect(isConnectionError(err(ErrorCode.VIR_ERR_INVALID_CONN))).toBe(true);
    expect(isConnectionError(err(ErrorCode.VIR_ERR_NO_CONNECT))).toBe(true);
    expect(isConnectionError(err(ErrorCode.VIR_ERR_RPC, ErrorDomain.VIR_FROM_RPC))).toBe(true);
    expect(isConnectionError(err(ErrorCode.VIR_ERR_SYSTEM_ERROR, ErrorDomain.VIR_FROM_RPC))).toBe(
      true,
    );
    expect(isConnectionError(err(ErrorCode.VIR_ERR_INTERNAL_ERROR, ErrorDomain.VIR_FROM_RPC))).toBe(
      true,
    );
    expect(
      isConnectionError(err(ErrorCode.VIR_ERR_SYSTEM_ERROR, ErrorDomain.VIR_FROM_STORAGE)),
    ).toBe(false);
    expect(
      isConnectionError(err(ErrorCode.VIR_ERR_INTERNAL_ERROR, ErrorDomain.VIR_FROM_QEMU)),
    ).toBe(false);
    expect(isConnectionError(err(ErrorCode.VIR_ERR_NO_DOMAIN))).toBe(false);
  });

  it('isUnsupported covers NO_SUPPORT and unknown flags', () => {
    expect(isUnsupported(err(ErrorCode.VIR_ERR_NO_SUPPORT))).toBe(true);
    expect(isUnsupported(err(ErrorCode.VIR_ERR_OPERATION_UNSUPPORTED))).toBe(true);
    expect(isUnsupported(err(ErrorCode.VIR_ERR_ARGUMENT_UNSUPPORTED))).toBe(true);
    const flags = 'unsupported flags (0x4) in function testDomainUndefineFlags';
    expect(isUnsupported(err(ErrorCode.VIR_ERR_INVALID_ARG, 12, flags))).toBe(true);
    expect(isUnsupported(err(ErrorCode.VIR_ERR_INVALID_ARG, 12, 'memory too large'))).toBe(false);
  });

  it('isAlreadyExists covers the *_EXIST codes and the object-list message', () => {
    expect(isAlreadyExists(err(ErrorCode.VIR_ERR_DOM_EXIST))).toBe(true);
    expect(isAlreadyExists(err(ErrorCode.VIR_ERR_STORAGE_VOL_EXIST))).toBe(true);
    const msg = "operation failed: domain 'a' already exists with uuid 1";
    expect(isAlreadyExists(err(ErrorCode.VIR_ERR_OPERATION_FAILED, 20, msg))).toBe(true);
    expect(isAlreadyExists(err(ErrorCode.VIR_ERR_OPERATION_FAILED, 20, 'other'))).toBe(false);
  });

  it('isTimeout, isInvalidXML, isOperationInvalid and isLibvirtError match their codes', () => {
    expect(isTimeout(err(ErrorCode.VIR_ERR_OPERATION_TIMEOUT))).toBe(true);
    expect(isTimeout(err(ErrorCode.VIR_ERR_RPC))).toBe(false);
    expect(isInvalidXML(err(ErrorCode.VIR_ERR_XML_ERROR))).toBe(true);
    expect(isInvalidXML(err(ErrorCode.VIR_ERR_XML_DETAIL))).toBe(true);
    expect(isInvalidXML(err(ErrorCode.VIR_ERR_XML_INVALID_SCHEMA))).toBe(true);
    expect(isInvalidXML(err(ErrorCode.VIR_ERR_NO_NAME))).toBe(false);
    expect(isOperationInvalid(err(ErrorCode.VIR_ERR_OPERATION_INVALID))).toBe(true);
    expect(isLibvirtError(err(1))).toBe(true);
    expect(isLibvirtError(new TypeError('x'))).toBe(false);
  });
});

describe('isRefusedDefinition', () => {
  // Every libvirt code, each with a plain message and with the two messages a predicate looks
  // for under a generic code: exactly these are a refused definition.
  const REFUSED = new Set<number>([
    ErrorCode.VIR_ERR_CONFIG_UNSUPPORTED,
    ErrorCode.VIR_ERR_CPU_INCOMPATIBLE,
    ErrorCode.VIR_ERR_XML_ERROR,
    ErrorCode.VIR_ERR_XML_DETAIL,
    ErrorCode.VIR_ERR_XML_INVALID_SCHEMA,
    ErrorCode.VIR_ERR_INVALID_ARG,
    ErrorCode.VIR_ERR_NO_SUPPORT,
    ErrorCode.VIR_ERR_ARGUMENT_UNSUPPORTED,
    ErrorCode.VIR_ERR_OPERATION_UNSUPPORTED,
  ]);
  const codes: number[] = Object.values(ErrorCode);

  it('is true for exactly the listed codes, whatever the message', () => {
    expect(codes.length).toBeGreaterThan(90);
    const refused = codes.filter((c) => isRefusedDefinition(err(c, 0, 'some failure')));
    expect(new Set(refused)).toEqual(REFUSED);
  });

  it('and for a file name too long, only under VIR_ERR_SYSTEM_ERROR', () => {
    const tooLong =
      "Failed to create file '/etc/libvirt/qemu/networks/n.xml.new': File name too long";
    const refused = codes.filter((c) => isRefusedDefinition(err(c, 0, tooLong)));
    expect(new Set(refused)).toEqual(new Set([...REFUSED, ErrorCode.VIR_ERR_SYSTEM_ERROR]));
    expect(isNameTooLong(err(ErrorCode.VIR_ERR_SYSTEM_ERROR, 0, tooLong))).toBe(true);
    expect(isNameTooLong(err(ErrorCode.VIR_ERR_SYSTEM_ERROR, 0, 'No space left'))).toBe(false);
  });

  it('"unsupported flags" adds no code: VIR_ERR_INVALID_ARG is refused with any message', () => {
    const refused = codes.filter((c) =>
      isRefusedDefinition(err(c, 0, 'unsupported flags (0x4) in function x')),
    );
    expect(new Set(refused)).toEqual(REFUSED);
  });
});
