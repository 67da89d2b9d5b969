// The VirtualMachine controller: the agent of spec.nodeName defines the machine as a libvirt
// domain named <namespace>_<name> with the machine's UUID, keeps its power state as
// spec.runStrategy asks, applies memory and vCPU changes live, and reports what it observes.
import type { Volume } from '../../api/generated/types.js';
import { keyOf } from '../context.js';
import { INDEX_MAC, INDEX_NETWORK, INDEX_VOLUME, partOfVm, vmIndexes, vmMacs } from '../indexes.js';
import { changed, type ControllerModule, type Trigger } from '../module.js';
import { reconcileVirtualMachine } from './reconcile.js';

export { reconcileVirtualMachine } from './reconcile.js';

export const virtualMachine: ControllerModule = {
  kind: 'VirtualMachine',
  watch: 'node',
  reconcile: reconcileVirtualMachine,
  indexes: vmIndexes,
  hostEvents: 'domain',
  // A deletion's destroy keeps its pass waiting until libvirt sees QEMU gone (seconds on a
  // loaded host): 16 passes would leave the 17th machine's destroy, due at the same moment,
  // waiting for one of them. As many as the daemon can serve at once (max_workers 20) plus
  // room for the passes of machines that are not being stopped.
  concurrency: 32,
  triggers: [
    // A machine's status names its Volumes' paths and waits for them and its networks. An
    // overlay's arrival or departure also wakes the machines using its base
    // (VolumeHasOverlays: a writable disk on a base is refused while overlays exist).
    {
      from: 'Volume',
      keys: (c, cache) => [
        ...new Set(
          [keyOf(c.obj), ...baseOf(c.obj as Volume)].flatMap((key) =>
            cache.keysByIndex('VirtualMachine', INDEX_VOLUME, key),
          ),
        ),
      ],
    },
    {
      from: 'VirtualNetwork',
      keys: (c, cache) => cache.keysByIndex('VirtualMachine', INDEX_NETWORK, keyOf(c.obj)),
    },
    // A running restore holds its machine back; the machine goes on once it ends.
    { from: 'VirtualMachineRestore', keys: (c) => partOfVm(c.obj) },
    // MACAddressInUse: a machine held back by another's claim on its MAC, or by the other's
    // running guest, is judged again as soon as that one lets go (deleted, its MAC or network
    // changed, its guest stopped: its status write), not only on its backoff (up to 5 min).
    { from: 'VirtualMachine', keys: sharingAMac },
  ],
};

/**
 * The other machines with a MAC the changed machine has, before or after the change. Any
 * change of it wakes them, status writes included: its stop is one, and machines sharing a
 * MAC are rare (one of them is held back), so the extra passes cost little.
 */
function sharingAMac(...[c, cache]: Parameters<Trigger['keys']>): string[] {
  const self = keyOf(c.obj);
  const macs = new Set(changed(c).flatMap((m) => vmMacs(m)));
  const keys = [...macs].flatMap((mac) => cache.keysByIndex('VirtualMachine', INDEX_MAC, mac));
  return [...new Set(keys)].filter((key) => key !== self);
}

/** The Volume an overlay is layered on, as an index key ("namespace/name"). */
function baseOf(vol: Volume): string[] {
  const base = vol.spec?.source?.backingVolume?.volume;
  return base ? [`${vol.metadata.namespace ?? ''}/${base}`] : [];
}
