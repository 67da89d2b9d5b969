// UEFI, secure boot and TPM: the schema's verdict offline, the desired domain, the comparison
// with what libvirt 9.0 reads back (it picks the OVMF build and fills in loader and NVRAM
// template), restart-time changes, and the address wait of dual-stack interfaces.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../../../src/api/validate.js';
import {
  machineInputs,
  missingFirmware,
  nvramFile,
} from '../../../../src/controllers/virtual-machine/desired.js';
import {
  configSteps,
  planMachine,
  isStashOf,
  restartPending,
  stashedStore,
} from '../../../../src/controllers/virtual-machine/plan.js';
import {
  addressesMissing,
  dhcpPools,
  HOST_LACK_MAX_AGE_MS,
  HOST_LACK_RECHECK_MS,
  hostLackRecheckMs,
} from '../../../../src/controllers/virtual-machine/status.js';
import {
  buildDomainXML,
  changedDomainFields,
  parseDomainXML,
  type DomainDocument,
} from '../../../../src/libvirt/xml/domain.js';
import { hostFirmware } from '../../../../src/libvirt/xml/capabilities.js';
import { desired, noInputs, NOW, observed, ours, runningStatus, UID, vm } from './machines.js';

const NVRAM = nvramFile('/var/lib/libvirt-operator', UID);
const withNvram = { ...noInputs, nvram: NVRAM };

/** What libvirt 9.0 adds to a running domain's <os> after choosing the firmware (measured). */
function asLibvirtRunsIt(doc: DomainDocument, code: string, vars: string): DomainDocument {
  const xml = buildDomainXML(doc)
    // The running definition loses firmware='efi' once a loader was chosen.
    .replace(/<os firmware="efi">/, '<os>')
    .replace(
      /<loader secure="yes"\/>|(?=<nvram>)/,
      `<loader readonly='yes'${doc.os.loader?.secure ? " secure='yes'" : ''} type='pflash'>${code}</loader>`,
    )
    .replace(/<nvram>/, `<nvram template='${vars}'>`)
    .replace(
      /<tpm model="tpm-crb">([\s\S]*?)<\/tpm>/,
      `<tpm model='tpm-crb'>$1<alias name='tpm0'/></tpm>`,
    );
  return parseDomainXML(xml);
}

describe('schema: secureBoot and tpm', () => {
  const manifest = (spec: object) => ({
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'web', namespace: 'prod' },
    spec: { nodeName: 'node-a', vcpus: 1, memory: '256Mi', ...spec },
  });
  const fields = (spec: object) => validateManifest(manifest(spec)).map((p) => p.field);

  it('accepts UEFI with secure boot and a TPM 2.0', () => {
    expect(fields({ firmware: 'uefi', secureBoot: true, tpm: { version: '2.0' } })).toEqual([]);
    expect(fields({ tpm: { version: '2.0' } })).toEqual([]);
    expect(fields({ secureBoot: false })).toEqual([]);
  });

  it('refuses secure boot without UEFI, a TPM without or with another version', () => {
    expect(fields({ secureBoot: true })).toEqual(['spec.secureBoot']);
    expect(fields({ firmware: 'bios', secureBoot: true })).toEqual(['spec.secureBoot']);
    expect(fields({ tpm: { version: '1.2' } })).toEqual(['spec.tpm.version']);
    expect(fields({ tpm: {} })).toEqual(['spec.tpm.version']);
  });
});

