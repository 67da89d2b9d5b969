import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { XmlDocumentError, parseAnyXML, type XmlElement } from '../../../src/libvirt/xml/codec.js';
import { buildDomainXML, parseDomainXML } from '../../../src/libvirt/xml/domain.js';
import {
  OWNER_NAMESPACE,
  RESTARTS_NAMESPACE,
  RUN_NAMESPACE,
  buildRestartsXML,
  buildStampXML,
  identityOf,
  keptMetadata,
  stampOf,
  type OwnershipStamp,
} from '../../../src/ownership/metadata.js';

const LIBVIRT = join(import.meta.dirname, '../../fixtures/xml/libvirt');
const stamp: OwnershipStamp = {
  kind: 'VirtualMachine',
  namespace: 'prod',
  name: 'web-1',
  uid: 'u-1',
  generation: 4,
};

function domainWithMetadata(metadata: string): string {
  return `<domain type='kvm'><name>d</name><uuid>u</uuid><metadata>${metadata}</metadata></domain>`;
}

describe('stampOf', () => {
  it('reads the stamp from a domain, a network and the bare element', () => {
    const element = buildStampXML(stamp);
    expect(stampOf(domainWithMetadata(element))).toStrictEqual(stamp);
    expect(
      stampOf(`<network><name>n</name><metadata>${element}</metadata></network>`),
    ).toStrictEqual(stamp);
    expect(stampOf(element)).toStrictEqual(stamp);
  });

  it('recognises our namespace under any prefix, or as the default namespace', () => {
    const attrs = `kind="VirtualNetwork" name="n" uid="u"`;
    const expected = { kind: 'VirtualNetwork', name: 'n', uid: 'u' };
    expect(
      stampOf(domainWithMetadata(`<x:owner xmlns:x="${OWNER_NAMESPACE}" ${attrs}/>`)),
    ).toStrictEqual(expected);
    expect(
      stampOf(domainWithMetadata(`<owner xmlns="${OWNER_NAMESPACE}" ${attrs}/>`)),
    ).toStrictEqual(expected);
  });

  it('finds it among other applications’ metadata', () => {
    const xml = domainWithMetadata(
      `<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>x</nova:name></nova:instance>` +
        `<lvo:owner xmlns:lvo="urn:someone-else" kind="VirtualMachine" name="x" uid="y"/>` +
        buildStampXML(stamp),
    );
    expect(stampOf(xml)).toStrictEqual(stamp);
  });

  it('is undefined for foreign objects', () => {
    expect(stampOf(`<domain type='kvm'><name>d</name></domain>`)).toBeUndefined();
    expect(stampOf(domainWithMetadata(''))).toBeUndefined();
    // our element name in another namespace, and another element in our namespace
    expect(
      stampOf(domainWithMetadata(`<lvo:owner xmlns:lvo="urn:x" kind="Volume" name="a" uid="b"/>`)),
    ).toBeUndefined();
    expect(
      stampOf(
        domainWithMetadata(
          `<lvo:other xmlns:lvo="${OWNER_NAMESPACE}" kind="Volume" name="a" uid="b"/>`,
        ),
      ),
    ).toBeUndefined();
    for (const name of [
      'test-driver-domain-test.xml',
      'test-driver-network-default.xml',
      'test-driver-pool-default.xml',
    ]) {
      expect(stampOf(readFileSync(join(LIBVIRT, name), 'utf8'))).toBeUndefined();
    }
  });

  it('treats a stamp that cannot prove ownership as foreign', () => {
    const ns = `xmlns:lvo="${OWNER_NAMESPACE}"`;
    for (const attrs of [
      `name="a" uid="b"`,
      `kind="Pod" name="a" uid="b"`,
      `kind="VirtualMachine" uid="b"`,
      `kind="VirtualMachine" name="a"`,
      `kind="VirtualMachine" name="a" uid=""`,
    ]) {
      expect(stampOf(domainWithMetadata(`<lvo:owner ${ns} ${attrs}/>`)), attrs).toBeUndefined();
    }
  });

  it('drops a generation that is not a number rather than guessing', () => {
    const xml = domainWithMetadata(
      `<lvo:owner xmlns:lvo="${OWNER_NAMESPACE}" kind="Volume" name="a" uid="b" generation="x1"/>`,
    );
    expect(stampOf(xml)).toStrictEqual({ kind: 'Volume', name: 'a', uid: 'b' });
  });

  it('round-trips hostile strings', () => {
    const hostile: OwnershipStamp = {
      kind: 'VirtualNetwork',
      name: `"/><evil/>&amp;'`,
      uid: 'ü\n\t😀',
      specHash: '<x>',
    };
    const xml = buildStampXML(hostile);
    expect(xml).not.toContain('<evil');
    expect(stampOf(xml)).toStrictEqual(hostile);
  });
});

