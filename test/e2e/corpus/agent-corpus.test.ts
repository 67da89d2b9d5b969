// The bad-input corpus (test/fixtures/bad-manifests) through a running agent on a real libvirtd.
// Every case goes through the real API server: rejected ones must be refused there and leave no
// trace; accepted ones reach the agent, which must refuse each `host.refuses: true` case with a
// False condition and a Warning Event, and carry each `host.refuses: false` case out with the
// user's strings arriving as data (cloud-init files byte-identical, the kernel command line
// reading back as text). Across the whole corpus: the agent process never dies or restarts, no
// file outside the pool directories and the agent's own cloud-init/console files is created or
// changed, and no libvirt object appears other than the objects the manifests declare.
//
// The daemon is a private libvirtd (its own /etc/libvirt and /var/lib/libvirt): the corpus has
// fixed UUIDs and a pool on an existing system file, and "every other libvirt object unchanged"
// is only checkable on a daemon nobody else uses. QEMU, bridges and files are still the host's.
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  writeFile,
} from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import { Connect } from '../../../src/libvirt/index.js';
import { loadCorpus, type BadManifestCase } from '../../fixtures/bad-manifests/corpus.js';
import { useControlPlane } from '../../harness/control-plane.js';
import { ensureNode, getJSON } from '../../harness/agent.js';
import { ROOT, spawnAgent, waitForLine } from '../../harness/processes.js';

const exec = promisify(execFile);

const RUN = randomBytes(3).toString('hex');
const NS = `corpus-${RUN}`;
const NODE = `corpus-${RUN}`;
const OTHER_NODE = `corpus-${RUN}-other`;
/** Cluster-scoped objects become libvirt networks and pools: every name gets this prefix. */
const PREFIX = `c${RUN}-`;
const SETTLE_MS = 90_000;
/** Between looks at the objects while waiting for them (a look is two kubectl gets). */
const POLL_MS = 200;

type Doc = Record<string, unknown> & {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
};
interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface KubeEvent {
  type: string;
  reason: string;
  note: string;
  reportingInstance: string;
  regarding: { kind: string; name: string };
}
interface Obj {
  kind: string;
  metadata: { name: string; uid: string; namespace?: string };
  spec: Record<string, unknown>;
  status?: {
    conditions?: Condition[];
    nodes?: Array<{ nodeName: string; conditions?: Condition[] }>;
    path?: string;
  };
}

// LVO_CORPUS_CASES=<regex> narrows the run to matching case ids (for debugging one case).
const only = process.env.LVO_CORPUS_CASES ? new RegExp(process.env.LVO_CORPUS_CASES) : undefined;
const corpus = loadCorpus().filter((c) => !only || only.test(c.id));
const rejected = corpus.filter((c) => c.verdict === 'rejected');
const accepted = corpus.filter((c) => c.verdict === 'accepted');
const clusterScoped = (kind: string) => kind === 'StoragePool' || kind === 'VirtualNetwork';

/**
 * A case's documents as this run applies them. The only changes: node-1/node-2 become this
 * run's node and a node no agent serves, cluster-scoped names (and references to them) get the
 * run's prefix, namespaced objects go to the run's namespace, the default pool directory
 * /var/lib/libvirt-operator/ moves into the sandbox, and a VirtualMachine that does not choose
 * a runStrategy is Halted (the cases are about definitions; those about starting say Always)
 * and one without a grace period gets 0, and one without a domainType runs under QEMU's
 * software emulation (a host without usable KVM, like some CI machines, refuses type kvm at
 * define: the cases are not about the accelerator).
 * Hostile values (paths, names, strings) are left exactly as they are.
 */
