// The VirtualNetwork controller: each agent materialises a VirtualNetwork as a libvirt network
// on its own node when spec.nodeSelector selects it, and reports it in status.nodes[].
import { clusterIndexes, vmNetworks } from '../indexes.js';
import { changed, type ControllerModule } from '../module.js';
import { reconcileVirtualNetwork } from './reconcile.js';

export { reconcileVirtualNetwork } from './reconcile.js';

export const virtualNetwork: ControllerModule = {
  kind: 'VirtualNetwork',
  watch: 'cluster',
  reconcile: reconcileVirtualNetwork,
  indexes: clusterIndexes,
  hostEvents: 'network',
  triggers: [
    // Deletion waits for the machines on the network.
    { from: 'VirtualMachine', keys: (c) => changed(c).flatMap((vm) => vmNetworks(vm)) },
    // Node labels decide which networks this host should have.
    { from: 'Node', keys: (_c, cache) => cache.keys('VirtualNetwork') },
  ],
};
