// node --import tsx bench/cpu-profile.ts FILE.cpuprofile [--from S] [--to S] [--top N]
//
// Where a V8 CPU profile's time went, e.g. the agent's in `bench:converge --node-flags=
// "--cpu-prof --cpu-prof-dir=DIR"`: the JS thread's busy time (idle, garbage collector and
// "(program)", native time outside JS, apart), busy milliseconds per second of the profile (to
// find the burst), then the functions by self time and by inclusive time (a function counted
// once per sample however often it recurses). --from/--to keep the samples between those
// seconds of the profile, so the agent's start and the benchmark's /metrics scrape after the
// idle window can be left out. The inclusive list is where whole subtrees show (the watch's
// decode, a request's path through node:http) that the self list spreads over many lines.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    from: { type: 'string', default: '0' },
    to: { type: 'string', default: 'Infinity' },
    top: { type: 'string', default: '40' },
  },
});
const file = positionals[0];
if (!file) throw new Error('usage: bench/cpu-profile.ts FILE.cpuprofile [--from S] [--to S]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
const fromUs = Number(values.from) * 1e6;
const toUs = Number(values.to) * 1e6;
const top = Number(values.top);

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);

/** A function as `name file:line`, paths shortened to the part after src/, dist/, node_modules/. */
const label = (n: ProfileNode): string => {
  const { functionName, url, lineNumber } = n.callFrame;
  const where = url.replace(/^.*\/(src|dist|node_modules)\//, '$1/');
  return `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`;
};

// A sample lasts until the next one: its time is the next delta.
const selfUs = new Map<number, number>();
const busyPerSecond: number[] = [];
let at = 0;
profile.samples.forEach((id, i) => {
  at += profile.timeDeltas[i] ?? 0;
  const us = profile.timeDeltas[i + 1] ?? 0;
  const node = byId.get(id);
  if (!node) return;
  if (node.callFrame.functionName !== '(idle)') {
    const second = Math.floor(at / 1e6);
    busyPerSecond[second] = (busyPerSecond[second] ?? 0) + us;
  }
  if (at < fromUs || at > toUs) return;
  selfUs.set(id, (selfUs.get(id) ?? 0) + us);
});

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const total = { all: 0, idle: 0, gc: 0, program: 0 };
for (const [id, us] of selfUs) {
  const node = byId.get(id);
  if (!node) continue;
  total.all += us;
  const name = node.callFrame.functionName;
  if (name === '(idle)') total.idle += us;
  if (name === '(garbage collector)') total.gc += us;
  if (name === '(program)') total.program += us;
  self.set(label(node), (self.get(label(node)) ?? 0) + us);
  const counted = new Set<string>();
  for (let x: number | undefined = id; x !== undefined; x = parentOf.get(x)) {
    const frame = byId.get(x);
    if (!frame) break;
    const l = label(frame);
    if (counted.has(l)) continue;
    counted.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + us);
  }
}

const ms = (us: number) => (us / 1000).toFixed(0).padStart(7);
const busy = total.all - total.idle;
console.log(
  `${file}: ${(total.all / 1e6).toFixed(2)} s sampled, busy ${ms(busy)} ms ` +
    `(garbage collector ${ms(total.gc).trim()}, program ${ms(total.program).trim()})`,
);
console.log(
  'busy ms per second: ' +
    Array.from(busyPerSecond, (us, s) => `${s}:${Math.round((us ?? 0) / 1000)}`).join(' '),
);
for (const [title, table] of [
  ['self', self],
  ['inclusive', inclusive],
] as const) {
  console.log(`\nby ${title} time (ms):`);
  const rows = [...table]
    .filter(([l]) => !l.startsWith('(idle)') && !l.startsWith('(root)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top);
  for (const [l, us] of rows) console.log(`${ms(us)}  ${l}`);
}
