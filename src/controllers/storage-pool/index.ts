export { reconcileStoragePool } from './reconcile.js';
