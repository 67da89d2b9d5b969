// The cloud-init NoCloud seed of a VirtualMachine: which files go on the ISO, and where the ISO
// lives. Pure; writing the ISO is iso.ts.
//
// The ISO is named `<stateDir>/cloud-init/<metadata.uid>-<digest>.iso`, the digest covering
// the files' content. A changed spec.cloudInit therefore gives a new file name, which is a
// restart-time change of the domain's CD-ROM like any other, and "is the ISO current?" is a
// file-exists check: genisoimage embeds timestamps, so comparing ISO bytes would never match.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { VirtualMachine } from '../../api/generated/types.js';

/** The NoCloud volume label cloud-init looks for. */
export const CLOUD_INIT_LABEL = 'cidata';

export interface CloudInitImage {
  /** Absolute path of the ISO on this host. */
  path: string;
  /** File name on the ISO -> content. */
  files: Readonly<Record<string, string>>;
}

export function cloudInitDir(stateDir: string): string {
  return join(stateDir, 'cloud-init');
}

/** ISOs of this object have this file-name prefix (used to prune stale ones and on deletion). */
export function cloudInitPrefix(uid: string): string {
  return `${uid}-`;
}

/**
 * The seed files for spec.cloudInit given inline, or undefined without cloudInit. meta-data
 * defaults to instance-id = metadata.uid and local-hostname = metadata.name; user-data to an
 * empty file (NoCloud wants both to exist); network-config only when given. secretRef is not
 * resolved here: see unsupportedSpec in desired.ts.
 */
export function cloudInitFiles(vm: VirtualMachine): Record<string, string> | undefined {
  const ci = vm.spec.cloudInit;
  if (!ci) return undefined;
  const files: Record<string, string> = {
    'meta-data':
      ci.metaData ??
      stringify({ 'instance-id': vm.metadata.uid, 'local-hostname': vm.metadata.name }),
    'user-data': ci.userData ?? '',
  };
  if (ci.networkData !== undefined) files['network-config'] = ci.networkData;
  return files;
}

export function cloudInitImage(vm: VirtualMachine, stateDir: string): CloudInitImage | undefined {
  const files = cloudInitFiles(vm);
  if (!files) return undefined;
  const digest = createHash('sha256');
  for (const name of Object.keys(files).sort()) {
    // Length-prefixed, so no two different file sets hash alike.
    digest.update(`${name}\0${Buffer.byteLength(files[name] ?? '')}\0${files[name] ?? ''}`);
  }
  const uid = String(vm.metadata.uid);
  const name = `${cloudInitPrefix(uid)}${digest.digest('hex').slice(0, 16)}.iso`;
  return { path: join(cloudInitDir(stateDir), name), files };
}
