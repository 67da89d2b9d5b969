// Builders for the VirtualMachine controller's unit tests: objects as the API server returns
// them (defaults filled in) and observations as observe.ts would report them.
import type {
  VirtualMachine,
  VirtualMachineSpec,
  VirtualMachineStatus,
} from '../../../../src/api/generated/types.js';
import {
  desiredDomain,
  type MachineInputs,
} from '../../../../src/controllers/virtual-machine/desired.js';
import type {
  ObservedMachine,
  OursDomain,
} from '../../../../src/controllers/virtual-machine/observe.js';
import { machineStatus } from '../../../../src/controllers/virtual-machine/status.js';
import type { Domain } from '../../../../src/libvirt/domain.js';
import type { DomainDocument } from '../../../../src/libvirt/xml/domain.js';

export const UID = '0b5c7d3e-1111-4222-8333-944445555666';
export const NOW = new Date('2026-03-01T12:00:00Z');

export function vm(
  spec: Partial<VirtualMachineSpec> = {},
  opts: {
    status?: VirtualMachineStatus;
    annotations?: Record<string, string>;
    generation?: number;
  } = {},
): VirtualMachine {
  const obj: VirtualMachine = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: {
      name: 'web',
      namespace: 'prod',
      uid: UID,
      generation: opts.generation ?? 3,
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
    },
    spec: {
      nodeName: 'node-a',
      runStrategy: 'Always',
      domainType: 'qemu',
      vcpus: 1,
      memory: '256Mi',
      firmware: 'bios',
      terminationGracePeriodSeconds: 60,
      updatePolicy: 'Manual',
      ...spec,
    },
  };
  if (opts.status) obj.status = opts.status;
  return obj;
}

export const noInputs: MachineInputs = {
  volumes: new Map(),
  cloudInit: undefined,
  consoleLog: undefined,
};

export function desired(machine: VirtualMachine, inputs: MachineInputs = noInputs): DomainDocument {
  return desiredDomain(machine, inputs);
}

/** A deep copy with `change` applied, so tests can derive "what libvirt holds" from desired. */
export function variant(doc: DomainDocument, change: (d: DomainDocument) => void): DomainDocument {
  const copy = structuredClone(doc);
  change(copy);
  return copy;
}

export function ours(over: Partial<OursDomain> & { config?: DomainDocument }): OursDomain {
  const active = over.active ?? true;
  const base: OursDomain = {
    state: 'ours',
    domain: {} as Domain,
    id: active ? 7 : -1,
    uuid: UID,
    name: 'prod_web',
    power: active
      ? { state: 'running', reason: 'booted' }
      : { state: 'shutoff', reason: 'shutdown' },
    active,
    live: undefined,
    config: undefined,
    memoryActualKiB: undefined,
    addresses: new Map(),
    leasesSupported: false,
  };
  const merged = { ...base, ...over };
  if (active && over.live === undefined && merged.config) merged.live = merged.config;
  return merged;
}

export function observed(
  domain: ObservedMachine['domain'],
  cloudInitIsos: string[] = [],
  snapshotIsos: string[] = [],
): ObservedMachine {
  return { domain, cloudInitIsos, snapshotIsos };
}

/** A status as a previous pass left it, with a running domain. */
export function runningStatus(extra: Partial<VirtualMachineStatus> = {}): VirtualMachineStatus {
  return {
    phase: 'Running',
    state: { state: 'running', reason: 'booted' },
    startedAt: '2026-03-01T11:00:00Z',
    restartCount: 0,
    ...extra,
  };
}

/**
 * The status a pass writes for `machine` whose domain (of its own definition) is in `power`,
 * with nothing else under way: no problem, stop, start or pending change.
 */
export function statusIn(
  machine: VirtualMachine,
  power: { state: string; reason: string },
): VirtualMachineStatus {
  return machineStatus({
    vm: machine,
    nodeName: 'node-a',
    now: NOW,
    observed: ours({ config: desired(machine), power }),
    problem: undefined,
    shutdown: undefined,
    started: undefined,
    pending: [],
  });
}
