// Executes a plan through the binding, one libvirt call per step, in order.
//
// Errors split three ways:
// - the step's goal already holds (starting a running network, removing what is gone): the
//   step counts as done, so a pass interrupted between any two steps resumes cleanly;
// - the transport failed or timed out: thrown, the queue retries the key with backoff;
// - libvirt refused the step for this host (bad address for this host, bridge in use, no such
//   host bridge, ...): the remaining steps are skipped and the refusal is returned, to become
//   a False condition with libvirt's message.
import type { Connect } from '../../libvirt/connection.js';
import {
  NetworkUpdateCommand,
  NetworkUpdateFlags,
  NetworkUpdateSection,
} from '../../libvirt/constants.js';
import {
  isConnectionError,
  isLibvirtError,
  isNameTooLong,
  isNotFound,
  isOperationInvalid,
  isRefusedDefinition,
  isTimeout,
  type LibvirtError,
} from '../../libvirt/errors.js';
import type { Network } from '../../libvirt/network.js';
import { buildDhcpHostXML, buildDnsHostXML, buildNetworkXML } from '../../libvirt/xml/network.js';
import type { Problem } from '../kit.js';
import { deviceHasBridgeName, type NetworkStep, type UpdateScope } from './plan.js';

export interface StepFailure {
  step: NetworkStep;
  problem: Problem;
}

/** Condition reasons for a refused step. */
const FAILURE_REASON: Record<NetworkStep['op'], string> = {
  define: 'DefineFailed',
  setAutostart: 'AutostartFailed',
  start: 'StartFailed',
  dhcpHost: 'UpdateFailed',
  dnsHost: 'UpdateFailed',
  destroy: 'DestroyFailed',
  undefine: 'UndefineFailed',
};

const COMMAND = {
  add: NetworkUpdateCommand.ADD_LAST,
  modify: NetworkUpdateCommand.MODIFY,
  delete: NetworkUpdateCommand.DELETE,
} as const;

const SCOPE: Record<UpdateScope, number> = {
  live: NetworkUpdateFlags.LIVE,
  liveAndConfig: NetworkUpdateFlags.LIVE | NetworkUpdateFlags.CONFIG,
};

/** What a refusal's message needs to know of the VirtualNetwork beyond the step. */
export interface ActFacts {
  /** Whether spec.bridge is set: if not, the bridge name is derived from metadata.uid. */
  bridgeFromSpec: boolean;
}

/**
 * Runs `steps` against `network` (undefined until a define step creates it). Resolves with
 * the first refusal, or undefined when every step is done.
 */
export async function actNetwork(
  conn: Connect,
  network: Network | undefined,
  steps: readonly NetworkStep[],
  facts: ActFacts,
): Promise<StepFailure | undefined> {
  let target = network;
  for (const step of steps) {
    try {
      if (step.op === 'define') {
        target = await conn.defineNetworkXML(buildNetworkXML(step.doc));
        continue;
      }
      if (!target) throw new Error(`step ${step.op} has no network: the plan lacks a define`);
      await run(target, step);
    } catch (err) {
      if (!isLibvirtError(err) || isConnectionError(err) || isTimeout(err)) throw err;
      if (alreadyDone(step, err)) continue;
      return {
        step,
        problem: { reason: failureReason(step, err), message: describe(step, err, facts) },
      };
    }
  }
  return undefined;
}

const HOST_DEVICE_EXISTS = /error creating bridge interface (\S+): File exists/;

