// The ownership stamp the operator writes into the <metadata> of every domain and network it
// creates. The operator never modifies or deletes a libvirt object without it. Storage pools
// and volumes have no <metadata> in libvirt's format: a pool is ours when its UUID is the
// StoragePool's uid, a volume when it sits in such a pool under the Volume's name.
import {
  XmlDocumentError,
  attr,
  buildXML,
  childText,
  children,
  parseAnyXML,
  requireValue,
  textOf,
  type XmlElement,
  type XmlTree,
} from '../libvirt/xml/codec.js';

export const OWNER_NAMESPACE = 'http://virt.dev/libvirt-operator/v1';
/** The prefix we write; on read any prefix bound to OWNER_NAMESPACE is recognised. */
const OWNER_PREFIX = 'lvo';
const OWNER_ELEMENT = 'owner';

const OWNED_KINDS = ['VirtualMachine', 'Volume', 'VirtualNetwork', 'StoragePool'] as const;
export type OwnedKind = (typeof OWNED_KINDS)[number];

export interface OwnershipStamp {
  kind: OwnedKind;
  /** Absent for cluster-scoped kinds. */
  namespace?: string;
  name: string;
  uid: string;
  /** metadata.generation of the object this libvirt object was last written from. */
  generation?: number;
  /** A digest of the spec it was written from, for changes generation does not capture. */
  specHash?: string;
}

/** The stamp as a child of <metadata> (the key is the prefixed element name). */
export function stampTree(stamp: OwnershipStamp): XmlTree {
  return { [`${OWNER_PREFIX}:${OWNER_ELEMENT}`]: stampAttributes(stamp) };
}

function stampAttributes(stamp: OwnershipStamp): XmlTree {
  return {
    [`@xmlns:${OWNER_PREFIX}`]: OWNER_NAMESPACE,
    '@kind': stamp.kind,
    '@namespace': stamp.namespace,
    '@name': stamp.name,
    '@uid': stamp.uid,
    '@generation': stamp.generation,
    '@specHash': stamp.specHash,
  };
}

/**
 * The bare stamp element, as virDomainSetMetadata / virNetworkSetMetadata take it
 * (type ELEMENT, key OWNER_PREFIX, uri OWNER_NAMESPACE).
 */
export function buildStampXML(stamp: OwnershipStamp): string {
  return buildXML(`${OWNER_PREFIX}:${OWNER_ELEMENT}`, stampAttributes(stamp));
}

/** The stamp among the children of a parsed <metadata> element, if one is ours. */
export function stampFromMetadata(metadata: XmlElement | undefined): OwnershipStamp | undefined {
  if (metadata === undefined) return undefined;
  for (const key of Object.keys(metadata)) {
    if (key.startsWith('@') || key === '#text') continue;
    for (const el of children(metadata, key)) {
      const stamp = stampFromElement(key, el);
      if (stamp) return stamp;
    }
  }
  return undefined;
}

/**
 * The stamp in a domain or network document, or in the bare element virDomainGetMetadata
 * returns; undefined for a foreign object. A stamp in our namespace that lacks kind, name or
 * uid is treated as foreign: it cannot prove ownership.
 */
export function stampOf(xml: string): OwnershipStamp | undefined {
  const doc = parseAnyXML(xml, ['domain.metadata.*', 'network.metadata.*'], 'metadata');
  if (doc.name === 'domain' || doc.name === 'network') {
    return stampFromMetadata(children(doc.element, 'metadata')[0]);
  }
  return stampFromElement(doc.name, doc.element);
}

/** Who a domain, network or pool is, read without judging the rest of its definition. */
export interface ObjectIdentity {
  root: 'domain' | 'network' | 'pool';
  name: string;
  uuid: string;
  stamp: OwnershipStamp | undefined;
}

/**
 * The identity of any domain, network or pool, including foreign ones whose configuration
 * the typed parsers would refuse (a `type='test'` domain, a macvtap network...): what an
 * observer needs to report a name clash.
 */
