import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { isVirtGroup, validateManifest } from '../api/validate.js';
import { command, type Options, UsageError } from './flags.js';

const HELP = `usage: libvirt-operator validate -f FILE|DIR|- [-f ...]

Checks virt.dev/v1alpha1 manifests offline against the CRD schemas and the intent of their CEL
rules, giving the verdict the API server would give on create. Reads multi-document YAML or
JSON; a DIR is searched recursively for *.yaml, *.yml and *.json (one without any is a
problem); '-' reads standard input. Objects of other API groups are skipped. Prints one line per problem:

  FILE: KIND/NAME: FIELD: MESSAGE

Exit status: 0 no problems, 1 problems (or unreadable input), 2 usage error.

  -f, --filename   a file, a directory or '-' (repeatable)`;

/** One input to check: where it came from (for messages) and how to read it. */
interface Source {
  label: string;
  read: () => string;
}

/** What came out of one source: problem lines, and how many of our objects it held. */
interface Findings {
  lines: string[];
  objects: number;
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return filesUnder(path);
      return entry.isFile() && MANIFEST_FILE.test(entry.name) ? [path] : [];
    });
}

/** Where the command reads standard input and writes its lines; a parameter so tests can feed it. */
export interface ValidateIO {
  readStdin(): string;
  out(line: string): void;
  err(line: string): void;
}

const processIO: ValidateIO = {
  readStdin: () => readFileSync(0, 'utf8'),
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

function sourcesOf(target: string, io: ValidateIO): Source[] {
  if (target === '-') return [{ label: '<stdin>', read: () => io.readStdin() }];
  const stat = statSync(target); // throws ENOENT etc.; reported by the caller
  if (stat.isDirectory())
    return filesUnder(target).map((path) => ({
      label: path,
      read: () => readFileSync(path, 'utf8'),
    }));
  return [{ label: target, read: () => readFileSync(target, 'utf8') }];
}

function systemMessage(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const reasons: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    EISDIR: 'is a directory',
    ENOTDIR: 'not a directory',
  };
  return (e.code && reasons[e.code]) ?? (e.message ?? String(err)).split('\n')[0] ?? '';
}

// A hostile kind or name must not break the one-problem-per-line output.
const printable = (s: string): string => (/^[!-~]*$/.test(s) ? s : JSON.stringify(s));

function describe(obj: Record<string, unknown>, index: number): string {
  const kind = typeof obj.kind === 'string' && obj.kind !== '' ? printable(obj.kind) : '<no kind>';
  const meta = obj.metadata as Record<string, unknown> | undefined;
  const name =
    typeof meta?.name === 'string' && meta.name !== ''
      ? printable(meta.name)
      : `<document ${index + 1}>`;
  return `${kind}/${name}`;
}

// kubectl accepts a v1 List of objects in one document; so do we.
function objectsOf(doc: unknown): unknown[] {
  const d = doc as Record<string, unknown> | null;
  if (d && d.apiVersion === 'v1' && d.kind === 'List' && Array.isArray(d.items)) return d.items;
  return doc === null || doc === undefined ? [] : [doc];
}

/** Checks one source's text; pure apart from the messages it returns. */
export function checkManifests(label: string, text: string): Findings {
  // YAML 1.1, as kubectl reads manifests: 'no', 'on', 'y' are booleans there, and a value the
  // user meant as a string must be quoted for the API server too.
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, {
    version: '1.1',
    uniqueKeys: true,
    prettyErrors: false,
    lineCounter,
  });
  const lines: string[] = [];
  let objects = 0;
  const all = Array.isArray(docs) ? docs : [docs];
  all.forEach((doc, index) => {
    const error = doc.errors[0];
    if (error) {
      const at = lineCounter.linePos(error.pos[0]);
      const where = `line ${at.line}, column ${at.col}`;
      lines.push(`${label}: ${where}: invalid YAML: ${error.message.split('\n')[0]}`);
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      lines.push(
        `${label}: document ${index + 1}: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    for (const obj of objectsOf(value)) {
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
        lines.push(
          `${label}: document ${index + 1}: not a Kubernetes object (expected a mapping with apiVersion and kind)`,
        );
        continue;
      }
      if (!isVirtGroup(obj)) continue;
      objects++;
      const what = describe(obj as Record<string, unknown>, index);
      for (const p of validateManifest(obj))
        lines.push(`${label}: ${what}: ${p.field || '<object>'}: ${p.message}`);
    }
  });
  return { lines, objects };
}

const FLAGS = { filename: { type: 'string', short: 'f', multiple: true } } satisfies Options;

export async function main(argv: string[], io: ValidateIO = processIO): Promise<number> {
  return command('validate', argv, FLAGS, HELP, async (values) => {
    const targets = values.filename ?? [];
    if (targets.length === 0)
      throw new UsageError(
        "validate: give at least one -f FILE, -f DIR or -f -; see 'validate --help'",
      );
    if (targets.filter((t) => t === '-').length > 1)
      throw new UsageError("validate: '-' (standard input) may be given once");

    let problems = 0;
    let objects = 0;
    let files = 0;
    for (const target of targets) {
      let sources: Source[];
      try {
        sources = sourcesOf(target, io);
      } catch (err) {
        io.out(`${target}: cannot read: ${systemMessage(err)}`);
        problems++;
        continue;
      }
      // A folder that holds no manifest (a wrong path, files renamed to .yaml.tpl) checked
      // nothing: passing it would let a CI step go green on no input.
      if (sources.length === 0) {
        io.out(`${target}: no *.yaml, *.yml or *.json file in this directory or below`);
        problems++;
        continue;
      }
      for (const source of sources) {
        files++;
        let text: string;
        try {
          text = source.read();
        } catch (err) {
          io.out(`${source.label}: cannot read: ${systemMessage(err)}`);
          problems++;
          continue;
        }
        const found = checkManifests(source.label, text);
        for (const line of found.lines) io.out(line);
        problems += found.lines.length;
        objects += found.objects;
      }
    }
    const summary = `${objects} virt.dev object${objects === 1 ? '' : 's'} in ${files} file${files === 1 ? '' : 's'}`;
    io.err(
      `validate: ${summary}: ${problems === 0 ? 'no problems' : `${problems} problem${problems === 1 ? '' : 's'}`}`,
    );
    return problems === 0 ? 0 : 1;
  });
}
