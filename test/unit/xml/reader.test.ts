// The codec's reader against the parser it replaced: fast-xml-parser, configured as the
// codec had it (validate, then parse). On every XML fixture of the repository (golden files,
// documents captured from libvirt) and on hand-written corner cases, both must give the same
// tree, key order included, since readers iterate children in order. Malformed documents get
// an error naming line and column, including some the old parser let through.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EntityDecoder } from '@nodable/entities';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { XmlDocumentError, parseAnyXML } from '../../../src/libvirt/xml/codec.js';
import { DOMAIN_REPEATABLE } from '../../../src/libvirt/xml/domain.js';
import { NETWORK_REPEATABLE } from '../../../src/libvirt/xml/network.js';

// Every kind's repeatable paths at once: the fixtures are of all kinds.
const REPEATABLE = [
  ...DOMAIN_REPEATABLE,
  ...NETWORK_REPEATABLE,
  'host.hostname',
  'domainsnapshot.disks.disk',
  'domainsnapshot.domain.devices.disk',
  'a.b',
];

const exact = new Set(REPEATABLE.filter((p) => !p.endsWith('.*')));
const anyChildOf = new Set(REPEATABLE.filter((p) => p.endsWith('.*')).map((p) => p.slice(0, -2)));
const reference = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  textNodeName: '#text',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  processEntities: true,
  entityDecoder: new EntityDecoder({
    numericAllowed: true,
    ncr: { xmlVersion: 1.0, onNCR: 'allow', nullNCR: 'throw' },
  }),
  isArray: (_name, jPath, _leaf, isAttribute) => {
    if (isAttribute || typeof jPath !== 'string') return false;
    return exact.has(jPath) || anyChildOf.has(jPath.slice(0, jPath.lastIndexOf('.')));
  },
});

function referenceParse(xml: string): { name: string; element: unknown } {
  expect(XMLValidator.validate(xml)).toBe(true);
  const parsed = reference.parse(xml) as Record<string, unknown>;
  const [name, ...more] = Object.keys(parsed).filter((k) => k !== '#text');
  expect(more).toEqual([]);
  const value = parsed[name!];
  const element = typeof value === 'string' ? (value === '' ? {} : { '#text': value }) : value;
  return { name: name!, element };
}

function xmlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return xmlFiles(path);
    return entry.endsWith('.xml') ? [path] : [];
  });
}

const FIXTURES = [...xmlFiles('test/fixtures'), ...xmlFiles('test/unit')];

const CORNERS = [
  '<a>\n  <b/>\n  <c x="1"/>\n</a>',
  '<a>hello</a>',
  '<a></a>',
  '<a/>',
  '<a x="1">t</a>',
  '<a x="1">t<b/></a>',
  '<a>t1<b/>t2</a>',
  '<a><b>1</b><c/><b>2</b></a>',
  '<a><c>1</c><c>2</c><c/></a>',
  '<a><![CDATA[x<y&z]]></a>',
  '<a>x<!-- c -->y</a>',
  '<a>&amp;&#10;&lt;&#x41;&#65;&#128512;&apos;&quot;&gt;</a>',
  '<?xml version="1.0" encoding="UTF-8"?>\n<!-- c --><a><?pi x?></a>\n',
  `<a x='&quot;' y="it's" z="a&gt;b&#10;"/>`,
  '<a>\r\n</a>',
  '<a:b xmlns:a="urn:x"><a:c a:d="1"/></a:b>',
  '<a><b><c>1</c></b><b/></a>',
  '<a  x = "1" ><d-e.f_g >t</d-e.f_g ></a >',
  '<a>ü €</a>',
];

