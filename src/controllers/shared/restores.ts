// What the VirtualMachine controller needs to know of restores: whether one of its machine is
// running, so that it stands aside (redefining, starting or stopping the domain would fight
// the revert).
import type { VirtualMachine, VirtualMachineRestore } from '../../api/generated/types.js';
import type { ControllerContext } from '../context.js';

/** Whether the VirtualMachine controller must leave `vm` alone: a restore of it is running. */
export function restoreInProgress(vm: VirtualMachine, ctx: ControllerContext): boolean {
  // This process's own restores first: the cache shows InProgress only once our own status
  // write comes back through the watch.
  if (ctx.host.restores.has(String(vm.metadata.uid))) return true;
  return ctx
    .list<VirtualMachineRestore>('VirtualMachineRestore')
    .some(
      (r) =>
        r.metadata.namespace === vm.metadata.namespace &&
        r.spec.vmName === vm.metadata.name &&
        r.status?.phase === 'InProgress',
    );
}