function localise(doc: Record<string, unknown>, sandbox: string): Doc {
  const d = structuredClone(doc) as Doc;
  d.metadata ??= { name: '' };
  const spec = (d.spec ?? {}) as Record<string, unknown>;
  const node = (v: unknown) => (v === 'node-1' ? NODE : v === 'node-2' ? OTHER_NODE : v);
  if (clusterScoped(d.kind)) d.metadata.name = PREFIX + d.metadata.name;
  else d.metadata.namespace = NS;
  if ('nodeName' in spec) spec.nodeName = node(spec.nodeName);
  const selector = spec.nodeSelector as
    | { matchLabels?: Record<string, string>; matchExpressions?: Array<{ values?: string[] }> }
    | undefined;
  for (const [k, v] of Object.entries(selector?.matchLabels ?? {})) {
    selector!.matchLabels![k] = node(v) as string;
  }
  for (const e of selector?.matchExpressions ?? []) e.values = e.values?.map((v) => `${node(v)}`);
  if (d.kind === 'Volume' && typeof spec.pool === 'string') spec.pool = PREFIX + spec.pool;
  if (d.kind === 'VirtualMachine') {
    for (const nic of (spec.interfaces ?? []) as Array<{ network?: unknown }>) {
      if (typeof nic.network === 'string') nic.network = PREFIX + nic.network;
    }
    spec.runStrategy ??= 'Halted';
    spec.domainType ??= 'qemu';
    // Deleting must not wait a minute for guests that never boot to answer ACPI.
    spec.terminationGracePeriodSeconds ??= 0;
  }
  if (d.kind === 'StoragePool' && typeof spec.path === 'string') {
    spec.path = spec.path.replace(/^\/var\/lib\/libvirt-operator\//, `${sandbox}/default-state/`);
  }
  return d;
}

// ---- the host, as files -------------------------------------------------------------------

interface FileFacts {
  type: 'file' | 'dir' | 'link' | 'other';
  mode: number;
  uid: number;
  gid: number;
  ino: number;
  size?: number;
  mtimeMs?: number;
  sha256?: string;
  target?: string;
}
type Snapshot = Map<string, FileFacts | 'absent'>;
const HASH_LIMIT = 4 * 1024 * 1024;

/** Every path under `root` (or root itself), with what would show any write to it. */
async function snapshot(
  root: string,
  into: Snapshot,
  opts: { skip?: (path: string) => boolean; depth?: number } = {},
): Promise<void> {
  const walk = async (path: string, depth: number): Promise<void> => {
    if (opts.skip?.(path)) return;
    let st;
    try {
      st = await lstat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        into.set(path, 'absent');
        return;
      }
      throw err;
    }
    const base = { mode: st.mode, uid: st.uid, gid: st.gid, ino: st.ino };
    if (st.isSymbolicLink()) {
      into.set(path, { type: 'link', ...base, target: await readlink(path) });
    } else if (st.isFile()) {
      const facts: FileFacts = { type: 'file', ...base, size: st.size, mtimeMs: st.mtimeMs };
      if (st.size <= HASH_LIMIT) {
        facts.sha256 = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
      }
      into.set(path, facts);
    } else if (st.isDirectory()) {
      // A directory's mtime moves with every entry; the entries themselves are compared.
      into.set(path, { type: 'dir', ...base });
      if (opts.depth !== undefined && depth >= opts.depth) return;
      for (const name of (await readdir(path)).sort()) await walk(join(path, name), depth + 1);
    } else {
      into.set(path, { type: 'other', ...base });
    }
  };
  await walk(root, 0);
}

function differences(before: Snapshot, after: Snapshot, allowed: (p: string) => boolean) {
  const found: string[] = [];
  for (const path of new Set([...before.keys(), ...after.keys()])) {
    if (allowed(path)) continue;
    const a = JSON.stringify(before.get(path) ?? 'absent');
    const b = JSON.stringify(after.get(path) ?? 'absent');
    if (a !== b) found.push(`${path}: ${a} -> ${b}`);
  }
  return found;
}

// ---- the host, as libvirt objects -----------------------------------------------------------

