// Proves the tiny guest fixture against a real libvirtd with QEMU (TCG): it boots from
// volumes in a dir pool, takes a lease from a libvirt network's dnsmasq, lets the balloon
// converge, onlines hot-plugged vCPUs and powers off on the ACPI power button. Everything
// here goes through virsh, so the fixture is proven independently of the operator.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GUEST_MARKER,
  TINY_GUEST_CMDLINE,
  consoleTail,
  ensureTinyGuest,
  installTinyGuestIntoPool,
  matchLine,
  readConsole,
  waitForConsoleLine,
  waitForGuestReady,
  type TinyGuest,
} from '../../../src/commands/local/tiny-guest.js';
import {
  ensureLibvirtd,
  SYSTEM_URI,
  type LibvirtDaemon,
} from '../../../src/commands/local/libvirtd.js';
import { ROOT, run } from '../../harness/processes.js';

const URI = SYSTEM_URI;
const MEMORY_KIB = 262_144;
const BALLOON_TARGET_KIB = 131_072;

async function virsh(args: string[], timeoutMs = 30_000): Promise<string> {
  const r = await run('virsh', ['-q', '-c', URI, ...args], { timeoutMs });
  if (r.code !== 0) {
    throw new Error(
      `virsh ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function poll<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(250);
  }
  const why = last ? `; last error: ${String(last)}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
}

const xml = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  suppressEmptyNode: true,
  format: true,
});

function networkXML(name: string, bridge: string, octet: number): string {
  const net = `192.168.${octet}`;
  return xml.build({
    network: {
      name,
      forward: { '@_mode': 'nat' },
      bridge: { '@_name': bridge, '@_stp': 'off' },
      ip: {
        '@_address': `${net}.1`,
        '@_netmask': '255.255.255.0',
        dhcp: { range: { '@_start': `${net}.10`, '@_end': `${net}.99` } },
      },
    },
  });
}

function domainXML(o: {
  name: string;
  kernel: string;
  initrd: string;
  consolePath: string;
  network: string;
}): string {
  return xml.build({
    domain: {
      '@_type': 'qemu',
      name: o.name,
      memory: { '@_unit': 'KiB', '#text': MEMORY_KIB },
      currentMemory: { '@_unit': 'KiB', '#text': MEMORY_KIB },
      vcpu: { '@_placement': 'static', '@_current': 1, '#text': 2 },
      os: {
        type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' },
        kernel: o.kernel,
        initrd: o.initrd,
        cmdline: TINY_GUEST_CMDLINE,
      },
      // Without <acpi/> libvirt starts QEMU with -no-acpi: no power button, no CPU hotplug.
      features: { acpi: '', apic: '' },
      on_poweroff: 'destroy',
      on_reboot: 'restart',
      on_crash: 'destroy',
      devices: {
        serial: { '@_type': 'file', source: { '@_path': o.consolePath }, target: { '@_port': 0 } },
        interface: {
          '@_type': 'network',
          source: { '@_network': o.network },
          model: { '@_type': 'virtio' },
        },
        controller: { '@_type': 'usb', '@_model': 'none' },
        memballoon: { '@_model': 'virtio', stats: { '@_period': 1 } },
      },
    },
  });
}

/** A 192.168.2xx.0/24 that no host interface uses (libvirt's "default" is 192.168.122.0/24). */
async function freeOctets(): Promise<number[]> {
  const addrs = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
  const used = new Set([...addrs.matchAll(/inet 192\.168\.(\d+)\./g)].map((m) => Number(m[1])));
  const free = [];
  for (let o = 200; o <= 254; o++) if (!used.has(o)) free.push(o);
  return free.sort(() => Math.random() - 0.5);
}

