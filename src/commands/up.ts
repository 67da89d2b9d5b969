// npm start: everything on this host. A local control plane unless --kubeconfig names a
// cluster (never KUBECONFIG: a shell often has it set, to a real cluster or to the local
// control plane of an earlier run), a Node object for this host (there is no kubelet here),
// the real libvirtd when it can be started (root), else libvirt's in-process test driver, then
// the agent — printing one progress line each time an object's phase or readiness changes.
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { findCondition } from '../api/conditions.js';
import { API_VERSION, customResources, type VirtKind } from '../api/generated/crds.js';
import type {
  VirtManifest,
  VirtualMachine,
  VirtualNetwork,
  Volume,
} from '../api/generated/types.js';
import { agentConfig, ConfigError } from '../agent/config.js';
import { startAgent, type Agent } from '../agent/agent.js';
import type { StateChange } from '../libvirt/reconnecting.js';
import { cacheRoot, startControlPlane, type ControlPlane } from './local/control-plane.js';
import { installFinalizerPolicy } from './local/finalizer-policy.js';
import { ensureTinyGuest, serveTinyGuest } from './local/tiny-guest.js';
import { createKubeClient, isNotFound, KubeApiError, type KubeClient } from '../runtime/index.js';
import { fieldsNotInSchema } from '../runtime/kube-client.js';
import { outdatedCrdMessage } from '../agent/crd-skew.js';
import {
  bootedWhen,
  DEMO_NAMESPACE,
  demoBootedAddress,
  demoCidr,
  demoDeletionHold,
  demoHeldByOthers,
  demoManifests,
  demoNames,
  demoObjectName,
  demoToApply,
  demoToReplace,
  holdsDemoVolume,
  hostIPv4Addresses,
  notTheDemos,
  usedByOthersMessage,
  DEMO_LABEL,
  type DemoObjectRef,
  type DemoVolumeUser,
  type EarlierDemoObject,
  type DemoNames,
} from './demo.js';
import {
  command,
  REQUEST_TIMEOUT_HELP,
  requestTimeoutMs,
  listenForStop,
  notADirectory,
  type Options,
  runStoppable,
  statIfExists,
  type StopListener,
  unanswered,
  unreachableServer,
  UsageError,
} from './flags.js';
import { ensureNamespace } from './namespaces.js';
import { loadKubeConfig } from './run.js';
import type { KubeAccess } from '../runtime/kube-config.js';

const HELP = `usage: libvirt-operator up [--examples] [--node-name NAME] [--libvirt-uri URI] [--dir DIR]
                           [--kubeconfig PATH]

Runs the operator on this host: a local control plane (unless --kubeconfig is given) with the
optional finalizer policy (docs/deploy.md), then the agent. libvirt: the local libvirtd when
this user may connect to it or it can be started (root), else the in-process test driver
(test:///default).

  --examples          boot the offline demo: this project's tiny guest (built from Debian
                      packages) imported from a loopback HTTP server into Volumes, and a
                      VirtualMachine (QEMU, direct kernel boot) on a NAT VirtualNetwork;
                      prints a line when it is Running, Ready=True with a DHCP address
  --examples-name N   name of the demo objects (default demo: VirtualMachine default/demo,
                      Volumes demo-kernel and demo-initrd, demo-net, demo-pool)
  --node-name NAME    default: NODE_NAME, else the host name
  --libvirt-uri URI   default: as described above
  --dir DIR           the local control plane's directory (default: ~/.cache/libvirt-operator/local-cluster)
  --kubeconfig PATH   use that cluster instead of a local control plane (creates a Node object
                      for this host there); the KUBECONFIG variable is not read
  --health-addr ADDR  default 127.0.0.1:8081, or another free port when that one is taken
  --quiet-ms MS       how long up waits in silence for the cluster and libvirt before it says
                      what it waits for (default 5000)
  --request-timeout DURATION
                      ${REQUEST_TIMEOUT_HELP}`;

