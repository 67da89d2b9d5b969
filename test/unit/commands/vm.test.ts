// Which kubeconfig `libvirt-operator vm` reads: kubectl's order, so a shell where kubectl
// reaches the cluster reaches it with this command too; and when `vm restart` refuses.
import { describe, expect, it } from 'vitest';
import type { VirtualMachine } from '../../../src/api/generated/types.js';
import { kubeconfigPath, pathSegmentProblem } from '../../../src/commands/flags.js';
import {
  deletionRefusal,
  powerStateHint,
  restartRefusal,
  restartWait,
} from '../../../src/commands/vm.js';
import {
  missingFirmware,
  unknownCpuModel,
} from '../../../src/controllers/virtual-machine/desired.js';
import { requestedRestart } from '../../../src/controllers/virtual-machine/plan.js';
import { restoreHoldProblem } from '../../../src/controllers/virtual-machine/status.js';

const HOME_CONFIG = '/home/u/.kube/config';
const exists = (present: boolean) => (p: string) => present && p === HOME_CONFIG;

describe("vm's kubeconfig", () => {
  it('takes --kubeconfig, then KUBECONFIG, then ~/.kube/config', () => {
    const env = { KUBECONFIG: '/env/kc' };
    expect(kubeconfigPath('/flag/kc', env, '/home/u', exists(true))).toBe('/flag/kc');
    expect(kubeconfigPath(undefined, env, '/home/u', exists(true))).toBe('/env/kc');
    expect(kubeconfigPath(undefined, {}, '/home/u', exists(true))).toBe(HOME_CONFIG);
    // An empty KUBECONFIG is unset, as for kubectl.
    expect(kubeconfigPath(undefined, { KUBECONFIG: '' }, '/home/u', exists(true))).toBe(
      HOME_CONFIG,
    );
  });

  it("falls back to the pod's service account only when there is no file to read", () => {
    expect(kubeconfigPath(undefined, {}, '/home/u', exists(false))).toBeUndefined();
  });
});

describe('vm restart on a machine that is not running', () => {
  const machine = (runStrategy: string | undefined, status: object | undefined) =>
    ({
      apiVersion: 'virt.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'web', namespace: 'lab' },
      spec: { nodeName: 'n', vcpus: 1, memory: '64Mi', ...(runStrategy ? { runStrategy } : {}) },
      status,
    }) as unknown as VirtualMachine;
  const stopped = { phase: 'Stopped', state: { state: 'shutoff', reason: 'shutdown' } };

  it('is refused with what happens instead', () => {
    expect(restartRefusal(machine('Manual', stopped), 'virtualmachine lab/web')).toBe(
      'virtualmachine lab/web is not running (phase Stopped): there is nothing to restart, and no request was written; ' +
        `runStrategy Manual keeps it stopped; to start it: kubectl patch vm web -n lab --type=merge -p '{"spec":{"runStrategy":"Always"}}'`,
    );
    const failed = {
      phase: 'Starting',
      state: { state: 'shutoff', reason: 'failed' },
      conditions: [{ type: 'Ready', status: 'False', reason: 'StartFailed', message: 'no KVM' }],
    };
    expect(restartRefusal(machine(undefined, failed), 'virtualmachine lab/web')).toMatch(
      /\(phase Starting\).*runStrategy Always starts it by itself \(Ready=False StartFailed: no KVM\)$/,
    );
    // No domain yet (Pending): nothing runs either.
    expect(restartRefusal(machine(undefined, { phase: 'Pending' }), 'x')).toMatch(/not running/);
  });

  it('goes ahead for a running or paused machine, and for one no agent reported on yet', () => {
    const running = { phase: 'Running', state: { state: 'running', reason: 'booted' } };
    const paused = { phase: 'Paused', state: { state: 'paused', reason: 'user' } };
    expect(restartRefusal(machine(undefined, running), 'x')).toBeUndefined();
    expect(restartRefusal(machine(undefined, paused), 'x')).toBeUndefined();
    expect(restartRefusal(machine(undefined, undefined), 'x')).toBeUndefined();
  });
});

