// npm start: everything on this host. A local control plane unless KUBECONFIG points at a
// cluster, a Node object for this host (there is no kubelet here), the real libvirtd when it
// can be started (root), else libvirt's in-process test driver, then the agent — printing one
// progress line each time an object's phase or readiness changes.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { customResources, type VirtKind } from '../api/generated/crds.js';
import { agentConfig } from '../agent/config.js';
import { startAgent, type Agent } from '../agent/agent.js';
import { cacheRoot, startControlPlane, type ControlPlane } from '../harness/control-plane.js';
import { packageRoot } from '../harness/package-root.js';
import { createKubeClient, type KubeClient } from '../runtime/index.js';
import { parseFlags, untilSignal, withOneLineErrors } from './flags.js';
import { loadKubeConfig } from './run.js';
import type { KubeAccess } from '../runtime/kube-config.js';

const HELP = `usage: libvirt-operator up [--examples] [--node-name NAME] [--libvirt-uri URI] [--dir DIR]

Runs the operator on this host: a local control plane (unless KUBECONFIG is set), then the
agent. libvirt: the local libvirtd when its socket exists or it can be started (root), else
the in-process test driver (test:///default).

  --examples          apply manifests/examples/ (with spec.nodeName set to this node)
  --node-name NAME    default: the host name
  --libvirt-uri URI   default: as described above
  --dir DIR           the local control plane's directory (default: ~/.cache/libvirt-operator/local-cluster)
  --health-addr ADDR  default 127.0.0.1:8081`;

export async function main(argv: string[]): Promise<number> {
  return withOneLineErrors('up', async () => {
    const { values, help } = parseFlags(
      'up',
      argv,
      {
        examples: { type: 'boolean' },
        'node-name': { type: 'string' },
        'libvirt-uri': { type: 'string' },
        dir: { type: 'string' },
        'health-addr': { type: 'string' },
      },
      HELP,
    );
    if (help) return 0;
    const libvirtUri = values['libvirt-uri'] ?? (await localLibvirt());
    const cfg = agentConfig({
      flags: {
        'node-name': values['node-name'],
        'libvirt-uri': libvirtUri,
        'health-addr': values['health-addr'] ?? '127.0.0.1:8081',
        'state-dir': join(cacheRoot(), 'state'),
      },
      env: { ...process.env, METRICS_ADDR: undefined },
    });

    let cp: ControlPlane | undefined;
    let kubeConfig: KubeAccess;
    if (process.env.KUBECONFIG) {
      kubeConfig = await loadKubeConfig(process.env.KUBECONFIG);
      say(`using the cluster in KUBECONFIG=${process.env.KUBECONFIG}`);
    } else {
      say('starting a local control plane (etcd + kube-apiserver)');
      cp = await startControlPlane({
        dir: values.dir ?? join(cacheRoot(), 'local-cluster'),
        provision: true,
      });
      kubeConfig = cp.kubeConfig;
      say(`control plane ready: export KUBECONFIG=${cp.kubeconfigPath}`);
    }
    const client = createKubeClient(kubeConfig);
    await ensureNode(client, cfg.nodeName);
    await ensureNamespace(client, cfg.leaseNamespace);

    say(`starting the agent for node ${cfg.nodeName} on ${cfg.libvirtUri}`);
    const agent = await startAgent({
      nodeName: cfg.nodeName,
      libvirtUri: cfg.libvirtUri,
      kubeConfig,
      stateDir: cfg.stateDir,
      // One `npm start` per host: a stable holder lets a restarted run take the Lease at once.
      lease: { namespace: cfg.leaseNamespace, identity: `${hostname()}/up` },
      health: cfg.healthAddr,
      log: { level: process.env.LOG_LEVEL ?? 'warn' },
    });
    printProgress(agent);
    await agent.synced;
    say(`agent ready: health and metrics at ${agent.runtime.health?.url ?? '(off)'}`);
    if (values.examples) await applyExamples(client, cfg.nodeName);
    say('running; Ctrl-C stops the agent' + (cp ? ' and the control plane' : ''));

    await untilSignal(agent.runtime.stopped);
    say('stopping');
    await agent.stop();
    await cp?.stop();
    return 0;
  });
}

function say(line: string): void {
  console.log(`up: ${line}`);
}

async function localLibvirt(): Promise<string> {
  if (existsSync('/var/run/libvirt/libvirt-sock')) return 'qemu:///system';
  if (process.getuid?.() !== 0) return 'test:///default';
  try {
    const { ensureLibvirtd } = await import('../harness/libvirtd.js');
    return (await ensureLibvirtd()).uri;
  } catch (err) {
    say(
      `could not start libvirtd (${(err as Error).message.split('\n')[0]}); using test:///default`,
    );
    return 'test:///default';
  }
}

async function ensureNode(client: KubeClient, name: string): Promise<void> {
  try {
    await client.request({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(name)}` });
  } catch {
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

async function ensureNamespace(client: KubeClient, name: string): Promise<void> {
  try {
    await client.request({ method: 'GET', path: `/api/v1/namespaces/${encodeURIComponent(name)}` });
  } catch {
    await client.request({
      method: 'POST',
      path: '/api/v1/namespaces',
      body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } },
    });
  }
}

/** Server-side applies manifests/examples/*.yaml, pinning every node-bound object to this node. */
async function applyExamples(client: KubeClient, nodeName: string): Promise<void> {
  const dir = join(packageRoot(), 'manifests', 'examples');
  for (const file of readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      const obj = doc.toJS() as {
        apiVersion: string;
        kind: string;
        metadata: { name: string; namespace?: string };
        spec?: { nodeName?: string };
      } | null;
      if (!obj?.kind) continue;
      if (obj.spec?.nodeName !== undefined) obj.spec.nodeName = nodeName;
      const info = customResources[obj.kind as VirtKind];
      if (!info) continue;
      const plural = info.plural;
      const ns = info.scope === 'Namespaced' ? (obj.metadata.namespace ?? 'default') : undefined;
      if (ns) obj.metadata.namespace = ns;
      const path = `/apis/${obj.apiVersion}/${ns ? `namespaces/${ns}/` : ''}${plural}/${encodeURIComponent(obj.metadata.name)}`;
      await client.request({
        method: 'PATCH',
        path,
        query: { fieldManager: 'libvirt-operator-up', force: true },
        body: obj,
        contentType: 'application/apply-patch+yaml',
      });
      say(`applied ${obj.kind} ${ns ? `${ns}/` : ''}${obj.metadata.name} from ${file}`);
    }
  }
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
  const ready = [...conditionsOf(status), ...conditionsOf(node)].find((c) => c.type === 'Ready');
  const phase =
    (status.phase as string | undefined) ??
    (node?.state as string | undefined) ??
    (node?.active === true ? 'active' : undefined);
  const parts = [
    phase,
    ready ? `Ready=${ready.status}${ready.reason ? ` (${ready.reason})` : ''}` : undefined,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : undefined;
}
