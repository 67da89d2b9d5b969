// The one XML reader/writer for every libvirt document the operator reads or writes.
// Documents are built as plain trees (attributes under '@name', text under '#text') and
// serialised here, every text and attribute value through one escape function, so no user
// string reaches a document by concatenation; they are read by reader.ts.
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
// not survive a round trip otherwise. Quotes are escaped in text too (harmless there), so one
// function serves both.
const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  "'": '&apos;',
  '"': '&quot;',
  '\t': '&#9;',
  '\n': '&#10;',
  '\r': '&#13;',
};
const NEEDS_ESCAPE = /[&<>'"\t\n\r]/;
const TO_ESCAPE = new RegExp(NEEDS_ESCAPE.source, 'g');

/** `text` as XML character data or an attribute value (in double quotes). */
function escapeXml(text: string): string {
  return NEEDS_ESCAPE.test(text) ? text.replace(TO_ESCAPE, (c) => ESCAPES[c]!) : text;
}

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
  return writeElement(root, tree, root, 0);
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

// The layout fast-xml-parser's builder gave these trees (format, two-space indent, empty
// elements self-closed; test/unit/xml/writer.test.ts compares the two on random trees): one
// element per line; an element whose content is text only (escaped, so without '<') on the
// line of its tags; attributes in the order of their keys, children and text in theirs.
// Undefined values and empty lists are left out, numbers written as decimal text, and a
// character XML 1.0 cannot carry is refused with the path to it. It replaced that builder,
// which allocated ~70 KB per domain definition and took ~0.2 CPU s per 1,000 new machines
// (bench/README.md, "Convergence of one agent", eleventh pass).
const INDENTS: string[] = [];
function indent(level: number): string {
  return (INDENTS[level] ??= '  '.repeat(level));
}

function writeElement(name: string, tree: XmlTree, path: string, level: number): string {
  let attributes = '';
  let content = '';
  // Indexed: until V8 optimises this function a for...of allocates a result per step.
  const keys = Object.keys(tree);
  for (let k = 0; k < keys.length; k++) {
    const key = keys[k]!;
    const value = tree[key];
    if (value === undefined) continue;
    if (key === TEXT) {
      if (typeof value === 'object') throw new XmlDocumentError(path, 'text must be a value');
      content += escapeXml(scalar(value, path));
    } else if (key.startsWith(ATTR)) {
      const at = `${path}/${key}`;
      if (typeof value === 'object') throw new XmlDocumentError(at, 'an attribute must be a value');
      attributes += ` ${key.slice(ATTR.length)}="${escapeXml(scalar(value, at))}"`;
    } else if (Array.isArray(value)) {
      const items = value as readonly (string | number | bigint | XmlTree)[];
      for (let i = 0; i < items.length; i++) {
        content += writeChild(key, items[i]!, `${path}/${key}[${i}]`, level + 1);
      }
    } else {
      content += writeChild(
        key,
        value as string | number | bigint | XmlTree,
        `${path}/${key}`,
        level + 1,
      );
    }
  }
  const pad = indent(level);
  if (content === '') return `${pad}<${name}${attributes}/>\n`;
  if (!content.includes('<')) return `${pad}<${name}${attributes}>${content}</${name}>\n`;
  return `${pad}<${name}${attributes}>\n${content}${pad}</${name}>\n`;
}

function writeChild(
  name: string,
  value: string | number | bigint | XmlTree,
  path: string,
  level: number,
): string {
  if (typeof value === 'object') return writeElement(name, value, path, level);
  const text = escapeXml(scalar(value, path));
  return text === ''
    ? `${indent(level)}<${name}/>\n`
    : `${indent(level)}<${name}>${text}</${name}>\n`;
}

function scalar(value: string | number | bigint, path: string): string {
  if (typeof value === 'string') return checkedText(value, path);
  if (typeof value === 'bigint') return value.toString();
  if (!Number.isFinite(value)) throw new XmlDocumentError(path, `${value} is not a number`);
  return String(value);
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
