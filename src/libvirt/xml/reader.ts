// The reader behind the codec: one pass over a document that checks it is well-formed and
// builds the codec's tree as it goes. It replaced fast-xml-parser's validate-then-parse,
// which was a third of the agent's CPU in a burst of 1,000 new machines (bench/README.md,
// "Convergence of one agent").
//
// It reads what libvirt (libxml2) writes: elements, attributes in single or double quotes,
// text, CDATA, comments, processing instructions (the XML declaration among them), the five
// predefined entities and numeric character references. A DOCTYPE is refused (libvirt never
// sends one, and it is where a document would define entities), so no entity is ever defined
// by a document. Anything else is an error with its line and column; nothing is guessed.
//
// The tree (as fast-xml-parser built it with the codec's options, which
// test/unit/xml/reader.test.ts checks on every fixture): an element with neither children
// nor attributes is its text ('' when empty); otherwise an object with its children by tag in
// order of first appearance (a list when a tag repeats or its path is repeatable), then
// '#text' with all of its own text joined when there is any, then '@name' per attribute.

import type { XmlElement, XmlValue } from './codec.js';

/** Malformed input; `line` and `column` (1-based) are where the reader stopped. */
export class XmlSyntaxError extends Error {
  constructor(
    readonly line: number,
    readonly column: number,
    message: string,
  ) {
    super(message);
    this.name = 'XmlSyntaxError';
  }
}

/** Which child paths ('root.child.grandchild') always parse as lists. */
export interface Repeatable {
  /** Exact paths. */
  readonly exact: ReadonlySet<string>;
  /** Paths whose every child repeats (declared as 'path.*'). */
  readonly anyChildOf: ReadonlySet<string>;
}

interface Open {
  readonly name: string;
  readonly path: string;
  /** Whether it is always a list under its parent (its path or its parent's is repeatable). */
  readonly list: boolean;
  /** Children so far; created with the first child. */
  children: XmlElement | undefined;
  text: string;
  attributes: [string, string][] | undefined;
  readonly start: number;
}

const LT = 0x3c;
const GT = 0x3e;
const SLASH = 0x2f;
const BANG = 0x21;
const QUESTION = 0x3f;
const EQUALS = 0x3d;

const ENTITIES: Readonly<Record<string, string>> = {
  amp: '&',
  lt: '<',
  gt: '>',
  apos: "'",
  quot: '"',
};

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
}

// XML's NameStartChar and NameChar, with everything above ASCII allowed: libvirt's names
// are ASCII, and a stricter table would only add refusals of well-formed documents.
function isNameStart(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c === 0x3a || c >= 0x80
  );
}

function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e;
}