describe('identityOf', () => {
  it('reads name, UUID and stamp of objects the typed parsers refuse', () => {
    const builtIn = readFileSync(join(LIBVIRT, 'test-driver-domain-test.xml'), 'utf8');
    expect(identityOf(builtIn)).toStrictEqual({
      root: 'domain',
      name: 'test',
      uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
      stamp: undefined,
    });
    const macvtap = `<network><name>mv</name><uuid>u-2</uuid><forward mode='passthrough'/><metadata>${buildStampXML(stamp)}</metadata></network>`;
    expect(identityOf(macvtap)).toStrictEqual({ root: 'network', name: 'mv', uuid: 'u-2', stamp });
    const pool = readFileSync(join(LIBVIRT, 'test-driver-pool-default.xml'), 'utf8');
    expect(identityOf(pool)).toMatchObject({ root: 'pool', name: 'default-pool' });
  });

  it('refuses other documents and objects without a name or UUID', () => {
    expect(() => identityOf('<volume><name>v</name></volume>')).toThrow(XmlDocumentError);
    expect(() => identityOf('<network><name>n</name></network>')).toThrow(
      'network/uuid: is missing',
    );
  });
});

describe('the restart count in a domain definition', () => {
  it('is written bare (libvirt adds the namespace) and read back only in its namespace', () => {
    expect(buildRestartsXML(3).trim()).toBe('<restarts count="3"/>');
    const live = `<domain type='qemu'><name>a</name><uuid>u</uuid><memory>1</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='q35'>hvm</type></os><metadata>
      <lvo:owner xmlns:lvo="http://virt.dev/libvirt-operator/v1" kind="VirtualMachine" name="a" uid="u"/>
      <lvor:restarts xmlns:lvor="${RESTARTS_NAMESPACE}" count="3"/>
      </metadata><devices/></domain>`;
    expect(parseDomainXML(live).restarts).toBe(3);
    const foreign = live.replace(RESTARTS_NAMESPACE, 'http://example.com/other');
    expect(parseDomainXML(foreign).restarts).toBeUndefined();
    expect(parseDomainXML(live.replace('count="3"', 'count="x"')).restarts).toBeUndefined();
  });
});