interface LibvirtObjects {
  domains: string[];
  networks: string[];
  pools: string[];
  /** pool/volume */
  volumes: string[];
}

async function libvirtObjects(conn: Connect): Promise<LibvirtObjects> {
  const pools = await conn.listAllStoragePools();
  const volumes: string[] = [];
  for (const p of pools) {
    for (const v of await p.listAllVolumes().catch(() => [])) {
      volumes.push(`${p.getName()}/${v.getName()}`);
    }
  }
  return {
    domains: (await conn.listAllDomains()).map((d) => d.getName()).sort(),
    networks: (await conn.listAllNetworks()).map((n) => n.getName()).sort(),
    pools: pools.map((p) => p.getName()).sort(),
    volumes: volumes.sort(),
  };
}

const xml = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  trimValues: false,
  processEntities: true,
  htmlEntities: false,
});

/**
 * A /24 in 192.168.100-199 that no host interface uses (other tests take 200-254, and 122 is
 * libvirt's default network, which may start at any time).
 */
async function freeSubnet(): Promise<number> {
  const { stdout } = await exec('ip', ['-4', 'addr']);
  const free: number[] = [];
  for (let n = 100; n <= 199; n++) {
    if (n !== 122 && !stdout.includes(`192.168.${n}.`)) free.push(n);
  }
  if (free.length === 0) throw new Error('no free 192.168.1xx.0/24 subnet on this host');
  return free[Math.floor(Math.random() * free.length)]!;
}

// ---- the test -------------------------------------------------------------------------------

