// The one XML reader/serializer for every libvirt document the operator reads or writes.
// Documents are built as plain trees (attributes under '@name', text under '#text') and
// serialised here by fast-xml-parser's builder, so every user string is escaped by the
// library, never by concatenation; they are read by reader.ts.
import { XMLBuilder } from 'fast-xml-parser';
import { readXml, XmlSyntaxError, type Repeatable } from './reader.js';

/** A parsed element: attributes as '@name', text as '#text', children by tag name. */
export interface XmlElement {
  [key: string]: XmlValue;
}
export type XmlValue = string | XmlElement | (string | XmlElement)[];

/** What the builders hand to the codec; undefined values and empty lists are left out. */
export interface XmlTree {
  readonly [key: string]: XmlInput;
}
export type XmlInput =
  string | number | bigint | undefined | XmlTree | readonly (string | number | bigint | XmlTree)[];

const ATTR = '@';
const TEXT = '#text';

/** A document that cannot be built or read; `field` names the offending place. */
export class XmlDocumentError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'XmlDocumentError';
  }
}

// XML 1.0 Char production: C0 controls other than tab/LF/CR, lone surrogates, U+FFFE/FFFF.
// With the u flag a surrogate range matches only unpaired halves.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NOT_XML_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uD800-\uDFFF\uFFFE\uFFFF]/u;

// Tab, LF and CR are written as character references: an XML parser (libvirt's libxml2)
// turns a literal CR into LF and literal whitespace in attributes into spaces, so they would
// not survive a round trip otherwise. '&' must stay first.
const ESCAPES = [
  { regex: /&/g, val: '&amp;' },
  { regex: /</g, val: '&lt;' },
  { regex: />/g, val: '&gt;' },
  { regex: /'/g, val: '&apos;' },
  { regex: /"/g, val: '&quot;' },
  { regex: /\t/g, val: '&#9;' },
  { regex: /\n/g, val: '&#10;' },
  { regex: /\r/g, val: '&#13;' },
];

// `entities` is fast-xml-builder's own escape table (its defaults are the first five rows);
// its option type does not declare it, the builder reads it. The golden tests would catch
// a version that stopped honouring it.
type BuilderOptions = NonNullable<ConstructorParameters<typeof XMLBuilder>[0]>;
const builderOptions: BuilderOptions & { entities: typeof ESCAPES } = {
  ignoreAttributes: false,
  attributeNamePrefix: ATTR,
  textNodeName: TEXT,
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
  // The default writes an attribute whose value is "true" as a bare name: not XML.
  suppressBooleanAttributes: false,
  processEntities: true,
  entities: ESCAPES,
};
const builder = new XMLBuilder(builderOptions);

/** Tag paths (dot separated, from the root) that may repeat; '*' matches any one tag. */
export type RepeatablePaths = readonly string[];

// One Repeatable per set of paths, so parseAnyXML does not rebuild the sets per call.
const repeatableByKey = new Map<string, Repeatable>();

function repeatableSets(repeatable: RepeatablePaths): Repeatable {
  const key = repeatable.join('\n');
  let sets = repeatableByKey.get(key);
  if (!sets) {
    sets = {
      exact: new Set(repeatable.filter((p) => !p.endsWith('.*'))),
      anyChildOf: new Set(repeatable.filter((p) => p.endsWith('.*')).map((p) => p.slice(0, -2))),
    };
    repeatableByKey.set(key, sets);
  }
  return sets;
}

export interface XmlCodec {
  /** Parses one document whose root element must be `root`; returns that element. */
  parse(xml: string): XmlElement;
  /** Serialises `tree` as the content of the root element. */
  build(tree: XmlTree): string;
}

/** The codec for one document kind: its root tag and which of its elements repeat. */
export function xmlCodec(root: string, repeatable: RepeatablePaths = []): XmlCodec {
  const paths = repeatableSets(repeatable);
  return {
    parse: (xml) => parseWith(paths, root, xml),
    build: (tree) => buildXML(root, tree),
  };
}

export function buildXML(root: string, tree: XmlTree): string {
  return builder.build({ [root]: prepare(tree, root) }) as string;
}

function parseWith(paths: Repeatable, root: string, xml: string): XmlElement {
  const doc = parseRoot(paths, xml, root);
  if (doc.name !== root) {
    throw new XmlDocumentError(root, `expected a <${root}> document, got <${doc.name}>`);
  }
  return doc.element;
}

/** Parses a document whatever its root; `context` names it in errors. */
export function parseAnyXML(
  xml: string,
  repeatable: RepeatablePaths = [],
  context = 'document',
): { name: string; element: XmlElement } {
  return parseRoot(repeatableSets(repeatable), xml, context);
}

function parseRoot(
  repeatable: Repeatable,
  xml: string,
  context: string,
): { name: string; element: XmlElement } {
  try {
    const { name, value } = readXml(xml, repeatable);
    return { name, element: asElement(value) };
  } catch (err) {
    if (!(err instanceof XmlSyntaxError)) throw err;
    const { line, column } = err;
    throw new XmlDocumentError(
      context,
      `malformed XML at line ${line}, column ${column}: ${err.message}`,
    );
  }
}

// Drops undefined values and empty lists, turns numbers into text and refuses characters
// XML 1.0 cannot carry, naming the path to them.
function prepare(tree: XmlTree, path: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(tree)) {
    if (value === undefined) continue;
    const at = key === TEXT ? path : `${path}/${key}`;
    if (Array.isArray(value)) {
      const items = (value as readonly (string | number | bigint | XmlTree)[]).map((item, i) =>
        prepareValue(item, `${at}[${i}]`),
      );
      if (items.length > 0) out[key] = items;
    } else {
      out[key] = prepareValue(value as string | number | bigint | XmlTree, at);
    }
  }
  return out;
}

function prepareValue(value: string | number | bigint | XmlTree, path: string): unknown {
  if (typeof value === 'string') return checkedText(value, path);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new XmlDocumentError(path, `${value} is not a number`);
    return String(value);
  }
  return prepare(value, path);
}

