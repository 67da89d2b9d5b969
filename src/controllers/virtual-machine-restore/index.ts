export { reconcileVirtualMachineRestore, restoreInProgress } from './reconcile.js';
