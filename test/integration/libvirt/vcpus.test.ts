// virDomainGetVcpus through the binding, on the test driver, compared field by field with
// libvirt's own Python binding reading the same host definition in its own process.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connect,
  DomainVcpuFlags,
  LibvirtError,
  VcpuState,
  isOperationInvalid,
} from '../../../src/libvirt/index.js';
import { domainXML, uniqueName } from './fixtures.js';

const run = promisify(execFile);
// Debian's python3-libvirt is importable by the system interpreter only.
const PYTHON = '/usr/bin/python3';

let dir: string;
let uri: string;
let conn: Connect;

// A host file of the test driver: each connection opened on it gets its own copy of this
// state, so this process and the Python process read the same domain. Three vCPUs, the
// middle one pinned, the others following the domain's cpuset.
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lvbt-vcpus-'));
  const b = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });
  const host = b.build({
    node: {
      domain: {
        '@_type': 'test',
        name: 'pinned',
        uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
        memory: 131072,
        vcpu: { '@_cpuset': '2-3', '#text': 3 },
        cputune: { vcpupin: { '@_vcpu': 1, '@_cpuset': '5' } },
        os: { type: 'hvm' },
      },
    },
  });
  await writeFile(path.join(dir, 'host.xml'), host);
  uri = `test://${path.join(dir, 'host.xml')}`;
  conn = await Connect.open(uri);
});

afterAll(async () => {
  await conn?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('Domain.getVcpus', () => {
  it('reports each vCPU of a running domain with its state, CPU time, host CPU and affinity', async () => {
    const d = await conn.lookupDomainByName('pinned');
    const vcpus = await d.getVcpus();
    expect(vcpus.map((v) => v.number)).toEqual([0, 1, 2]);
    for (const v of vcpus) {
      expect(v.state).toBe(VcpuState.RUNNING);
      expect(v.stateName).toBe('running');
      expect(typeof v.cpuTime).toBe('bigint');
      // One entry per host CPU (libvirt's CPU map of the host; the test driver's has 8).
      expect(v.affinity).toHaveLength(8);
    }
    const allowed = (i: number) => vcpus[i]!.affinity.flatMap((on, cpu) => (on ? [cpu] : []));
    expect(allowed(0)).toEqual([2, 3]);
    expect(allowed(1)).toEqual([5]);
    expect(allowed(2)).toEqual([2, 3]);
    for (let i = 0; i < 3; i++) expect(allowed(i)).toContain(vcpus[i]!.cpu);
    // The count is a separate call.
    expect(await d.getVcpusFlags(DomainVcpuFlags.LIVE)).toBe(3);
  });

  it('follows a live change of the vCPU count', async () => {
    const d = await conn.defineDomainXML(
      domainXML({ name: uniqueName('vcpus'), vcpus: 1, maxVcpus: 4 }),
    );
    try {
      await d.create();
      expect(await d.getVcpus()).toHaveLength(1);
      await d.setVcpus(3, { live: true });
      expect((await d.getVcpus()).map((v) => v.number)).toEqual([0, 1, 2]);
    } finally {
      await d.destroy().catch(() => undefined);
      await d.undefine();
    }
  });

  it('rejects for a domain that is not running, as libvirt does', async () => {
    const d = await conn.defineDomainXML(domainXML({ name: uniqueName('vcpus-off'), vcpus: 2 }));
    try {
      const err = await d.getVcpus().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LibvirtError);
      expect(isOperationInvalid(err)).toBe(true);
    } finally {
      await d.undefine();
    }
  });

  it('answers what libvirt-python answers for the same domain', async () => {
    if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing (Debian python3-libvirt)`);
    const script = [
      'import json, sys, libvirt',
      'libvirt.registerErrorHandler(lambda c, e: None, None)',
      'd = libvirt.open(sys.argv[1]).lookupByName("pinned")',
      'info, maps = d.vcpus()',
      'print(json.dumps({"info": info, "maps": maps}))',
    ].join('\n');
    const out = await run(PYTHON, ['-c', script, uri]).catch((err: Error) => {
      throw new Error(`libvirt-python (${PYTHON}, Debian python3-libvirt) failed: ${err.message}`);
    });
    const py = JSON.parse(out.stdout) as { info: number[][]; maps: boolean[][] };
    const ours = await (await conn.lookupDomainByName('pinned')).getVcpus();
    expect(ours.map((v) => [v.number, v.state, v.cpu])).toEqual(
      py.info.map(([number, state, , cpu]) => [number, state, cpu]),
    );
    expect(ours.map((v) => v.affinity)).toEqual(py.maps);
  });
});
