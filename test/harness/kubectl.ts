// kubectl against the test control plane as a person runs it, for the tests that drive objects
// the way a user does rather than through the API client.
import type { ControlPlane, KubectlOptions } from '../../src/commands/local/control-plane.js';

/** kubectl with `args`; its stdout, or an error with the command, exit code and stderr. */
export async function kubectlOk(
  cp: ControlPlane,
  args: string[],
  opts: KubectlOptions = {},
): Promise<string> {
  const res = await cp.kubectl(args, opts);
  if (res.code !== 0) {
    throw new Error(`kubectl ${args.join(' ')} failed (${res.code}): ${res.stderr.trim()}`);
  }
  return res.stdout;
}

/**
 * `kubectl annotate --overwrite` of one object (`object` as for kubectl: `['vm', NAME, '-n',
 * NS]` or `['vm/NAME']`): each key set to its value, or removed where the value is undefined.
 * Always --overwrite: a test says what the annotation is to be, whatever it was before, and a
 * removal needs no flag anyway.
 */
export async function annotate(
  cp: ControlPlane,
  object: string[],
  annotations: Record<string, string | undefined>,
): Promise<void> {
  const changes = Object.entries(annotations).map(([key, value]) =>
    value === undefined ? `${key}-` : `${key}=${value}`,
  );
  await kubectlOk(cp, ['annotate', '--overwrite', ...object, ...changes]);
}

/** `kubectl patch --type=merge` of one object's spec (`object` as for annotate). */
export async function patchSpec(cp: ControlPlane, object: string[], spec: object): Promise<void> {
  await kubectlOk(cp, ['patch', ...object, '--type=merge', '-p', JSON.stringify({ spec })]);
}
