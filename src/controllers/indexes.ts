// Cache indexes the agent registers and controllers query with ctx.byIndex(kind, name, value).
// Each maps an object to the values it is found under.
import { defaultMacAddress } from '../api/names.js';
import type { KubeObject } from './context.js';

interface VmLike extends KubeObject {
  spec?: {
    uuid?: string;
    disks?: Array<{ volume: string }>;
    boot?: { kernel?: { volume: string }; initrd?: { volume: string } };
    interfaces?: Array<{ name?: string; network: string; macAddress?: string }>;
  };
}
interface VolumeLike extends KubeObject {
  spec?: {
    pool?: string;
    source?: { clone?: { volume: string }; backingVolume?: { volume: string } };
  };
}

export const INDEX_UUID = 'uuid';
export const INDEX_VOLUME = 'volume';
export const INDEX_NETWORK = 'network';
export const INDEX_POOL = 'pool';
export const INDEX_SOURCE_VOLUME = 'sourceVolume';
/** VirtualMachine: the lower-case MAC of each of its spec's interfaces. */
export const INDEX_MAC = 'mac';
/** VirtualNetwork: 'InUse' while a node's entry says its removal waits for running guests. */
export const INDEX_WAITING_FOR_GUESTS = 'waitingForGuests';

/** The libvirt UUID an object's host objects carry: spec.uuid if set, else metadata.uid. */
export function hostUUID(obj: KubeObject & { spec?: { uuid?: string } }): string | undefined {
  return obj.spec?.uuid ?? obj.metadata.uid;
}

/** The names of every Volume a VirtualMachine uses (disks, kernel, initrd), each once. */
export function vmVolumeNames(vm: VmLike): string[] {
  const names = [
    ...(vm.spec?.disks ?? []).map((d) => d.volume),
    vm.spec?.boot?.kernel?.volume,
    vm.spec?.boot?.initrd?.volume,
  ].filter((n): n is string => typeof n === 'string');
  return [...new Set(names)];
}

/** VirtualMachine -> "namespace/volume" of every Volume it uses (disks, kernel, initrd). */
export function vmVolumes(vm: VmLike): string[] {
  const ns = vm.metadata.namespace ?? '';
  return vmVolumeNames(vm).map((n) => `${ns}/${n}`);
}

/** The MACs a machine's interfaces get: spec.macAddress, else the default from uid and name. */
export function vmMacs(vm: VmLike): string[] {
  const uid = String(vm.metadata.uid);
  const macs = (vm.spec?.interfaces ?? []).map((i) =>
    (i.macAddress ?? defaultMacAddress(uid, String(i.name))).toLowerCase(),
  );
  return [...new Set(macs)];
}

export function vmNetworks(vm: VmLike): string[] {
  return [...new Set((vm.spec?.interfaces ?? []).map((i) => i.network))];
}

/** Volume -> "namespace/volume" of the Volume it was cloned from or is backed by. */
export function volumeSources(vol: VolumeLike): string[] {
  const src = vol.spec?.source?.clone?.volume ?? vol.spec?.source?.backingVolume?.volume;
  return src ? [`${vol.metadata.namespace ?? ''}/${src}`] : [];
}

export function volumePool(vol: VolumeLike): string[] {
  return vol.spec?.pool ? [vol.spec.pool] : [];
}

export const vmIndexes = {
  [INDEX_UUID]: (o: KubeObject) => [hostUUID(o as VmLike)].filter((u): u is string => !!u),
  [INDEX_VOLUME]: (o: KubeObject) => vmVolumes(o as VmLike),
  [INDEX_NETWORK]: (o: KubeObject) => vmNetworks(o as VmLike),
  [INDEX_MAC]: (o: KubeObject) => vmMacs(o as VmLike),
};
export const volumeIndexes = {
  [INDEX_UUID]: (o: KubeObject) => [o.metadata.uid].filter((u): u is string => !!u),
  [INDEX_POOL]: (o: KubeObject) => volumePool(o as VolumeLike),
  [INDEX_SOURCE_VOLUME]: (o: KubeObject) => volumeSources(o as VolumeLike),
};
export const clusterIndexes = {
  [INDEX_UUID]: (o: KubeObject) => [o.metadata.uid].filter((u): u is string => !!u),
};

interface NetworkLike extends KubeObject {
  status?: { nodes?: Array<{ conditions?: Array<{ type: string; reason?: string }> }> };
}

/**
 * A network whose removal waits for running guests (Ready reason InUse on some node): a guest
 * it waits for may be one whose machine's spec no longer names it (a NIC switched to another
 * network stays on the old one until the guest restarts), so that machine's stop must wake it.
 */
export function waitingForGuests(vnet: NetworkLike): string[] {
  const waiting = (vnet.status?.nodes ?? []).some((n) =>
    (n.conditions ?? []).some((c) => c.type === 'Ready' && c.reason === 'InUse'),
  );
  return waiting ? ['InUse'] : [];
}

export const networkIndexes = {
  ...clusterIndexes,
  [INDEX_WAITING_FOR_GUESTS]: (o: KubeObject) => waitingForGuests(o as NetworkLike),
};

interface VmPartLike extends KubeObject {
  spec?: { vmName?: string; snapshotName?: string };
  status?: { disks?: Array<{ volume?: string }> };
}

export const INDEX_VM = 'vm';
export const INDEX_SNAPSHOT = 'snapshot';

/** VirtualMachineSnapshot / VirtualMachineRestore -> "namespace/vm" of its machine. */
export function partOfVm(o: VmPartLike): string[] {
  return o.spec?.vmName ? [`${o.metadata.namespace ?? ''}/${o.spec.vmName}`] : [];
}

/** VirtualMachineSnapshot -> "namespace/volume" of every Volume its disks are in. */
export function snapshotVolumes(o: VmPartLike): string[] {
  const ns = o.metadata.namespace ?? '';
  return [
    ...new Set(
      (o.status?.disks ?? [])
        .map((d) => d.volume)
        .filter((v): v is string => typeof v === 'string'),
    ),
  ].map((v) => `${ns}/${v}`);
}

export const snapshotIndexes = {
  [INDEX_VM]: (o: KubeObject) => partOfVm(o as VmPartLike),
  [INDEX_VOLUME]: (o: KubeObject) => snapshotVolumes(o as VmPartLike),
};
export const restoreIndexes = {
  [INDEX_VM]: (o: KubeObject) => partOfVm(o as VmPartLike),
  /** VirtualMachineRestore -> "namespace/snapshot" of the snapshot it restores. */
  [INDEX_SNAPSHOT]: (o: KubeObject) => {
    const r = o as VmPartLike;
    return r.spec?.snapshotName ? [`${r.metadata.namespace ?? ''}/${r.spec.snapshotName}`] : [];
  },
};