export function identityOf(xml: string): ObjectIdentity {
  const doc = parseAnyXML(xml, ['domain.metadata.*', 'network.metadata.*'], 'object');
  const root = doc.name;
  if (root !== 'domain' && root !== 'network' && root !== 'pool') {
    throw new XmlDocumentError(root, 'expected a <domain>, <network> or <pool> document');
  }
  return {
    root,
    name: requireValue(childText(doc.element, 'name'), `${root}/name`),
    uuid: requireValue(childText(doc.element, 'uuid'), `${root}/uuid`).trim(),
    stamp: stampFromMetadata(children(doc.element, 'metadata')[0]),
  };
}

function stampFromElement(tag: string, el: XmlElement): OwnershipStamp | undefined {
  const colon = tag.indexOf(':');
  const local = colon < 0 ? tag : tag.slice(colon + 1);
  // libvirt stores each metadata element on its own, so its namespace is declared on it.
  const ns = colon < 0 ? attr(el, 'xmlns') : attr(el, `xmlns:${tag.slice(0, colon)}`);
  if (local !== OWNER_ELEMENT || ns !== OWNER_NAMESPACE) return undefined;

  const kind = attr(el, 'kind');
  const name = attr(el, 'name');
  const uid = attr(el, 'uid');
  if (!kind || !(OWNED_KINDS as readonly string[]).includes(kind) || !name || !uid) {
    return undefined;
  }
  const stamp: OwnershipStamp = { kind: kind as OwnedKind, name, uid };
  const namespace = attr(el, 'namespace');
  if (namespace !== undefined) stamp.namespace = namespace;
  const generation = attr(el, 'generation');
  if (generation !== undefined && /^\d+$/.test(generation)) stamp.generation = Number(generation);
  const specHash = attr(el, 'specHash');
  if (specHash !== undefined) stamp.specHash = specHash;
  return stamp;
}

/**
 * The restart count the agent records in a domain's persistent <metadata> just before it
 * starts the domain again after a stop nobody asked for (virtual-machine/act.ts): the run that
 * starts carries it in its live definition, so a count whose status write never happened (an
 * agent killed right after the start) is read back from libvirt. Its own namespace, so
 * setting it never replaces the ownership stamp.
 */
export const RESTARTS_NAMESPACE = 'http://virt.dev/libvirt-operator/restarts/v1';
export const RESTARTS_PREFIX = 'lvor';
const RESTARTS_ELEMENT = 'restarts';

/**
 * The bare element virDomainSetMetadata takes (type ELEMENT, key RESTARTS_PREFIX, uri
 * RESTARTS_NAMESPACE): libvirt puts it into the namespace itself and refuses an element that
 * declares one ("failed to create a new XML namespace").
 */
export function buildRestartsXML(count: number): string {
  return buildXML(RESTARTS_ELEMENT, { '@count': String(count) });
}

/** The recorded restart count among the children of a parsed <metadata>, if any. */
export function restartsFromMetadata(metadata: XmlElement | undefined): number | undefined {
  return countFromMetadata(metadata, RESTARTS_ELEMENT, RESTARTS_NAMESPACE, 'count');
}

/**
 * The generation of the VirtualMachine whose spec the persistent definition held when the agent
 * started the domain (virtual-machine/act.ts), written into the run's live definition and the
 * persistent one right after the start, so a new agent process (an upgrade) reads it back and a
 * `virsh start` from that definition inherits it; a run without one (the agent killed between
 * the two calls) is judged by the status's observed generation (virtual-machine/plan.ts
 * runToRecord). 0 when the start could not render the spec (the definition may lack the
 * spec's newest change). A define replaces the whole <metadata>: the agent's own define carries
 * the record forward (keptMetadata); the running definition keeps its own.
 */