export const FLAGS = {
  examples: { type: 'boolean' },
  'examples-name': { type: 'string' },
  'node-name': { type: 'string' },
  'libvirt-uri': { type: 'string' },
  dir: { type: 'string' },
  kubeconfig: { type: 'string' },
  'health-addr': { type: 'string' },
  'quiet-ms': { type: 'string' },
  'request-timeout': { type: 'string' },
} satisfies Options;

export async function main(argv: string[]): Promise<number> {
  return command('up', argv, FLAGS, HELP, async (values) => {
    // Every flag is checked before anything is done: a usage error must not follow the start
    // of libvirtd (as root) or of a control plane.
    const settings = upSettings(values);
    const notDir =
      values.dir === undefined ? undefined : notADirectory('--dir', values.dir, statIfExists);
    if (notDir) throw new UsageError(`up: ${notDir}`);
    // Listening from here on, before anything is started: a Ctrl-C while the control plane
    // started, or while the examples were applied, ended the process at once and left etcd,
    // kube-apiserver, the agent and the tiny guest's server running (flags.ts listenForStop).
    const stop = listenForStop('up');
    // What has been started so far, stopped in reverse order however up ends.
    const toStop: Array<() => Promise<void>> = [];
    return runStoppable('up', stop, async () => {
      try {
        return await up(values, settings, stop, toStop);
      } finally {
        if (toStop.length > 0) say('stopping');
        for (const stopOne of toStop.reverse()) await stopOne();
      }
    });
  });
}

async function up(
  values: { dir?: string; kubeconfig?: string; examples?: boolean; 'libvirt-uri'?: string },
  settings: ReturnType<typeof upSettings>,
  stop: StopListener,
  toStop: Array<() => Promise<void>>,
): Promise<number> {
  const libvirtUri = values['libvirt-uri'] ?? (await localLibvirt());
  stop.check();
  const cfg = { ...settings.agent, libvirtUri };
  const demoName = settings.demoName;

  let cp: ControlPlane | undefined;
  let kubeConfig: KubeAccess;
  if (values.kubeconfig !== undefined) {
    kubeConfig = await loadKubeConfig(values.kubeconfig);
    say(`using the cluster in ${values.kubeconfig}`);
  } else {
    say('starting a local control plane (etcd + kube-apiserver)');
    cp = await startControlPlane({
      dir: values.dir ?? join(cacheRoot(), 'local-cluster'),
      provision: true,
      signal: stop.signal,
    });
    const started = cp;
    toStop.push(() => started.stop());
    kubeConfig = cp.kubeConfig;
    say(`control plane ready: ${exportLine(cp.kubeconfigPath, cp.binDir)}`);
    const ignored = process.env.KUBECONFIG;
    if (ignored && resolve(ignored) !== cp.kubeconfigPath)
      say(
        `KUBECONFIG=${ignored} is not used: up runs its own control plane (--kubeconfig PATH uses a cluster)`,
      );
  }
  // up's own requests are a person's wait at start-up, bounded as the one-shot commands'
  // are (the agent keeps the client's default: it retries). A server that does not answer
  // them is named, with where up took it from.
  const client = createKubeClient(kubeConfig, {
    userAgent: 'libvirt-operator-up',
    defaultTimeoutMs: settings.requestTimeoutMs,
  });
  const named = (err: unknown) =>
    upRequestError(
      err,
      client.server,
      cp ? { controlPlaneDir: cp.dir } : { kubeconfig: values.kubeconfig! },
    );
  try {
    await ensureNode(client, cfg.nodeName);
    if (cp) await finalizerAtAdmission(cp, client, cfg.nodeName);
    await ensureNamespace(client, cfg.leaseNamespace);
  } catch (err) {
    throw named(err);
  }
  stop.check();

  say(`starting the agent for node ${cfg.nodeName} on ${cfg.libvirtUri}`);
  const agent = await startAgent({
    nodeName: cfg.nodeName,
    libvirtUri: cfg.libvirtUri,
    kubeConfig,
    stateDir: cfg.stateDir,
    // One `npm start` per host: a stable holder lets a restarted run take the Lease at once.
    lease: { namespace: cfg.leaseNamespace, identity: `${hostname()}/up` },
    health: cfg.healthAddr && { ...cfg.healthAddr, anyPortIfTaken: settings.defaultHealth },
    log: { level: process.env.LOG_LEVEL ?? 'warn' },
  });
  toStop.push(() => agent.stop());
  stop.check();
  printProgress(agent);
  if (settings.defaultHealth && agent.runtime.health?.port !== DEFAULT_HEALTH_PORT)
    say(`${DEFAULT_HEALTH_ADDR} is in use: health and metrics on another port`);
  await syncedOrSignal(agent, stop, settings.quietMs);
  stop.check();
  say(`agent ready: health and metrics at ${agent.runtime.health?.url ?? '(off)'}`);
  if (values.examples) {
    await applyDemo(client, agent, stop, toStop, {
      name: demoName,
      nodeName: cfg.nodeName,
      libvirtUri: cfg.libvirtUri,
    }).catch((err: unknown) => {
      throw stop.signal.aborted ? err : named(err);
    });
    stop.check();
  }
  stop.running();
  say('running; Ctrl-C stops the agent' + (cp ? ' and the control plane' : ''));
  await stop.until(agent.runtime.stopped);
  return 0;
}

