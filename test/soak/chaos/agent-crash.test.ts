// Crash consistency of the agent: the agent process is SIGKILLed at random moments while
// VirtualMachines and Volumes are created, changed and deleted, then restarted; after every
// round the host must hold exactly the declared objects — no duplicate, orphan or missing
// domain, no leftover or missing volume file, no volume file rewritten. Needs the real libvirtd
// (qemu:///system): the test driver's state would die with the agent process.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/harness/libvirtd.js';
import { Connect } from '../../../src/libvirt/index.js';
import { stampOf } from '../../../src/libvirt/xml/metadata.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode, getJSON, until } from '../../harness/agent.js';
import { spawnCli, waitForLine } from '../../harness/processes.js';

const ROUNDS = Number(process.env.LVO_CHAOS_ROUNDS ?? 10);
const KILLS_PER_ROUND = 2;
const RUN = randomBytes(3).toString('hex');
const NS = `chaos-${RUN}`;
const POOL = `chaos-${RUN}`;
const NODE = `chaos-${RUN}`;
const PATTERN_BYTES = 64 * 1024;
const MAX_ALWAYS = 3;
const CONVERGE_MS = 120_000;

interface Obj {
  metadata: { uid: string; name: string; generation?: number; deletionTimestamp?: string };
  spec: { runStrategy?: string };
  status?: {
    phase?: string;
    path?: string;
    observedGeneration?: number;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
  };
}
interface List {
  items: Obj[];
}

/** Deterministic per-run randomness, so a failing run can be replayed with LVO_CHAOS_SEED. */
const SEED = Number(process.env.LVO_CHAOS_SEED ?? Date.now() % 2 ** 31);
let rngState = SEED || 1;
function rand(): number {
  // xorshift32: good enough to pick delays and victims.
  rngState ^= rngState << 13;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  return (rngState >>> 0) / 2 ** 32;
}
const between = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(xs: T[], n: number): T[] => {
  const copy = [...xs];
  const out: T[] = [];
  while (out.length < n && copy.length) out.push(copy.splice(between(0, copy.length - 1), 1)[0]!);
  return out;
};
/** Volume files are named <namespace>_<name> in their pool. */
const fileOf = (volume: string) => `${NS}_${volume}`;
/** A killed child has a signalCode and no exitCode. */
const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A volume file's first bytes, from a seed: what the test writes and later expects back. */
function pattern(name: string): Buffer {
  const buf = Buffer.alloc(PATTERN_BYTES);
  let x = [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) || 1;
  for (let i = 0; i < buf.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

const volumeManifest = (name: string, format: 'raw' | 'qcow2', capacity: string) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'Volume',
  metadata: { name, namespace: NS },
  spec: { nodeName: NODE, pool: POOL, capacity, format },
});
const vmManifest = (name: string, runStrategy: string, memory: string, vcpus: number) => ({
  apiVersion: 'virt.dev/v1alpha1',
  kind: 'VirtualMachine',
  metadata: { name, namespace: NS },
  spec: {
    nodeName: NODE,
    domainType: 'qemu',
    runStrategy,
    vcpus,
    maxVcpus: 2,
    memory,
    maxMemory: '64Mi',
  },
});

