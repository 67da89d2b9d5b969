// The VirtualMachineSnapshot controller: the agent of the machine's node takes the libvirt
// snapshot. Every agent watches them all (they name a machine, not a node) and acts on those
// whose machine is in its cache.
import { keyOf } from '../context.js';
import { INDEX_SNAPSHOT, INDEX_VM, restoreIndexes, snapshotIndexes } from '../indexes.js';
import type { ControllerModule } from '../module.js';
import { reconcileVirtualMachineSnapshot } from './reconcile.js';

export { reconcileVirtualMachineSnapshot } from './reconcile.js';

export const virtualMachineSnapshot: ControllerModule = {
  kind: 'VirtualMachineSnapshot',
  watch: 'cluster',
  reconcile: reconcileVirtualMachineSnapshot,
  indexes: snapshotIndexes,
  // libvirt has no snapshot events: a snapshot deleted outside the operator (virsh
  // snapshot-delete) turns the object Failed, SnapshotMissing, within a minute instead of
  // reading Ready until the agent's 10-minute resync. A look costs a lookup and no write.
  resyncMs: 60_000,
  triggers: [
    // A machine's snapshots follow it (its deletion deletes its snapshots).
    {
      from: 'VirtualMachine',
      keys: (c, cache) => cache.keysByIndex('VirtualMachineSnapshot', INDEX_VM, keyOf(c.obj)),
    },
    // A restore may have found the libvirt snapshot gone (SnapshotMissing): the snapshot looks
    // too, as libvirt has no snapshot events and it would say Ready until the next resync.
    { from: 'VirtualMachineRestore', keys: (c) => restoreIndexes[INDEX_SNAPSHOT](c.obj) },
  ],
};