// Clashes only the user can resolve, named so they read as Stalled: libvirt refuses to start a
// network whose subnet equals one a host interface is attached to ("Network is already in use
// by interface eth1"; an agent that cannot read the host's routes, in a pod, learns of it only
// here), to define one whose bridge another libvirt network has ("bridge name 'virbr1'
// already in use."), and to start one whose bridge name a host device that no libvirt network
// made already has: libvirt checks only its own networks at define, and a real libvirtd's
// start then fails creating the bridge ("error creating bridge interface br0: File exists").
// A define or start refused for the definition itself (isRefusedDefinition: a name too long
// for libvirt's files, invalid XML or arguments, a configuration this libvirt lacks), or a
// dnsmasq that rejects the configuration libvirt wrote for it, is DefineRefused/StartRefused:
// no retry helps until the spec or the host changes (still retried with backoff, so a fixed
// host is picked up). Anything else (dnsmasq finding its address taken by a leftover, a device
// busy for a moment) stays DefineFailed/StartFailed: transient.
function failureReason(step: NetworkStep, err: LibvirtError): string {
  const { message } = err;
  if (step.op === 'start' && message.includes('already in use by interface')) {
    return 'SubnetConflict';
  }
  if (step.op === 'define' && /bridge name '.*' already in use/.test(message)) {
    return 'BridgeInUse';
  }
  if (step.op === 'start' && HOST_DEVICE_EXISTS.test(message)) return 'BridgeInUse';
  if (step.op === 'define' && isRefusedDefinition(err)) return 'DefineRefused';
  if (step.op === 'start' && (isRefusedDefinition(err) || DNSMASQ_CONFIG.test(message))) {
    return 'StartRefused';
  }
  return FAILURE_REASON[step.op];
}

/**
 * libvirt's report of a dnsmasq that exited with status 1, which dnsmasq(8) keeps for "a problem
 * with configuration was detected" (2 is network access, such as an address in use; 3 a file
 * system problem): e.g. "Child process (VIR_BRIDGE_NAME=virbr1 /usr/sbin/dnsmasq
 * --conf-file=...) unexpected exit status 1: \ndnsmasq: prefix length must be at least 64 at
 * line 15 of ...", measured on libvirt 9.0 with an IPv6 DHCP range on a /48.
 */
const DNSMASQ_CONFIG = /\/dnsmasq [^)]*\) unexpected exit status 1:/;

async function run(network: Network, step: Exclude<NetworkStep, { op: 'define' }>): Promise<void> {
  switch (step.op) {
    case 'setAutostart':
      return network.setAutostart(step.autostart);
    case 'start':
      return network.create();
    case 'dhcpHost':
      // parentIndex 0: the desired document has exactly one <ip>, the IPv4 one.
      return network.update(
        COMMAND[step.command],
        NetworkUpdateSection.IP_DHCP_HOST,
        0,
        buildDhcpHostXML(step.host),
        SCOPE[step.scope],
      );
    case 'dnsHost':
      return network.update(
        COMMAND[step.command],
        NetworkUpdateSection.DNS_HOST,
        -1,
        buildDnsHostXML(step.host),
        SCOPE[step.scope],
      );
    case 'destroy':
      return network.destroy();
    case 'undefine':
      return network.undefine();
  }
}

// libvirt answers OPERATION_INVALID for "network is already active" / "is not active", and
// NO_NETWORK once the object is gone (a transient network vanishes when destroyed).
function alreadyDone(step: NetworkStep, err: unknown): boolean {
  switch (step.op) {
    case 'start':
    case 'destroy':
      return isOperationInvalid(err) || isNotFound(err, 'network');
    case 'undefine':
      return isNotFound(err, 'network');
    default:
      return false;
  }
}

function describe(step: NetworkStep, err: LibvirtError, facts: ActFacts): string {
  const { message } = err;
  // libvirt names the network's files after it (<name>.xml.new at define, dnsmasq's
  // <name>.hostsfile at start), so a name near the 253 characters Kubernetes allows is refused.
  const tooLong = isNameTooLong(err)
    ? '; libvirt names its files on the node after the network: re-create the VirtualNetwork ' +
      'with a shorter metadata.name (245 characters or fewer)'
    : '';
  switch (step.op) {
    case 'define':
      return `libvirt refused the network definition: ${message}${tooLong}`;
    case 'start': {
      const device = HOST_DEVICE_EXISTS.exec(message)?.[1];
      const hint = device
        ? `; ${deviceHasBridgeName('the node', device, facts.bridgeFromSpec)}`
        : tooLong;
      return `libvirt could not start the network: ${message}${hint}`;
    }
    case 'dhcpHost':
      return `libvirt could not ${step.command} the DHCP host ${step.host.mac ?? step.host.ip}: ${message}`;
    case 'dnsHost':
      return `libvirt could not ${step.command} the DNS host ${step.host.ip}: ${message}`;
    default:
      return `libvirt refused ${step.op}: ${message}`;
  }
}
