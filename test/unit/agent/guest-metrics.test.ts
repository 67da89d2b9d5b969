// Guest metrics against a slow libvirtd: libvirt cannot cancel a call, so a bulk stats call
// that outlives its scrape keeps a binding worker busy until libvirtd answers. Scrapes that
// keep coming (every interval, a second Prometheus) must not add one busy worker each: they
// wait for the call in flight. The connection here stands in for the binding's: a call with a
// timeout rejects in time while its worker stays busy, as src/libvirt/README.md describes.
import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerGuestMetrics } from '../../../src/agent/guest-metrics.js';
import type { Connect, DomainStatsRecord } from '../../../src/libvirt/index.js';
import { buildDomainXML } from '../../../src/libvirt/xml/domain.js';

/** A libvirtd that answers only when told to; counts the calls its workers are busy with. */
function slowLibvirt() {
  const answers: Array<(records: DomainStatsRecord[]) => void> = [];
  const state = { calls: 0, busy: 0 };
  const conn = {
    getAllDomainStats(_stats: number, _flags: number, opts?: { timeoutMs?: number }) {
      state.calls++;
      state.busy++;
      const answered = new Promise<DomainStatsRecord[]>((resolve) =>
        answers.push((records) => {
          state.busy--;
          resolve(records);
        }),
      );
      const timeoutMs = opts?.timeoutMs;
      if (!timeoutMs) return answered;
      return Promise.race([
        answered,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('operation timed out')), timeoutMs),
        ),
      ]);
    },
  };
  return {
    conn: conn as unknown as Connect,
    state,
    answerAll: () => answers.splice(0).forEach((answer) => answer([])),
  };
}

describe('guest metrics while libvirtd is slow', () => {
  it('keeps one bulk call in flight however many scrapes come', async () => {
    const libvirt = slowLibvirt();
    const errors: unknown[] = [];
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => libvirt.conn,
      vm: () => undefined,
      timeoutMs: 20,
      onError: (err) => errors.push(err),
    });
    // Four scrapes, each given up on after its timeout; the page is still served, and says
    // in the very scrape that failed that it did (no guest series would read as "no VMs").
    for (let i = 1; i <= 4; i++) {
      const text = await registry.metrics();
      expect(text).toContain('# TYPE virt_vm_vcpus gauge');
      expect(text).not.toMatch(/^virt_vm_/m);
      expect(text).toContain(`virt_agent_guest_stats_failures_total{node="node-1"} ${i}\n`);
    }
    expect(libvirt.state.busy).toBe(1);
    expect(errors).toHaveLength(4);
    expect(String(errors[0])).toMatch(/no answer within 20 ms/);

    // Once libvirtd answers, the next scrape makes a call of its own again.
    libvirt.answerAll();
    await new Promise((resolve) => setTimeout(resolve, 0));
    await registry.metrics();
    expect(libvirt.state.calls).toBe(2);
    libvirt.answerAll();
  });

  it('counts scrapes made without a libvirt connection, from a series present at 0', async () => {
    const libvirt = slowLibvirt();
    let connected = true;
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => (connected ? libvirt.conn : undefined),
      vm: () => undefined,
      timeoutMs: 1_000,
    });
    const page = registry.metrics();
    await new Promise((resolve) => setTimeout(resolve, 0));
    libvirt.answerAll();
    expect(await page).toContain('virt_agent_guest_stats_failures_total{node="node-1"} 0\n');
    connected = false;
    expect(await registry.metrics()).toContain(
      'virt_agent_guest_stats_failures_total{node="node-1"} 1\n',
    );
  });
});

describe('guest metrics, one scrape after another', () => {
  it('makes one bulk call per page, and every family shows that call’s figures', async () => {
    // Every family's collect() asks the shared scrape once (METRIC_COUNT): a count that no
    // longer matches the families would mix two calls' figures in one page, or reuse the
    // previous page's call.
    const libvirt = oneDomain({ disk: 'vda', nic: 'vnet0' });
    let calls = 0;
    const stats = libvirt.conn.getAllDomainStats.bind(libvirt.conn);
    const conn = {
      ...(libvirt.conn as unknown as Record<string, unknown>),
      getAllDomainStats: async (...args: Parameters<typeof stats>) => {
        calls++;
        const [record] = await stats(...args);
        return [
          {
            ...record!,
            cpu: { time: BigInt(calls) * 1_000_000_000n },
            vcpu: { current: calls, maximum: 8 },
            balloon: { current: BigInt(calls), rss: BigInt(calls), available: BigInt(calls) },
            interfaces: [{ name: 'vnet0', rxBytes: BigInt(calls), txBytes: BigInt(calls) }],
            blocks: [{ name: 'vda', rdBytes: BigInt(calls), wrBytes: BigInt(calls) }],
          },
        ];
      },
    } as unknown as Connect;
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => conn,
      vm: () => libvirt.vm,
    });
    for (let page = 1; page <= 3; page++) {
      const { samples } = parseExposition(await registry.metrics());
      expect(calls).toBe(page);
      const guest = samples.filter((s) => s.name.startsWith('virt_vm_'));
      expect(new Set(guest.map((s) => s.name)).size).toBe(9);
      for (const s of guest) {
        const kib = s.name.startsWith('virt_vm_memory_') ? 1024 : 1;
        expect(s.value, s.name).toBe(page * kib);
      }
    }
  });
});