describe('desired domain', () => {
  it('bios: no loader, NVRAM, SMM or TPM', () => {
    const doc = desired(vm());
    expect(doc.os.firmware).toBeUndefined();
    expect(doc.os.loader).toBeUndefined();
    expect(doc.os.nvram).toBeUndefined();
    expect(doc.features.smm).toBeUndefined();
    expect(doc.devices.tpms).toBeUndefined();
  });

  it('uefi without secure boot names secure-boot off, so libvirt picks the plain OVMF', () => {
    const doc = desired(vm({ firmware: 'uefi' }), withNvram);
    expect(doc.os).toMatchObject({
      firmware: 'efi',
      firmwareFeatures: [{ name: 'secure-boot', enabled: false }],
      nvram: { path: NVRAM },
    });
    expect(doc.os.loader).toBeUndefined();
    expect(doc.features.smm).toBeUndefined();
  });

  it('secure boot: enrolled keys, a secure loader and SMM', () => {
    const doc = desired(vm({ firmware: 'uefi', secureBoot: true }), withNvram);
    const xml = buildDomainXML(doc);
    expect(xml).toContain('<os firmware="efi">');
    expect(xml).toContain('<feature enabled="yes" name="enrolled-keys"/>');
    expect(xml).toContain('<feature enabled="yes" name="secure-boot"/>');
    expect(xml).toContain('<loader secure="yes"/>');
    expect(xml).toContain(`<nvram>${NVRAM}</nvram>`);
    expect(xml).toContain('<smm state="on"/>');
  });

  it('tpm: an emulated TPM 2.0, model tpm-crb', () => {
    const xml = buildDomainXML(desired(vm({ tpm: { version: '2.0' } })));
    expect(xml).toMatch(/<tpm model="tpm-crb">\s*<backend type="emulator" version="2.0"\/>/);
  });

  it('the NVRAM file is per machine in the state dir, only for uefi', () => {
    const refs = { volume: () => undefined, network: () => undefined };
    const inputs = (spec: object) => {
      const r = machineInputs(vm(spec), refs, 'node-a', '/state');
      return 'inputs' in r ? r.inputs.nvram : 'problem';
    };
    expect(inputs({ firmware: 'uefi' })).toBe(`/state/nvram/${UID}_VARS.fd`);
    expect(inputs({ firmware: 'bios' })).toBeUndefined();
  });
});

describe('compared on owned fields only', () => {
  it.each([
    [
      'secure boot + TPM',
      { firmware: 'uefi', secureBoot: true, tpm: { version: '2.0' } },
      '/usr/share/OVMF/OVMF_CODE_4M.ms.fd',
      '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
    ],
    [
      'plain uefi',
      { firmware: 'uefi' },
      '/usr/share/OVMF/OVMF_CODE_4M.fd',
      '/usr/share/OVMF/OVMF_VARS_4M.fd',
    ],
  ] as const)('%s: what libvirt runs is no drift and no pending restart', (_, spec, code, vars) => {
    const want = desired(vm(spec), withNvram);
    const live = asLibvirtRunsIt(want, code, vars);
    expect(live.os.firmware).toBeUndefined();
    expect(live.os.loader?.path).toBe(code);
    expect(live.os.nvram).toEqual({ path: NVRAM, template: vars });
    expect(changedDomainFields(want, live)).toEqual([]);
    expect(restartPending(want, live)).toEqual([]);
  });

  it('the inactive definition reads back equal', () => {
    const want = desired(
      vm({ firmware: 'uefi', secureBoot: true, tpm: { version: '2.0' } }),
      withNvram,
    );
    expect(changedDomainFields(want, parseDomainXML(buildDomainXML(want)))).toEqual([]);
  });

  it('turning secure boot, the TPM or UEFI on or off is a restart-time change', () => {
    const running = desired(vm({ firmware: 'uefi' }), withNvram);
    const live = asLibvirtRunsIt(running, '/usr/share/OVMF/OVMF_CODE_4M.fd', '/v');
    expect(
      restartPending(desired(vm({ firmware: 'uefi', secureBoot: true }), withNvram), live),
    ).toEqual(['spec.secureBoot']);
    expect(
      restartPending(desired(vm({ firmware: 'uefi', tpm: { version: '2.0' } }), withNvram), live),
    ).toEqual(['spec.tpm']);
    // Only the field the user changed is named: the plain build's secure-boot=no is ours.
    expect(restartPending(desired(vm()), live)).toEqual(['spec.firmware']);
    expect(restartPending(running, desired(vm()))).toEqual(['spec.firmware']);
    const secure = desired(vm({ firmware: 'uefi', secureBoot: true }), withNvram);
    expect(restartPending(secure, desired(vm()))).toEqual(['spec.firmware', 'spec.secureBoot']);
    expect(restartPending(desired(vm()), secure)).toEqual(['spec.firmware', 'spec.secureBoot']);
  });

  it('a TPM passed through from the host is not the operator’s and is skipped', () => {
    const xml = buildDomainXML(desired(vm())).replace(
      '</devices>',
      "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm></devices>",
    );
    expect(parseDomainXML(xml).devices.tpms).toBeUndefined();
  });
});

