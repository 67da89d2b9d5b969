// Who uses a Volume: VirtualMachines on this node that attach it (disks, kernel, initrd),
// Volumes cloned from or layered on it, and VirtualMachineSnapshots whose disks it holds (an
// internal snapshot lives inside the volume's qcow2 file). While any remain, the Volume is InUse and its deletion
// waits (the protection finalizer).
import type { VolumeStatusUsedBy, Volume } from '../../api/generated/types.js';
import { keyOf, nodeFinalizer, type ControllerContext, type KubeObject } from '../context.js';
import { INDEX_SOURCE_VOLUME, INDEX_VOLUME } from '../indexes.js';
import { usedByList } from './status.js';

interface OnNode extends KubeObject {
  spec?: { nodeName?: string };
}

export function usersOf(vol: Volume, ctx: ControllerContext): VolumeStatusUsedBy[] {
  const key = keyOf(vol);
  const vms = ctx
    .byIndex<OnNode>('VirtualMachine', INDEX_VOLUME, key)
    .filter((vm) => vm.spec?.nodeName === ctx.nodeName)
    .map((vm) => String(vm.metadata.name));
  const volumes = ctx
    .byIndex<Volume>('Volume', INDEX_SOURCE_VOLUME, key)
    .filter((v) => v.metadata.uid !== vol.metadata.uid)
    // One on its way out that never made its file (status.path records that) depends on
    // nothing: two Volumes layered on each other, a cycle the schema cannot see, would
    // otherwise hold each other's deletion forever.
    .filter((v) => !(v.metadata.deletionTimestamp && !v.status?.path))
    .map((v) => String(v.metadata.name));
  // Snapshots taken by this node (its finalizer) and not on their way out.
  const snapshots = ctx
    .byIndex<KubeObject>('VirtualMachineSnapshot', INDEX_VOLUME, key)
    .filter((s) => !s.metadata.deletionTimestamp)
    .filter((s) => s.metadata.finalizers?.includes(nodeFinalizer(ctx.nodeName)))
    .map((s) => String(s.metadata.name));
  return usedByList(vms, volumes, snapshots);
}
