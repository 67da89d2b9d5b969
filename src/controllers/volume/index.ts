export { reconcileVolume } from './reconcile.js';
