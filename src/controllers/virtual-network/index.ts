// The VirtualNetwork controller: each agent materialises a VirtualNetwork as a libvirt network
// on its own node when spec.nodeSelector selects it, and reports it in status.nodes[].
export { reconcileVirtualNetwork } from './reconcile.js';
export { defaultBridgeName } from './desired.js';