describe('guest metrics when two scrapes overlap', () => {
  it('reads each new domain’s stamp once, at most 8 reads in flight between them', async () => {
    // 20 new domains; the bulk call and each stamp read answer only when told to, so the
    // second scrape (a second Prometheus) comes while the first is still at work.
    const domains = Array.from({ length: 20 }, (_, i) => {
      const uid = `6f1c2a9e-1d2b-4c3d-8e4f-${String(i).padStart(12, '0')}`;
      return { uid, name: `ns_vm${i}` };
    });
    const xmlOf = (d: { uid: string; name: string }) =>
      buildDomainXML({
        type: 'qemu',
        name: d.name,
        uuid: d.uid,
        stamp: { kind: 'VirtualMachine', namespace: 'ns', name: d.name.slice(3), uid: d.uid },
        memoryKiB: 65536,
        vcpu: { current: 1, max: 1 },
        os: { type: 'hvm', arch: 'x86_64' },
        features: { acpi: false, apic: false },
        devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
      });
    const records: DomainStatsRecord[] = domains.map((d) => ({
      name: d.name,
      uuid: d.uid,
      cpu: { time: 1_000_000_000n },
      interfaces: [],
      blocks: [],
      params: {},
    }));
    const reads = { total: 0, inFlight: 0, most: 0 };
    let answerStats: (() => void) | undefined;
    const conn = {
      getAllDomainStats: () =>
        new Promise<DomainStatsRecord[]>((resolve) => {
          answerStats = () => resolve(records);
        }),
      lookupDomainByUUIDString: async (uuid: string) => {
        reads.total++;
        reads.inFlight++;
        reads.most = Math.max(reads.most, reads.inFlight);
        await new Promise((resolve) => setTimeout(resolve, 5));
        reads.inFlight--;
        const d = domains.find((x) => x.uid === uuid)!;
        return { getXMLDesc: () => Promise.resolve(xmlOf(d)), free: () => undefined };
      },
    } as unknown as Connect;
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => conn,
      vm: (ns, name) => {
        const d = domains.find((x) => ns === 'ns' && x.name === `ns_${name}`);
        return d ? { uid: d.uid, uuid: d.uid } : undefined;
      },
    });
    const first = registry.metrics();
    await new Promise((resolve) => setTimeout(resolve, 0));
    const second = registry.metrics();
    await new Promise((resolve) => setTimeout(resolve, 0));
    answerStats!();
    const pages = await Promise.all([first, second]);
    for (const page of pages) {
      expect(page.match(/^virt_vm_cpu_usage_seconds_total\{/gm)).toHaveLength(20);
    }
    // Without sharing the reads, each scrape read every stamp itself, 8 at a time: 40 reads,
    // 16 in flight.
    expect(reads.total).toBe(20);
    expect(reads.most).toBeLessThanOrEqual(8);
  });
});