describe('the bad-input corpus through the API server and a running agent on a real libvirtd', () => {
  const cp = useControlPlane();
  let daemon: LibvirtDaemon | undefined;
  let conn: Connect | undefined;
  let sandbox = '';
  let poolDir = '';
  let stateDir = '';
  let agent: ChildProcess | undefined;
  let agentOutput = '';
  /** Every start line and every error, fatal or crash line the agent printed, kept whole. */
  const startLines: string[] = [];
  const errorLines: string[] = [];
  let healthUrl = '';
  const canaries = new Map<string, Buffer>();
  const filesBefore: Snapshot = new Map();
  let objectsBefore: LibvirtObjects;
  /** Objects this run declared and the API server kept: what may exist on the host. */
  const declared: Doc[] = [];

  const kubectl = async (args: string[], input?: string) => cp().kubectl(args, { input });
  const list = (docs: Doc[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs });

  /** The trees a hostile input could reach, recorded before anything is applied. */
  async function hostFiles(): Promise<Snapshot> {
    const snap: Snapshot = new Map();
    // /etc/libvirt's object directories belong to the system libvirtd, which other tests use,
    // and qemu.conf to the harness's host preparation, which a concurrent test may repeat;
    // our daemon keeps its own /etc/libvirt (a private mount), so nothing of this run lands there.
    const systemLibvirt = ['qemu', 'storage', 'secrets', 'nwfilter', 'qemu.conf'].map(
      (d) => `/etc/libvirt/${d}`,
    );
    await snapshot('/etc', snap, { skip: (p) => systemLibvirt.includes(p) });
    await snapshot('/boot', snap);
    await snapshot('/srv', snap);
    await snapshot('/root', snap, {
      depth: 1,
      skip: (p) => /^\/root\/\.(cache|npm|config)$/.test(p),
    });
    await snapshot('/root/.ssh', snap);
    for (const single of [
      '/var/lib/dpkg/status',
      '/var/lib/libvirt/images',
      '/var/lib/libvirt-operator',
      '/images',
      join(ROOT, 'images'),
      '/tmp/x',
      '/var/tmp/x',
    ]) {
      await snapshot(single, snap);
    }
    await snapshot(sandbox, snap);
    return snap;
  }

  /**
   * Paths the agent may create or change: pool directories, and its files for our machines
   * and pools (the record of the directories a pool's build made).
   */
  function mayChange(path: string, uids: Set<string>): boolean {
    const inside = (dir: string) => path === dir || path.startsWith(dir + sep);
    if (inside(poolDir) || inside(join(sandbox, 'default-state'))) return true;
    for (const sub of ['cloud-init', 'console', 'imports', 'pools']) {
      const dir = join(stateDir, sub);
      if (path === dir) return true;
      if (!path.startsWith(dir + sep)) continue;
      const file = relative(dir, path);
      return [...uids].some(
        (uid) =>
          file.startsWith(`${uid}-`) ||
          file === `${uid}.log` ||
          file === `${uid}.img` ||
          file === `${uid}.json`,
      );
    }
    return false;
  }

  async function startAgent(): Promise<void> {
    agent = spawnAgent({
      nodeName: NODE,
      libvirtUri: daemon!.uri,
      kubeconfigPath: cp().kubeconfigPath,
      stateDir,
      healthAddr: '127.0.0.1:0',
    });
    // The agent logs JSON lines with pino's level labels ("level":"error"); lines are sorted
    // as they arrive, so an early error is not lost to the tail kept for messages.
    const keep = () => {
      let partial = '';
      return (c: Buffer | string) => {
        agentOutput = (agentOutput + String(c)).slice(-200_000);
        const lines = (partial + String(c)).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) {
          if (/agent started/.test(l)) startLines.push(l);
          else if (/"level":"(error|fatal)"|unhandled|uncaught/i.test(l)) errorLines.push(l);
        }
      };
    };
    agent.stdout?.on('data', keep());
    agent.stderr?.on('data', keep());
    const line = await waitForLine(agent, /agent started/, 60_000);
    healthUrl = /"health":"([^"]+)"/.exec(line.input ?? '')?.[1] ?? '';
    if (!healthUrl) throw new Error(`the agent printed no health URL: ${line.input}`);
  }

  beforeAll(async () => {
    daemon = await startPrivateLibvirtd();
    conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
    sandbox = await mkdtemp('/tmp/lvo-corpus-');
    poolDir = join(sandbox, 'pools', 'images');
    stateDir = join(sandbox, 'state');
    // Canaries where traversal out of the pool or state directory would land.
    for (const rel of [
      'etc/passwd',
      'etc/shadow',
      'boot/vmlinuz',
      'pools/canary',
      'state/canary',
    ]) {
      const path = join(sandbox, rel);
      const content = randomBytes(64);
      await mkdir(join(path, '..'), { recursive: true });
      await writeFile(path, content);
      canaries.set(path, content);
    }
    for (const [k, v] of await hostFiles()) filesBefore.set(k, v);
    objectsBefore = await libvirtObjects(conn);

    await ensureNode(cp(), NODE);
    const ns = await kubectl(['create', 'namespace', NS]);
    if (ns.code !== 0) throw new Error(`creating namespace ${NS}: ${ns.stderr}`);
    await startAgent();
    // What the corpus refers to and expects to exist: the pool `images`, the network `lab` and
    // the kernel Volume `vmlinuz` (a blank raw file is enough for a machine that is only defined).
    const base: Doc[] = [
      {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'VirtualNetwork',
        metadata: { name: `${PREFIX}lab` },
        spec: { mode: 'isolated', ipv4: { cidr: `192.168.${await freeSubnet()}.1/24` } },
      },
      {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: `${PREFIX}images` },
        spec: { type: 'dir', path: poolDir },
      },
      {
        apiVersion: 'virt.dev/v1alpha1',
        kind: 'Volume',
        metadata: { name: 'vmlinuz', namespace: NS },
        spec: { nodeName: NODE, pool: `${PREFIX}images`, capacity: '1Mi', format: 'raw' },
      },
    ];
    const res = await kubectl(['apply', '--server-side', '-f', '-'], list(base));
    if (res.code !== 0) throw new Error(`applying the base objects: ${res.stderr}`);
    declared.push(...base);
    await settle(base, (_d, c) => c.status === 'True');
  });

  afterAll(async () => {
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGKILL');
      await exited;
    }
    // stop() takes down the daemon's guests, networks and pools, which outlive it.
    await conn?.close().catch(() => undefined);
    await daemon?.stop();
    if (sandbox) await rm(sandbox, { recursive: true, force: true });
  });

  /** Objects as the API server has them, by kind/name. */
  async function current(): Promise<Map<string, Obj>> {
    const found = new Map<string, Obj>();
    const [namespaced, cluster] = await Promise.all([
      getJSON<{ items: Obj[] }>(cp(), ['vm,vol', '-n', NS]),
      getJSON<{ items: Obj[] }>(cp(), ['vnet,pool']),
    ]);
    for (const o of [...namespaced.items, ...cluster.items]) {
      found.set(`${o.kind}/${o.metadata.name}`, o);
    }
    return found;
  }

  function condition(o: Obj | undefined, type = 'Ready'): Condition | undefined {
    if (!o) return undefined;
    const conditions = clusterScoped(o.kind)
      ? o.status?.nodes?.find((n) => n.nodeName === NODE)?.conditions
      : o.status?.conditions;
    return conditions?.find((c) => c.type === type);
  }

  /** Whether this run's agent acts on the object at all. */
  function ours(d: Doc): boolean {
    if (clusterScoped(d.kind)) {
      const sel = d.spec?.nodeSelector as { matchLabels?: object } | undefined;
      return !sel || Object.keys(sel.matchLabels ?? {}).length === 0;
    }
    return d.spec?.nodeName === NODE;
  }

  /** Waits until every object of ours among `docs` reports a condition that `done` accepts. */
  async function settle(docs: Doc[], done: (d: Doc, c: Condition) => boolean): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    let waiting: string[] = [];
    while (Date.now() < deadline) {
      const objs = await current();
      waiting = docs
        .filter(ours)
        .filter((d) => {
          const c = condition(objs.get(`${d.kind}/${d.metadata.name}`));
          return !c || !done(d, c);
        })
        .map((d) => `${d.kind}/${d.metadata.name}`);
      if (waiting.length === 0) return;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    throw new Error(`not settled within ${SETTLE_MS} ms: ${waiting.join(', ')}`);
  }

  it(`refuses each of the ${rejected.length} rejected cases at the API server, naming the field`, async () => {
    const problems: string[] = [];
    const one = async (c: BadManifestCase) => {
      const docs = c.documents.map((d) => localise(d, sandbox));
      if (c.operation === 'update') {
        const created = await kubectl(['create', '-f', '-'], list([docs[0]!]));
        if (created.code !== 0)
          return problems.push(`${c.id}: original refused: ${created.stderr}`);
        declared.push(docs[0]!);
      }
      const verb = c.operation === 'update' ? 'replace' : 'create';
      let res = await kubectl([verb, '-f', '-'], list([docs.at(-1)!]));
      // The agent adds its finalizer meanwhile; a replace that lost that race says nothing.
      for (let i = 0; i < 5 && /\(Conflict\)/.test(res.stderr); i++) {
        res = await kubectl([verb, '-f', '-'], list([docs.at(-1)!]));
      }
      if (res.code === 0) {
        declared.push(docs.at(-1)!);
        return problems.push(`${c.id}: the API server accepted it`);
      }
      // The server names the path (spec.disks[0].volume: Invalid value); kubectl's own schema
      // check, which runs first for missing and unknown fields, names the field and its parent.
      const leaf = c
        .field!.replace(/\[\d+\]/g, '')
        .split('.')
        .at(-1)!;
      if (!res.stderr.includes(c.field!) && !res.stderr.includes(`field "${leaf}"`)) {
        problems.push(`${c.id}: the refusal does not name ${c.field}: ${res.stderr.trim()}`);
      }
    };
    const queue = [...rejected];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let c = queue.shift(); c; c = queue.shift()) await one(c);
      }),
    );
    expect(problems).toEqual([]);
  });

  it(`the agent refuses or carries out each of the ${accepted.length} accepted cases`, async () => {
    const cases = accepted.map((c) => ({
      c,
      docs: c.documents.map((d) => localise(d, sandbox)),
    }));
    // Whatever a case sets up first is in place (and looked at) before its subject arrives, so
    // "the second claimant is refused" does not depend on the agent's order of work.
    const setup = cases.flatMap(({ docs }) => docs.slice(0, -1));
    if (setup.length > 0) {
      const res = await kubectl(['apply', '--server-side', '-f', '-'], list(setup));
      expect(res.code, res.stderr).toBe(0);
      declared.push(...setup);
      await settle(setup, () => true);
      // Who came first is judged by creationTimestamp, which has whole seconds.
      await new Promise((r) => setTimeout(r, 1_100));
    }
    const subjects = cases.map(({ docs }) => docs.at(-1)!);
    const res = await kubectl(['apply', '--server-side', '-f', '-'], list(subjects));
    expect(res.code, res.stderr).toBe(0);
    declared.push(...subjects);

    const expected = new Map(cases.map(({ c, docs }) => [docs.at(-1)!, c]));
    const fits = (d: Doc, cond: Condition) => {
      const host = expected.get(d)?.host;
      if (!host?.refuses) return cond.status === 'True';
      return cond.status === 'False' && cond.reason === host.reason;
    };
    await settle(subjects, fits).catch(() => undefined);

    const objs = await current();
    const events = await getJSON<{
      items: Array<{
        type: string;
        reason: string;
        involvedObject: { kind: string; name: string };
      }>;
    }>(cp(), ['events', '-A']);
    const problems: string[] = [];
    for (const { c, docs } of cases) {
      const subject = docs.at(-1)!;
      const obj = objs.get(`${subject.kind}/${subject.metadata.name}`);
      const cond = condition(obj, c.host?.condition ?? 'Ready');
      const shown = cond ? `${cond.status}/${cond.reason}: ${cond.message}` : 'no condition';
      if (c.host?.refuses) {
        if (cond?.status !== 'False' || cond.reason !== c.host.reason) {
          problems.push(`${c.id}: expected False/${c.host.reason}, got ${shown}`);
          continue;
        }
        const warned = events.items.some(
          (e) =>
            e.type === 'Warning' &&
            e.involvedObject.kind === subject.kind &&
            e.involvedObject.name === subject.metadata.name,
        );
        if (!warned) problems.push(`${c.id}: no Warning Event for ${subject.metadata.name}`);
        continue;
      }
      if (cond?.status !== 'True') {
        problems.push(`${c.id}: expected it to work, got ${shown}`);
        continue;
      }
      problems.push(...(await carriedOut(c.id, subject, obj!)));
    }
    expect(problems).toEqual([]);
  });

  /** What a harmless case must have produced on the host, exactly. */
  async function carriedOut(id: string, d: Doc, obj: Obj): Promise<string[]> {
    const problems: string[] = [];
    if (d.kind === 'Volume') {
      const file = join(poolDir, `${NS}_${d.metadata.name}`);
      if (obj.status?.path !== file) problems.push(`${id}: status.path ${obj.status?.path}`);
      if (!existsSync(file)) problems.push(`${id}: ${file} missing`);
      return problems;
    }
    if (d.kind !== 'VirtualMachine') return problems;
    const domain = await conn!.lookupDomainByName(`${NS}_${d.metadata.name}`);
    const parsed = xml.parse(await domain.getXMLDesc()) as {
      domain: {
        os: { cmdline?: string };
        devices: { disk?: unknown };
      };
    };
    const disks = [parsed.domain.devices.disk ?? []].flat() as Array<{
      '@device': string;
      source?: { '@file'?: string };
    }>;
    const spec = d.spec as {
      boot?: { cmdline?: string };
      cloudInit?: { userData?: string; metaData?: string; networkData?: string };
    };
    if (spec.boot?.cmdline !== undefined && parsed.domain.os.cmdline !== spec.boot.cmdline) {
      problems.push(`${id}: cmdline read back as ${JSON.stringify(parsed.domain.os.cmdline)}`);
    }
    const wantDisks = spec.cloudInit ? ['cdrom'] : [];
    if (JSON.stringify(disks.map((x) => x['@device'])) !== JSON.stringify(wantDisks)) {
      problems.push(`${id}: domain has disks ${JSON.stringify(disks)}`);
    }
    if (spec.cloudInit) {
      const iso = disks[0]?.source?.['@file'] ?? '';
      if (!iso.startsWith(join(stateDir, 'cloud-init', obj.metadata.uid))) {
        problems.push(`${id}: the CD-ROM is ${iso}`);
        return problems;
      }
      const files: Record<string, string | undefined> = {
        'user-data': spec.cloudInit.userData ?? '',
        'meta-data': spec.cloudInit.metaData,
        'network-config': spec.cloudInit.networkData,
      };
      for (const [name, want] of Object.entries(files)) {
        if (want === undefined) continue;
        const { stdout } = await exec('isoinfo', ['-J', '-i', iso, '-x', `/${name}`], {
          encoding: 'buffer',
          maxBuffer: 1 << 20,
        });
        if (!Buffer.from(want, 'utf8').equals(stdout)) {
          problems.push(`${id}: ${name} on the ISO differs (${stdout.length} bytes)`);
        }
      }
    }
    return problems;
  }

  it('no file outside the pool directories changed, and every canary is intact', async () => {
    const objs = await current();
    const uids = new Set([...objs.values()].map((o) => o.metadata.uid));
    const after = await hostFiles();
    expect(differences(filesBefore, after, (p) => mayChange(p, uids))).toEqual([]);
    for (const [path, content] of canaries) expect(await readFile(path)).toEqual(content);
  });

  it('no libvirt object appeared other than those the manifests declare', async () => {
    const after = await libvirtObjects(conn!);
    const mine = declared.filter(ours);
    const allowed = {
      domains: mine
        .filter((d) => d.kind === 'VirtualMachine')
        .map((d) => `${NS}_${d.metadata.name}`),
      networks: mine.filter((d) => d.kind === 'VirtualNetwork').map((d) => d.metadata.name),
      pools: mine.filter((d) => d.kind === 'StoragePool').map((d) => d.metadata.name),
      volumes: mine
        .filter((d) => d.kind === 'Volume')
        .map((d) => `${d.spec?.pool as string}/${NS}_${d.metadata.name}`),
    };
    for (const key of ['domains', 'networks', 'pools', 'volumes'] as const) {
      const extra = after[key].filter(
        (n) => !objectsBefore[key].includes(n) && !allowed[key].includes(n),
      );
      const gone = objectsBefore[key].filter((n) => !after[key].includes(n));
      expect({ key, extra, gone }).toEqual({ key, extra: [], gone: [] });
    }
    // Every file a domain uses lies in a pool directory or the agent's cloud-init directory.
    for (const d of await conn!.listAllDomains()) {
      const doc = xml.parse(await d.getXMLDesc()) as {
        domain: { os: { kernel?: string; initrd?: string }; devices: { disk?: unknown } };
      };
      const disks = [doc.domain.devices.disk ?? []].flat() as Array<{
        source?: { '@file'?: string };
      }>;
      const files = [
        doc.domain.os.kernel,
        doc.domain.os.initrd,
        ...disks.map((x) => x.source?.['@file']),
      ];
      for (const f of files.filter((x): x is string => typeof x === 'string')) {
        const fine =
          f.startsWith(poolDir + sep) || f.startsWith(join(stateDir, 'cloud-init') + sep);
        expect(fine, `${d.getName()} uses ${f}`).toBe(true);
      }
    }
  });
  it('deleting everything through the API server leaves the host as it was', async () => {
    const namespaced = await kubectl(['delete', 'vm,vol', '--all', '-n', NS, '--wait=false']);
    expect(namespaced.code, namespaced.stderr).toBe(0);
    const cluster = await kubectl(['delete', 'vnet,pool', '--all', '--wait=false']);
    expect(cluster.code, cluster.stderr).toBe(0);
    const deadline = Date.now() + SETTLE_MS;
    let left: Obj[] = [];
    while (Date.now() < deadline) {
      left = [...(await current()).values()];
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const stuck = left.map((o) => `${o.kind}/${o.metadata.name}: ${JSON.stringify(o.status)}`);
    expect(stuck).toEqual([]);
    // The agent's own files for them are gone too: only its (empty) directories may remain.
    const after = await hostFiles();
    expect(differences(filesBefore, after, (p) => mayChange(p, new Set()))).toEqual([]);
    for (const [path, content] of canaries) expect(await readFile(path)).toEqual(content);
    const objects = await libvirtObjects(conn!);
    expect(objects).toEqual(objectsBefore);
    expect(agent?.exitCode).toBeNull();
  });

  it('through all of it the agent stayed alive, answering /healthz, never restarted, logged no crash', async () => {
    expect(agent?.exitCode, agentOutput.slice(-4000)).toBeNull();
    expect(agent?.signalCode).toBeNull();
    const res = await fetch(`${healthUrl}/healthz`);
    expect(res.status).toBe(200);
    // No Event was lost to the rate limit: every refusal above could be told to its user.
    const metrics = await (await fetch(`${healthUrl}/metrics`)).text();
    const dropped = metrics
      .split('\n')
      .filter((l) => l.startsWith('runtime_events_total{') && l.includes('result="dropped"'));
    expect(metrics).toMatch(/^runtime_events_total\{/m);
    // One Warning per problem, not one per retry: a machine that cannot start (the shared
    // writable volume's second user) fails the same way on every retry, and its repeats join
    // the first Event's series. Before QEMU's timestamps were taken out of the message, each
    // retry was a new Event (17 in 4 s), and under CI's load the object's budget of 25 ran out.
    const events = await getJSON<{ items: KubeEvent[] }>(cp(), ['events.events.k8s.io', '-A']);
    const warnings = new Map<string, string[]>();
    for (const e of events.items) {
      if (e.type !== 'Warning' || e.reportingInstance !== `libvirt-operator-${NODE}`) continue;
      const id = `${e.regarding.kind}/${e.regarding.name} ${e.reason}`;
      warnings.set(id, [...(warnings.get(id) ?? []), e.note]);
    }
    expect(warnings.size).toBeGreaterThan(0);
    // A few are fine (a Volume not ready yet, then in another phase); one per retry is not.
    // A download that fails is retried after 10, 20, 40, 80 s..., and each of those Events
    // says which attempt failed and when the next one is: how many fit depends on how long
    // the run takes, so they count once if their attempts are 1, 2, 3... in order.
    const backedOff = (notes: string[]) =>
      notes
        .map((n) => Number(/; attempt (\d+) failed, next try in/.exec(n)?.[1]))
        .sort((a, b) => a - b)
        .every((attempt, i) => attempt === i + 1);
    expect([...warnings].filter(([, notes]) => notes.length > 3 && !backedOff(notes))).toEqual([]);
    const droppedCount = dropped.map((l) => Number(l.split(' ').at(-1))).reduce((a, b) => a + b, 0);
    expect(
      droppedCount,
      `Warnings per object and reason: ${JSON.stringify([...warnings.keys()])}`,
    ).toBe(0);
    // One start line, no error or fatal line.
    expect(errorLines).toEqual([]);
    expect(startLines).toHaveLength(1);
  });
});