describe('keptMetadata: what a redefinition keeps of the <metadata> it replaces', () => {
  const old = `<domain type='qemu'><name>a</name><uuid>u</uuid><memory>1</memory><vcpu>1</vcpu>
    <os><type arch='x86_64' machine='q35'>hvm</type></os><metadata>
    <lvo:owner xmlns:lvo="${OWNER_NAMESPACE}" kind="VirtualMachine" name="a" uid="u" generation="1"/>
    <lvor:restarts xmlns:lvor="${RESTARTS_NAMESPACE}" count="2"/>
    <lvorun:run xmlns:lvorun="${RUN_NAMESPACE}" generation="3"/>
    <app:note xmlns:app="http://example.com/app" owner="ops &amp; &lt;dev&gt;"><app:line n="1">keep "me" &amp; this</app:line></app:note>
    </metadata><devices/></domain>`;
  const metadataOf = (xml: string) =>
    parseAnyXML(xml, ['domain.metadata.*']).element['metadata'] as XmlElement;
  const newDoc = parseDomainXML(buildDomainXML({ ...parseDomainXML(old), stamp }));
  const rebuilt = (generation: number | undefined, from = old) =>
    buildDomainXML({ ...parseDomainXML(from), stamp }, keptMetadata(metadataOf(from), generation));

  it("keeps a user's element and the restart count, and writes the new stamp once", () => {
    const xml = rebuilt(7);
    const doc = parseDomainXML(xml);
    expect(doc.stamp).toEqual(stamp);
    expect(doc.restarts).toBe(2);
    expect(xml.match(/lvo:owner/g)).toHaveLength(1);
    expect(keptMetadata(metadataOf(xml), 7)['app:note']).toEqual(
      keptMetadata(metadataOf(old), 7)['app:note'],
    );
    expect(xml).toContain('owner="ops &amp; &lt;dev&gt;"');
    expect(newDoc.restarts).toBeUndefined();
    // Defined again from what it gave back (indented): the same document, no text grown.
    expect(buildDomainXML(parseDomainXML(xml), keptMetadata(metadataOf(xml), 7))).toBe(xml);
  });

  it('carries the run record forward at the generation defined, only where there was one', () => {
    expect(parseDomainXML(rebuilt(7)).startedUnder).toBe(7);
    expect(rebuilt(7).match(/lvorun:run/g)).toHaveLength(1);
    // A domain never started gains none; a define whose generation is unknown keeps none.
    const neverRan = old.replace(/<lvorun:run [^>]*\/>/, '');
    expect(parseDomainXML(rebuilt(7, neverRan)).startedUnder).toBeUndefined();
    expect(parseDomainXML(rebuilt(undefined)).startedUnder).toBeUndefined();
    // A record in another namespace is not ours: kept as it is, and not read as a run.
    const foreign = neverRan.replace(
      '</metadata>',
      `<lvorun:run xmlns:lvorun="http://example.com/other" generation="3"/></metadata>`,
    );
    const kept = rebuilt(7, foreign);
    expect(parseDomainXML(kept).startedUnder).toBeUndefined();
    expect(kept).toContain('xmlns:lvorun="http://example.com/other"');
  });

  it('keeps an element whose namespace libvirt left declared on <metadata>', () => {
    // As libvirt writes back a user's `<metadata xmlns:pre="urn:pre"><pre:top>...`: the
    // declarations stay on <metadata>, which the new definition writes without them, and
    // libvirt drops a child whose prefix is then unbound.
    const declared = old
      .replace(
        '<metadata>',
        `<metadata xmlns:pre="urn:pre" xmlns:q="urn:q" xmlns:own="${OWNER_NAMESPACE}">`,
      )
      .replace(
        '</metadata>',
        `<pre:top><pre:a q:k="1"/><q:z/></pre:top><own:owner kind="VirtualMachine" name="x" uid="x"/></metadata>`,
      );
    const xml = rebuilt(7, declared);
    const top = metadataOf(xml)['pre:top'] as XmlElement[];
    expect(top).toHaveLength(1);
    expect(top[0]!['@xmlns:pre']).toBe('urn:pre');
    expect(top[0]!['@xmlns:q']).toBe('urn:q');
    // One in our stamp's namespace is not kept, however it is declared.
    expect(xml).not.toContain('own:owner');
    expect(parseDomainXML(xml).stamp).toEqual(stamp);
    expect(buildDomainXML(parseDomainXML(xml), keptMetadata(metadataOf(xml), 7))).toBe(xml);
  });

  it('defines text mixed with child elements the same every time, not deeper each define', () => {
    const mixed = old.replace('</metadata>', '<mix xmlns="urn:mix">a<b/>c</mix></metadata>');
    const once = rebuilt(7, mixed);
    expect(once).toContain('ac');
    expect(rebuilt(7, once)).toBe(once);
  });

  it("keeps a user's elements named like Object's own properties", () => {
    const named = old.replace(
      '</metadata>',
      '<constructor xmlns="urn:c"/><__proto__ xmlns="urn:p"><__proto__/><toString/></__proto__></metadata>',
    );
    const xml = rebuilt(7, named);
    expect(xml).toContain('<constructor xmlns="urn:c"/>');
    expect(xml).toMatch(/<__proto__ xmlns="urn:p">\s*<__proto__\/>\s*<toString\/>/);
    expect(rebuilt(7, xml)).toBe(xml);
  });

  it('keeps nothing from a definition without <metadata>', () => {
    expect(keptMetadata(undefined, 7)).toEqual({});
  });
});