/** A libvirtd with one running domain of VirtualMachine ns/vm, with the given devices. */
function oneDomain(devices: { disk: string; nic: string }) {
  const uid = '6f1c2a9e-1d2b-4c3d-8e4f-5a6b7c8d9e0f';
  const xml = buildDomainXML({
    type: 'qemu',
    name: 'ns_vm',
    uuid: uid,
    stamp: { kind: 'VirtualMachine', namespace: 'ns', name: 'vm', uid },
    memoryKiB: 65536,
    vcpu: { current: 1, max: 1 },
    os: { type: 'hvm', arch: 'x86_64' },
    features: { acpi: false, apic: false },
    devices: { disks: [], interfaces: [], serials: [], consoles: [], channels: [] },
  });
  const record: DomainStatsRecord = {
    name: 'ns_vm',
    uuid: uid,
    cpu: { time: 2_500_000_000n },
    balloon: { current: 65536n, rss: 1024n, available: 60000n },
    vcpu: { current: 1, maximum: 1 },
    interfaces: [{ name: devices.nic, rxBytes: 10n, txBytes: 20n }],
    blocks: [{ name: devices.disk, rdBytes: 30n, wrBytes: 40n }],
    params: {},
  };
  const conn = {
    getAllDomainStats: () => Promise.resolve([record]),
    lookupDomainByUUIDString: () =>
      Promise.resolve({ getXMLDesc: () => Promise.resolve(xml), free: () => undefined }),
  };
  return { conn: conn as unknown as Connect, vm: { uid, uuid: uid } };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The Prometheus text format (0.0.4), strictly: one HELP and one TYPE per family, before its
 * samples; empty lines ignored; label values quoted with only \\, \" and \n escaped; a sample
 * per line.
 */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const VALUE = '"((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"';
  const label = new RegExp(`^([a-zA-Z_][a-zA-Z0-9_]*)=${VALUE}(,|$)`);
  const help = new Set<string>();
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const lines = text.split('\n');
  expect(lines.pop()).toBe('');
  for (const line of lines) {
    if (line === '') continue; // the format ignores empty lines (prom-client ends families so)
    const comment = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
    if (comment) {
      const [, kind, name, rest] = comment as unknown as [string, string, string, string];
      const seen = kind === 'HELP' ? help : types;
      expect(seen.has(name), `${kind} ${name} twice`).toBe(false);
      if (kind === 'HELP') help.add(name);
      else types.set(name, rest);
      continue;
    }
    const m = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`).exec(line);
    expect(m, `not a sample line: ${JSON.stringify(line)}`).not.toBeNull();
    const [, name, body = '', value] = m as unknown as [string, string, string | undefined, string];
    expect(types.has(name), `sample of ${name} before its TYPE`).toBe(true);
    const labels: Record<string, string> = {};
    let rest = body;
    while (rest) {
      const l = label.exec(rest);
      expect(l, `bad labels in ${JSON.stringify(line)}`).not.toBeNull();
      labels[l![1]!] = l![2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(l![0].length);
    }
    expect(Number.isNaN(Number(value)), `value of ${line}`).toBe(false);
    samples.push({ name, labels, value: Number(value) });
  }
  return { types, samples };
}

describe('guest metrics exposition', () => {
  it('is valid text format, device names with a backslash, quote or newline included', async () => {
    const disk = 'v\\d"a\nb';
    const nic = 'tap"0\\';
    const libvirt = oneDomain({ disk, nic });
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => libvirt.conn,
      vm: (ns, name) => (ns === 'ns' && name === 'vm' ? libvirt.vm : undefined),
    });
    const { types, samples } = parseExposition(await registry.metrics());
    expect(types.get('virt_vm_cpu_usage_seconds_total')).toBe('counter');
    expect(types.get('virt_vm_vcpus')).toBe('gauge');
    const vm = { namespace: 'ns', name: 'vm', node: 'node-1' };
    expect(samples).toContainEqual({
      name: 'virt_vm_storage_read_bytes_total',
      labels: { ...vm, drive: disk },
      value: 30,
    });
    expect(samples).toContainEqual({
      name: 'virt_vm_network_transmit_bytes_total',
      labels: { ...vm, interface: nic },
      value: 20,
    });
    expect(samples).toContainEqual({
      name: 'virt_vm_cpu_usage_seconds_total',
      labels: vm,
      value: 2.5,
    });
  });

  it('has every metric and label the Grafana dashboard queries', async () => {
    const libvirt = oneDomain({ disk: 'vda', nic: 'vnet0' });
    const registry = new Registry();
    registerGuestMetrics({
      registry,
      nodeName: 'node-1',
      connection: () => libvirt.conn,
      vm: () => libvirt.vm,
    });
    const { samples } = parseExposition(await registry.metrics());
    const labelsOf = new Map<string, Set<string>>();
    for (const s of samples) {
      const set = labelsOf.get(s.name) ?? new Set<string>();
      Object.keys(s.labels).forEach((l) => set.add(l));
      labelsOf.set(s.name, set);
    }
    const dashboard = readFileSync('manifests/grafana/guest-metrics.json', 'utf8');
    const queries = [...dashboard.matchAll(/"(?:expr|query)": "((?:[^"\\]|\\.)*)"/g)].map(
      (m) => JSON.parse(`"${m[1]}"`) as string,
    );
    const used = queries.flatMap((q) =>
      [...q.matchAll(/(virt_[a-z_]+)(?:\{([^}]*)\})?/g)].map((m) => ({
        metric: m[1]!,
        labels: [...(m[2] ?? '').matchAll(/([a-z_]+)\s*=~?/g)].map((l) => l[1]!),
      })),
    );
    expect(used.length).toBeGreaterThan(5);
    for (const { metric, labels } of used) {
      expect(labelsOf.has(metric), `${metric} is not exported`).toBe(true);
      for (const l of labels)
        expect(labelsOf.get(metric)!.has(l), `${metric} has no ${l}`).toBe(true);
    }
    // The legends and by() clauses name labels the series have.
    for (const [, l] of dashboard.matchAll(/\{\{(\w+)\}\}/g)) {
      expect(
        [...labelsOf.values()].some((set) => set.has(l!)),
        `legend label ${l}`,
      ).toBe(true);
    }
  });
});
