// A restart given up (runStrategy Manual after a crash) gets the status's count written back to
// the stopped domain's metadata (forgetRestart), passes after passes until it takes. Against a
// state-based fake of a driver that refuses setMetadata: the passes of one agent, each planned
// from what the fake holds and acted on it, with the agent's HostState in between. And the
// records a start writes into the definition it starts from, which its run inherits.
import { describe, expect, it } from 'vitest';
import {
  actMachine,
  rememberRecordFailures,
  rememberRestartsUnrecordable,
} from '../../../../src/controllers/virtual-machine/act.js';
import { planMachine, type MachineStep } from '../../../../src/controllers/virtual-machine/plan.js';
import { RESTARTS_NAMESPACE, RUN_NAMESPACE } from '../../../../src/ownership/metadata.js';
import {
  DomainDeviceModifyFlags,
  ErrorCode,
  ErrorDomain,
  LibvirtError,
} from '../../../../src/libvirt/index.js';
import type { Connect, Domain } from '../../../../src/libvirt/index.js';
import { desired, NOW, observed, ours, runningStatus, vm } from './machines.js';

const machine = vm(
  { runStrategy: 'Manual' },
  { status: runningStatus({ state: { state: 'shutoff', reason: 'crashed' }, restartCount: 2 }) },
);
const UID = String(machine.metadata.uid);

/** A stopped domain whose definition records 3 restarts; `refuse`: setMetadata's error code. */
function host(refuse: number | undefined) {
  const state = { restarts: 3, calls: 0 };
  const domain = {
    setMetadata: (_type: number, xml: string) => {
      state.calls++;
      if (refuse !== undefined)
        return Promise.reject(
          new LibvirtError('this function is not supported by the connection driver', {
            code: refuse,
            domain: ErrorDomain.VIR_FROM_DOMAIN,
            level: 2,
          }),
        );
      state.restarts = Number(/count="(\d+)"/.exec(xml)?.[1]);
      return Promise.resolve();
    },
  } as unknown as Domain;
  return { domain, state };
}

/** `n` passes of one agent: plan from the fake's state, act on it, remember the outcome. */
async function passes(fake: ReturnType<typeof host>, n: number) {
  const unrecordable = new Set<string>();
  const logged: string[] = [];
  const warned: string[] = [];
  const failuresLogged = new Map<string, Set<string>>();
  const log = {
    info: (_fields: object, msg: string) => void logged.push(msg),
    warn: (_fields: object, msg: string) => void warned.push(msg),
  };
  for (let i = 0; i < n; i++) {
    const config = { ...desired(machine), restarts: fake.state.restarts };
    const plan = planMachine({
      vm: machine,
      desired: desired(machine),
      cloudInit: undefined,
      observed: observed(
        ours({ config, active: false, power: { state: 'shutoff', reason: 'crashed' } }),
      ),
      now: NOW,
      restartsUnrecordable: unrecordable.has(UID),
    });
    const outcome = await actMachine({} as Connect, fake.domain, plan.steps);
    rememberRestartsUnrecordable(unrecordable, UID, outcome, log as never);
    rememberRecordFailures(failuresLogged, UID, outcome, log as never);
  }
  return { logged, warned, unrecordable };
}

describe('forgetRestart on a driver that refuses domain metadata', () => {
  it('writes the count back once where the driver takes it', async () => {
    const fake = host(undefined);
    await passes(fake, 3);
    expect(fake.state).toEqual({ restarts: 2, calls: 1 });
  });

  it.each([ErrorCode.VIR_ERR_NO_SUPPORT, ErrorCode.VIR_ERR_OPERATION_UNSUPPORTED])(
    'stops asking after an unsupported refusal (code %s), said once',
    async (code) => {
      const fake = host(code);
      const { logged, unrecordable } = await passes(fake, 3);
      expect(fake.state).toEqual({ restarts: 3, calls: 1 });
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatch(/does not support domain metadata/);
      expect([...unrecordable]).toEqual([UID]);
    },
  );

  it('keeps asking after another error, which may pass, and says so once', async () => {
    const fake = host(ErrorCode.VIR_ERR_INTERNAL_ERROR);
    const { logged, warned } = await passes(fake, 3);
    expect(fake.state.calls).toBe(3);
    expect(logged).toEqual([]);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/refused to record the restart count/);
  });
});

