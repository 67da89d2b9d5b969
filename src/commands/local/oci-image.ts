// Container images in OCI layout, assembled without a container engine: a tar writer for the
// layers, then the config, manifest and index as the image-spec describes them. Used for the
// agent image (`npm run image`) and the local node's pod sandbox image.
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';

/** One entry of a layer. Paths are absolute in the image ("/usr/bin/env"). */
export type LayerEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; mode?: number; data: Buffer }
  | { type: 'symlink'; path: string; target: string };

const BLOCK = 512;

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** A ustar header; names that do not fit go into a PAX extended header before it. */
function header(name: string, type: string, size: number, mode: number, linkname = ''): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii'); // mtime: fixed, so the same inputs give the same digest
  h.write('        ', 148, 'ascii'); // checksum placeholder
  h.write(type, 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function pad(data: Buffer): Buffer[] {
  const rest = data.length % BLOCK;
  return rest === 0 ? [data] : [data, Buffer.alloc(BLOCK - rest)];
}

function paxRecord(key: string, value: string): string {
  // "<length> <key>=<value>\n", where the length counts itself.
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len++;
  return `${len}${body}`;
}

/** A tar archive of the entries, in the order given (parents before children). */
export function tar(entries: LayerEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    let name = e.path.replace(/^\/+/, '');
    if (e.type === 'dir') name += '/';
    const link = e.type === 'symlink' ? e.target : '';
    const pax: string[] = [];
    if (Buffer.byteLength(name) > 99) pax.push(paxRecord('path', name));
    if (Buffer.byteLength(link) > 99) pax.push(paxRecord('linkpath', link));
    if (pax.length > 0) {
      const data = Buffer.from(pax.join(''), 'utf8');
      out.push(header('PaxHeader', 'x', data.length, 0o644), ...pad(data));
    }
    const short = name.slice(0, 99);
    if (e.type === 'dir') out.push(header(short, '5', 0, e.mode ?? 0o755));
    else if (e.type === 'symlink') out.push(header(short, '2', 0, 0o777, link.slice(0, 99)));
    else out.push(header(short, '0', e.data.length, e.mode ?? 0o644), ...pad(e.data));
  }
  out.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(out);
}

export interface ImageConfig {
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  User?: string;
}

export interface Blob {
  digest: string;
  data: Buffer;
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function blob(data: Buffer): Blob {
  return { digest: sha256(data), data };
}

export interface BuiltImage {
  /** The full reference a CRI runtime looks the image up by, e.g. docker.io/library/x:dev. */
  reference: string;
  /** The OCI layout as a tar archive, what `ctr images import` and `docker load` read. */
  archive: Buffer;
  manifestDigest: string;
  /** Uncompressed size of all layers, and their compressed size. */
  size: { uncompressed: number; compressed: number };
}

/** Docker's normalisation: "libvirt-operator:dev" is docker.io/library/libvirt-operator:dev. */
export function normalizeReference(ref: string): string {
  const slash = ref.indexOf('/');
  const first = slash < 0 ? '' : ref.slice(0, slash);
  const hasRegistry = first.includes('.') || first.includes(':') || first === 'localhost';
  const named = hasRegistry ? ref : `docker.io/${slash < 0 ? `library/${ref}` : ref}`;
  const lastPart = named.slice(named.lastIndexOf('/') + 1);
  return lastPart.includes(':') || lastPart.includes('@') ? named : `${named}:latest`;
}

/**
 * An OCI image layout (oci-layout, index.json, blobs/sha256/...) plus Docker's manifest.json,
 * packed as one tar. `reference` names it for containerd (io.containerd.image.name) and for
 * other OCI tools (org.opencontainers.image.ref.name, the tag).
 */
export function buildImage(opts: {
  reference: string;
  layers: LayerEntry[][];
  config: ImageConfig;
  created?: string;
  history?: string[];
}): BuiltImage {
  const reference = normalizeReference(opts.reference);
  const tarballs = opts.layers.map((l) => tar(l));
  const gz = tarballs.map((t) => blob(gzipSync(t, { level: 6 })));
  const created = opts.created ?? '1970-01-01T00:00:00Z';
  const config = blob(
    Buffer.from(
      JSON.stringify({
        created,
        architecture: 'amd64',
        os: 'linux',
        config: opts.config,
        rootfs: { type: 'layers', diff_ids: tarballs.map((t) => sha256(t)) },
        history: tarballs.map((_, i) => ({
          created,
          created_by: opts.history?.[i] ?? `layer ${i + 1}`,
        })),
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: config.digest,
          size: config.data.length,
        },
        layers: gz.map((l) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: l.digest,
          size: l.data.length,
        })),
      }),
    ),
  );
  const tag = reference.slice(reference.lastIndexOf(':') + 1);
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: manifest.digest,
        size: manifest.data.length,
        platform: { architecture: 'amd64', os: 'linux' },
        annotations: {
          'io.containerd.image.name': reference,
          'org.opencontainers.image.ref.name': tag,
        },
      },
    ],
  };
  const blobPath = (b: Blob) => `blobs/sha256/${b.digest.slice('sha256:'.length)}`;
  const shortName = reference.replace(/^docker\.io\/(library\/)?/, '');
  const dockerManifest = [
    { Config: blobPath(config), RepoTags: [shortName], Layers: gz.map(blobPath) },
  ];
  const entries: LayerEntry[] = [
    { type: 'file', path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { type: 'file', path: 'index.json', data: Buffer.from(JSON.stringify(index)) },
    { type: 'file', path: 'manifest.json', data: Buffer.from(JSON.stringify(dockerManifest)) },
    { type: 'dir', path: 'blobs' },
    { type: 'dir', path: 'blobs/sha256' },
    ...[config, manifest, ...gz].map((b): LayerEntry => ({
      type: 'file',
      path: blobPath(b),
      data: b.data,
    })),
  ];
  return {
    reference,
    archive: tar(entries),
    manifestDigest: manifest.digest,
    size: {
      uncompressed: tarballs.reduce((n, t) => n + t.length, 0),
      compressed: gz.reduce((n, l) => n + l.data.length, 0),
    },
  };
}
