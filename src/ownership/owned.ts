// Comparing only what the operator owns. libvirt fills in many defaults (controllers,
// addresses, a memballoon, a console mirroring serial 0, lifecycle actions...); diffing whole
// documents would see drift forever. Each kind projects a document onto its owned fields:
//   - a value: owned, must match;
//   - null: owned and must be absent (e.g. no boot order);
//   - undefined: left to libvirt (e.g. a generated MAC), never compared.
// Both desired and observed documents go through the same projection, so an absent optional
// field projects to the same null on both sides.

type Comparable = string | number | bigint | boolean | null | undefined | object;

/**
 * Paths where `observed` differs from `desired`, e.g. `vcpu.current`, `devices.disks` (a
 * list of another length), `devices.disks[1].bootOrder`. Fields `desired` leaves undefined
 * are libvirt's to choose and never reported.
 */
export function changedFields<T>(desired: T, observed: T): string[] {
  const changes: string[] = [];
  compare(desired as Comparable, observed as Comparable, '', changes);
  return changes;
}

function compare(desired: Comparable, observed: Comparable, path: string, out: string[]): void {
  if (desired === undefined) return;
  if (desired === null || typeof desired !== 'object') {
    if (desired !== observed) out.push(path);
    return;
  }
  if (Array.isArray(desired)) {
    if (!Array.isArray(observed) || observed.length !== desired.length) {
      out.push(path);
      return;
    }
    desired.forEach((item, i) => compare(item, observed[i], `${path}[${i}]`, out));
    return;
  }
  if (observed === null || typeof observed !== 'object' || Array.isArray(observed)) {
    out.push(path);
    return;
  }
  const d = desired as Record<string, Comparable>;
  const o = observed as Record<string, Comparable>;
  for (const key of Object.keys(d)) compare(d[key], o[key], path ? `${path}.${key}` : key, out);
}

/** null for an absent optional value, so "must be absent" can be compared. */
export function orNull<T>(value: T | undefined): T | null {
  return value === undefined ? null : value;
}

/** libvirt prints MAC addresses in lower case whatever case it was given. */
export function normalMac(mac: string | undefined): string | undefined {
  return mac?.toLowerCase();
}
