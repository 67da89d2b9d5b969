import { describe, expect, it } from 'vitest';
import {
  XmlDocumentError,
  attr,
  buildXML,
  child,
  childText,
  children,
  flag,
  integer,
  oneOf,
  parseAnyXML,
  textOf,
  xmlCodec,
} from '../../../src/libvirt/xml/codec.js';

const codec = xmlCodec('doc', ['doc.item', 'doc.meta.*']);

function thrown(fn: () => unknown): XmlDocumentError {
  try {
    fn();
  } catch (err) {
    if (err instanceof XmlDocumentError) return err;
    throw err;
  }
  throw new Error('expected an XmlDocumentError');
}

describe('escaping', () => {
  const nasty = `</v><evil a="1"/>&amp;&"'<![CDATA[x]]>ü😀`;

  it('escapes markup in text and attributes so nothing breaks out', () => {
    const xml = codec.build({ '@a': nasty, v: nasty });
    expect(xml).not.toContain('<evil');
    expect(xml).toContain('&lt;/v&gt;&lt;evil a=&quot;1&quot;/&gt;&amp;amp;&amp;&quot;&apos;');
    const el = codec.parse(xml);
    expect(attr(el, 'a')).toBe(nasty);
    expect(childText(el, 'v')).toBe(nasty);
  });

  it('writes tab, LF and CR as character references and reads them back exactly', () => {
    const s = ' lead\ttab\nlf\rcr\r\ncrlf trail ';
    const xml = codec.build({ '@a': s, v: s });
    expect(xml).toContain('&#9;tab&#10;lf&#13;cr&#13;&#10;crlf');
    const el = codec.parse(xml);
    expect(attr(el, 'a')).toBe(s);
    expect(childText(el, 'v')).toBe(s);
  });

  it('keeps surrounding whitespace of text', () => {
    expect(childText(codec.parse(codec.build({ v: '  x  ' })), 'v')).toBe('  x  ');
  });

  it('reads what libvirt writes: single quotes, &apos;, numeric references, raw newlines', () => {
    const el = codec.parse(
      `<doc a='it&apos;s' b='&#x1F600;&#65;'>\n  <v>l1\nl2 &#233;</v>\n</doc>`,
    );
    expect(attr(el, 'a')).toBe("it's");
    expect(attr(el, 'b')).toBe('😀A');
    expect(childText(el, 'v')).toBe('l1\nl2 é');
  });
});

describe('characters XML 1.0 cannot carry', () => {
  it.each([
    ['NUL', '\u0000', '0000'],
    ['a C0 control', 'a\u0001b', '0001'],
    ['ESC', '\u001b[31m', '001B'],
    ['a lone high surrogate', 'x\uD800', 'D800'],
    ['a lone low surrogate', '\uDC00', 'DC00'],
    ['U+FFFE', '\uFFFE', 'FFFE'],
  ])('refuses %s and names the field', (_what, value, code) => {
    const err = thrown(() =>
      codec.build({ item: [{ name: 'ok' }, { source: { '@path': value } }] }),
    );
    expect(err.field).toBe('doc/item[1]/source/@path');
    expect(err.message).toContain(`U+${code}`);
    expect(err.message).toContain('doc/item[1]/source/@path');
  });

  it('names text fields by their element', () => {
    expect(thrown(() => codec.build({ meta: { description: 'bell\u0007' } })).field).toBe(
      'doc/meta/description',
    );
  });

  it('accepts tab, LF, CR, astral characters and the last BMP characters before U+FFFE', () => {
    expect(() => codec.build({ v: '\t\n\r😀\uFFFD' })).not.toThrow();
  });

  it('refuses a NUL character reference when parsing', () => {
    expect(() => codec.parse('<doc><v>&#0;</v></doc>')).toThrow(XmlDocumentError);
  });
});

describe('building', () => {
  it('leaves out undefined values and empty lists, writes empty strings as empty elements', () => {
    expect(codec.build({ '@x': undefined, a: undefined, item: [], flag: '' })).toBe(
      '<doc>\n  <flag/>\n</doc>\n',
    );
  });

  it('writes numbers and bigints as decimal text', () => {
    const xml = codec.build({ n: 42, big: 2n ** 64n, attrs: { '@n': 0 } });
    expect(xml).toContain('<n>42</n>');
    expect(xml).toContain('<big>18446744073709551616</big>');
    expect(xml).toContain('<attrs n="0"/>');
  });

  it('writes an attribute whose value is "true" as an attribute, not a bare name', () => {
    expect(codec.build({ '@on': 'true' })).toBe('<doc on="true"/>\n');
  });

  it('refuses NaN and infinities', () => {
    expect(thrown(() => codec.build({ n: Number.NaN })).field).toBe('doc/n');
    expect(() => codec.build({ n: Infinity })).toThrow(XmlDocumentError);
  });

  it('writes a repeated element once per item', () => {
    const xml = codec.build({ item: [{ '@i': 1 }, { '@i': 2 }] });
    expect(xml).toBe('<doc>\n  <item i="1"/>\n  <item i="2"/>\n</doc>\n');
  });

  it('refuses an element where an attribute or text value belongs, naming the place', () => {
    expect(thrown(() => codec.build({ v: { '@a': { b: 'x' } } })).field).toBe('doc/v/@a');
    expect(thrown(() => codec.build({ v: { '#text': ['x'] } })).field).toBe('doc/v');
  });

  it('buildXML takes any root, including a prefixed one', () => {
    expect(buildXML('p:x', { '@xmlns:p': 'urn:p' })).toBe('<p:x xmlns:p="urn:p"/>\n');
  });
});