describe('the UEFI variable store follows the firmware build', () => {
  const plain = desired(vm({ firmware: 'uefi' }), withNvram);
  const secure = desired(vm({ firmware: 'uefi', secureBoot: true }), withNvram);
  const bios = desired(vm());
  const remove = { op: 'removeFiles', paths: [NVRAM] };
  const define = (doc: DomainDocument) => ({ op: 'define', doc, created: false });

  // libvirt copies a template into the store only when the file is missing: kept, the plain
  // build's variables (no keys enrolled) would leave Secure Boot off under the secure build
  // (measured on libvirt 9.0 with Debian's OVMF: the guest read SecureBoot 0).
  it.each([
    ['secure boot switched on', plain, secure],
    ['secure boot switched off', secure, plain],
    ['UEFI dropped', plain, bios],
  ])(
    '%s on a shut-off machine: the store is removed before the redefinition',
    (_, before, after) => {
      const restore =
        after === bios ? [] : [{ op: 'moveFile', from: stashedStore(NVRAM, after), to: NVRAM }];
      expect(configSteps(after, ours({ active: false, config: before }))).toEqual([
        remove,
        ...restore,
        define(after),
      ]);
    },
  );

  // A running guest's store is moved aside under its build's name, not removed: a change
  // reverted before the next start then gives the guest its variables back. Before, the
  // store was removed at once, and the revert left the next start with a fresh template
  // (boot entries and enrolled keys lost, though nothing had changed).
  it.each([
    ['secure boot switched on', plain, secure],
    ['secure boot switched off', secure, plain],
    ['UEFI dropped', plain, bios],
  ])(
    '%s on a running machine: the store is moved aside, and back on a revert',
    (_, before, after) => {
      const stash = stashedStore(NVRAM, before);
      expect(configSteps(after, ours({ config: before }))).toEqual([
        { op: 'moveFile', from: NVRAM, to: stash },
        define(after),
      ]);
      // Reverted while the guest still runs the first build.
      expect(configSteps(before, ours({ config: after, live: before }))).toEqual([
        { op: 'moveFile', from: stash, to: NVRAM },
        define(before),
      ]);
    },
  );

  it('a stash is removed when the machine starts with the build it saved', () => {
    const steps = planMachine({
      vm: vm({ firmware: 'uefi', secureBoot: true }),
      desired: secure,
      cloudInit: undefined,
      observed: observed(ours({ active: false, config: secure })),
      now: NOW,
    }).steps;
    expect(steps.map((s) => s.op)).toEqual(['removeStashes', 'start']);
    expect(steps[0]).toEqual({ op: 'removeStashes', path: NVRAM });
  });

  it('only the stashes of this store count as its stashes', () => {
    const name = (path: string) => path.slice(path.lastIndexOf('/') + 1);
    expect(isStashOf(NVRAM, name(stashedStore(NVRAM, plain)))).toBe(true);
    expect(isStashOf(NVRAM, name(NVRAM))).toBe(false);
    expect(isStashOf(NVRAM, `${name(NVRAM)}.bak`)).toBe(false);
    expect(isStashOf(NVRAM, `${name(NVRAM)}.0123456789ab.old`)).toBe(false);
    expect(isStashOf(`${NVRAM}x`, name(stashedStore(NVRAM, plain)))).toBe(false);
  });

  it('kept when the build stays, and nothing to remove when UEFI is new', () => {
    const tpm = desired(vm({ firmware: 'uefi', tpm: { version: '2.0' } }), withNvram);
    expect(configSteps(tpm, ours({ config: plain }))).toEqual([define(tpm)]);
    expect(configSteps(plain, ours({ config: bios }))).toEqual([define(plain)]);
    expect(configSteps(plain, ours({ config: plain }))).toEqual([]);
  });
});