/** Reads one document; returns its root element's tag and value. */
export function readXml(input: string, repeatable: Repeatable): { name: string; value: XmlValue } {
  // End-of-line handling (XML 1.0 §2.11): CR LF and lone CR read as LF. A CR written as
  // &#13; is decoded after this and survives.
  const xml = input.includes('\r') ? input.replace(/\r\n?/g, '\n') : input;
  const n = xml.length;
  let i = 0;

  // Positions are counted in the text after end-of-line handling, which is what a reader of
  // the document sees in an editor: a CR LF is one line end.
  const fail = (at: number, problem: string): never => {
    const { line, column } = lineAndColumn(xml, at);
    throw new XmlSyntaxError(line, column, problem);
  };
  const position = (at: number): string => {
    const { line, column } = lineAndColumn(xml, at);
    return `line ${line}, column ${column}`;
  };

  const readName = (): string => {
    const start = i;
    if (i >= n || !isNameStart(xml.charCodeAt(i))) fail(i, 'expected a name');
    i++;
    while (i < n && isNameChar(xml.charCodeAt(i))) i++;
    return xml.slice(start, i);
  };

  const skipSpace = (): void => {
    while (i < n && isSpace(xml.charCodeAt(i))) i++;
  };

  // Past a comment or processing instruction starting at i; false if there is none there.
  const skipMarkup = (): boolean => {
    if (xml.startsWith('<!--', i)) {
      const end = xml.indexOf('-->', i + 4);
      if (end < 0) fail(i, 'unclosed comment');
      i = end + 3;
      return true;
    }
    if (xml.startsWith('<?', i)) {
      const end = xml.indexOf('?>', i + 2);
      if (end < 0) fail(i, 'unclosed processing instruction');
      i = end + 2;
      return true;
    }
    return false;
  };

  // Before and after the root: whitespace, comments and processing instructions only.
  const skipMisc = (where: 'before' | 'after'): void => {
    for (;;) {
      skipSpace();
      if (i >= n || !skipMarkup()) break;
    }
    if (where === 'before' && xml.startsWith('<!DOCTYPE', i)) {
      fail(i, 'a DOCTYPE is not accepted (libvirt never sends one)');
    }
    if (i < n && (where === 'after' || xml.charCodeAt(i) !== LT)) {
      fail(
        i,
        where === 'after'
          ? 'text or a second element after the root element'
          : 'text before the root element',
      );
    }
  };

  skipMisc('before');
  if (i >= n) fail(i, 'no root element');

  const stack: Open[] = [];
  let root: { name: string; value: XmlValue } | undefined;

  const openElement = (): void => {
    const start = i;
    i++; // '<'
    const name = readName();
    const parent = stack[stack.length - 1];
    const placed = placement(repeatable, parent?.path, name);
    const el: Open = {
      name: placed.name,
      path: placed.path,
      list: placed.list,
      children: undefined,
      text: '',
      attributes: undefined,
      start,
    };
    for (;;) {
      const before = i;
      skipSpace();
      if (i >= n) fail(start, `unclosed tag <${name}>`);
      const c = xml.charCodeAt(i);
      if (c === GT) {
        i++;
        stack.push(el);
        return;
      }
      if (c === SLASH) {
        if (xml.charCodeAt(i + 1) !== GT) fail(i, `expected '>' after '/' in <${name}>`);
        i += 2;
        close(el);
        return;
      }
      if (i === before) fail(i, `expected whitespace before an attribute of <${name}>`);
      const attrAt = i;
      const attrName = readName();
      skipSpace();
      if (xml.charCodeAt(i) !== EQUALS)
        fail(i, `attribute '${attrName}' of <${name}> has no value`);
      i++;
      skipSpace();
      const quote = xml.charCodeAt(i);
      if (quote !== 0x22 && quote !== 0x27)
        fail(i, `attribute '${attrName}' of <${name}> is not quoted`);
      const end = xml.indexOf(quote === 0x22 ? '"' : "'", i + 1);
      if (end < 0) fail(i, `unclosed value of attribute '${attrName}'`);
      const raw = xml.slice(i + 1, end);
      if (raw.includes('<'))
        fail(i + 1 + raw.indexOf('<'), `'<' in the value of attribute '${attrName}'`);
      el.attributes ??= [];
      if (isRepeated(el.attributes, attrName))
        fail(attrAt, `attribute '${attrName}' repeated in <${name}>`);
      el.attributes.push([attrName, decode(raw, i + 1)]);
      i = end + 1;
    }
  };

  const close = (el: Open): void => {
    let value: XmlValue;
    if (el.children === undefined && el.attributes === undefined) {
      value = el.text;
    } else {
      const obj: XmlElement = el.children ?? {};
      if (el.text !== '') obj['#text'] = el.text;
      // Indexed, not `for (const [a, v] of ...)`: until V8 optimises this function, each
      // iteration and each destructuring allocates iterator results (~15 MB per 1,000 new
      // machines in the agent, bench/README.md, converge's eleventh pass).
      const attributes = el.attributes ?? [];
      for (let k = 0; k < attributes.length; k++) {
        const pair = attributes[k]!;
        obj[attributeKey(pair[0])] = pair[1];
      }
      value = obj;
    }
    const parent = stack[stack.length - 1];
    if (parent === undefined) {
      root = { name: el.name, value };
      return;
    }
    const siblings = (parent.children ??= {});
    const list = el.list;
    // hasOwn: a tag called 'constructor' must not find Object.prototype's.
    const existing = Object.hasOwn(siblings, el.name) ? siblings[el.name] : undefined;
    if (existing === undefined) {
      setOwn(siblings, el.name, list ? [value] : value);
    } else if (Array.isArray(existing)) {
      existing.push(value as string | XmlElement);
    } else {
      siblings[el.name] = [existing, value as string | XmlElement];
    }
  };

  const decode = (raw: string, at: number): string => {
    let amp = raw.indexOf('&');
    if (amp < 0) return raw;
    let out = '';
    let from = 0;
    while (amp >= 0) {
      const semi = raw.indexOf(';', amp + 1);
      if (semi < 0 || semi - amp > 12) fail(at + amp, `'&' that starts no reference`);
      out += raw.slice(from, amp) + reference(raw.slice(amp + 1, semi), at + amp);
      from = semi + 1;
      amp = raw.indexOf('&', from);
    }
    return out + raw.slice(from);
  };

  const reference = (body: string, at: number): string => {
    if (body.charCodeAt(0) !== 0x23) {
      const named = Object.hasOwn(ENTITIES, body) ? ENTITIES[body] : undefined;
      return (
        named ??
        fail(
          at,
          `unknown entity &${body}; (only &amp; &lt; &gt; &apos; &quot; and numeric references)`,
        )
      );
    }
    const hex = body.charCodeAt(1) === 0x78;
    const digits = body.slice(hex ? 2 : 1);
    const cp = (hex ? /^[0-9a-fA-F]+$/ : /^[0-9]+$/).test(digits)
      ? Number.parseInt(digits, hex ? 16 : 10)
      : NaN;
    if (!isXmlChar(cp)) fail(at, `&${body}; is not a character XML can carry`);
    return String.fromCodePoint(cp);
  };

  openElement();
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const lt = xml.indexOf('<', i);
    if (lt < 0) fail(top.start, `unclosed tag <${top.name}>`);
    if (lt > i) top.text += decode(xml.slice(i, lt), i);
    i = lt;
    const c = xml.charCodeAt(i + 1);
    if (c === SLASH) {
      i += 2;
      const name = readName();
      skipSpace();
      if (xml.charCodeAt(i) !== GT) fail(i, `expected '>' to end </${name}>`);
      i++;
      if (name !== top.name)
        fail(lt, `expected </${top.name}> (opened at ${position(top.start)}), got </${name}>`);
      stack.pop();
      close(top);
    } else if (c === BANG) {
      if (xml.startsWith('<![CDATA[', i)) {
        const end = xml.indexOf(']]>', i + 9);
        if (end < 0) fail(i, 'unclosed CDATA section');
        top.text += xml.slice(i + 9, end);
        i = end + 3;
      } else if (!skipMarkup()) {
        fail(i, `unexpected '<!' (only comments and CDATA inside elements)`);
      }
    } else if (c === QUESTION) {
      skipMarkup();
    } else {
      openElement();
    }
  }
  skipMisc('after');
  return root!;
}

