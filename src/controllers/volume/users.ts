// Who uses a Volume: VirtualMachines on this node that attach it (disks, kernel, initrd),
// Volumes layered on it, Volumes being copied from it (a clone no longer needs its source once
// its file is made), and VirtualMachineSnapshots whose disks it holds (an
// internal snapshot lives inside the volume's qcow2 file). While any remain, the Volume is InUse and its deletion
// waits (the protection finalizer). A running domain can hold a disk its spec no longer names
// (a detach the guest has not completed, a removal that waits for a restart): before its file
// is deleted, such machines' domains are looked at too (machinesThatMayHold, observe.ts).
import { isConditionTrue } from '../../api/conditions.js';
import type { VirtualMachine, VolumeStatusUsedBy, Volume } from '../../api/generated/types.js';
import { keyOf, nodeFinalizer, type ControllerContext, type KubeObject } from '../context.js';
import { INDEX_SOURCE_VOLUME, INDEX_VOLUME } from '../indexes.js';
import { DETACH_CONDITION, SHUTDOWN_CONDITION } from '../virtual-machine/plan.js';
import type { Problem } from '../kit.js';
import { holderNames, liveDisksOf } from './observe.js';
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
    // A full copy depends on its source only until the copy exists (status.path records it);
    // an overlay reads its backing file for as long as it exists.
    .filter((v) => !(v.spec.source?.clone && v.status?.path))
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

/**
 * Machines of this node in the Volume's namespace whose running domain may still have a disk
 * their spec dropped: the agent has not acted on their latest spec yet, a detach waits for the
 * guest (DetachRequested), a removal waits for a restart (RestartRequired), or the domain is
 * being stopped (ShutdownRequested): a machine being stopped takes no live detach (plan.ts), so
 * a disk dropped in the same apply as a restart request stays open until the guest is off,
 * with neither DetachRequested nor RestartRequired saying so. Any other machine's running
 * domain has exactly its spec's disks, so only these are looked at.
 */
export function machinesThatMayHold(vol: Volume, ctx: ControllerContext): VirtualMachine[] {
  return ctx
    .list<VirtualMachine>('VirtualMachine')
    .filter(
      (vm) =>
        vm.spec.nodeName === ctx.nodeName &&
        vm.metadata.namespace === vol.metadata.namespace &&
        (vm.status?.observedGeneration !== vm.metadata.generation ||
          isConditionTrue(vm.status?.conditions, 'RestartRequired') ||
          isConditionTrue(vm.status?.conditions, DETACH_CONDITION) ||
          isConditionTrue(vm.status?.conditions, SHUTDOWN_CONDITION)),
    );
}

/**
 * Why a copy of the source Volume `name` (its file at `path`), or an overlay on it, cannot be
 * made now: a running machine of this node has the file open as a writable disk. QEMU holds its
 * write lock, so qemu-img cannot read it (and a copy of a disk being written would not be
 * consistent anyway); an overlay on a base being written would see it change underneath.
 */
export async function sourceHeld(
  vol: Volume,
  name: string,
  path: string,
  ctx: ControllerContext,
  use: 'copy' | 'overlay' = 'copy',
): Promise<Problem | undefined> {
  const key = `${vol.metadata.namespace}/${name}`;
  const named = ctx
    .byIndex<VirtualMachine>('VirtualMachine', INDEX_VOLUME, key)
    .filter((vm) => vm.spec.nodeName === ctx.nodeName);
  const seen = new Set(named.map((vm) => vm.metadata.uid));
  const others = machinesThatMayHold(vol, ctx).filter((vm) => !seen.has(vm.metadata.uid));
  const disks = await liveDisksOf(ctx, [...named, ...others], path);
  const holders = holderNames(disks.filter((d) => !d.readonly));
  if (holders.length === 0) return undefined;
  const which = holders.length === 1 ? 'VirtualMachine' : 'VirtualMachines';
  const held = `source Volume ${key} is a writable disk of running ${which} ${holders.join(', ')}`;
  return {
    reason: 'SourceInUse',
    message:
      use === 'copy'
        ? `${held}, whose QEMU holds the file's write lock: it cannot be copied while in use; ` +
          `the copy is made once the machine is stopped or the disk detached`
        : `${held}: an overlay reads its backing file as it is, and the guest is changing it; ` +
          `the overlay is made once the machine is stopped or the disk detached`,
  };
}
