// The binding's streams against a real libvirtd: the tiny guest's serial console through
// virDomainOpenConsole, read and written from libvirt's event loop. The serial is a pty with
// a virtlogd log file, as the operator builds it, so the log is checked too. (The test
// driver has no consoles at all: virDomainOpenConsole is VIR_ERR_NO_SUPPORT there, checked
// last.)
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirtd, type LibvirtDaemon } from '../../../src/commands/local/libvirtd.js';
import {
  ensureTinyGuest,
  TINY_GUEST_CMDLINE,
  withoutGuestStatus,
  type TinyGuest,
} from '../../../src/commands/local/tiny-guest.js';
import {
  bindingStats,
  Connect,
  DomainConsoleFlags,
  ErrorCode,
  isLibvirtError,
  isUnsupported,
  StreamFlags,
  type Domain,
  type Stream,
} from '../../../src/libvirt/index.js';
import { uniqueName } from './fixtures.js';

let daemon: LibvirtDaemon;
let guest: TinyGuest;
let conn: Connect;
let dom: Domain | undefined;
let dir: string;

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });

function consoleDomainXML(name: string, logFile: string): string {
  return builder.build({
    domain: {
      '@_type': 'qemu',
      name,
      memory: { '@_unit': 'KiB', '#text': 131072 },
      vcpu: 1,
      os: {
        type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' },
        kernel: guest.kernel,
        initrd: guest.initrd,
        cmdline: TINY_GUEST_CMDLINE,
      },
      devices: {
        serial: {
          '@_type': 'pty',
          log: { '@_file': logFile, '@_append': 'off' },
          target: { '@_port': 0 },
        },
        controller: { '@_type': 'usb', '@_model': 'none' },
        memballoon: { '@_model': 'none' },
      },
    },
  });
}

beforeAll(async () => {
  [daemon, guest] = await Promise.all([ensureLibvirtd(), ensureTinyGuest()]);
  conn = await Connect.open(daemon.uri, { callTimeoutMs: 60_000 });
  dir = await mkdtemp(path.join(tmpdir(), 'lvbt-console-'));
});

afterAll(async () => {
  await dom?.destroy().catch(() => undefined);
  await conn?.close();
  await daemon?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Collects a stream's output as text and waits for patterns in it. */
function collect(stream: Stream) {
  let text = '';
  const waiters = new Set<() => void>();
  const ended = stream.receive((chunk) => {
    text += chunk.toString('latin1');
    for (const w of waiters) w();
  });
  ended.catch(() => undefined);
  return {
    ended,
    get text() {
      return text;
    },
    // Generous: TCG on a shared 2-core host can take minutes to boot when the machine is busy.
    async waitFor(pattern: RegExp, timeoutMs = 180_000): Promise<RegExpMatchArray> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = text.match(pattern);
        if (m) return m;
        if (Date.now() > deadline) {
          throw new Error(
            `no ${pattern} on the console after ${timeoutMs} ms; got:\n${text.slice(-800)}`,
          );
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 200);
          waiters.add(() => {
            clearTimeout(t);
            resolve();
          });
        });
        waiters.clear();
      }
    },
  };
}

