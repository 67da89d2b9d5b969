// The offline demo's objects (up --examples): valid as the API server judges them, wired to
// each other, a real guest's digests rather than placeholders, and a free subnet.
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../../src/api/validate.js';
import type { VirtualMachine } from '../../../src/api/generated/types.js';
import {
  bootedWhen,
  demoBootedAddress,
  demoCidr,
  demoDeletionHold,
  demoHeldByOthers,
  demoManifests,
  demoNames,
  demoToApply,
  demoToReplace,
  holdsDemoVolume,
  notTheDemos,
  type EarlierDemoObject,
} from '../../../src/commands/demo.js';
import { desiredDomain } from '../../../src/controllers/virtual-machine/desired.js';
import { restartPending } from '../../../src/controllers/virtual-machine/plan.js';

const sha = { kernel: 'a'.repeat(64), initrd: 'b'.repeat(64) };
const input = {
  name: 'demo',
  nodeName: 'host-1',
  base: 'http://127.0.0.1:40123',
  sha256: sha,
  cidr: '192.168.150.1/24',
  poolPath: '/var/lib/libvirt-operator/demo-pool',
};

describe('demoManifests', () => {
  const docs = demoManifests(input);

  it('passes validation, every object', () => {
    for (const doc of docs) expect(validateManifest(doc), doc.kind).toEqual([]);
  });

  it('imports the served kernel and initrd with their digests and boots them under QEMU', () => {
    const byKind = (k: string) => docs.filter((d) => d.kind === k);
    const volumes = byKind('Volume') as Array<{
      metadata: { name: string };
      spec: { nodeName: string; pool: string; source?: { http?: { url: string; sha256: string } } };
    }>;
    expect(volumes.map((v) => [v.metadata.name, v.spec.source?.http])).toEqual([
      ['demo-kernel', { url: 'http://127.0.0.1:40123/vmlinuz', sha256: sha.kernel }],
      ['demo-initrd', { url: 'http://127.0.0.1:40123/initrd.img', sha256: sha.initrd }],
    ]);
    expect(volumes.every((v) => v.spec.nodeName === 'host-1' && v.spec.pool === 'demo-pool')).toBe(
      true,
    );
    const [vm] = byKind('VirtualMachine');
    expect(vm!.spec).toMatchObject({
      nodeName: 'host-1',
      domainType: 'qemu',
      boot: { kernel: { volume: 'demo-kernel' }, initrd: { volume: 'demo-initrd' } },
      interfaces: [{ name: 'eth0', network: 'demo-net' }],
    });
    expect(byKind('VirtualNetwork')[0]).toMatchObject({
      metadata: { name: 'demo-net' },
      spec: {
        mode: 'nat',
        ipv4: {
          cidr: '192.168.150.1/24',
          dhcp: { rangeStart: '192.168.150.100', rangeEnd: '192.168.150.199' },
        },
      },
    });
    // Applied in dependency order: network and pool, then the Volumes, then the machine.
    expect(docs.map((d) => d.kind)).toEqual([
      'VirtualNetwork',
      'StoragePool',
      'Volume',
      'Volume',
      'VirtualMachine',
    ]);
  });

  it("takes the README's day-2 patch live: memory 384Mi and 2 vCPUs, no RestartRequired", () => {
    const manifest = docs.find((d) => d.kind === 'VirtualMachine')!;
    const running = {
      ...manifest,
      metadata: { ...manifest.metadata, uid: '0b5c7d3e-1111-4222-8333-944445555666' },
    } as VirtualMachine;
    // kubectl patch vm demo --type=merge -p '{"spec":{"memory":"384Mi","vcpus":2}}'
    const patched = { ...running, spec: { ...running.spec, memory: '384Mi', vcpus: 2 } };
    expect(validateManifest(patched)).toEqual([]);
    const inputs = { volumes: new Map(), cloudInit: undefined, consoleLog: undefined };
    expect(restartPending(desiredDomain(patched, inputs), desiredDomain(running, inputs))).toEqual(
      [],
    );
  });

  it('names everything from one prefix', () => {
    expect(demoNames('x')).toEqual({
      network: 'x-net',
      pool: 'x-pool',
      kernel: 'x-kernel',
      initrd: 'x-initrd',
      vm: 'x',
    });
  });
});