export const RUN_NAMESPACE = 'http://virt.dev/libvirt-operator/run/v1';
export const RUN_PREFIX = 'lvorun';
const RUN_ELEMENT = 'run';

/** The bare element virDomainSetMetadata takes (type ELEMENT, key RUN_PREFIX, uri RUN_NAMESPACE). */
export function buildRunXML(generation: number): string {
  return buildXML(RUN_ELEMENT, { '@generation': String(generation) });
}

/** The recorded run generation among the children of a parsed <metadata>, if any. */
export function runGenerationFromMetadata(metadata: XmlElement | undefined): number | undefined {
  return countFromMetadata(metadata, RUN_ELEMENT, RUN_NAMESPACE, 'generation');
}

/** A whole number >= 0 in attribute `name` of our element `local` in namespace `uri`. */
function countFromMetadata(
  metadata: XmlElement | undefined,
  local: string,
  uri: string,
  name: string,
): number | undefined {
  if (metadata === undefined) return undefined;
  for (const key of Object.keys(metadata)) {
    if (key.startsWith('@') || key === '#text') continue;
    const [prefix, tag] = key.includes(':') ? key.split(':') : ['', key];
    if (tag !== local) continue;
    for (const el of children(metadata, key)) {
      const ns = attr(el, prefix ? `xmlns:${prefix}` : 'xmlns');
      const value = Number(attr(el, name));
      if (ns === uri && Number.isSafeInteger(value) && value >= 0) return value;
    }
  }
  return undefined;
}

/**
 * The children of a persistent definition's <metadata> that the agent's redefinition of it
 * keeps (virtual-machine/act.ts define), as children for buildDomainXML: every one but our
 * ownership stamp, which the new definition writes afresh. libvirt replaces the whole
 * <metadata> on a define, so without them a spec change dropped a user's or another tool's
 * own elements, the restart count recorded for a restart begun and not started (plan.ts
 * restartBegun), and the run record that says the agent has started the domain before.
 *
 * The run record, only where the old definition had one (a domain never started must not look
 * started: runStrategy Manual would never give it its first start, plan.ts firstStartDue), is
 * carried forward set to `generation`, the generation whose spec the new definition holds, not
 * the old value. A run started from this definition later, by `virsh start` or libvirt's
 * autostart, inherits the record and is judged by it (plan.ts runStartedUnder, restartHold):
 * the definition reflects that generation's spec, so a difference between it and what a later
 * agent renders (an upgrade's new default) is not a spec change, and updatePolicy Restart
 * holds such a run as runCaughtUp holds a run that took the spec on live. The older record
 * would call that run started before the spec's last edit, and an upgrade's new defaults then
 * restarted a machine nobody edited since. `generation` undefined (a define whose generation is
 * not known) keeps no run record, as every define did before. Pure.
 */
export function keptMetadata(
  metadata: XmlElement | undefined,
  generation: number | undefined,
): Record<string, XmlElement[]> {
  // Without a prototype: a user's element may be called `constructor` or `__proto__`.
  const kept: Record<string, XmlElement[]> = Object.create(null);
  if (metadata === undefined) return kept;
  const inherited = declarationsOf(metadata);
  for (const key of Object.keys(metadata)) {
    if (key.startsWith('@') || key === '#text') continue;
    const others = children(metadata, key).filter((el) => {
      const ns = namespaceOf(key, el, inherited);
      return ns !== OWNER_NAMESPACE && ns !== RUN_NAMESPACE;
    });
    if (others.length > 0) {
      kept[key] = others.map((el) => withDeclarations(key, withoutIndentation(el), inherited));
    }
  }
  const run = runGenerationFromMetadata(metadata);
  if (run !== undefined && generation !== undefined) {
    const key = `${RUN_PREFIX}:${RUN_ELEMENT}`;
    const record = { [`@xmlns:${RUN_PREFIX}`]: RUN_NAMESPACE, '@generation': String(generation) };
    // A foreign element of the same prefixed name (another namespace bound to our prefix)
    // stays beside it.
    kept[key] = [...(kept[key] ?? []), record];
  }
  return kept;
}