describe('addresses of dual-stack interfaces', () => {
  const machine = vm({ interfaces: [{ name: 'eth0', network: 'dual', model: 'virtio' }] });
  const status = (ips: string[]) =>
    runningStatus({
      interfaces: [{ name: 'eth0', macAddress: '52:54:00:00:00:01', ipAddresses: ips }],
    });
  const network = (v4: object, v6?: object) =>
    ({
      spec: {
        ipv4: { cidr: '192.168.150.1/24', dhcp: v4 },
        ...(v6 ? { ipv6: { cidr: 'fd00:10:1::1/64', dhcp: v6 } } : {}),
      },
    }) as Parameters<typeof dhcpPools>[0];
  const v4Range = { rangeStart: '192.168.150.100', rangeEnd: '192.168.150.199' };
  const v6Range = { rangeStart: 'fd00:10:1::100', rangeEnd: 'fd00:10:1::1ff' };
  const dual = () => dhcpPools(network(v4Range, v6Range));

  it('waits for a lease of every family the network hands out', () => {
    expect(addressesMissing(machine, status([]), dual)).toBe(true);
    expect(addressesMissing(machine, status(['192.168.150.120/24']), dual)).toBe(true);
    expect(
      addressesMissing(machine, status(['192.168.150.120/24', 'fd00:10:1::1a0/64']), dual),
    ).toBe(false);
    const v4Only = () => dhcpPools(network(v4Range));
    expect(addressesMissing(machine, status(['192.168.150.120/24']), v4Only)).toBe(false);
    expect(dhcpPools(undefined)).toEqual([]);
  });

  // A changed range (and the network's restart) leaves the guest's old lease listed until it
  // renews: the new one is still to come.
  it('does not count an old lease outside the network’s range now, but a DHCP host’s address', () => {
    const moved = () =>
      dhcpPools(network({ rangeStart: '192.168.150.150', rangeEnd: '192.168.150.199' }));
    expect(addressesMissing(machine, status(['192.168.150.117/24']), moved)).toBe(true);
    expect(addressesMissing(machine, status(['192.168.150.117', '192.168.150.157']), moved)).toBe(
      false,
    );
    const host = () =>
      dhcpPools(
        network({
          ...v4Range,
          hosts: [{ macAddress: '52:54:00:00:00:01', ipAddress: '192.168.150.10' }],
        }),
      );
    expect(addressesMissing(machine, status(['192.168.150.10/24']), host)).toBe(false);
    expect(addressesMissing(machine, status(['10.0.0.5/24']), host)).toBe(true);
  });

  it('waits for no DHCPv6 lease from a reversed range, which the network refuses', () => {
    const reversed = () =>
      dhcpPools(network(v4Range, { rangeStart: 'fd00:10:1::1ff', rangeEnd: 'fd00:10:1::100' }));
    expect(reversed().map((p) => p.family)).toEqual([4]);
    expect(addressesMissing(machine, status(['192.168.150.120/24']), reversed)).toBe(false);
  });
});

