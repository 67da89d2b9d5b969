// Under `set -o pipefail` a pipeline fails when any stage fails, and a reader that stops
// early (head, grep -q, sed q, awk exit) makes the stage feeding it die of SIGPIPE whenever
// that stage is still writing: a timing race that failed the set-up about once in a hundred
// runs (`etcd --version | head -1`). This scans every tracked shell script for such a pipe.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../src/commands/local/package-root.js';

const ROOT = packageRoot();

export interface EarlyExitPipe {
  /** 1-based line where the pipeline starts. */
  line: number;
  reader: string;
  text: string;
}

/** A stage that may exit before it has read all of its input. */
const EARLY_READERS: Array<[string, RegExp]> = [
  ['head', /^head\b/],
  [
    'grep -q/-m/-l',
    /^grep\b(?:\s+-[A-Za-z]*[qml]|.*\s--(?:quiet|silent|max-count|files-with-matches)\b)/,
  ],
  ['sed with q', /^sed\b.*(?:^|[\s'";{])\d*[qQ](?:[\s'";}]|$)/],
  ['awk with exit', /^awk\b.*\bexit\b/],
];

/**
 * Logical lines of a shell script (continuations joined, comment lines and here-document
 * bodies dropped), each with the line it starts on.
 */
function logicalLines(text: string): Array<{ line: number; text: string }> {
  const out: Array<{ line: number; text: string }> = [];
  const lines = text.split('\n');
  // `open`: the pending line goes on (a trailing backslash or pipe).
  let pending: { line: number; text: string; open: boolean } | undefined;
  let heredocEnd: string | undefined;
  const flush = () => {
    if (pending) out.push({ line: pending.line, text: pending.text });
    pending = undefined;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (heredocEnd !== undefined) {
      if (line === heredocEnd) heredocEnd = undefined;
      continue;
    }
    if (line === '') flush();
    if (line === '' || line.startsWith('#')) continue;
    const doc = /<<-?\s*(['"]?)(\w+)\1/.exec(line);
    if (doc) heredocEnd = doc[2];
    const continued = line.endsWith('\\');
    const body = continued ? line.slice(0, -1).trim() : line;
    // A line that starts with a pipe continues the previous pipeline.
    if (pending && (pending.open || body.startsWith('|'))) {
      pending.text += ' ' + body;
    } else {
      flush();
      pending = { line: i + 1, text: body, open: false };
    }
    pending.open = continued || body.endsWith('|');
  }
  flush();
  return out;
}

/** Pipes into an early-exiting reader in a script that sets pipefail ([] when it does not). */
export function earlyExitPipes(script: string): EarlyExitPipe[] {
  if (!/^\s*set\s+(?:-[A-Za-z]*\s+)*-[A-Za-z]*o\s+pipefail\b/m.test(script)) return [];
  const found: EarlyExitPipe[] = [];
  for (const { line, text } of logicalLines(script)) {
    // Stages after a single `|` (not `||`); quotes are not parsed, which errs on flagging.
    const stages = text.split(/(?<!\|)\|(?!\|)/).slice(1);
    for (const stage of stages) {
      const s = stage.trim().replace(/^(?:LC_ALL=\S+\s+)+/, '');
      const hit = EARLY_READERS.find(([, re]) => re.test(s));
      if (hit) found.push({ line, reader: hit[0], text });
    }
  }
  return found;
}

function trackedShellScripts(): string[] {
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter(Boolean);
  return files.filter((f) => {
    if (f.endsWith('.sh')) return true;
    if (f.includes('node_modules/')) return false;
    try {
      return /^#!.*\b(?:ba|da|z)?sh\b/.test(readFileSync(join(ROOT, f), 'utf8').slice(0, 100));
    } catch {
      return false;
    }
  });
}

describe('no pipe into an early-exiting reader under pipefail', () => {
  it('flags the patterns that race with SIGPIPE', () => {
    const sample = [
      '#!/usr/bin/env bash',
      'set -euo pipefail',
      '"$DEST/etcd" --version | head -1',
      'x="$(ls "$WORK"/*.deb 2>/dev/null | head -n1)"',
      'apt-cache depends foo \\',
      "  | sed -n 's/a/b/p' | head -n1",
      'dpkg-query -W x | grep -q "install ok installed"',
      'find . -name x | grep -m1 x',
      "printf 'a\\nb\\n' | sed -n '1p;q'",
      "seq 10 | awk '{print; exit}'",
      'cat <<EOF',
      'inside | head -1 is a here-document, not a pipeline',
      'EOF',
    ].join('\n');
    expect(earlyExitPipes(sample).map((p) => [p.line, p.reader])).toEqual([
      [3, 'head'],
      [4, 'head'],
      [5, 'head'],
      [7, 'grep -q/-m/-l'],
      [8, 'grep -q/-m/-l'],
      [9, 'sed with q'],
      [10, 'awk with exit'],
    ]);
  });

  it('leaves readers that consume all input alone, and scripts without pipefail', () => {
    const safe = [
      'set -euo pipefail',
      "apt-cache depends foo | sed -n 's/a/b/p' | sed -n 1p",
      'ls -1dt x | tail -n +9 | while read -r d; do :; done',
      '"$BUSYBOX" --list | grep -x udhcpc >/dev/null',
      'apt-get download x 2>&1 | grep -v unsandboxed >&2 || true',
      'find . -name x -print -quit',
      'a || head -1 file',
    ].join('\n');
    expect(earlyExitPipes(safe)).toEqual([]);
    expect(earlyExitPipes('#!/bin/sh\nset -e\nfoo | head -1\n')).toEqual([]);
  });

  it('finds none in the tracked shell scripts', () => {
    const scripts = trackedShellScripts();
    expect(scripts).toContain('scripts/provision-control-plane.sh');
    expect(scripts).toContain('scripts/build-tiny-guest.sh');
    const problems = scripts.flatMap((file) =>
      earlyExitPipes(readFileSync(join(ROOT, file), 'utf8')).map(
        (p) => `${file}:${p.line}: pipe into ${p.reader} under pipefail: ${p.text}`,
      ),
    );
    expect(problems).toEqual([]);
  });
});
