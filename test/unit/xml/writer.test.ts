// The codec's writer against the builder it replaced: fast-xml-parser's XMLBuilder, configured
// as the codec had it. On random trees of every shape the document builders hand over
// (attributes, text, repeated and nested elements, undefined values, empty lists, numbers,
// and the characters that need escaping) both must write the same bytes, so no libvirt
// document changes under the agent. The golden files (golden.test.ts), which that builder
// wrote, pin every real builder's output as well.
import { XMLBuilder } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { buildXML, type XmlInput, type XmlTree } from '../../../src/libvirt/xml/codec.js';

const reference = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  textNodeName: '#text',
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
  suppressBooleanAttributes: false,
  processEntities: true,
  // @ts-expect-error -- the builder reads its escape table from here; the type omits it
  entities: [
    { regex: /&/g, val: '&amp;' },
    { regex: /</g, val: '&lt;' },
    { regex: />/g, val: '&gt;' },
    { regex: /'/g, val: '&apos;' },
    { regex: /"/g, val: '&quot;' },
    { regex: /\t/g, val: '&#9;' },
    { regex: /\n/g, val: '&#10;' },
    { regex: /\r/g, val: '&#13;' },
  ],
});

/** A list item or element value of a tree. */
type Item = string | number | bigint | XmlTree;

// What the codec handed the builder: no undefined values, no empty lists, numbers as text.
function prepared(tree: XmlTree): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(tree)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      const items = value as readonly Item[];
      if (items.length > 0) out[key] = items.map(preparedValue);
    } else {
      out[key] = preparedValue(value as Item);
    }
  }
  return out;
}

function preparedValue(value: Item): unknown {
  return typeof value === 'object' ? prepared(value) : String(value);
}

function referenceXML(root: string, tree: XmlTree): string {
  return reference.build({ [root]: prepared(tree) }) as string;
}

/** A small deterministic generator (mulberry32), so a failure names a reproducible seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TEXTS = [
  '',
  'x',
  'true',
  '  spaced  ',
  `a&b<c>d'e"f`,
  'tab\there',
  'line\nbreak\r\n',
  '&amp; already',
  ']]>',
  'ü😀',
  '</v><evil a="1"/>',
];
const NAMES = ['a', 'disk', 'source', 'x:y', 'driver'];
const ATTRS = ['@name', '@type', '@xmlns:lvo', '@bus'];

function randomTree(next: () => number, depth: number): XmlTree {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  const scalar = (): string | number | bigint => {
    const r = next();
    if (r < 0.7) return pick(TEXTS);
    if (r < 0.85) return pick([0, 1, -3, 42.5, 2 ** 53]);
    return pick([0n, 2n ** 64n]);
  };
  const tree: Record<string, XmlInput> = {};
  const keys = Math.floor(next() * 5);
  for (let k = 0; k < keys; k++) {
    const r = next();
    if (r < 0.25) tree[pick(ATTRS)] = next() < 0.1 ? undefined : scalar();
    else if (r < 0.35) tree['#text'] = scalar();
    else {
      const name = pick(NAMES);
      const shape = next();
      const element = (): Item =>
        depth > 0 && next() < 0.5 ? randomTree(next, depth - 1) : scalar();
      if (shape < 0.1) tree[name] = undefined;
      else if (shape < 0.35) tree[name] = Array.from({ length: Math.floor(next() * 4) }, element);
      else tree[name] = element();
    }
  }
  return tree;
}

describe('the codec writer against fast-xml-parser’s builder', () => {
  it('writes what the builder wrote for 3,000 random trees', () => {
    for (let seed = 1; seed <= 3_000; seed++) {
      const tree = randomTree(random(seed), 3);
      const root = seed % 2 === 0 ? 'domain' : 'p:x';
      expect(buildXML(root, tree), `seed ${seed}: ${JSON.stringify(tree, bigints)}`).toBe(
        referenceXML(root, tree),
      );
    }
  });
});

function bigints(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}n` : value;
}