describe('a start', () => {
  it('records the generation it runs under in both definitions once the domain has started', async () => {
    const calls: string[] = [];
    const domain = {
      setMetadata: (_type: number, xml: string, key: string, uri: string, flags: number) => {
        calls.push(`setMetadata ${key} ${uri} ${flags} ${xml.trim()}`);
        return Promise.resolve();
      },
      create: () => {
        calls.push('create');
        return Promise.resolve();
      },
    } as unknown as Domain;
    const start = { op: 'start', kind: 'restart', after: { state: 'shutoff', reason: 'crashed' } };
    const outcome = await actMachine({} as Connect, domain, [
      { ...start, restartCount: 3, generation: 5 } as MachineStep,
    ]);
    expect(outcome.failure).toBeUndefined();
    // The restart count in the definition it starts from (CONFIG, 2), which the run inherits;
    // the generation after the create, in both (LIVE|CONFIG, 3): a call between a new
    // machine's define and its start widened the window in which a snapshot found it shut off.
    expect(calls).toEqual([
      `setMetadata lvor ${RESTARTS_NAMESPACE} 2 <restarts count="3"/>`,
      'create',
      `setMetadata lvorun ${RUN_NAMESPACE} 3 <run generation="5"/>`,
    ]);
    // A run without a record gets it in its live definition (LIVE, 1), nothing else.
    calls.length = 0;
    await actMachine({} as Connect, domain, [{ op: 'recordRun', generation: 4 }]);
    expect(calls).toEqual([`setMetadata lvorun ${RUN_NAMESPACE} 1 <run generation="4"/>`]);
    // A run caught up with a live edit: in both (LIVE|CONFIG, 3), for a later `virsh start`.
    calls.length = 0;
    await actMachine({} as Connect, domain, [{ op: 'recordRun', generation: 6, persistent: true }]);
    expect(calls).toEqual([`setMetadata lvorun ${RUN_NAMESPACE} 3 <run generation="6"/>`]);
  });
});