describe('demoCidr', () => {
  it('takes the first 192.168.X.0/24 from 150 that no host interface uses', () => {
    expect(demoCidr(['127.0.0.1', '10.0.0.5'])).toBe('192.168.150.1/24');
    expect(demoCidr(['192.168.150.1', '192.168.151.7'])).toBe('192.168.152.1/24');
  });
  it('keeps the cidr of an earlier run, so re-applying changes nothing', () => {
    expect(demoCidr(['192.168.150.1'], '192.168.150.1/24')).toBe('192.168.150.1/24');
  });
  it('says so when all are used', () => {
    const all = Array.from({ length: 50 }, (_, i) => `192.168.${150 + i}.1`);
    expect(() => demoCidr(all)).toThrow(/no free 192\.168\.150-199/);
  });
});

describe('demoToApply', () => {
  const docs = demoManifests(input);
  const names = (ms: readonly { kind: string; metadata: { name?: string } }[]) =>
    ms.map((m) => `${m.kind}/${m.metadata.name}`);

  it('applies every object on a first run', () => {
    expect(names(demoToApply(docs, new Set()))).toEqual(names(docs));
  });

  it("leaves the objects of an earlier run alone: a restart of up must not undo a user's day-2 patch", () => {
    // Re-applied with up's forced field manager, the machine would take back memory 256Mi and
    // one vCPU: the running guest's balloon shrinks and a vCPU waits for a restart.
    const existing = new Set(names(docs));
    expect(demoToApply(docs, existing)).toEqual([]);
  });

  it('applies only what is missing (a Volume replaced as stale, a machine the user deleted)', () => {
    const existing = new Set([
      'VirtualNetwork/demo-net',
      'StoragePool/demo-pool',
      'Volume/demo-initrd',
    ]);
    expect(names(demoToApply(docs, existing))).toEqual([
      'Volume/demo-kernel',
      'VirtualMachine/demo',
    ]);
  });
});

describe('demoToReplace', () => {
  const docs = demoManifests(input);
  // Everything a first run applied, as a later run finds it: Volumes imported with this build.
  const earlier = (change: Record<string, Partial<EarlierDemoObject>> = {}): EarlierDemoObject[] =>
    docs.map((m) => {
      const name = String(m.metadata.name);
      return {
        kind: m.kind,
        name,
        demo: true,
        deleting: false,
        ...(m.kind === 'Volume' ? { imported: true, sha256: m.spec.source?.http?.sha256 } : {}),
        ...change[`${m.kind}/${name}`],
      };
    });
  const replaced = (found: EarlierDemoObject[]) =>
    demoToReplace(docs, found).map((r) => `${r.kind}/${r.name} (${r.why})`);

  it('replaces nothing of a finished earlier run, nor on a first run', () => {
    expect(replaced(earlier())).toEqual([]);
    expect(replaced([])).toEqual([]);
  });

  it('replaces a Volume being deleted, not keeps it, and the machine whose use holds its delete', () => {
    // `kubectl delete vol demo-kernel` while the demo runs: the delete waits for the machine.
    expect(replaced(earlier({ 'Volume/demo-kernel': { deleting: true } }))).toEqual([
      'VirtualMachine/demo (it uses what is replaced)',
      'Volume/demo-kernel (being deleted)',
    ]);
  });

  it('replaces a network or pool being deleted with what holds its delete, in delete order', () => {
    expect(replaced(earlier({ 'VirtualNetwork/demo-net': { deleting: true } }))).toEqual([
      'VirtualMachine/demo (it uses what is replaced)',
      'VirtualNetwork/demo-net (being deleted)',
    ]);
    expect(replaced(earlier({ 'StoragePool/demo-pool': { deleting: true } }))).toEqual([
      'VirtualMachine/demo (it uses what is replaced)',
      'Volume/demo-initrd (its pool is replaced)',
      'Volume/demo-kernel (its pool is replaced)',
      'StoragePool/demo-pool (being deleted)',
    ]);
  });

  it('replaces only the machine when it alone is being deleted', () => {
    expect(replaced(earlier({ 'VirtualMachine/demo': { deleting: true } }))).toEqual([
      'VirtualMachine/demo (being deleted)',
    ]);
  });

  it('replaces Volumes an earlier run left unimported or imported from another build', () => {
    expect(
      replaced(
        earlier({
          'Volume/demo-kernel': { imported: false },
          'Volume/demo-initrd': { sha256: 'c'.repeat(64) },
        }),
      ),
    ).toEqual([
      'VirtualMachine/demo (it uses what is replaced)',
      'Volume/demo-initrd (another guest build)',
      'Volume/demo-kernel (not imported)',
    ]);
    // No machine (the user deleted it): only the Volume.
    const noVm = earlier({ 'Volume/demo-kernel': { imported: false } }).filter(
      (f) => f.kind !== 'VirtualMachine',
    );
    expect(replaced(noVm)).toEqual(['Volume/demo-kernel (not imported)']);
  });

  it("deletes nothing that is not the demo's, nor the demo's machine for it", () => {
    // `up --kubeconfig` on a user's cluster, --examples-name naming their own objects: their
    // pool being deleted took their imported Volumes and their machine with it.
    const theirs = { demo: false };
    expect(
      replaced(
        earlier({
          'VirtualMachine/demo': theirs,
          'Volume/demo-kernel': theirs,
          'Volume/demo-initrd': { ...theirs, sha256: 'c'.repeat(64) },
          'StoragePool/demo-pool': { ...theirs, deleting: true },
          'VirtualNetwork/demo-net': { ...theirs, deleting: true },
        }),
      ),
    ).toEqual([]);
    // The demo's machine stays when what is replaced is not the demo's.
    expect(
      replaced(earlier({ 'VirtualNetwork/demo-net': { demo: false, deleting: true } })),
    ).toEqual([]);
  });

  it("stops before deleting anything when a user's machine uses a Volume to replace", () => {
    const mine = [{ kind: 'VirtualMachine' as const, name: 'mine' }];
    const found = earlier({ 'Volume/demo-kernel': { imported: false, usedByOthers: mine } });
    expect(demoHeldByOthers(demoToReplace(docs, found), found)).toBe(
      'examples: Volume default/demo-kernel of an earlier run is to be made anew, but ' +
        'VirtualMachine default/mine uses it, which up did not make and does not delete: ' +
        'delete or change that, or choose another --examples-name',
    );
    // A user of a Volume that stays is no reason to stop.
    const kept = earlier({ 'Volume/demo-kernel': { usedByOthers: mine } });
    expect(demoHeldByOthers(demoToReplace(docs, kept), kept)).toBeUndefined();
  });
});