/**
 * What up's flags ask for, checked without any I/O. The agent's configuration is built with
 * qemu:///system in place of the libvirt up will find, which is always valid; a bad flag or
 * variable is a usage error, as for run. scripts/up-flags.mjs restates these rules for npm
 * start, before its set-up: a change here is one there (test/integration/cli/start-flags.test.ts
 * compares the two).
 */
export function upSettings(values: {
  examples?: boolean;
  'examples-name'?: string;
  'node-name'?: string;
  'libvirt-uri'?: string;
  'health-addr'?: string;
  dir?: string;
  kubeconfig?: string;
  'quiet-ms'?: string;
  'request-timeout'?: string;
}) {
  const demoName = values['examples-name'] ?? 'demo';
  if (!/^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/.test(demoName))
    throw new UsageError(
      `up: --examples-name must be a lowercase DNS label of at most 40 characters, got '${demoName}'`,
    );
  if (values['examples-name'] !== undefined && !values.examples)
    throw new UsageError("up: --examples-name names the demo's objects: give --examples too");
  if (values.kubeconfig !== undefined && values.dir !== undefined)
    throw new UsageError(
      "up: --dir is the local control plane's folder, and --kubeconfig uses a cluster instead of one: give one of them",
    );
  try {
    const agent = agentConfig({
      flags: {
        'node-name': values['node-name'],
        'libvirt-uri': values['libvirt-uri'] ?? SYSTEM,
        // The user of npm start did not choose 8081, a popular port: when it is taken the
        // agent serves on any free one, and up says so.
        'health-addr': values['health-addr'] ?? DEFAULT_HEALTH_ADDR,
        'state-dir': join(cacheRoot(), 'state'),
      },
      env: { ...process.env, METRICS_ADDR: undefined },
    });
    return {
      demoName,
      agent,
      defaultHealth: values['health-addr'] === undefined,
      quietMs: quietMs(values['quiet-ms']),
      requestTimeoutMs: requestTimeoutMs('up', values['request-timeout']),
    };
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`up: ${err.message}`);
    throw err;
  }
}

/** --quiet-ms: milliseconds, a whole number; absent: QUIET_MS. */
function quietMs(value: string | undefined): number {
  if (value === undefined) return QUIET_MS;
  if (!/^\d{1,9}$/.test(value))
    throw new UsageError(
      `up: --quiet-ms must be a whole number of milliseconds (e.g. 5000), got '${value}'`,
    );
  return Number(value);
}

