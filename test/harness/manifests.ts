// Manifests the operator e2e files each need the same way: a NAT network on a free /24 with
// DHCP, and a directory pool for the guest's files.

/** A NAT VirtualNetwork on 192.168.<subnet>.0/24: the host at .1, DHCP from .100 to .199. */
export function natNetwork(name: string, bridge: string, subnet: number) {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'VirtualNetwork',
    metadata: { name },
    spec: {
      mode: 'nat',
      bridge,
      ipv4: {
        cidr: `192.168.${subnet}.1/24`,
        dhcp: { rangeStart: `192.168.${subnet}.100`, rangeEnd: `192.168.${subnet}.199` },
      },
    },
  };
}

/** A StoragePool of type dir at `path`. */
export function dirPool(name: string, path: string) {
  return {
    apiVersion: 'virt.dev/v1alpha1',
    kind: 'StoragePool',
    metadata: { name },
    spec: { path },
  };
}
