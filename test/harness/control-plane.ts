import { afterAll, beforeAll } from 'vitest';
import {
  startControlPlane,
  type ControlPlane,
  type ControlPlaneOptions,
} from '../../src/commands/local/control-plane.js';

/**
 * A real etcd + kube-apiserver for the current test file: started in beforeAll, stopped in
 * afterAll (and by the harness's reaper if the runner dies). Call the getter inside tests.
 */
export function useControlPlane(opts: ControlPlaneOptions = {}): () => ControlPlane {
  let cp: ControlPlane | undefined;
  beforeAll(async () => {
    cp = await startControlPlane(opts);
  }, 180_000);
  afterAll(async () => {
    // Its folder goes with it: no graceful API server shutdown to wait for.
    await cp?.stop({ discard: true });
  }, 60_000);
  return () => {
    if (!cp) throw new Error('the control plane did not start; see the beforeAll error above');
    return cp;
  };
}
