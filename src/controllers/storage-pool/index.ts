export { reconcileStoragePool } from './reconcile.js';
export { lookupPool } from './observe.js';
