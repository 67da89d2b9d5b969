export { reconcileVirtualMachineRestore } from './reconcile.js';
