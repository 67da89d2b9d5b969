// Routes events from the addon's single dispatcher to the listener that registered them.
// The addon reports (kind, key, handle, event, detail, text); the key is chosen here before the
// libvirt registration starts, so an event that races the registration's promise still has
// a route. Unrouted events (the listener was just deregistered) drop their handle at once.
import {
  EventKind,
  native,
  type DomainHandle,
  type NetworkHandle,
  type PoolHandle,
} from './addon.js';

export type EventHandle = DomainHandle | NetworkHandle | PoolHandle | undefined;
export type Route = (
  kind: EventKind,
  handle: EventHandle,
  event: number,
  detail: number,
  text: string | undefined,
) => void;

const routes = new Map<number, Route>();
let lastKey = 0;

/** Reserves a key for `route`; keys are 32-bit and reused only once released. */
export function openRoute(route: Route): number {
  do {
    lastKey = lastKey >= 0xffffffff ? 1 : lastKey + 1;
  } while (routes.has(lastKey));
  routes.set(lastKey, route);
  return lastKey;
}

export function closeRoute(key: number): void {
  routes.delete(key);
}

/** How many routes are open (listeners and connection close callbacks), for leak checks. */
export function openRoutes(): number {
  return routes.size;
}

function dropHandle(kind: EventKind, handle: EventHandle): void {
  if (handle === undefined) return;
  if (
    kind === EventKind.DomainLifecycle ||
    kind === EventKind.DomainReboot ||
    kind === EventKind.DomainDeviceRemoved
  ) {
    native.domain.free(handle as DomainHandle);
  } else if (kind === EventKind.NetworkLifecycle) {
    native.network.free(handle as NetworkHandle);
  } else {
    native.storagePool.free(handle as PoolHandle);
  }
}

native.setEventDispatcher((kind, key, handle, event, detail, text) => {
  const route = routes.get(key);
  if (route === undefined) {
    dropHandle(kind, handle);
    return;
  }
  try {
    route(kind, handle, event, detail, text);
  } catch (err) {
    // Same contract as an EventEmitter listener: a throwing listener is a bug in the caller
    // and surfaces as an uncaught exception, without stopping delivery to the others.
    queueMicrotask(() => {
      throw err;
    });
  }
});