/** The log file's text once it holds `text`; fails naming what is missing after `timeoutMs`. */
async function logHolding(file: string, text: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const logged = await readFile(file, 'utf8');
    if (logged.includes(text)) return logged;
    if (Date.now() > deadline)
      throw new Error(
        `no ${text} in ${file} after ${timeoutMs} ms; its end:\n${logged.slice(-400)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a domain console through the binding', () => {
  it('shows the guest booting and answers a command typed into its shell', async () => {
    const log = path.join(dir, 'serial.log');
    dom = await conn.createDomainXML(consoleDomainXML(uniqueName('console'), log));
    const stream = conn.newStream();
    expect(stream.flags).toBe(StreamFlags.NONBLOCK);
    await dom.openConsole(null, stream);
    const out = collect(stream);
    // The whole ready line, its line break included: typed while the rest of it was still on
    // its way, the echo landed inside that line, and taking the status lines out (below) took
    // the echo with it (a CI run: "…built-in commands.LVO-CONSOLE-…-42", no echo).
    await out.waitFor(/LVO-GUEST-READY \S+\r?\n/);

    const marker = randomBytes(4).toString('hex');
    // The shell computes the answer: the echoed command line itself never contains it.
    await stream.send(`echo LVO-CONSOLE-${marker}-$((6*7))\n`);
    await out.waitFor(new RegExp(`LVO-CONSOLE-${marker}-42`));
    // The shell's line editor echoes what was typed, wrapped at the terminal's width with
    // escape sequences and a line break wherever the cursor stood: compare without those. The
    // guest's own status lines (LVO-GUEST-UPTIME, every 2 s) can land inside the echo too: a
    // line break taken out would leave one there, so they go first.
    const escape = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*[A-Za-z]`, 'g');
    const echoed = withoutGuestStatus(out.text).replace(escape, '').replace(/\r?\n/g, '');
    expect(echoed).toContain(`echo LVO-CONSOLE-${marker}-$((6*7))`);

    // virtlogd writes everything the guest printed, the console session's answer included. It
    // gets the bytes through its own pipe, so the file can lag the stream: a CI run read
    // "LVO-CONSOLE-…-4" there while the stream already had the "2".
    const logged = await logHolding(log, `LVO-CONSOLE-${marker}-42`, 30_000);
    expect(logged).toMatch(/LVO-GUEST-READY \S+/);

    // A paused reader gets nothing while the guest keeps answering (its log says so) and
    // everything once it resumes.
    stream.pause();
    await stream.send(`echo LVO-PAUSED-${marker}-$((1+1))\n`);
    await logHolding(log, `LVO-PAUSED-${marker}-2`, 90_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(out.text).not.toContain(`LVO-PAUSED-${marker}-2`);
    stream.resume();
    await out.waitFor(new RegExp(`LVO-PAUSED-${marker}-2`), 30_000);

    // One session per console: a second one needs FORCE, which ends the first.
    const second = conn.newStream();
    const busy = await dom.openConsole(null, second).catch((e: unknown) => e);
    expect(isLibvirtError(busy)).toBe(true);
    expect((busy as { code: number }).code).toBe(ErrorCode.VIR_ERR_OPERATION_FAILED);
    await dom.openConsole(null, second, DomainConsoleFlags.FORCE);
    // libvirt cuts the first session off as a stream I/O failure.
    await expect(out.ended).rejects.toMatchObject({ code: ErrorCode.VIR_ERR_RPC });
    expect(stream.ended).toBe(true);
    // Sending after the end reports what ended it.
    await expect(stream.send('x')).rejects.toMatchObject({ code: ErrorCode.VIR_ERR_RPC });
    await stream.abort();
    stream.free();

    const out2 = collect(second);
    await second.send(`echo LVO-SECOND-${marker}-$((2+3))\n`);
    await out2.waitFor(new RegExp(`LVO-SECOND-${marker}-5`));

    // The domain going away ends the session: end of stream, not an error.
    await dom.destroy();
    dom = undefined;
    const end = await Promise.race([
      out2.ended.then(
        () => 'eof',
        (e: unknown) => e,
      ),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error('console did not end')), 15_000),
      ),
    ]);
    expect(end).toBe('eof');
    expect(second.ended).toBe(true);
    await second.abort().catch(() => undefined);
    second.free();
  }, 480_000);

  it('is refused by the test driver, which has no consoles', async () => {
    const test = await Connect.open('test:///default');
    try {
      const d = await test.lookupDomainByName('test');
      const st = test.newStream();
      const err = await d.openConsole(null, st).catch((e: unknown) => e);
      expect(isUnsupported(err)).toBe(true);
      st.free();
    } finally {
      await test.close();
    }
    // Nothing left registered that would keep the process alive.
    expect(bindingStats().eventRegistrations).toBe(0);
  });
});
