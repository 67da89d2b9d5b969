// The VirtualMachineRestore controller: the agent of the machine's node reverts the machine to
// a snapshot, once. Watched like snapshots: every agent sees them all.
import { keyOf } from '../context.js';
import { INDEX_SNAPSHOT, INDEX_VM, restoreIndexes } from '../indexes.js';
import type { ControllerModule } from '../module.js';
import { reconcileVirtualMachineRestore } from './reconcile.js';

export { reconcileVirtualMachineRestore } from './reconcile.js';

export const virtualMachineRestore: ControllerModule = {
  kind: 'VirtualMachineRestore',
  watch: 'cluster',
  reconcile: reconcileVirtualMachineRestore,
  indexes: restoreIndexes,
  triggers: [
    {
      from: 'VirtualMachine',
      keys: (c, cache) => cache.keysByIndex('VirtualMachineRestore', INDEX_VM, keyOf(c.obj)),
    },
    // A restore waits for its snapshot.
    {
      from: 'VirtualMachineSnapshot',
      keys: (c, cache) => cache.keysByIndex('VirtualMachineRestore', INDEX_SNAPSHOT, keyOf(c.obj)),
    },
  ],
};