describe('parsing', () => {
  it('returns repeatable elements as lists even when there is one, others as one', () => {
    const el = codec.parse('<doc><item i="1"/><other><x/></other><meta><a:b/></meta></doc>');
    expect(Array.isArray(el['item'])).toBe(true);
    expect(Array.isArray(el['other'])).toBe(false);
    expect(Array.isArray(child(el, 'meta')?.['a:b'])).toBe(true);
    expect(children(el, 'item').map((i) => attr(i, 'i'))).toEqual(['1']);
    expect(children(el, 'missing')).toEqual([]);
  });

  it('reads text-only, empty and attribute-carrying elements alike', () => {
    const el = codec.parse('<doc><a>t</a><b/><c k="v">t2</c><d k="v"/></doc>');
    expect(textOf(child(el, 'a')!)).toBe('t');
    expect(textOf(child(el, 'b')!)).toBe('');
    expect(child(el, 'b')).toEqual({});
    expect(textOf(child(el, 'c')!)).toBe('t2');
    expect(attr(child(el, 'c')!, 'k')).toBe('v');
    expect(textOf(child(el, 'd')!)).toBe('');
    expect(child(el, 'e')).toBeUndefined();
    expect(childText(el, 'e')).toBeUndefined();
  });

  it('ignores an XML declaration, comments and processing instructions', () => {
    const el = codec.parse(
      '<?xml version="1.0"?>\n<!-- c --><doc><?pi x?><v>1</v><!-- c2 --></doc>',
    );
    expect(childText(el, 'v')).toBe('1');
  });

  it('refuses a DOCTYPE, where entity definitions would expand', () => {
    const err = thrown(() =>
      codec.parse('<!DOCTYPE doc [<!ENTITY x "boom">]><doc><v>&x;</v></doc>'),
    );
    expect(err.message).toMatch(/DOCTYPE is not accepted/);
    // Also after a declaration and a comment, with where it stands.
    expect(
      thrown(() => codec.parse('<?xml version="1.0"?>\n<!-- c -->\n<!DOCTYPE doc><doc/>')).message,
    ).toMatch(/line 3, column 1: a DOCTYPE is not accepted/);
  });

  it('refuses malformed XML with its position', () => {
    expect(thrown(() => codec.parse('<doc><v></doc>')).message).toMatch(
      /^doc: malformed XML at line 1, column \d+/,
    );
    expect(thrown(() => codec.parse('')).field).toBe('doc');
  });

  it('refuses another root element, naming both', () => {
    expect(thrown(() => codec.parse('<network/>')).message).toBe(
      'doc: expected a <doc> document, got <network>',
    );
  });

  it('parseAnyXML reports the root it found', () => {
    const { name, element } = parseAnyXML('<x:y xmlns:x="urn:x" a="1"/>');
    expect(name).toBe('x:y');
    expect(attr(element, 'a')).toBe('1');
  });
});

describe('field readers', () => {
  it('integer takes non-negative decimal integers only', () => {
    expect(integer(' 42 ', 'f')).toBe(42);
    expect(() => integer('-1', 'f')).toThrow('f: "-1" is not a non-negative integer');
    expect(() => integer('0x10', 'f')).toThrow(XmlDocumentError);
    expect(() => integer('1.5', 'f')).toThrow(XmlDocumentError);
    expect(() => integer('99999999999999999999', 'f')).toThrow(
      'f: 99999999999999999999 is too large',
    );
  });

  it('oneOf names the field and the allowed values', () => {
    expect(oneOf('b', ['a', 'b'] as const, 'x@y')).toBe('b');
    expect(() => oneOf('c', ['a', 'b'] as const, 'x@y')).toThrow(`x@y: "c" is not one of 'a', 'b'`);
    expect(() => oneOf(undefined, ['a'] as const, 'x@y')).toThrow('x@y: is missing');
  });

  it('flag reads yes/no and on/off', () => {
    expect([flag('yes', 'f'), flag('on', 'f'), flag('no', 'f'), flag('off', 'f')]).toEqual([
      true,
      true,
      false,
      false,
    ]);
    expect(flag(undefined, 'f')).toBeUndefined();
    expect(() => flag('true', 'f')).toThrow('f: "true" is neither yes/no nor on/off');
  });
});
