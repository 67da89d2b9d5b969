// Shared by the VirtualMachine reconcile tests: objects in the real API server (including the
// statuses of the Volumes and VirtualNetworks a machine refers to, which those kinds' own
// controllers would write), and a recording view of the libvirt binding.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { Connect } from '../../../../src/libvirt/index.js';
import { snapshotContext, type SnapshotContext } from '../../../harness/controller-context.js';
import { kube, type Kube } from '../../../harness/kube-objects.js';

// Calls that only read. Anything else a controller calls through the binding counts as a write:
// an unknown method is a write until shown otherwise.
const READS = /^(get|lookup|is|list|numOf|memoryStats|interfaceAddresses|nodeGet)/;

export interface Recording {
  /** The connection to hand to the controller. */
  conn: Connect;
  /** Every binding call made through it, as "Class.method", in order. */
  calls: string[];
  /** The calls that are not reads. */
  writes(): string[];
  reset(): void;
  /**
   * Until cleared (undefined), calls of `call` ("Class.method") reject with `err` instead of
   * reaching libvirt: a refusal of the real QEMU driver that the test driver cannot produce
   * (it has no suspend to RAM, so it never refuses an ACPI request of a running domain).
   */
  refuse(call: string, err: Error | undefined): void;
}

/**
 * Wraps a Connect so that every method call on it and on the objects it returns (Domain,
 * Network, ...) is recorded by name, then forwarded to the real object. This observes what
 * the controller asked libvirt to do; it changes nothing about what libvirt does (except the
 * calls a test asks it to refuse).
 */
export function recording(conn: Connect): Recording {
  const calls: string[] = [];
  const refusals = new Map<string, Error>();
  const wrapped = new WeakMap<object, object>();
  const wrap = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(wrap);
    if (typeof value !== 'object' || value === null || value instanceof Promise) return value;
    const cls = value.constructor?.name;
    if (!['Connect', 'Domain', 'Network', 'StoragePool', 'StorageVol'].includes(cls)) return value;
    const known = wrapped.get(value);
    if (known) return known;
    const proxy = new Proxy(value, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== 'function' || prop === 'constructor') return v;
        return (...args: unknown[]) => {
          const call = `${cls}.${String(prop)}`;
          calls.push(call);
          const refusal = refusals.get(call);
          if (refusal) return Promise.reject(refusal);
          const result = (v as (...a: unknown[]) => unknown).apply(target, args);
          return result instanceof Promise ? result.then(wrap) : wrap(result);
        };
      },
    });
    wrapped.set(value, proxy);
    return proxy;
  };
  return {
    conn: wrap(conn) as Connect,
    calls,
    writes: () => calls.filter((c) => !READS.test(c.slice(c.indexOf('.') + 1))),
    reset: () => {
      calls.length = 0;
    },
    refuse: (call, err) => {
      if (err) refusals.set(call, err);
      else refusals.delete(call);
    },
  };
}

/** What each VirtualMachine reconcile test file works with: one of each, for the whole file. */
export interface MachineBench {
  /** The real test-driver connection (for the test's own reads and set-up). */
  conn: Connect;
  /** The recording view the controller is given. */
  rec: Recording;
  ctx: SnapshotContext;
  k: Kube;
  stateDir: string;
  close(): Promise<void>;
}

/**
 * Opens test:///default, a recording view of it, a state directory and a controller context on
 * the file's control plane, and creates the file's namespace.
 */
export async function openMachineBench(
  kubeConfig: KubeConfig,
  opts: { namespace: string; nodeName: string },
): Promise<MachineBench> {
  const conn = await Connect.open('test:///default');
  const rec = recording(conn);
  const stateDir = mkdtempSync(join(tmpdir(), `lvo-${opts.namespace}-`));
  const ctx = snapshotContext({ kubeConfig, conn: rec.conn, nodeName: opts.nodeName, stateDir });
  const k = kube(kubeConfig);
  await k.namespace(opts.namespace);
  return {
    conn,
    rec,
    ctx,
    k,
    stateDir,
    close: async () => {
      await conn.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** A Volume as the Volume controller leaves it once its file exists. */
export async function readyVolume(
  k: Kube,
  ref: { namespace: string; nodeName: string },
  name: string,
  format: 'qcow2' | 'raw',
  path: string,
): Promise<void> {
  await k.create('Volume', {
    metadata: { name, namespace: ref.namespace },
    spec: { nodeName: ref.nodeName, pool: 'images', capacity: '1Gi', format },
  });
  await k.patchStatus('Volume', ref.namespace, name, { phase: 'Available', path });
}
