// The VirtualMachine controller: the agent of spec.nodeName defines the machine as a libvirt
// domain named <namespace>_<name> with the machine's UUID, keeps its power state as
// spec.runStrategy asks, applies memory and vCPU changes live, and reports what it observes.
export { reconcileVirtualMachine } from './reconcile.js';
export { machineOfDomain, machinesOnNetwork, machinesUsingVolume } from './enqueue.js';
export { CONSOLE_LOG_ANNOTATION } from './desired.js';