// A driver that keeps refusing the run's record for another reason than lacking the call: no
// pass fails for it, each pass asks again (it may pass), and the log says so once per kind of
// refusal, not at every pass.
describe("a run's record the driver refuses", () => {
  const error = (code: number) =>
    new LibvirtError(`refused (${code})`, { code, domain: ErrorDomain.VIR_FROM_DOMAIN, level: 2 });
  function refusing() {
    const state: { refuse: number | undefined; calls: number } = {
      refuse: ErrorCode.VIR_ERR_INTERNAL_ERROR,
      calls: 0,
    };
    const domain = {
      setMetadata: () => {
        state.calls++;
        return state.refuse === undefined ? Promise.resolve() : Promise.reject(error(state.refuse));
      },
      create: () => Promise.resolve(),
    } as unknown as Domain;
    return { domain, state };
  }

  it('fails no pass, is asked again at each, and is logged once per kind of error', async () => {
    const fake = refusing();
    const logged = new Map<string, Set<string>>();
    const warned: Array<{ fields: Record<string, unknown>; msg: string }> = [];
    const log = {
      warn: (fields: Record<string, unknown>, msg: string) => warned.push({ fields, msg }),
    };
    const pass = async (steps: MachineStep[]) => {
      const outcome = await actMachine({} as Connect, fake.domain, steps);
      rememberRecordFailures(logged, UID, outcome, log as never);
      return outcome;
    };
    const start = { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } };
    const steps: MachineStep[][] = [
      [{ ...start, generation: 5 } as MachineStep],
      [{ op: 'recordRun', generation: 5 }],
      [{ op: 'recordRun', generation: 6, persistent: true }],
    ];
    for (const s of steps) {
      const outcome = await pass(s);
      expect(outcome.failure).toBeUndefined();
      expect(outcome.executed).toEqual(s);
      expect(outcome.restartsUnrecordable).toBeUndefined();
    }
    expect(fake.state.calls).toBe(3);
    expect(warned).toHaveLength(1);
    expect(warned[0]?.msg).toMatch(/refused to record the run's generation/);
    expect(warned[0]?.fields).toMatchObject({
      uid: UID,
      record: 'run',
      error: {
        code: 'VIR_ERR_INTERNAL_ERROR',
        message: `refused (${ErrorCode.VIR_ERR_INTERNAL_ERROR})`,
      },
    });
    // Another kind of refusal is said too, once; another machine's as well.
    fake.state.refuse = ErrorCode.VIR_ERR_OPERATION_TIMEOUT;
    await pass([{ op: 'recordRun', generation: 6 }]);
    await pass([{ op: 'recordRun', generation: 6 }]);
    expect(warned.map((w) => (w.fields.error as { code: string }).code)).toEqual([
      'VIR_ERR_INTERNAL_ERROR',
      'VIR_ERR_OPERATION_TIMEOUT',
    ]);
    const other = await actMachine({} as Connect, fake.domain, [
      { op: 'recordRun', generation: 1 },
    ]);
    rememberRecordFailures(logged, 'another-uid', other, log as never);
    expect(warned).toHaveLength(3);
    // A record that takes ends the episode: the same refusal later is said again, for that
    // sort of record only (a restart count written says nothing of the run's record).
    fake.state.refuse = undefined;
    await pass([{ op: 'forgetRestart', restartCount: 2 }]);
    fake.state.refuse = ErrorCode.VIR_ERR_INTERNAL_ERROR;
    await pass([{ op: 'recordRun', generation: 7 }]);
    expect(warned).toHaveLength(3);
    fake.state.refuse = undefined;
    await pass([{ op: 'recordRun', generation: 7 }]);
    fake.state.refuse = ErrorCode.VIR_ERR_INTERNAL_ERROR;
    await pass([{ op: 'recordRun', generation: 7 }]);
    await pass([{ op: 'recordRun', generation: 7 }]);
    expect(warned).toHaveLength(4);
    expect(warned[3]?.msg).toMatch(/refused to record the run's generation/);
  });

  // A pass with no steps writes the record from what it first saw: a guest that shut down in
  // between is no refusal worth a line (libvirt: "domain is not running"), nor is a domain
  // undefined meanwhile; the same code for a domain that still runs is.
  it('is quiet for a run that ended meanwhile', async () => {
    const notRunning = new LibvirtError('Requested operation is not valid: domain is not running', {
      code: ErrorCode.VIR_ERR_OPERATION_INVALID,
      domain: ErrorDomain.VIR_FROM_DOMAIN,
      level: 2,
    });
    const gone = new LibvirtError('Domain not found', {
      code: ErrorCode.VIR_ERR_NO_DOMAIN,
      domain: ErrorDomain.VIR_FROM_DOMAIN,
      level: 2,
    });
    const cases: Array<[string, Error, () => Promise<boolean>, number]> = [
      ['shut down', notRunning, () => Promise.resolve(false), 0],
      ['shut down, then undefined', notRunning, () => Promise.reject(gone), 0],
      ['undefined', gone, () => Promise.resolve(false), 0],
      ['still running', notRunning, () => Promise.resolve(true), 1],
    ];
    for (const [what, refusal, isActive, logs] of cases) {
      const domain = {
        setMetadata: () => Promise.reject(refusal),
        isActive,
      } as unknown as Domain;
      const warned: string[] = [];
      const outcome = await actMachine({} as Connect, domain, [
        { op: 'recordRun', generation: 4, persistent: true },
      ]);
      rememberRecordFailures(new Map(), UID, outcome, {
        warn: (_f: object, m: string) => warned.push(m),
      } as never);
      expect([what, outcome.failure, warned.length]).toEqual([what, undefined, logs]);
    }
  });

  // libvirt (the test driver as libvirtd) refuses a LIVE|CONFIG change of a stopped domain
  // whole, "domain is not running", and takes a CONFIG one: the persistent definition still
  // gets the record, which a later `virsh start` from it inherits (else the older one there).
  it('still records into the persistent definition of a run that ended meanwhile', async () => {
    const writes: number[] = [];
    const domain = {
      setMetadata: (_t: number, _x: string, _k: string, _u: string, flags: number) => {
        if (flags & DomainDeviceModifyFlags.LIVE)
          return Promise.reject(
            new LibvirtError('Requested operation is not valid: domain is not running', {
              code: ErrorCode.VIR_ERR_OPERATION_INVALID,
              domain: ErrorDomain.VIR_FROM_DOMAIN,
              level: 2,
            }),
          );
        writes.push(flags);
        return Promise.resolve();
      },
      isActive: () => Promise.resolve(false),
      create: () => Promise.resolve(),
    } as unknown as Domain;
    const start = { op: 'start', kind: 'initial', after: { state: 'shutoff', reason: 'unknown' } };
    const cases: Array<[string, MachineStep, number[]]> = [
      ['caught up', { op: 'recordRun', generation: 4, persistent: true }, [2]],
      ['started', { ...start, generation: 4 } as MachineStep, [2]],
      // A live record only: nothing in the persistent definition.
      ['without a record', { op: 'recordRun', generation: 4 }, []],
    ];
    for (const [what, step, want] of cases) {
      writes.length = 0;
      const outcome = await actMachine({} as Connect, domain, [step]);
      expect([what, outcome.failure, outcome.recordFailures, writes]).toEqual([
        what,
        undefined,
        undefined,
        want,
      ]);
    }
  });
});
