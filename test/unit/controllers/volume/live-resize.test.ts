import { describe, expect, it } from 'vitest';
import { applyVolumeSteps } from '../../../../src/controllers/volume/act.js';
import type { ReadyPool } from '../../../../src/controllers/volume/observe.js';
import { DomainBlockResizeFlags } from '../../../../src/libvirt/constants.js';
import type { Domain } from '../../../../src/libvirt/domain.js';
import { LibvirtError } from '../../../../src/libvirt/errors.js';
import type { StorageVol } from '../../../../src/libvirt/storage.js';
import { domainDiskViews } from '../../../../src/libvirt/xml/snapshot.js';

const FILE = '/var/lib/libvirt-operator/pool/apps_data';

// The disk part of a running domain as libvirtd 9.0 shows it (index, backingStore, alias and
// address are libvirt's).
const RUNNING = `<domain type='qemu' id='3'>
  <name>apps_vm</name>
  <uuid>332d4956-9525-4c1a-ba59-d43517ba9f5b</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt-operator/pool/apps_kernel' index='2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${FILE}' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
  </devices>
</domain>`;

// What the storage driver answers for a file QEMU has open.
const locked = new LibvirtError(
  `internal error: Child process (/usr/bin/qemu-img resize ${FILE} 100663296) unexpected exit status 1: qemu-img: Could not open '${FILE}': Failed to get "write" lock`,
  { code: 1, domain: 18, level: 2 },
);

const pool = { name: 'pool', handle: {}, locks: new Map() } as unknown as ReadyPool;
const file = { resize: () => Promise.reject(locked) } as unknown as StorageVol;

describe('growing a Volume that a running guest has open', () => {
  it("finds the guest's device for the file in the running definition", () => {
    const disks = domainDiskViews(RUNNING);
    expect(disks.find((d) => d.source === FILE)?.name).toBe('vda');
    expect(disks.find((d) => d.source === '/var/lib/libvirt-operator/pool/other')).toBeUndefined();
  });

  it('grows it through QEMU (virDomainBlockResize in bytes), not qemu-img', async () => {
    const calls: unknown[][] = [];
    const domain = {
      blockResize: async (...args: unknown[]) => void calls.push(args),
    } as unknown as Domain;
    const live = { domain, target: 'vda', name: 'vm', vm: 'apps/vm', readonly: false };
    const steps = [{ op: 'resize' as const, capacity: 100663296n }];
    const outcome = await applyVolumeSteps(pool, file, undefined, steps, live);
    expect(outcome).toEqual({ done: ['resize'] });
    expect(calls).toEqual([['vda', 100663296n, DomainBlockResizeFlags.BYTES]]);
  });

  it('names the machine and device when QEMU refuses', async () => {
    const domain = { blockResize: () => Promise.reject(locked) } as unknown as Domain;
    const live = { domain, target: 'vda', name: 'vm', vm: 'apps/vm', readonly: false };
    const steps = [{ op: 'resize' as const, capacity: 100663296n }];
    const outcome = await applyVolumeSteps(pool, file, undefined, steps, live);
    expect(outcome.resizeProblem?.message).toMatch(
      /^growing to 100663296 bytes \(disk vda of running VirtualMachine apps\/vm\) failed: /,
    );
  });

  // Measured on libvirt 9.0: a stopped machine's qcow2 Volume with a memory checkpoint in it
  // (~100 MB used, 16 MiB capacity) asked to grow to 24 MiB.
  it('says why libvirt refuses to grow a file that uses more than the new capacity', async () => {
    const refused = new LibvirtError(
      "invalid argument: can't shrink capacity below existing allocation",
      { code: 8, domain: 18, level: 2 },
    );
    const full = { resize: () => Promise.reject(refused) } as unknown as StorageVol;
    const steps = [{ op: 'resize' as const, capacity: 25165824n }];
    const outcome = await applyVolumeSteps(pool, full, undefined, steps);
    expect(outcome.resizeProblem?.reason).toBe('ResizeFailed');
    expect(outcome.resizeProblem?.message).toContain('QEMU grows it while its machine runs');
  });
});
