export { reconcileVirtualMachineSnapshot } from './reconcile.js';