describe('demoDeletionHold', () => {
  const docs = demoManifests(input);
  const blocked = (message: string) => ({
    type: 'DeletionBlocked',
    status: 'True',
    reason: 'InUse',
    message,
  });

  it("names a user's objects using a demo Volume, not the demo's own machine", () => {
    const hold = demoDeletionHold(
      {
        status: {
          conditions: [blocked('deletion waits until no longer used by VirtualMachine mine')],
          usedBy: [
            { kind: 'VirtualMachine', name: 'demo' },
            { kind: 'VirtualMachine', name: 'mine' },
            { kind: 'VirtualMachineSnapshot', name: 'snap' },
          ],
        },
      },
      docs,
    );
    expect(hold).toEqual({
      message: 'deletion waits until no longer used by VirtualMachine mine',
      foreign: [
        { kind: 'VirtualMachine', name: 'mine' },
        { kind: 'VirtualMachineSnapshot', name: 'snap' },
      ],
    });
  });

  it("gives a node entry's DeletionBlocked message (a pool's), and nothing foreign", () => {
    const hold = demoDeletionHold(
      {
        status: {
          conditions: [{ type: 'Ready', status: 'True', reason: 'Ready', message: '' }],
          nodes: [{ nodeName: 'host-1', conditions: [blocked('waits for its Volumes')] }],
        },
      },
      docs,
    );
    expect(hold).toEqual({ message: 'waits for its Volumes', foreign: [] });
  });

  it("gives a network's wait for running guests (its node entry's Ready=False, InUse)", () => {
    // A VirtualNetwork has no DeletionBlocked: its removal from a node waits for the guests
    // still running on it, which its node entry says as Ready=False, reason InUse.
    const waits =
      'not removed from node host-1: running guests still use it (default_mine); ' +
      'it is removed once they are stopped or deleted';
    const hold = demoDeletionHold(
      {
        status: {
          conditions: [{ type: 'Ready', status: 'False', reason: 'NodesNotReady', message: 'x' }],
          nodes: [
            {
              nodeName: 'host-1',
              active: true,
              conditions: [{ type: 'Ready', status: 'False', reason: 'InUse', message: waits }],
            },
          ],
        },
      },
      docs,
    );
    expect(hold).toEqual({ message: waits, foreign: [] });
  });

  it('says nothing of an object whose deletion nothing holds', () => {
    expect(demoDeletionHold({}, docs)).toEqual({ foreign: [] });
    expect(
      demoDeletionHold(
        { status: { conditions: [{ ...blocked('old'), status: 'False' }], usedBy: [] } },
        docs,
      ),
    ).toEqual({ foreign: [] });
  });
});