describe('the codec reader against fast-xml-parser', () => {
  it('finds XML fixtures to compare', () => {
    expect(FIXTURES.length).toBeGreaterThan(20);
  });

  for (const path of FIXTURES) {
    it(`reads ${path} as the old parser did`, () => {
      const xml = readFileSync(path, 'utf8');
      const ours = parseAnyXML(xml, REPEATABLE);
      const theirs = referenceParse(xml);
      expect(JSON.stringify(ours)).toBe(JSON.stringify(theirs));
    });
  }

  for (const xml of CORNERS) {
    it(`reads ${JSON.stringify(xml)} as the old parser did`, () => {
      expect(JSON.stringify(parseAnyXML(xml, REPEATABLE))).toBe(
        JSON.stringify(referenceParse(xml)),
      );
    });
  }
});

describe('the codec reader on malformed documents', () => {
  const cases: [string, RegExp][] = [
    ['', /column 1: no root element/],
    ['text', /column 1: text before the root element/],
    ['<a>', /column 1: unclosed tag <a>/],
    ['<a><b></a>', /column 7: expected <\/b> \(opened at line 1, column 4\), got <\/a>/],
    // Positions as an editor shows them: CR LF and a lone CR each end one line.
    ['<a>\r\n\r\n<b></c></a>', /line 3, column 4: expected <\/b>/],
    ['<a>\r<b></c></a>', /line 2, column 4: expected <\/b> \(opened at line 2, column 1\)/],
    ['<a>&#1;</a>', /&#1; is not a character XML can carry/],
    ['<a x="&#xFFFE;"/>', /&#xFFFE; is not a character XML can carry/],
    ['<a/><b/>', /column 5: text or a second element/],
    ['<a>x</a>tail', /column 9: text or a second element/],
    ['<a b/>', /attribute 'b' of <a> has no value/],
    ['<a x=1/>', /attribute 'x' of <a> is not quoted/],
    ['<a x="1" x="2"/>', /column 10: attribute 'x' repeated/],
    ['<a x="1"y="2"/>', /expected whitespace before an attribute/],
    ['<a x="1/>', /unclosed value of attribute 'x'/],
    ['<1a/>', /column 2: expected a name/],
    ['<a>&amp</a>', /'&' that starts no reference/],
    ['<a>&#0;</a>', /&#0; is not a character XML can carry/],
    ['<a><!-- x</a>', /unclosed comment/],
    ['<a><![CDATA[x</a>', /unclosed CDATA section/],
    ['<a>\n\n  <b></c></a>', /line 3, column 6: expected <\/b>/],
    // Let through by fast-xml-parser; not XML, and libvirt never writes them.
    ['<a>&nbsp;</a>', /unknown entity &nbsp;/],
    ['<a x="a<b"/>', /'<' in the value of attribute 'x'/],
    ['<a>&#xD800;</a>', /&#xD800; is not a character XML can carry/],
  ];
  for (const [xml, message] of cases) {
    it(`refuses ${JSON.stringify(xml)}`, () => {
      let err: unknown;
      try {
        parseAnyXML(xml, [], 'doc');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(XmlDocumentError);
      expect((err as Error).message).toMatch(/^doc: malformed XML at line \d+, column \d+: /);
      expect((err as Error).message).toMatch(message);
    });
  }

  it('reads an element with 20,000 attributes (the Set path) and finds a late repeat', () => {
    const many = Array.from({ length: 20_000 }, (_, i) => `a${i}="${i}"`).join(' ');
    const { element } = parseAnyXML(`<m ${many}/>`);
    expect(Object.keys(element)).toHaveLength(20_000);
    expect(element['@a19999']).toBe('19999');
    expect(() => parseAnyXML(`<m ${many} a17="again"/>`)).toThrow(/attribute 'a17' repeated/);
  });

  it('keeps tags named like Object.prototype members as plain children', () => {
    const { element } = parseAnyXML(
      '<a><constructor>1</constructor><__proto__ x="2"/><__proto__/><toString/></a>',
    );
    expect(Object.getPrototypeOf(element)).toBe(Object.prototype);
    expect(element['constructor']).toBe('1');
    expect(Object.getOwnPropertyDescriptor(element, '__proto__')?.value).toEqual([
      { '@x': '2' },
      '',
    ]);
    expect(element['toString']).toBe('');
  });
});