function checkedText(value: string, path: string): string {
  const bad = NOT_XML_CHAR.exec(value);
  if (bad) {
    const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw new XmlDocumentError(
      path,
      `contains U+${code} at offset ${bad.index}, a character XML 1.0 cannot carry`,
    );
  }
  return value;
}

// ---- reading parsed elements ----

function asElement(value: XmlValue | undefined): XmlElement {
  if (value === undefined) return {};
  // A text-only element parses as a plain string (an empty one as '').
  if (typeof value === 'string') return value === '' ? {} : { [TEXT]: value };
  if (Array.isArray(value)) return asElement(value[0]);
  return value;
}

/** The first child element called `name`, if present. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  const value = el[name];
  return value === undefined ? undefined : asElement(value);
}

/** Every child element called `name`, in document order. */
export function children(el: XmlElement, name: string): XmlElement[] {
  const value = el[name];
  if (value === undefined) return [];
  return Array.isArray(value) ? value.map((v) => asElement(v)) : [asElement(value)];
}

/** The text of `el` itself ('' for an empty element). */
export function textOf(el: XmlElement): string {
  const value = el[TEXT];
  if (Array.isArray(value)) return value.join('');
  return typeof value === 'string' ? value : '';
}

/** The text of the first child `name`, or undefined when there is no such child. */
export function childText(el: XmlElement, name: string): string | undefined {
  const c = child(el, name);
  return c === undefined ? undefined : textOf(c);
}

export function attr(el: XmlElement, name: string): string | undefined {
  const value = el[ATTR + name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Sets an optional field only when it has a value, so a parsed document has no
 * present-but-undefined keys and deep-equals the document it was built from.
 */
export function assign<T extends object, K extends keyof T>(
  target: T,
  key: K,
  value: T[K] | undefined,
): void {
  if (value !== undefined) target[key] = value;
}

export function requireValue<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new XmlDocumentError(field, 'is missing');
  return value;
}

/** A non-negative decimal integer that fits a JS number. */
export function integer(text: string, field: string): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw new XmlDocumentError(field, `${JSON.stringify(text)} is not a non-negative integer`);
  }
  const n = Number(trimmed);
  if (!Number.isSafeInteger(n)) throw new XmlDocumentError(field, `${trimmed} is too large`);
  return n;
}

export function optionalInteger(text: string | undefined, field: string): number | undefined {
  return text === undefined ? undefined : integer(text, field);
}

/** `value` if it is one of `allowed`, else an error that lists them. */
export function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  field: string,
): T {
  const v = requireValue(value, field);
  if (!(allowed as readonly string[]).includes(v)) {
    throw new XmlDocumentError(
      field,
      `${JSON.stringify(v)} is not one of ${allowed.map((a) => `'${a}'`).join(', ')}`,
    );
  }
  return v as T;
}

export function optionalOneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  field: string,
): T | undefined {
  return value === undefined ? undefined : oneOf(value, allowed, field);
}

/** libvirt's yes/no and on/off attribute values. */
export function flag(value: string | undefined, field: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === 'yes' || value === 'on') return true;
  if (value === 'no' || value === 'off') return false;
  throw new XmlDocumentError(field, `${JSON.stringify(value)} is neither yes/no nor on/off`);
}