describe('holdsDemoVolume', () => {
  const meta = { name: 'mine', namespace: 'default' };

  it('takes a user listed in the status at its word only while it still names the Volume', () => {
    const vm = (disks: string[], boot?: { kernel: { volume: string } }) => ({
      metadata: meta,
      spec: { disks: disks.map((volume) => ({ volume })), ...(boot ? { boot } : {}) },
    });
    expect(holdsDemoVolume('VirtualMachine', vm(['demo-kernel']), 'demo-kernel')).toBe(true);
    const kernel = { kernel: { volume: 'demo-kernel' } };
    expect(holdsDemoVolume('VirtualMachine', vm([], kernel), 'demo-kernel')).toBe(true);
    // Changed while no agent ran: the Volume's status still lists it.
    expect(holdsDemoVolume('VirtualMachine', vm(['own-disk']), 'demo-kernel')).toBe(false);
    const deleting = { ...meta, deletionTimestamp: '2026-12-08T00:00:00Z' };
    const going = { ...vm(['demo-kernel']), metadata: deleting };
    expect(holdsDemoVolume('VirtualMachine', going, 'demo-kernel')).toBe(false);
    expect(holdsDemoVolume('VirtualMachine', undefined, 'demo-kernel')).toBe(false);
  });

  it('counts a Volume layered on it, a copy not yet made, and a snapshot of its disk', () => {
    const layered = {
      metadata: meta,
      spec: { source: { backingVolume: { volume: 'demo-kernel' } } },
    };
    expect(holdsDemoVolume('Volume', layered, 'demo-kernel')).toBe(true);
    const copy = { metadata: meta, spec: { source: { clone: { volume: 'demo-kernel' } } } };
    expect(holdsDemoVolume('Volume', copy, 'demo-kernel')).toBe(true);
    const copied = { ...copy, status: { path: '/var/lib/pool/mine' } };
    expect(holdsDemoVolume('Volume', copied, 'demo-kernel')).toBe(false);
    const snap = (volume: string) => ({ metadata: meta, status: { disks: [{ volume }] } });
    expect(holdsDemoVolume('VirtualMachineSnapshot', snap('demo-kernel'), 'demo-kernel')).toBe(
      true,
    );
    expect(holdsDemoVolume('VirtualMachineSnapshot', snap('other'), 'demo-kernel')).toBe(false);
  });
});

describe('notTheDemos', () => {
  it('names every object under a demo name that lacks the demo label, and says what to do', () => {
    const found: EarlierDemoObject[] = [
      { kind: 'VirtualMachine', name: 'web', demo: false, deleting: false },
      { kind: 'VirtualNetwork', name: 'web-net', demo: false, deleting: true },
      { kind: 'StoragePool', name: 'web-pool', demo: true, deleting: false },
    ];
    expect(notTheDemos(found)).toBe(
      "examples: VirtualMachine default/web, VirtualNetwork web-net are not the demo's " +
        '(no label app.kubernetes.io/part-of=libvirt-operator-demo): up neither uses nor ' +
        'replaces objects it did not make; choose another --examples-name',
    );
    expect(notTheDemos(found.slice(2))).toBeUndefined();
    expect(notTheDemos([])).toBeUndefined();
  });
});

describe('demoBootedAddress', () => {
  const booted = (change: Partial<VirtualMachine['metadata']> = {}, phase = 'Running') =>
    ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'demo', namespace: 'default', uid: 'new', ...change },
      spec: { nodeName: 'host-1', vcpus: 1, memory: '64Mi' },
      status: {
        phase,
        conditions: [
          { type: 'Ready', status: 'True', reason: 'Running', message: '', lastTransitionTime: '' },
        ],
        interfaces: [{ name: 'net0', ipAddresses: ['192.168.150.10'] }],
      },
    }) as VirtualMachine;

  it("gives the address of the demo's machine once it is Running and Ready", () => {
    expect(demoBootedAddress(booted(), 'demo', new Set())).toBe('192.168.150.10');
    expect(demoBootedAddress(booted({}, 'Starting'), 'demo', new Set())).toBeUndefined();
    expect(demoBootedAddress(booted({ name: 'other' }), 'demo', new Set())).toBeUndefined();
  });

  it('takes no copy of a machine up replaced, nor one being deleted, for the new one', () => {
    expect(demoBootedAddress(booted({ uid: 'old' }), 'demo', new Set(['old']))).toBeUndefined();
    expect(
      demoBootedAddress(booted({ deletionTimestamp: '2026-12-08T00:00:00Z' }), 'demo', new Set()),
    ).toBeUndefined();
  });
});

describe('bootedWhen', () => {
  it('counts from the apply only when this run applied the machine', () => {
    expect(bootedWhen('applied', '14.0')).toBe('14.0 s after apply');
    // Kept from an earlier run, started now (its runStrategy patched): nothing was applied.
    expect(bootedWhen('kept', '16.1')).toBe('16.1 s after this run started');
    expect(bootedWhen('running', '0.2')).toBe('booted by an earlier run');
  });
});
