// The libvirt storage pool XML the operator writes, typed after
// https://libvirt.org/formatstorage.html. Only directory pools so far. libvirt's pool format
// has no <metadata>: ownership is the UUID (the StoragePool's uid), see metadata.ts.
import {
  XmlDocumentError,
  assign,
  attr,
  child,
  childText,
  oneOf,
  optionalInteger,
  requireValue,
  xmlCodec,
  type XmlElement,
  type XmlTree,
} from './codec.js';
import { changedFields } from '../../ownership/owned.js';

export const POOL_TYPES = ['dir'] as const;
export type PoolType = (typeof POOL_TYPES)[number];

export interface PoolDocument {
  type: PoolType;
  name: string;
  uuid: string;
  target: { path: string; permissions?: PoolPermissions };
}

/** Applied by virStoragePoolBuild when it creates the directory. */
export interface PoolPermissions {
  /** Permission bits, 0 to 0o777 (e.g. 0o711); written in octal as libvirt expects. */
  mode?: number;
  owner?: number;
  group?: number;
  /** SELinux label. */
  label?: string;
}

const codec = xmlCodec('pool');

export function buildPoolXML(doc: PoolDocument): string {
  return codec.build({
    '@type': doc.type,
    name: doc.name,
    uuid: doc.uuid,
    target: {
      path: doc.target.path,
      permissions: doc.target.permissions && permissionsTree(doc.target.permissions),
    },
  });
}

function permissionsTree(p: PoolPermissions): XmlTree {
  // libvirt refuses setuid, setgid and sticky bits here ("malformed octal mode").
  if (p.mode !== undefined && !(Number.isInteger(p.mode) && p.mode >= 0 && p.mode <= 0o777)) {
    throw new XmlDocumentError(
      'pool/target/permissions/mode',
      `${p.mode} is not a permission mode between 0 and 0o777`,
    );
  }
  return {
    mode: p.mode === undefined ? undefined : p.mode.toString(8).padStart(4, '0'),
    owner: p.owner,
    group: p.group,
    label: p.label,
  };
}

/** Reads a pool as libvirt describes it; capacity, allocation and <source> are ignored. */
export function parsePoolXML(xml: string): PoolDocument {
  const el = codec.parse(xml);
  const target = requireValue(child(el, 'target'), 'pool/target');
  const doc: PoolDocument = {
    type: oneOf(attr(el, 'type'), POOL_TYPES, 'pool@type'),
    name: requireValue(childText(el, 'name'), 'pool/name'),
    uuid: requireValue(childText(el, 'uuid'), 'pool/uuid').trim(),
    target: { path: requireValue(childText(target, 'path'), 'pool/target/path') },
  };
  const permissions = child(target, 'permissions');
  if (permissions) doc.target.permissions = parsePermissions(permissions);
  return doc;
}

function parsePermissions(el: XmlElement): PoolPermissions {
  const at = 'pool/target/permissions';
  const p: PoolPermissions = {};
  const mode = childText(el, 'mode')?.trim();
  if (mode !== undefined) {
    if (!/^[0-7]{1,4}$/.test(mode))
      throw new XmlDocumentError(`${at}/mode`, `${mode} is not octal`);
    p.mode = parseInt(mode, 8);
  }
  // libvirt writes -1 for "not set" on some versions; treat it as absent.
  const id = (tag: string) => {
    const text = childText(el, tag)?.trim();
    return text === '-1' ? undefined : optionalInteger(text, `${at}/${tag}`);
  };
  assign(p, 'owner', id('owner'));
  assign(p, 'group', id('group'));
  assign(p, 'label', childText(el, 'label'));
  return p;
}

/**
 * The fields of a pool the operator owns (see owned.ts). Permissions it does not set are
 * libvirt's: a real host reports the directory's actual mode and owner.
 */
export function ownedPoolFields(doc: PoolDocument) {
  const p = doc.target.permissions;
  return {
    type: doc.type,
    name: doc.name,
    uuid: doc.uuid.toLowerCase(),
    path: doc.target.path,
    permissions: { mode: p?.mode, owner: p?.owner, group: p?.group, label: p?.label },
  };
}
export type OwnedPoolFields = ReturnType<typeof ownedPoolFields>;

export function changedPoolFields(desired: PoolDocument, observed: PoolDocument): string[] {
  return changedFields(ownedPoolFields(desired), ownedPoolFields(observed));
}