/**
 * How long up waits for the cluster and libvirt in silence before it says what it waits for,
 * unless --quiet-ms says otherwise (a test that waits for the line need not wait 5 s).
 */
const QUIET_MS = 5_000;

/**
 * Waits until the agent has listed every kind and reached libvirt, or for SIGINT or SIGTERM
 * (the caller's stop.check() tells which). Kinds the cluster does not list (CRDs not installed) and a libvirt that
 * does not answer (a wrong --libvirt-uri, a libvirtd that is down) are said once, after a few
 * seconds: the agent keeps trying, and a signal meanwhile must still stop the agent and the
 * control plane.
 */
async function syncedOrSignal(agent: Agent, stop: StopListener, quietMs: number): Promise<void> {
  let lastError: string | undefined;
  const onState = (change: StateChange) => {
    if (change.error !== undefined) lastError = oneLine(change.error);
  };
  agent.libvirt.on('state', onState);
  const quiet = setTimeout(() => {
    // A kind that has not listed by now is one the cluster does not serve (its CRD missing):
    // the agent's informers retry, but up's user sees only "starting the agent".
    const unlisted = Object.values(agent.informers)
      .filter((i) => !i.hasSynced())
      .map((i) => i.resource.plural);
    if (unlisted.length > 0)
      say(
        `waiting for the cluster to list ${unlisted.join(', ')}: are its CRDs installed? (kubectl apply -k manifests/, docs/deploy.md); Ctrl-C stops`,
      );
    if (agent.libvirt.state === 'open') return;
    say(
      `waiting for libvirt at ${agent.libvirt.uri ?? 'the default URI'}${lastError ? `: ${lastError}` : ''}; still trying (Ctrl-C stops)`,
    );
  }, quietMs);
  try {
    await stop.until(agent.synced);
  } finally {
    clearTimeout(quiet);
    agent.libvirt.off('state', onState);
  }
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function say(line: string): void {
  console.log(`up: ${line}`);
}

/** What localLibvirt looks at and does; a parameter so its choices have a unit test. */
export interface LocalLibvirtIO {
  socketExists(): boolean;
  isRoot(): boolean;
  /** undefined when a connection opens, else libvirt's reason. */
  connectError(uri: string): Promise<string | undefined>;
  /** Starts libvirtd; resolves with its URI. */
  start(): Promise<string>;
  say(line: string): void;
}

const SYSTEM = 'qemu:///system';
const TEST_DRIVER = 'test:///default';

/**
 * The libvirt up runs the agent on without --libvirt-uri: the local libvirtd, started when
 * missing and up runs as root, else the in-process test driver. A socket is no proof of
 * access: a user outside libvirt's group sees it and is refused, and an agent retrying a
 * connection it will never get would only print errors, so the connection is tried first.
 */
export async function localLibvirt(io: LocalLibvirtIO = systemIO): Promise<string> {
  const socket = io.socketExists();
  const refused = socket ? await io.connectError(SYSTEM) : undefined;
  if (socket && refused === undefined) return SYSTEM;
  if (io.isRoot()) {
    try {
      return await io.start();
    } catch (err) {
      io.say(
        `could not start libvirtd (${(err as Error).message.split('\n')[0]}); using ${TEST_DRIVER}`,
      );
      return TEST_DRIVER;
    }
  }
  if (refused !== undefined)
    io.say(
      `cannot connect to ${SYSTEM} (${refused}); using ${TEST_DRIVER}: run as root or in libvirt's group, or give --libvirt-uri`,
    );
  return TEST_DRIVER;
}

const systemIO: LocalLibvirtIO = {
  socketExists: () => existsSync('/var/run/libvirt/libvirt-sock'),
  isRoot: () => process.getuid?.() === 0,
  async connectError(uri) {
    const { Connect } = await import('../libvirt/index.js');
    try {
      const conn = await Connect.open(uri, { timeoutMs: 10_000, callTimeoutMs: 10_000 });
      await conn.close().catch(() => undefined);
      return undefined;
    } catch (err) {
      return (err as Error).message.split('\n')[0];
    }
  },
  start: async () => {
    const { ensureLibvirtd } = await import('./local/libvirtd.js');
    return (await ensureLibvirtd()).uri;
  },
  say,
};

/**
 * The error up shows for `err`, from one of its requests to `server`: one that got no answer
 * names the server and where up took it from (its own control plane, whose log says why, or
 * the kubeconfig given); any other is `err` itself. Node's "no response within 10000 ms" alone
 * did not say which server, nor that it was the one up had just started. Pure.
 */
export function upRequestError(
  err: unknown,
  server: string,
  from: { controlPlaneDir: string } | { kubeconfig: string },
): unknown {
  if ('kubeconfig' in from) return unreachableServer(err, server, from.kubeconfig) ?? err;
  if (!unanswered(err)) return err;
  return new Error(
    `the local control plane's API server ${server} did not answer: ${err.message.split('\n')[0]}; see ${join(from.controlPlaneDir, 'kube-apiserver.log')}`,
    { cause: err },
  );
}

/**
 * Creates this host's Node object when the cluster has none. Only a 404 means "missing": any
 * other answer (403 for a kubeconfig that may not read Nodes, a 5xx) is reported as
 * the read that failed. Taking those for "missing" created a Node the user may not see, or
 * said only that the create failed ("already exists") for one that was there all along.
 */
export async function ensureNode(client: KubeClient, name: string): Promise<void> {
  try {
    await client.request({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(name)}` });
  } catch (err) {
    // No answer at all (a transport error) is the caller's to name: the server was not reached.
    if (!(err instanceof KubeApiError)) throw err;
    if (!isNotFound(err)) {
      throw new Error(
        `cannot read this host's Node ${name} (to create it when missing): ${(err as Error).message.split('\n')[0]}`,
        { cause: err },
      );
    }
    await client.request({
      method: 'POST',
      path: '/api/v1/nodes',
      body: {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name, labels: { 'virt.dev/libvirt-host': 'true' } },
      },
    });
  }
}