describe('the agent survives kill -9 at random moments without corrupting the host', () => {
  const cp = useControlPlane();
  let daemon: LibvirtDaemon;
  let conn: Connect;
  let dir: string;
  let poolDir: string;
  let agent: ChildProcess | undefined;
  let agentOutput = '';
  const spawned: ChildProcess[] = [];
  let stateDir: string;

  /** The test's model of what should exist. */
  const vms = new Map<string, { runStrategy: string; memory: string; vcpus: number }>();
  const volumes = new Set<string>();
  const deletedVolumes = new Set<string>();
  const patterned = new Map<string, { ino: number }>();
  const timings: string[] = [];
  const slowRounds: string[] = [];
  const figures = { rounds: 0, kills: 0, duplicates: 0, orphans: 0, missing: 0, corrupted: 0 };

  beforeAll(async () => {
    daemon = await ensureLibvirtd();
    conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
    dir = await mkdtemp('/var/tmp/lvo-chaos-');
    poolDir = path.join(dir, 'pool');
    stateDir = path.join(dir, 'state');
    await ensureNode(cp(), NODE);
    const ns = await cp().kubectl(['create', 'namespace', NS]);
    if (ns.code !== 0) throw new Error(`creating namespace ${NS}: ${ns.stderr}`);
  });

  afterAll(async () => {
    // Every agent is stopped before the host is cleaned, or it would recreate what goes.
    await Promise.all(
      spawned.filter(alive).map((c) => new Promise((r) => (c.once('exit', r), c.kill('SIGKILL')))),
    );
    if (conn) {
      for (const d of await conn.listAllDomains().catch(() => [])) {
        if (!d.getName().startsWith(`${NS}_`)) continue;
        await d.destroy().catch(() => undefined);
        await d.undefine().catch(() => undefined);
      }
      const pool = await conn.lookupStoragePoolByName(POOL).catch(() => undefined);
      if (pool) {
        for (const v of await pool.listAllVolumes().catch(() => []))
          await v.delete().catch(() => undefined);
        await pool.destroy().catch(() => undefined);
        await pool.undefine().catch(() => undefined);
      }
      await conn.close();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    await daemon?.stop();
    console.log(
      `agent-crash (seed ${SEED}): ${JSON.stringify(figures)}; start+converge ms: ${timings.join(' ')}`,
    );
  });

  /** Starts the agent as its own process and resolves once it has said it started. */
  async function startAgentProcess(): Promise<ChildProcess> {
    // The killed predecessor's lease would make the successor wait up to 40 s (random
    // identity per process); the predecessor is certainly dead, so its lease can go.
    await cp().kubectl([
      'delete',
      'lease',
      `libvirt-operator-${NODE}`,
      '-n',
      'default',
      '--ignore-not-found',
    ]);
    const child = spawnCli([
      'run',
      '--node-name',
      NODE,
      '--libvirt-uri',
      daemon.uri,
      '--kubeconfig',
      cp().kubeconfigPath,
      '--state-dir',
      stateDir,
      '--lease-namespace',
      'default',
      '--health-addr',
      '0',
    ]);
    agentOutput = '';
    const keep = (c: Buffer | string) => (agentOutput = (agentOutput + String(c)).slice(-8000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    agent = child;
    spawned.push(child);
    await waitForLine(child, /agent started/, 60_000);
    return child;
  }

  async function killAgent(): Promise<void> {
    const child = agent;
    if (!child || !alive(child)) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    figures.kills++;
  }

  async function apply(objects: object[]): Promise<void> {
    if (!objects.length) return;
    const input = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects });
    const res = await cp().kubectl(['apply', '--server-side', '-f', '-'], { input });
    if (res.code !== 0) throw new Error(`kubectl apply: ${res.stderr}`);
  }

  async function remove(kind: string, names: string[]): Promise<void> {
    if (!names.length) return;
    const res = await cp().kubectl(['delete', kind, '-n', NS, '--wait=false', ...names]);
    if (res.code !== 0) throw new Error(`kubectl delete ${kind}: ${res.stderr}`);
  }

  /** One batch of creates, changes and deletes; the model is updated to the declared state. */
  function batch(round: number): Array<() => Promise<void>> {
    if (round === 1) {
      const vols = Array.from({ length: 30 }, (_, i) => {
        const name = `vol-${i}`;
        volumes.add(name);
        return volumeManifest(name, i % 3 === 0 ? 'qcow2' : 'raw', `${1 + (i % 4)}Mi`);
      });
      const machines = Array.from({ length: 40 }, (_, i) => {
        const spec = {
          runStrategy: i < MAX_ALWAYS ? 'Always' : 'Halted',
          memory: `${32 + 16 * (i % 3)}Mi`,
          vcpus: 1,
        };
        vms.set(`vm-${i}`, spec);
        return vmManifest(`vm-${i}`, spec.runStrategy, spec.memory, spec.vcpus);
      });
      return [() => apply(vols), () => apply(machines)];
    }
    const creates: object[] = [];
    for (let i = 0; i < 2; i++) {
      const name = `vol-r${round}-${i}`;
      volumes.add(name);
      creates.push(volumeManifest(name, 'raw', '1Mi'));
    }
    for (let i = 0; i < 3; i++) {
      const name = `vm-r${round}-${i}`;
      const spec = { runStrategy: 'Halted', memory: '32Mi', vcpus: 1 };
      vms.set(name, spec);
      creates.push(vmManifest(name, spec.runStrategy, spec.memory, spec.vcpus));
    }
    const changes: object[] = [];
    for (const name of pick([...vms.keys()], 5)) {
      const spec = vms.get(name)!;
      spec.memory = `${32 + 16 * between(0, 2)}Mi`;
      spec.vcpus = between(1, 2);
      const always = [...vms.values()].filter((s) => s.runStrategy === 'Always').length;
      if (rand() < 0.4) {
        if (spec.runStrategy === 'Always') spec.runStrategy = 'Halted';
        else if (always < MAX_ALWAYS) spec.runStrategy = 'Always';
      }
      changes.push(vmManifest(name, spec.runStrategy, spec.memory, spec.vcpus));
    }
    const goneVms = pick([...vms.keys()], 3);
    for (const n of goneVms) vms.delete(n);
    const candidates = [...volumes].filter((n) => !patterned.has(n));
    const goneVols = pick(candidates, 2);
    for (const n of goneVols) {
      volumes.delete(n);
      deletedVolumes.add(n);
    }
    return [
      () => apply(creates),
      () => apply(changes),
      () => remove('vm', goneVms),
      () => remove('vol', goneVols),
    ];
  }

  function converged(o: Obj, wantPhase: string): boolean {
    const ready = o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    return (
      ready &&
      o.status?.observedGeneration === o.metadata.generation &&
      o.status?.phase === wantPhase
    );
  }

  async function waitConverged(round: number): Promise<void> {
    const started = Date.now();
    let slow = '';
    await until(
      `round ${round}: every object converged`,
      async () => {
        const vmList = await getJSON<List>(cp(), ['vm', '-n', NS]);
        const volList = await getJSON<List>(cp(), ['vol', '-n', NS]);
        const pending: string[] = [];
        const vmNames = new Set(vmList.items.map((o) => o.metadata.name));
        for (const o of vmList.items) {
          const want = vms.get(o.metadata.name);
          const phase = want?.runStrategy === 'Always' ? 'Running' : 'Stopped';
          if (!want || !converged(o, phase)) pending.push(`vm/${o.metadata.name}`);
        }
        for (const n of vms.keys()) if (!vmNames.has(n)) pending.push(`vm/${n} (absent)`);
        const volNames = new Set(volList.items.map((o) => o.metadata.name));
        for (const o of volList.items) {
          if (!volumes.has(o.metadata.name) || o.status?.phase !== 'Available')
            pending.push(`vol/${o.metadata.name}`);
        }
        for (const n of volumes) if (!volNames.has(n)) pending.push(`vol/${n} (absent)`);
        if (pending.length && !slow && Date.now() - started > 10_000) {
          slow = `round ${round} still pending after 10 s: ${pending.join(' ')}`;
          slowRounds.push(slow);
        }
        if (pending.length)
          throw new Error(`${pending.length} pending: ${pending.slice(0, 5).join(', ')}`);
        return true;
      },
      CONVERGE_MS,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nagent output tail:\n${agentOutput.slice(-3000)}`);
    });
  }

  /** Compares the host with the model; returns the problems found (and counts them). */
  async function checkHost(): Promise<string[]> {
    const problems: string[] = [];
    const vmList = await getJSON<List>(cp(), ['vm', '-n', NS]);
    const uidOf = new Map(vmList.items.map((o) => [o.metadata.name, o.metadata.uid]));
    const byName = new Map<string, string[]>();
    for (const d of await conn.listAllDomains()) {
      const name = d.getName();
      const stamp = stampOf(await d.getXMLDesc());
      const ours = name.startsWith(`${NS}_`) || stamp?.namespace === NS;
      if (!ours) continue;
      const vmName = stamp?.name ?? name.slice(NS.length + 1);
      byName.set(vmName, [...(byName.get(vmName) ?? []), d.getUUIDString()]);
      if (!stamp || uidOf.get(vmName) !== stamp.uid || d.getUUIDString() !== stamp.uid) {
        figures.orphans++;
        problems.push(`orphan domain ${name} (${d.getUUIDString()}, stamp ${stamp?.uid})`);
      }
    }
    for (const [vmName, uuids] of byName) {
      if (uuids.length > 1) {
        figures.duplicates++;
        problems.push(`duplicate domains for ${vmName}: ${uuids.join(', ')}`);
      }
    }
    for (const [vmName, uid] of uidOf) {
      const found = await conn.lookupDomainByUUIDString(uid).catch(() => undefined);
      if (!found || found.getName() !== `${NS}_${vmName}`) {
        figures.missing++;
        problems.push(`missing domain for vm/${vmName} (uid ${uid})`);
      }
    }
    const files = new Set(await readdir(poolDir));
    for (const v of volumes) {
      if (!files.has(fileOf(v))) {
        figures.missing++;
        problems.push(`missing volume file ${v}`);
      }
    }
    for (const f of files) {
      const v = f.slice(NS.length + 1);
      if (!f.startsWith(`${NS}_`) || !volumes.has(v)) {
        figures.orphans++;
        problems.push(
          `${deletedVolumes.has(v) ? 'deleted' : 'unknown'} volume file ${f} still in the pool`,
        );
      }
    }
    for (const [name, { ino }] of patterned) {
      const file = path.join(poolDir, fileOf(name));
      const st = await stat(file).catch(() => undefined);
      const head = Buffer.alloc(PATTERN_BYTES);
      const fh = await open(file, 'r').catch(() => undefined);
      if (fh) {
        await fh.read(head, 0, PATTERN_BYTES, 0);
        await fh.close();
      }
      if (!st || st.ino !== ino || !head.equals(pattern(name))) {
        figures.corrupted++;
        problems.push(`volume ${name}: pattern lost (inode ${st?.ino} was ${ino})`);
      }
    }
    return problems;
  }

  async function writePatterns(): Promise<void> {
    const raw = [...volumes].filter((n) => /^vol-\d+$/.test(n) && Number(n.slice(4)) % 3 !== 0);
    raw.length = 5;
    for (const name of raw) {
      const vol = await getJSON<Obj>(cp(), ['vol', name, '-n', NS]);
      const file = vol.status?.path;
      if (file !== path.join(poolDir, fileOf(name))) throw new Error(`vol/${name}: path ${file}`);
      const fh = await open(file, 'r+');
      await fh.write(pattern(name), 0, PATTERN_BYTES, 0);
      await fh.sync();
      await fh.close();
      patterned.set(name, { ino: (await stat(file)).ino });
    }
  }

  it(`${ROUNDS} rounds of kill -9 leave no duplicate, orphan, missing or corrupted object`, async () => {
    await apply([
      {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: POOL },
        spec: { type: 'dir', path: poolDir },
      },
    ]);
    const problems: string[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const steps = batch(round);
      // The batch's steps are spread over the kill cycles, so writes land while the agent is
      // starting, reconciling, and dead.
      for (let k = 0; k < KILLS_PER_ROUND; k++) {
        // The converged agent of the previous round is the first victim of the next one.
        if (!agent || !alive(agent)) await startAgentProcess();
        const share = steps.splice(0, Math.ceil(steps.length / (KILLS_PER_ROUND - k)));
        const writes = Promise.all(share.map((s) => s()));
        await sleep(between(50, 800));
        await killAgent();
        await writes;
      }
      const t0 = Date.now();
      await startAgentProcess();
      const t1 = Date.now();
      await waitConverged(round);
      timings.push(`${t1 - t0}+${Date.now() - t1}`);
      if (round === 1) await writePatterns();
      const found = await checkHost();
      problems.push(...found.map((p) => `round ${round}: ${p}`));
      figures.rounds++;
    }
    await killAgent();
    expect(problems).toEqual([]);
    expect(figures.kills).toBe(ROUNDS * KILLS_PER_ROUND + 1);
  });
});