describe('vm restart on a machine whose restart will wait', () => {
  // The messages the agent writes, from the functions that write them.
  const base = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name: 'web', namespace: 'lab', generation: 4 },
    spec: { nodeName: 'n1', vcpus: 1, memory: '64Mi', firmware: 'uefi' },
  } as unknown as VirtualMachine;
  const noOvmf = missingFirmware(base, { efi: false, secureBoot: false, tpmEmulator: true }, 'n1')!;
  const withConditions = (
    conditions: { type: string; status: string; reason: string; message: string }[],
    observedGeneration = 4,
  ): VirtualMachine =>
    ({
      ...base,
      status: {
        phase: 'Running',
        state: { state: 'running', reason: 'booted' },
        conditions: conditions.map((c) => ({
          ...c,
          observedGeneration,
          lastTransitionTime: '2026-01-01T00:00:00Z',
        })),
      },
    }) as unknown as VirtualMachine;
  const unsupported = (message: string) => [
    { type: 'Ready', status: 'False', reason: 'Unsupported', message },
    { type: 'Synced', status: 'False', reason: 'Unsupported', message },
  ];

  it('says why while the node lacks what the spec asks (OVMF, a CPU model)', () => {
    expect(restartWait(withConditions(unsupported(noOvmf.message)))).toBe(
      'the node cannot start the machine as its spec asks, so the guest is not stopped; it is ' +
        `restarted once that is fixed (Ready=False Unsupported: ${noOvmf.message})`,
    );
    const cpu = unknownCpuModel(
      { ...base, spec: { ...base.spec, cpu: { mode: 'custom', model: 'Frob' } } } as VirtualMachine,
      ['Haswell', 'qemu64'],
      'n1',
    )!;
    expect(restartWait(withConditions(unsupported(cpu.message)))).toMatch(
      /^the node cannot start .*\(Ready=False Unsupported: spec\.cpu\.model: QEMU on node n1 /,
    );
    // Already waiting for an earlier request: the message the agent then writes.
    const waits = requestedRestart('t', { state: 'ours', active: true }, noOvmf);
    expect(waits && 'waits' in waits).toBe(true);
    if (waits && 'waits' in waits) {
      expect(restartWait(withConditions(unsupported(waits.waits.message)))).toMatch(
        /^the node cannot start the machine/,
      );
    }
  });

  it('says why while a restore reverts the domain, not while one waits for a user', () => {
    const reverting = restoreHoldProblem(base, { name: 'r1' });
    expect(
      restartWait(
        withConditions([
          { type: 'Ready', status: 'True', reason: 'Running', message: 'running' },
          { type: 'Synced', status: 'False', ...reverting },
        ]),
      ),
    ).toBe(
      'a restore is reverting the domain; the restart waits until it has finished ' +
        `(Synced=False RestoreInProgress: ${reverting.message})`,
    );
    // A restore that waits for a user leaves runStrategy and restarts to the agent.
    const waiting = restoreHoldProblem(base, {
      name: 'r1',
      waiting: { reason: 'VolumeHasOverlays' },
    });
    expect(
      restartWait(withConditions([{ type: 'Synced', status: 'False', ...waiting }])),
    ).toBeUndefined();
  });

  it('says nothing for other problems, a healthy machine, or a problem of an older spec', () => {
    const specProblem = 'spec.volumes[0].volumeName: Volume data not found';
    expect(restartWait(withConditions(unsupported(specProblem)))).toBeUndefined();
    expect(
      restartWait(
        withConditions([{ type: 'Ready', status: 'True', reason: 'Running', message: 'ok' }]),
      ),
    ).toBeUndefined();
    expect(restartWait(withConditions(unsupported(noOvmf.message), 3))).toBeUndefined();
    expect(restartWait({ ...base })).toBeUndefined();
  });
});

describe('names on the command line', () => {
  it('refuses what is not one path segment, which would reach another URL', () => {
    expect(pathSegmentProblem('NAME', 'web')).toBeUndefined();
    expect(pathSegmentProblem('NAME', '')).toBe('NAME must not be empty');
    expect(pathSegmentProblem('namespace', '')).toBe('namespace must not be empty');
    expect(pathSegmentProblem('NAME', 'a/b')).toBe("NAME may not contain '/' or '%', got 'a/b'");
    expect(pathSegmentProblem('NAME', '..')).toBe("NAME may not be '.' or '..'");
  });
});

describe('vm start and vm stop', () => {
  it('point at spec.runStrategy with the command to run', () => {
    expect(powerStateHint('start', 'web', 'lab')).toBe(
      `vm start: a machine's power state is its spec.runStrategy, not an action; to start it: kubectl patch vm web -n lab --type=merge -p '{"spec":{"runStrategy":"Always"}}' (vm pause|unpause|restart are the actions)`,
    );
    expect(powerStateHint('stop', undefined, undefined)).toContain(
      `kubectl patch vm NAME --type=merge -p '{"spec":{"runStrategy":"Halted"}}'`,
    );
    expect(powerStateHint('pause', 'web', undefined)).toBeUndefined();
  });
});

describe('vm on a machine being deleted', () => {
  it('is refused, naming the finalizers it waits for', () => {
    const vm = (metadata: object) =>
      ({
        metadata: { name: 'web', namespace: 'lab', ...metadata },
        spec: { nodeName: 'n', vcpus: 1, memory: '64Mi' },
      }) as unknown as VirtualMachine;
    expect(
      deletionRefusal(
        vm({ deletionTimestamp: '2026-12-06T10:00:00Z', finalizers: ['virt.dev/host-cleanup'] }),
        'virtualmachine lab/web',
      ),
    ).toBe(
      'virtualmachine lab/web is being deleted (since 2026-12-06T10:00:00Z): its agent removes the domain and acts on nothing else, and no request was written; it waits for its finalizers (virt.dev/host-cleanup)',
    );
    expect(deletionRefusal(vm({}), 'x')).toBeUndefined();
  });
});
