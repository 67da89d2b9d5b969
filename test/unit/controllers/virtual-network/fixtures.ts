// VirtualNetwork objects as the API server stores them (schema defaults applied), for the
// pure table tests of the controller.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import type {
  VirtualNetwork,
  VirtualNetworkManifest,
} from '../../../../src/api/generated/types.js';
import { applyDefaults } from '../../../../src/api/validate.js';

export const UID = '6f1c3a52-9d0e-4b8a-a1f2-3c4d5e6f7a8b';

/** The shipped example (manifests/examples/10-network-nat.yaml) with a uid and generation. */
export function exampleNat(): VirtualNetwork {
  const manifest = parse(
    readFileSync(
      new URL('../../../../manifests/examples/10-network-nat.yaml', import.meta.url),
      'utf8',
    ),
  ) as VirtualNetworkManifest;
  return withIdentity(applyDefaults(manifest) as VirtualNetwork);
}

export function vnet(spec: VirtualNetworkManifest['spec'], name = 'net-a'): VirtualNetwork {
  const manifest: VirtualNetworkManifest = {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualNetwork',
    metadata: { name },
    spec,
  };
  return withIdentity(applyDefaults(manifest) as VirtualNetwork);
}

function withIdentity(obj: VirtualNetwork): VirtualNetwork {
  return { ...obj, metadata: { ...obj.metadata, uid: UID, generation: 1 } };
}