// Where an element sits: its path ('domain.devices.disk') and whether it always parses as a
// list. Remembered per parent path and tag, so a document of a known shape builds no path
// strings and hashes none (flattening and hashing a fresh path per element in the Set lookups
// was a sixth of the reader's time). Bounded like the attribute keys below.
interface Placement {
  /** The tag, as the first document of this shape spelled it: a key V8 has internalised. */
  readonly name: string;
  readonly path: string;
  readonly list: boolean;
}
const PLACEMENTS_MAX = 4096;
const placements = new WeakMap<
  Repeatable,
  { size: number; byParent: Map<string, Map<string, Placement>> }
>();

function placement(
  repeatable: Repeatable,
  parentPath: string | undefined,
  name: string,
): Placement {
  let known = placements.get(repeatable);
  if (!known) placements.set(repeatable, (known = { size: 0, byParent: new Map() }));
  const parentKey = parentPath ?? '';
  let byName = known.byParent.get(parentKey);
  const hit = byName?.get(name);
  if (hit) return hit;
  const path = parentPath === undefined ? name : `${parentPath}.${name}`;
  const found: Placement = {
    name,
    path,
    list:
      parentPath !== undefined &&
      (repeatable.exact.has(path) || repeatable.anyChildOf.has(parentPath)),
  };
  if (known.size < PLACEMENTS_MAX) {
    if (!byName) known.byParent.set(parentKey, (byName = new Map()));
    byName.set(name, found);
    known.size++;
  }
  return found;
}

// The tree's key for an attribute ('@' + name). libvirt uses a few dozen attribute names; a
// key made once is an internalised string V8 stores under without looking it up again, where a
// fresh concatenation is hashed and looked up per attribute (a sixth of the reader's time).
// Bounded, since a document can carry any names (metadata anyone with libvirt access writes).
const ATTRIBUTE_KEYS = new Map<string, string>();
const ATTRIBUTE_KEYS_MAX = 1024;

function attributeKey(name: string): string {
  let key = ATTRIBUTE_KEYS.get(name);
  if (key === undefined) {
    key = `@${name}`;
    if (ATTRIBUTE_KEYS.size < ATTRIBUTE_KEYS_MAX) ATTRIBUTE_KEYS.set(name, key);
  }
  return key;
}

// libvirt's elements have a handful of attributes, for which a scan is cheapest. An element
// with thousands (metadata anyone with access to libvirt can write into a domain) must not
// make the check quadratic: past a few, a Set remembered per attribute list.
const SCAN_LIMIT = 16;
const seenNames = new WeakMap<[string, string][], Set<string>>();

function isRepeated(attributes: [string, string][], name: string): boolean {
  if (attributes.length < SCAN_LIMIT) {
    for (let k = 0; k < attributes.length; k++) if (attributes[k]![0] === name) return true;
    return false;
  }
  let names = seenNames.get(attributes);
  if (!names) {
    names = new Set(attributes.map(([a]) => a));
    seenNames.set(attributes, names);
  }
  if (names.has(name)) return true;
  names.add(name);
  return false;
}

/** XML 1.0's Char production: tab, LF, CR, and U+0020 up, less surrogates, U+FFFE, U+FFFF. */
function isXmlChar(cp: number): boolean {
  return (
    cp === 0x9 ||
    cp === 0xa ||
    cp === 0xd ||
    (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0x10ffff)
  );
}

function setOwn(obj: XmlElement, key: string, value: XmlValue): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    obj[key] = value;
  }
}

/** 1-based line and column of `offset` in `text`, for error messages. */
function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let nl = text.indexOf('\n'); nl >= 0 && nl < offset; nl = text.indexOf('\n', nl + 1)) {
    line++;
    lineStart = nl + 1;
  }
  return { line, column: offset - lineStart + 1 };
}
