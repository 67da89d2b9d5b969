// Which VirtualMachine keys to reconcile when something else changes: a Volume or a
// VirtualNetwork they reference (through the cache indexes of ../indexes.ts), or a libvirt
// domain (its lifecycle event names it by UUID). Only this node's machines are returned.
import { keyOf, type ControllerContext, type KubeObject } from '../context.js';
import { INDEX_NETWORK, INDEX_UUID, INDEX_VOLUME } from '../indexes.js';

const KIND = 'VirtualMachine';

interface Placed extends KubeObject {
  spec?: { nodeName?: string };
}

function onThisNode(ctx: ControllerContext, index: string, value: string): string[] {
  return ctx
    .byIndex<Placed>(KIND, index, value)
    .filter((vm) => vm.spec?.nodeName === ctx.nodeName)
    .map(keyOf)
    .sort();
}

/** Machines whose disks, kernel or initrd are this Volume. */
export function machinesUsingVolume(ctx: ControllerContext, volume: KubeObject): string[] {
  return onThisNode(
    ctx,
    INDEX_VOLUME,
    `${volume.metadata.namespace ?? ''}/${volume.metadata.name}`,
  );
}

/** Machines with an interface on this VirtualNetwork. */
export function machinesOnNetwork(ctx: ControllerContext, network: KubeObject): string[] {
  return onThisNode(ctx, INDEX_NETWORK, String(network.metadata.name));
}

/** The machine whose domain has this UUID (from a libvirt domain event), if any. */
export function machineOfDomain(ctx: ControllerContext, uuid: string): string[] {
  return onThisNode(ctx, INDEX_UUID, uuid.toLowerCase());
}
