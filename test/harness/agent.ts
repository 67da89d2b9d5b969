import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent, type AgentOptions } from '../../src/agent/agent.js';
import type { ControlPlane } from '../../src/commands/local/control-plane.js';
import { customResources, type VirtKind } from '../../src/api/generated/crds.js';

export interface TestAgent extends Agent {
  stateDir: string;
}

/** An agent in this process on libvirt's test driver (shared with the test's own connection). */
export async function startTestAgent(
  cp: ControlPlane,
  opts: Partial<AgentOptions> & { nodeName: string },
): Promise<TestAgent> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'lvo-agent-'));
  await ensureNode(cp, opts.nodeName);
  const agent = await startAgent({
    libvirtUri: 'test:///default',
    kubeConfig: cp.kubeConfig,
    stateDir,
    lease: false,
    log: { level: process.env.LVO_TEST_LOG ?? 'silent' },
    resyncMs: 60_000,
    ...opts,
  });
  await agent.synced;
  return {
    ...agent,
    stateDir,
    async stop(sopts) {
      await agent.stop(sopts);
      if (!opts.stateDir) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export async function ensureNode(
  cp: ControlPlane,
  name: string,
  labels: Record<string, string> = {},
): Promise<void> {
  const yaml = JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels } });
  const res = await cp.kubectl(['apply', '--server-side', '-f', '-'], { input: yaml });
  if (res.code !== 0) throw new Error(`creating Node ${name}: ${res.stderr}`);
}

/**
 * The API path of `kubectl get KIND NAME [-n NS]` for one of our kinds (by plural, singular,
 * short name or kind), or undefined for any other form. A name-less namespaced get is in
 * `default`, as the control plane's kubeconfig says.
 */
export function objectPath(args: string[]): string | undefined {
  const [resource, name, flag, ns] = args;
  if (!resource || !name || name.startsWith('-')) return undefined;
  if (args.length !== 2 && !(args.length === 4 && flag === '-n' && ns)) return undefined;
  const info = Object.values(customResources).find((r) =>
    [r.plural, r.singular, r.kind.toLowerCase(), ...r.shortNames].includes(resource),
  );
  if (!info) return undefined;
  const enc = encodeURIComponent;
  if (info.scope === 'Cluster')
    return args.length === 2 ? `/apis/${info.apiVersion}/${info.plural}/${enc(name)}` : undefined;
  return `/apis/${info.apiVersion}/namespaces/${enc(ns ?? 'default')}/${info.plural}/${enc(name)}`;
}

/**
 * kubectl get -o json, parsed. One object of our kinds is read with a GET of its own instead:
 * the tests poll with this every 100 ms, and each kubectl start took ~0.2-0.35 s and ~0.08 s
 * of CPU at load 11-17 (20 gets: 4.3-7.0 s and 1.6 CPU-s by kubectl, 0.5 s by GET, measured
 * 2026-12-07), late by that much and taking CPU from the guests booting beside it. Its answer
 * is kubectl's but for metadata.managedFields, which kubectl leaves out unless asked; anything
 * but 200 goes to kubectl, for its error.
 */
export async function getJSON<T = Record<string, unknown>>(
  cp: ControlPlane,
  args: string[],
): Promise<T> {
  const path = objectPath(args);
  if (path) {
    const got = await cp.getRaw(path).catch(() => undefined);
    if (got?.status === 200) {
      const obj = JSON.parse(got.body) as { metadata?: { managedFields?: unknown } };
      delete obj.metadata?.managedFields;
      return obj as T;
    }
  }
  const res = await cp.kubectl(['get', ...args, '-o', 'json']);
  if (res.code !== 0) throw new Error(`kubectl get ${args.join(' ')}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

/** Polls `check` until it returns a truthy value; fails with the last value seen. */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `${what} did not happen within ${timeoutMs} ms; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`,
  );
}

/** Sum of apiserver_request_total for write verbs whose resource is one of `resources`. */
export function writeRequests(metrics: string, resources: string[]): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
    const resource = /resource="([^"]*)"/.exec(line)?.[1];
    if (!verb || !resource || !['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY'].includes(verb)) continue;
    if (resources.includes(resource)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/**
 * Resolves once the `kinds` controllers of every agent in `agents` have nothing queued or being
 * processed: the passes enqueued before the call are done, with the API writes and lookups they
 * make (Events excepted: they are posted without the pass waiting). What a check that nothing
 * is written waits for, instead of a fixed second after each enqueue.
 */
export async function passesDone(what: string, agents: Agent[], kinds: VirtKind[]): Promise<void> {
  await until(`the passes of ${what} done`, async () =>
    agents.every((agent) =>
      kinds.every((kind) => {
        const queue = agent.controllers[kind].queue();
        return queue !== undefined && queue.length() === 0 && queue.processing().length === 0;
      }),
    ),
  );
}