/**
 * On its own control plane (Kubernetes 1.36) up installs the optional finalizer policy, as
 * manifests/overlays/local does on that version: each new VirtualMachine or Volume then costs
 * the API server one write fewer. A cluster given with --kubeconfig is left as its owner
 * configured it. Without the policy nothing is lost (the agent adds its finalizers itself), so
 * a failure only says so.
 */
async function finalizerAtAdmission(
  cp: ControlPlane,
  client: KubeClient,
  node: string,
): Promise<void> {
  try {
    await installFinalizerPolicy(cp, client, node);
    say("finalizer policy in force: the API server puts the agent's finalizers on new objects");
  } catch (err) {
    say(
      `finalizer policy not in force (${(err as Error).message.split('\n')[0]}); the agent adds its finalizers itself`,
    );
  }
}

/** Server-side applies one object with up's field manager. */
async function applyObject(client: KubeClient, obj: VirtManifest): Promise<string> {
  const info = customResources[obj.kind];
  const ns = info.scope === 'Namespaced' ? (obj.metadata.namespace ?? 'default') : undefined;
  const path = `/apis/${obj.apiVersion}/${ns ? `namespaces/${ns}/` : ''}${info.plural}/${encodeURIComponent(String(obj.metadata.name))}`;
  try {
    await client.request({
      method: 'PATCH',
      path,
      query: { fieldManager: 'libvirt-operator-up', force: true },
      body: obj,
      contentType: 'application/apply-patch+yaml',
    });
  } catch (err) {
    // `up --kubeconfig` on a cluster whose CRDs an older version installed: the examples'
    // newer fields are refused with an HTTP 500 that does not say what to do.
    const fields = fieldsNotInSchema(err);
    if (fields.length === 0) throw err;
    throw new Error(outdatedCrdMessage(obj.kind, fields, 'this libvirt-operator'), { cause: err });
  }
  return `${obj.kind} ${ns ? `${ns}/` : ''}${obj.metadata.name}`;
}