describe('tiny guest under a real libvirtd with QEMU', () => {
  const id = randomBytes(3).toString('hex');
  const names = {
    domain: `lvo-tiny-guest-${id}`,
    network: `lvo-tg-${id}`,
    bridge: `lvotg${id}`,
    pool: `lvo-tg-pool-${id}`,
  };
  let daemon: LibvirtDaemon | undefined;
  let guest: TinyGuest;
  let dir = '';
  let consolePath = '';
  let octet = 0;
  let bootId = '';
  const created = { pool: false, network: false, domain: false };

  beforeAll(async () => {
    guest = await ensureTinyGuest();
    daemon = await ensureLibvirtd();
    dir = await mkdtemp(join(tmpdir(), 'lvo-tiny-guest-'));
    consolePath = join(dir, 'console.log');

    const poolDir = join(dir, 'pool');
    await mkdir(poolDir);
    await virsh(['pool-create-as', names.pool, 'dir', '--target', poolDir]);
    created.pool = true;

    for (const candidate of (await freeOctets()).slice(0, 3)) {
      const file = join(dir, 'network.xml');
      await writeFile(file, networkXML(names.network, names.bridge, candidate));
      try {
        await virsh(['net-create', file]);
      } catch (err) {
        // Another test may have taken this subnet between our look and net-create.
        if (/in use|already/i.test(String(err))) continue;
        throw err;
      }
      octet = candidate;
      created.network = true;
      break;
    }
    if (!created.network) throw new Error('no free 192.168.2xx.0/24 subnet for the test network');
  }, 240_000);

  afterAll(async () => {
    const undo: [boolean, string[]][] = [
      [created.domain, ['destroy', names.domain]],
      [created.domain, ['undefine', names.domain]],
      [created.network, ['net-destroy', names.network]],
      [created.pool, ['pool-destroy', names.pool]],
    ];
    const errors: string[] = [];
    for (const [needed, args] of undo) {
      if (!needed) continue;
      const r = await run('virsh', ['-q', '-c', URI, ...args], { timeoutMs: 30_000 });
      // destroy of a domain that already shut off fails harmlessly.
      if (r.code !== 0 && !/not running/i.test(r.stderr))
        errors.push(`virsh ${args.join(' ')}: ${r.stderr.trim()}`);
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    await daemon?.stop();
    if (errors.length > 0) throw new Error('cleanup failed: ' + errors.join('; '));
  }, 120_000);

  it('is cached after the first build: the script answers with one line, rebuilds nothing', async () => {
    const before = (await stat(guest.initrd)).mtimeMs;
    const r = await run('bash', [join(ROOT, 'scripts', 'build-tiny-guest.sh')], {
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^build-tiny-guest: cached ${guest.version} in `)),
    ]);
    expect((await stat(guest.initrd)).mtimeMs).toBe(before);
  });

  it('exposes kernel and initrd as volumes of a dir pool', async () => {
    const placed = await installTinyGuestIntoPool(join(dir, 'pool'));
    await virsh(['pool-refresh', names.pool]);
    const volumes = await virsh(['vol-list', names.pool]);
    expect(volumes).toMatch(/tiny-guest-vmlinuz/);
    expect(volumes).toMatch(/tiny-guest-initrd\.img/);
    expect((await virsh(['vol-path', '--pool', names.pool, 'tiny-guest-vmlinuz'])).trim()).toBe(
      placed.kernel,
    );
    expect((await virsh(['vol-path', '--pool', names.pool, 'tiny-guest-initrd.img'])).trim()).toBe(
      placed.initrd,
    );
  });

  it('boots from those volumes to the ready marker', async () => {
    const kernel = (await virsh(['vol-path', '--pool', names.pool, 'tiny-guest-vmlinuz'])).trim();
    const initrd = (
      await virsh(['vol-path', '--pool', names.pool, 'tiny-guest-initrd.img'])
    ).trim();
    const file = join(dir, 'domain.xml');
    await writeFile(
      file,
      domainXML({ name: names.domain, kernel, initrd, consolePath, network: names.network }),
    );
    await virsh(['define', file]);
    created.domain = true;
    await virsh(['start', names.domain]);
    bootId = await waitForGuestReady(consolePath, 180_000);
    expect(bootId).toMatch(/^[0-9a-f-]{36}$/);
    // The initial state lines come before the ready line.
    const text = await readConsole(consolePath);
    expect(matchLine(text, GUEST_MARKER.cpus)?.[1]).toBe('1');
    expect(matchLine(text, GUEST_MARKER.disks)?.[1]).toBe('');
    expect(text).not.toMatch(/LVO-GUEST-ERROR/);
  });

  it('takes a DHCP lease from the network that libvirt also reports', async () => {
    const [, ip, iface, mac] = await waitForConsoleLine(consolePath, GUEST_MARKER.ip, 30_000);
    expect(ip).toMatch(new RegExp(`^192\\.168\\.${octet}\\.\\d+$`));
    expect(iface).toBe('eth0');
    expect((await virsh(['domiflist', names.domain])).toLowerCase()).toContain(mac!.toLowerCase());
    // dnsmasq records the lease through libvirt's leaseshelper a moment after the ACK.
    const lease = await poll(`net-dhcp-leases ${names.network} listing ${ip}`, 10_000, async () => {
      const out = await virsh(['net-dhcp-leases', names.network]);
      return out.split('\n').find((l) => l.includes(`${ip}/24`));
    });
    expect(lease.toLowerCase()).toContain(mac!.toLowerCase());
  });

  it('lets the balloon converge after a live memory change, without a restart', async () => {
    const idBefore = (await virsh(['domid', names.domain])).trim();
    await virsh(['setmem', names.domain, String(BALLOON_TARGET_KIB), '--live']);
    const actual = await poll(
      `dommemstat actual reaching ${BALLOON_TARGET_KIB} KiB`,
      15_000,
      async () => {
        const out = await virsh(['dommemstat', names.domain]);
        const v = Number(/^actual (\d+)$/m.exec(out)?.[1]);
        return v === BALLOON_TARGET_KIB ? v : undefined;
      },
    );
    expect(actual).toBe(BALLOON_TARGET_KIB);
    expect((await virsh(['domid', names.domain])).trim()).toBe(idBefore);
  });

  it('brings hot-plugged vCPUs online and reports the count', async () => {
    const after = (await readConsole(consolePath)).length;
    await virsh(['setvcpus', names.domain, '2', '--live']);
    await waitForConsoleLine(consolePath, /^LVO-GUEST-CPUS 2$/, 20_000, { after });
  });

  it('boots again after virsh destroy and start, with a new boot id (the restart path)', async () => {
    await virsh(['destroy', names.domain]);
    await virsh(['start', names.domain]);
    const next = await waitForGuestReady(consolePath, 180_000, { otherThan: bootId });
    expect(next).not.toBe(bootId);
    // QEMU starts the log afresh: exactly one boot in it.
    expect((await readConsole(consolePath)).match(/^LVO-GUEST-READY /gm)).toHaveLength(1);
  });

  it('powers off through ACPI on virsh shutdown', async () => {
    const started = Date.now();
    await virsh(['shutdown', names.domain, '--mode', 'acpi']);
    const state = await poll(`${names.domain} shut off`, 20_000, async () => {
      const s = (await virsh(['domstate', '--reason', names.domain])).trim();
      return s.startsWith('shut off') ? s : undefined;
    });
    // "shutdown" (guest-initiated), not "destroyed": libvirt saw the guest power itself off.
    expect(state).toBe('shut off (shutdown)');
    const text = await readConsole(consolePath);
    expect(matchLine(text, GUEST_MARKER.poweroff), consoleTail(text)).toBeDefined();
    console.log(`tiny guest: ACPI shutdown took ${Date.now() - started} ms`);
  });
});
