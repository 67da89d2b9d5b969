import { describe, expect, it } from 'vitest';
import {
  DomainEventType,
  DomainState,
  DomainVcpuFlags,
  DomainXMLFlags,
} from '../../../src/libvirt/constants.js';
import {
  closeReasonName,
  domainEventDetailName,
  domainEventName,
  domainStateName,
  domainStateReasonName,
  networkEventName,
  storagePoolEventName,
  storagePoolStateName,
  storageVolTypeName,
} from '../../../src/libvirt/names.js';

describe('libvirt names', () => {
  it('names domain states and their reasons', () => {
    expect(domainStateName(DomainState.RUNNING)).toBe('running');
    expect(domainStateName(DomainState.SHUTOFF)).toBe('shutoff');
    expect(domainStateName(DomainState.PMSUSPENDED)).toBe('pmsuspended');
    expect(domainStateReasonName(DomainState.RUNNING, 1)).toBe('booted');
    expect(domainStateReasonName(DomainState.SHUTOFF, 2)).toBe('destroyed');
    expect(domainStateReasonName(DomainState.PAUSED, 1)).toBe('user');
    expect(domainStateReasonName(DomainState.CRASHED, 1)).toBe('panicked');
  });

  it('names lifecycle events and their details', () => {
    expect(domainEventName(DomainEventType.STARTED)).toBe('started');
    expect(domainEventDetailName(DomainEventType.STARTED, 0)).toBe('booted');
    expect(domainEventDetailName(DomainEventType.STOPPED, 1)).toBe('destroyed');
    expect(domainEventDetailName(DomainEventType.STOPPED, 0)).toBe('shutdown');
    expect(domainEventDetailName(DomainEventType.UNDEFINED, 0)).toBe('removed');
    expect(networkEventName(2)).toBe('started');
    expect(storagePoolEventName(4)).toBe('created');
    expect(storagePoolStateName(2)).toBe('running');
    expect(storageVolTypeName(0)).toBe('file');
    expect(closeReasonName(2)).toBe('keepalive');
  });

  it('reads values newer than its tables as unknown(n)', () => {
    expect(domainStateName(99)).toBe('unknown(99)');
    expect(domainStateReasonName(99, 3)).toBe('unknown(3)');
    expect(domainStateReasonName(DomainState.RUNNING, 99)).toBe('unknown(99)');
    expect(domainEventDetailName(42, 0)).toBe('unknown(0)');
  });

  it('exports flags with libvirt values', () => {
    expect(DomainXMLFlags.INACTIVE).toBe(2);
    expect(DomainVcpuFlags).toMatchObject({ LIVE: 1, CONFIG: 2, MAXIMUM: 4, GUEST: 8 });
  });
});