function objectPath(kind: VirtKind, name: string, namespace = DEMO_NAMESPACE): string {
  const info = customResources[kind];
  const ns = info.scope === 'Namespaced' ? `namespaces/${namespace}/` : '';
  return `/apis/${API_VERSION}/${ns}${info.plural}/${encodeURIComponent(name)}`;
}

async function getObject<T>(
  client: KubeClient,
  kind: VirtKind,
  name: string,
): Promise<T | undefined> {
  try {
    return await client.request<T>({ method: 'GET', path: objectPath(kind, name) });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * The users of the demo Volume `volume` (its status.usedBy, less the demo's own) that still hold
 * it, as read now (holdsDemoVolume): one gone, being deleted or no longer naming it lets go.
 */
async function holding(
  client: KubeClient,
  refs: readonly DemoObjectRef[],
  volume: string,
): Promise<DemoObjectRef[]> {
  const there: DemoObjectRef[] = [];
  for (const ref of refs) {
    const obj = await getObject<DemoVolumeUser>(client, ref.kind, ref.name);
    if (holdsDemoVolume(ref.kind, obj, volume)) there.push(ref);
  }
  return there;
}

async function deleteAndWait(
  client: KubeClient,
  kind: VirtKind,
  name: string,
  manifests: readonly VirtManifest[],
  stop: StopListener,
): Promise<void> {
  try {
    await client.request({ method: 'DELETE', path: objectPath(kind, name) });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  const what = demoObjectName(kind, name);
  const deadline = Date.now() + 180_000;
  let said: string | undefined;
  for (;;) {
    const obj = await getObject<{ status?: object }>(client, kind, name);
    if (obj === undefined) return;
    stop.check();
    const hold = demoDeletionHold(obj, manifests);
    const others = await holding(client, hold.foreign, name);
    if (others.length > 0) throw new Error(usedByOthersMessage(kind, name, others));
    if (hold.message && hold.message !== said) {
      said = hold.message;
      say(`examples: waiting for ${what} to be deleted: ${said}`);
    }
    if (Date.now() > deadline) {
      // Nothing said why (no condition names a holder): where to look.
      const why = said
        ? ` (${said})`
        : `; its finalizers and Events tell what holds it: kubectl describe ${kind.toLowerCase()} ${name}${customResources[kind].scope === 'Namespaced' ? ` -n ${DEMO_NAMESPACE}` : ''}`;
      throw new Error(`${what} of an earlier demo was not deleted within 180 s${why}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * What --examples says on libvirt's test driver, where the demo cannot boot. Both ways there
 * are named: up falls back to it without root, and a user gives it with --libvirt-uri (as root,
 * "run as root" told them nothing).
 */
export function testDriverDemoNote(libvirtUri: string): string | undefined {
  if (!libvirtUri.startsWith('test:')) return undefined;
  return (
    `examples: ${libvirtUri} is libvirt's in-process test driver: it runs no guest and cannot ` +
    'import volumes; the demo guest needs a real libvirtd (npm start as root without ' +
    '--libvirt-uri starts one, or --libvirt-uri qemu:///system)'
  );
}

export interface Demo {
  names: DemoNames;
  /** Resolves with the VM's address once it is Running, Ready=True and has one. */
  booted: Promise<string>;
}

/**
 * The offline demo (demo.ts): builds or finds the tiny guest, serves it on loopback and
 * applies the demo objects. A Volume's source is immutable and names this run's port, so
 * Volumes an earlier run imported stay as they are, and ones it left unfinished (their server
 * is gone) are replaced, with the machine that uses them; so is any demo object being deleted,
 * with what depends on it (demoToReplace).
 */
async function applyDemo(
  client: KubeClient,
  agent: Agent,
  stop: StopListener,
  toStop: Array<() => Promise<void>>,
  opts: { name: string; nodeName: string; libvirtUri: string },
): Promise<Demo> {
  const note = testDriverDemoNote(opts.libvirtUri);
  if (note) say(note);
  say(
    'examples: preparing the tiny guest (Debian cloud kernel + busybox initramfs, cached after the first build)',
  );
  const guest = await ensureTinyGuest();
  stop.check();
  const server = await serveTinyGuest(guest);
  // Closed after the agent has stopped (toStop runs in reverse): not under an import it serves.
  toStop.unshift(() => server.close());
  say(
    `examples: serving its kernel and initrd at ${server.base} (sha256 ${guest.sha256.kernel.slice(0, 12)}…, ${guest.sha256.initrd.slice(0, 12)}…)`,
  );
  const names = demoNames(opts.name);
  const existingNet = await getObject<VirtualNetwork>(client, 'VirtualNetwork', names.network);
  const manifests = demoManifests({
    name: opts.name,
    nodeName: opts.nodeName,
    base: server.base,
    sha256: guest.sha256,
    cidr: demoCidr(hostIPv4Addresses(), existingNet?.spec.ipv4?.cidr),
    poolPath: `/var/lib/libvirt-operator/${names.pool}`,
  });

  const found: EarlierDemoObject[] = [];
  for (const m of manifests) {
    const name = String(m.metadata.name);
    stop.check();
    const obj = await getObject<Volume>(client, m.kind, name);
    if (!obj) continue;
    found.push({
      kind: m.kind,
      name,
      demo: obj.metadata.labels?.[DEMO_LABEL.key] === DEMO_LABEL.value,
      deleting: obj.metadata.deletionTimestamp !== undefined,
      imported: findCondition(obj.status?.conditions, 'Imported')?.status === 'True',
      sha256: obj.spec.source?.http?.sha256,
      usedByOthers: await holding(client, demoDeletionHold(obj, manifests).foreign, name),
      uid: obj.metadata.uid,
    });
  }
  const foreign = notTheDemos(found);
  if (foreign) throw new Error(foreign);
  const replace = demoToReplace(manifests, found);
  const held = demoHeldByOthers(replace, found);
  if (held) throw new Error(held);
  if (replace.length > 0) {
    say(
      `examples: replacing ${replace.map((r) => `${demoObjectName(r.kind, r.name)} (${r.why})`).join(', ')} of an earlier run`,
    );
    for (const r of replace) await deleteAndWait(client, r.kind, r.name, manifests, stop);
  }
  // The machines deleted above: the informer may still hold one's last copy, Running.
  const replaced = new Set(
    replace.flatMap((r) => found.find((f) => f.kind === r.kind && f.name === r.name)?.uid ?? []),
  );

  const started = Date.now();
  // Whether this run applies the machine: known once the apply below has run.
  let machineApplied = false;
  const booted = new Promise<string>((resolve) => {
    let seen = false;
    const check = (obj: VirtualMachine, earlier = false) => {
      const ip = seen ? undefined : demoBootedAddress(obj, names.vm, replaced);
      if (!ip) return;
      seen = true;
      queueMicrotask(() => unsubscribe());
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const when = bootedWhen(earlier ? 'running' : machineApplied ? 'applied' : 'kept', seconds);
      say(
        `examples: VirtualMachine ${DEMO_NAMESPACE}/${names.vm} is Running, Ready=True, address ${ip} from ${names.network}'s DHCP, ${when}`,
      );
      resolve(ip);
    };
    const unsubscribe = agent.informers.VirtualMachine.subscribe((change) => {
      if (change.type !== 'deleted') check(change.obj as VirtualMachine);
    });
    // A machine an earlier run booted may already be there and never change again.
    const current = agent.informers.VirtualMachine.cache.get(`${DEMO_NAMESPACE}/${names.vm}`);
    if (current) check(current as VirtualMachine, true);
  });
  // Looked up after the stale Volumes (and with them the machine) are gone: those are made anew.
  const existing = new Set<string>();
  for (const m of manifests) {
    const name = String(m.metadata.name);
    if ((await getObject(client, m.kind, name)) !== undefined) existing.add(`${m.kind}/${name}`);
  }
  for (const m of demoToApply(manifests, existing)) {
    stop.check();
    if (m.kind === 'VirtualMachine') machineApplied = true;
    say(`applied ${await applyObject(client, m)}`);
  }
  if (existing.size > 0) {
    say(`examples: kept ${[...existing].join(', ')} of an earlier run as they are`);
  }
  return { names, booted };
}

/** One line whenever an object's phase or Ready condition changes. */
function printProgress(agent: Agent): void {
  const last = new Map<string, string>();
  for (const [kind, informer] of Object.entries(agent.informers)) {
    informer.subscribe((change) => {
      const obj = change.obj as {
        metadata: { name?: string; namespace?: string };
        status?: Record<string, unknown>;
      };
      const key = `${kind} ${obj.metadata.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata.name}`;
      if (change.type === 'deleted') {
        say(`${key}: deleted`);
        last.delete(key);
        return;
      }
      const line = summary(obj.status);
      if (line && last.get(key) !== line) {
        last.set(key, line);
        say(`${key}: ${line}`);
      }
    });
  }
}

function summary(status: Record<string, unknown> | undefined): string | undefined {
  if (!status) return undefined;
  const conditionsOf = (s: Record<string, unknown> | undefined) =>
    (s?.conditions as Array<{ type: string; status: string; reason?: string }> | undefined) ?? [];
  const nodes = status.nodes as Array<Record<string, unknown>> | undefined;
  const node = nodes?.[0];
  const ready = [...conditionsOf(status), ...conditionsOf(node)].find((c) => c.type === 'Ready') as
    { type: string; status: string; reason?: string; message?: string } | undefined;
  const phase =
    (status.phase as string | undefined) ??
    (node?.state as string | undefined) ??
    (node?.active === true ? 'active' : undefined);
  const ips = ((status.interfaces as Array<{ ipAddresses?: string[] }> | undefined) ?? []).flatMap(
    (i) => i.ipAddresses ?? [],
  );
  // A problem's message says what to do (and, for a failed import, when the next try is);
  // progress messages (Importing, Creating ...) would print a line every few seconds.
  const problem =
    ready?.status === 'False' &&
    ready.message &&
    (phase === 'Failed' || /Failed|Mismatch|Conflict|Unsupported|NotFound/.test(ready.reason ?? ''))
      ? `: ${ready.message}`
      : '';
  const parts = [
    phase,
    ready ? `Ready=${ready.status}${ready.reason ? ` (${ready.reason})` : ''}` : undefined,
    ips.length ? `IP ${ips.join(' ')}` : undefined,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') + problem : undefined;
}

/**
 * The line a user pastes into another shell to reach the local control plane: its kubeconfig,
 * and the kubectl set-up provided (same version as the API server) ahead of any other, which a
 * fresh machine may not have at all.
 */
export function exportLine(kubeconfigPath: string, binDir: string): string {
  return `export KUBECONFIG=${shellWord(kubeconfigPath)} PATH=${shellWord(binDir)}:"$PATH"`;
}

/** `s` as one word for a POSIX shell: bare when it is plain, single-quoted otherwise. */
export function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

const DEFAULT_HEALTH_PORT = 8081;
const DEFAULT_HEALTH_ADDR = `127.0.0.1:${DEFAULT_HEALTH_PORT}`;
