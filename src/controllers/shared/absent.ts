// libvirt lookups where a missing object is an answer, not an error.
import { isNotFound, type ObjectKind } from '../../libvirt/errors.js';

/** For a lookup's catch: a missing `kind` is undefined, anything else is thrown again. */
export function absentIfNotFound(kind: ObjectKind): (err: unknown) => undefined {
  return (err) => {
    if (isNotFound(err, kind)) return undefined;
    throw err;
  };
}