describe('a node without OVMF, its secure-boot build, or swtpm', () => {
  const fixture = (name: string) =>
    readFileSync(join(import.meta.dirname, '../../../fixtures/xml/libvirt', name), 'utf8');
  // `virsh domcapabilities --virttype qemu --machine q35` on this host (ovmf, swtpm installed).
  const q35 = fixture('qemu-domcaps-tcg-q35.xml');
  // The same document as libvirt 9.0 writes it with no firmware descriptor to read (no `efi`,
  // no OVMF loader) and no swtpm (no emulator backend).
  const bare = q35
    .replace(/<enum name='firmware'>[\s\S]*?<\/enum>/, "<enum name='firmware'/>")
    .replace(/<value>\/usr\/share\/OVMF\/[^<]*<\/value>/g, '')
    .replace(/<value>emulator<\/value>/, '');
  const all = hostFirmware(q35);
  const none = hostFirmware(bare);

  it('reads from the q35 domain capabilities what QEMU offers', () => {
    expect(all).toEqual({ efi: true, secureBoot: true, tpmEmulator: true });
    expect(none).toEqual({ efi: false, secureBoot: false, tpmEmulator: false });
    // The default machine (i440fx) has no SMM, so libvirt lists no secure build for it: the
    // agent asks for q35, the machine it defines.
    expect(hostFirmware(fixture('qemu-domcaps-tcg.xml'))).toMatchObject({ secureBoot: false });
    // A document that says nothing of them cannot tell.
    expect(hostFirmware('<domainCapabilities><os/><devices/></domainCapabilities>')).toEqual({});
  });

  it('is Unsupported naming the field and the packages, before libvirt is asked to start', () => {
    const uefi = vm({ firmware: 'uefi' });
    const secure = vm({ firmware: 'uefi', secureBoot: true });
    const tpm = vm({ tpm: { version: '2.0' } });
    expect(missingFirmware(uefi, none, 'node-a')).toEqual({
      reason: 'Unsupported',
      message: expect.stringMatching(
        /^spec\.firmware: QEMU on node node-a finds no UEFI firmware; install Debian's ovmf/,
      ),
    });
    expect(missingFirmware(secure, { ...all, secureBoot: false }, 'node-a')?.message).toMatch(
      /^spec\.secureBoot: .*no secure-boot UEFI build; install Debian's ovmf/,
    );
    expect(missingFirmware(tpm, none, 'node-a')?.message).toMatch(
      /^spec\.tpm: .*no TPM emulator \(swtpm\); install Debian's swtpm and swtpm-tools/,
    );
    for (const machine of [uefi, secure, tpm, vm()]) {
      expect(missingFirmware(machine, all, 'node-a')).toBeUndefined();
      // A driver that cannot tell leaves it to libvirt.
      expect(missingFirmware(machine, undefined, 'node-a')).toBeUndefined();
      expect(missingFirmware(machine, {}, 'node-a')).toBeUndefined();
    }
    expect(missingFirmware(uefi, { ...all, secureBoot: false }, 'node-a')).toBeUndefined();
    // BIOS without a TPM needs neither.
    expect(missingFirmware(vm(), none, 'node-a')).toBeUndefined();
  });
});

describe('the recheck of a machine the node lacks firmware or a CPU model for', () => {
  it('is spread 15 % each way around a minute, so many such machines do not recheck at once', () => {
    expect(hostLackRecheckMs(() => 0)).toBe(51_000);
    expect(hostLackRecheckMs(() => 0.5)).toBe(HOST_LACK_RECHECK_MS);
    expect(hostLackRecheckMs(() => 0.999999)).toBe(69_000);
    const draws = Array.from({ length: 1000 }, () => hostLackRecheckMs());
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(51_000);
    expect(Math.max(...draws)).toBeLessThanOrEqual(69_000);
    expect(new Set(draws.map((ms) => Math.floor(ms / 1000))).size).toBeGreaterThan(10);
  });

  it('finds a fresh capabilities read even when drawn shortest', () => {
    expect(HOST_LACK_MAX_AGE_MS).toBeLessThanOrEqual(hostLackRecheckMs(() => 0));
  });
});
