// The HTTP import's download and verification against a real HTTP server on loopback.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadVerified, ImportError } from '../../../../src/controllers/volume/import.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const raw = Buffer.alloc(5 * 1024 * 1024 + 3, 0x5a);
const qcow2 = (() => {
  const b = Buffer.alloc(65536);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  b.writeBigUInt64BE(2n ** 30n, 24);
  return b;
})();
const withBacking = Buffer.from(qcow2);
withBacking.writeBigUInt64BE(0x200n, 8);

let server: Server;
let base: string;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lvo-dl-'));
  server = createServer((req, res) => {
    const send = (
      body: Buffer,
      headers: Record<string, string | number> = { 'content-length': body.length },
    ) => {
      res.writeHead(200, headers);
      res.end(body);
    };
    switch (req.url) {
      case '/raw.img':
        return send(raw);
      case '/qcow2.img':
        return send(qcow2);
      case '/backing.img':
        return send(withBacking);
      case '/chunked.img':
        return send(raw, {}); // no content-length: chunked transfer
      case '/redirect':
        res.writeHead(302, { location: '/raw.img' });
        return res.end();
      case '/slow.img': {
        res.writeHead(200, { 'content-length': raw.length });
        res.write(raw.subarray(0, 1024));
        return; // never finishes
      }
      case '/cut.img': {
        res.writeHead(200, { 'content-length': raw.length });
        res.write(raw.subarray(0, 1024), () => res.destroy());
        return;
      }
      default: {
        // /status/NNN answers HTTP NNN; anything else is not found.
        const code = /^\/status\/(\d{3})$/.exec(req.url ?? '')?.[1];
        res.writeHead(code ? Number(code) : 404);
        return res.end();
      }
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

const target = (name: string) => path.join(dir, 'imports', name);
const failure = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImportError);
  return err as ImportError;
};

describe('downloadVerified', () => {
  it('streams the file, reports progress and returns what the image is', async () => {
    const progress: Array<[number, number | undefined]> = [];
    const image = await downloadVerified({
      url: `${base}/raw.img`,
      sha256: sha(raw),
      format: 'raw',
      file: target('a.img'),
      onProgress: (done, total) => progress.push([done, total]),
    });
    expect(image).toEqual({
      format: 'raw',
      virtualSize: BigInt(raw.length),
      fileSize: BigInt(raw.length),
    });
    expect(sha(await readFile(target('a.img')))).toBe(sha(raw));
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.at(-1)).toEqual([raw.length, raw.length]);
    expect(progress.every(([d], i) => i === 0 || d >= progress[i - 1]![0])).toBe(true);
  });

  it('reads a qcow2 header, follows redirects, and copes without a content-length', async () => {
    expect(
      await downloadVerified({
        url: `${base}/qcow2.img`,
        sha256: sha(qcow2),
        file: target('q.img'),
      }),
    ).toEqual({
      format: 'qcow2',
      virtualSize: 2n ** 30n,
      fileSize: 65536n,
    });
    await downloadVerified({ url: `${base}/redirect`, sha256: sha(raw), file: target('r.img') });
    const totals: Array<number | undefined> = [];
    await downloadVerified({
      url: `${base}/chunked.img`,
      sha256: sha(raw),
      file: target('c.img'),
      onProgress: (_d, t) => totals.push(t),
    });
    expect(totals.every((t) => t === undefined)).toBe(true);
  });

  it('removes the file when the digest does not match, naming both digests', async () => {
    const err = await failure(
      downloadVerified({ url: `${base}/raw.img`, sha256: '0'.repeat(64), file: target('bad.img') }),
    );
    expect(err.reason).toBe('ChecksumMismatch');
    expect(err.message).toContain(sha(raw));
    expect(err.message).toContain('0'.repeat(64));
    expect(await readdir(path.join(dir, 'imports'))).not.toContain('bad.img');
  });

  it('refuses an image of another format than spec.format, and a qcow2 with a backing file', async () => {
    const mismatch = await failure(
      downloadVerified({
        url: `${base}/qcow2.img`,
        sha256: sha(qcow2),
        format: 'raw',
        file: target('m.img'),
      }),
    );
    expect(mismatch.reason).toBe('FormatMismatch');
    const backing = await failure(
      downloadVerified({
        url: `${base}/backing.img`,
        sha256: sha(withBacking),
        file: target('b.img'),
      }),
    );
    expect(backing.reason).toBe('InvalidImage');
    expect(backing.message).toContain('backing file');
    const files = await readdir(path.join(dir, 'imports'));
    expect(files).not.toContain('m.img');
    expect(files).not.toContain('b.img');
  });

  // A 4xx is the server refusing the URL (only a user changes that: Stalled); 408, 429 and
  // 5xx say "later" (ImportFailed, Reconciling). All of them read ImportFailed before.
  it('calls an HTTP 4xx other than 408/429 SourceRefused, naming the status and what to do', async () => {
    for (const url of [`${base}/nope`, `${base}/status/403`, `${base}/status/410`]) {
      const err = await failure(downloadVerified({ url, sha256: sha(raw), file: target('n.img') }));
      expect(err.reason).toBe('SourceRefused');
      expect(err.message).toMatch(/HTTP 4\d\d .*publish the image there, or re-create the Volume/);
    }
    for (const code of [408, 429, 500, 503]) {
      const err = await failure(
        downloadVerified({
          url: `${base}/status/${code}`,
          sha256: sha(raw),
          file: target('n.img'),
        }),
      );
      expect(err).toMatchObject({
        reason: 'ImportFailed',
        message: expect.stringContaining(`HTTP ${code}`),
      });
    }
    expect(await readdir(path.join(dir, 'imports'))).not.toContain('n.img');
  });

  it('reports refused connections and cut transfers as ImportFailed', async () => {
    const closed = await new Promise<number>((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as AddressInfo).port;
        s.close(() => r(port));
      });
    });
    expect(
      await failure(
        downloadVerified({
          url: `http://127.0.0.1:${closed}/x`,
          sha256: sha(raw),
          file: target('x.img'),
        }),
      ),
    ).toMatchObject({ reason: 'ImportFailed', message: expect.stringContaining('ECONNREFUSED') });
    const cut = await failure(
      downloadVerified({ url: `${base}/cut.img`, sha256: sha(raw), file: target('cut.img') }),
    );
    expect(cut).toMatchObject({
      reason: 'ImportFailed',
      message: expect.stringContaining('failed after'),
    });
    expect(await readdir(path.join(dir, 'imports'))).not.toContain('cut.img');
  });

  it('stops on abort and removes the partial file', async () => {
    const abort = new AbortController();
    let firstBytes!: () => void;
    const started = new Promise<void>((r) => (firstBytes = r));
    const download = downloadVerified({
      url: `${base}/slow.img`,
      sha256: sha(raw),
      file: target('slow.img'),
      signal: abort.signal,
      onProgress: () => firstBytes(),
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await started;
    abort.abort();
    const err = await download;
    expect(err).toBeDefined();
    expect(err).not.toBeInstanceOf(ImportError);
    expect(await readdir(path.join(dir, 'imports'))).not.toContain('slow.img');
  });
});
