// The VirtualNetwork controller: each agent materialises a VirtualNetwork as a libvirt network
// on its own node when spec.nodeSelector selects it, and reports it in status.nodes[].
import { INDEX_WAITING_FOR_GUESTS, networkIndexes, vmNetworks } from '../indexes.js';
import { changed, type ControllerModule } from '../module.js';
import { reconcileVirtualNetwork } from './reconcile.js';

export { reconcileVirtualNetwork } from './reconcile.js';

export const virtualNetwork: ControllerModule = {
  kind: 'VirtualNetwork',
  watch: 'cluster',
  reconcile: reconcileVirtualNetwork,
  indexes: networkIndexes,
  hostEvents: 'network',
  // libvirt sends no event when the host bridge of a mode-bridge network is removed, and keeps
  // the network active: a pass looks for the bridge (BridgeNotFound) within about a minute,
  // instead of reading Ready until the agent's 10-minute resync. A converged pass writes nothing.
  resyncMs: 60_000,
  // A domain the operator did not define (virsh) that has an interface on a network keeps that
  // network's removal waiting (InUse), and its stop, crash, undefine or NIC detach writes no
  // status that would wake the network: without this the removal waited for its backoff (up to
  // 5 minutes) or the resync. Only networks waiting for guests are looked at again; the foreign
  // domain itself is never touched.
  unownedHostEvents: {
    source: 'domain',
    keys: (cache) => cache.keysByIndex('VirtualNetwork', INDEX_WAITING_FOR_GUESTS, 'InUse'),
  },
  triggers: [
    // Deletion waits for the machines on the network: those whose spec names it, and any
    // machine's change wakes a network that waits for guests, since a guest whose NIC was
    // switched to another network stays on this one until it stops, and then its spec names
    // only the other (the deletion waited out its backoff, up to 5 minutes).
    {
      from: 'VirtualMachine',
      keys: (c, cache) => [
        ...new Set([
          ...changed(c).flatMap((vm) => vmNetworks(vm)),
          ...cache.keysByIndex('VirtualNetwork', INDEX_WAITING_FOR_GUESTS, 'InUse'),
        ]),
      ],
    },
    // A network refused for a bridge or subnet another one held (BridgeInUse, SubnetConflict)
    // tries again as soon as that one is gone, instead of after its backoff (up to 5 minutes).
    {
      from: 'VirtualNetwork',
      keys: (c, cache) => (c.type === 'deleted' ? cache.keys('VirtualNetwork') : []),
    },
    // Node labels decide which networks this host should have.
    { from: 'Node', keys: (_c, cache) => cache.keys('VirtualNetwork') },
  ],
};
