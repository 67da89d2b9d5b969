// A stand-alone agent process for the lease tests: a runtime with a Lease and one controller
// over the Widgets of a namespace. It prints one JSON line per fact on stdout (leader changes,
// reconcile start/end, stopped) so the test can check who reconciled when; runtime logs go to
// stderr. Run with: node --import tsx lease-agent.ts  (configuration in the environment).
import { KubeConfig } from '@kubernetes/client-node';
import { done } from '../../../src/runtime/controller.js';
import { createLogger } from '../../../src/runtime/log.js';
import { startRuntime, stopOnSignals } from '../../../src/runtime/runtime.js';
import { widgets, type Widget } from './fixtures.js';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`lease-agent needs ${name} in its environment`);
  return v;
};

const say = (fact: Record<string, unknown>) =>
  process.stdout.write(JSON.stringify({ ...fact, at: Date.now() }) + '\n');

const kubeConfig = new KubeConfig();
kubeConfig.loadFromFile(env('AGENT_KUBECONFIG'));
const namespace = env('AGENT_NAMESPACE');
const identity = env('AGENT_IDENTITY');
const slowMs = Number(process.env.AGENT_SLOW_MS ?? '1500');

const rt = await startRuntime({
  kubeConfig,
  log: createLogger({
    level: process.env.LOG_LEVEL ?? 'info',
    destination: process.stderr,
    base: { agent: identity },
  }),
  lease: {
    namespace,
    name: env('AGENT_LEASE'),
    identity,
    leaseDurationSeconds: Number(env('AGENT_LEASE_SECONDS')),
    renewDeadlineMs: Number(env('AGENT_RENEW_DEADLINE_MS')),
    retryPeriodMs: Number(env('AGENT_RETRY_MS')),
  },
  health: false,
  events: { reportingController: 'test.runtime.virt.dev/lease-agent', reportingInstance: identity },
  shutdownDrainMs: Number(process.env.AGENT_DRAIN_MS ?? '5000'),
});
const informer = rt.informer<Widget>(widgets, { namespace });
rt.controller({
  name: 'lease-agent',
  for: informer,
  concurrency: 2,
  reconcile: async (key, ctx) => {
    say({ event: 'start', key });
    // The widget named 'slow' stands for a long reconcile (a guest shutting down).
    await new Promise((r) => setTimeout(r, key.endsWith('/slow') ? slowMs : 20));
    say({ event: 'end', key, aborted: ctx.signal.aborted });
    return done();
  },
});
stopOnSignals(rt);
rt.start();

let leader = false;
const watchLeader = setInterval(() => {
  if (rt.isLeader() !== leader) {
    leader = rt.isLeader();
    say({ event: 'leader', value: leader });
  }
}, 20);
say({ event: 'ready' });
await rt.stopped;
clearInterval(watchLeader);
say({ event: 'stopped' });