/**
 * `el` without the whitespace between its child elements: libvirt indents the documents it
 * writes, the reader joins all of an element's own text and keeps it beside its children, and
 * written back (after them) it would be one more indentation deeper at every define. Text mixed
 * with child elements keeps its words but not its place among them, which the tree cannot hold;
 * trimmed, it reads back the same after every define.
 */
function withoutIndentation(el: XmlElement): XmlElement {
  const keys = Object.keys(el).filter((k) => !k.startsWith('@') && k !== '#text');
  if (keys.length === 0) return el;
  const copy: XmlElement = Object.create(null);
  for (const [key, value] of Object.entries(el)) {
    if (key === '#text') {
      const text = textOf(el).trim();
      if (text !== '') copy[key] = text;
    } else if (key.startsWith('@')) copy[key] = value;
    else copy[key] = children(el, key).map(withoutIndentation);
  }
  return copy;
}

/** The namespace declarations on <metadata> itself ('@xmlns', '@xmlns:p'), by attribute key. */
function declarationsOf(metadata: XmlElement): Record<string, string> {
  const declared: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata)) {
    if ((key === '@xmlns' || key.startsWith('@xmlns:')) && typeof value === 'string') {
      declared[key] = value;
    }
  }
  return declared;
}

/**
 * The namespace a <metadata> child called `key` (maybe prefixed) is in: declared on itself, or
 * on <metadata> (`inherited`), where libvirt leaves a declaration a user's XML put there.
 */
function namespaceOf(
  key: string,
  el: XmlElement,
  inherited: Readonly<Record<string, string>>,
): string | undefined {
  const colon = key.indexOf(':');
  const declaration = colon < 0 ? '@xmlns' : `@xmlns:${key.slice(0, colon)}`;
  return attr(el, declaration.slice(1)) ?? inherited[declaration];
}

/**
 * `el` declaring itself the namespaces it uses that <metadata> declared (`inherited`): the
 * new definition's <metadata> has none, and libvirt drops a child whose name then has no
 * namespace (virXMLNodeSanitizeNamespaces), the user's element with it.
 */
function withDeclarations(
  key: string,
  el: XmlElement,
  inherited: Readonly<Record<string, string>>,
): XmlElement {
  const used = new Set<string>();
  prefixesUsed(key, el, used);
  const added: XmlElement = {};
  for (const [declaration, uri] of Object.entries(inherited)) {
    const prefix = declaration === '@xmlns' ? '' : declaration.slice('@xmlns:'.length);
    if (used.has(prefix) && attr(el, declaration.slice(1)) === undefined) added[declaration] = uri;
  }
  if (Object.keys(added).length === 0) return el;
  // Declarations first, where libvirt writes them back: the next define reads the same order.
  const withAdded: XmlElement = Object.create(null);
  for (const [k, v] of Object.entries(el)) if (!k.startsWith('@')) withAdded[k] = v;
  Object.assign(withAdded, added);
  for (const [k, v] of Object.entries(el)) if (k.startsWith('@')) withAdded[k] = v;
  return withAdded;
}

/** Into `used`: the prefixes ('' for none) of `el`'s name and of the names below it. */
function prefixesUsed(key: string, el: XmlElement, used: Set<string>): void {
  const colon = key.indexOf(':');
  used.add(colon < 0 ? '' : key.slice(0, colon));
  for (const k of Object.keys(el)) {
    if (k === '#text') continue;
    if (k.startsWith('@')) {
      const c = k.indexOf(':');
      if (c > 0 && !k.startsWith('@xmlns')) used.add(k.slice(1, c));
    } else for (const c of children(el, k)) prefixesUsed(k, c, used);
  }
}
