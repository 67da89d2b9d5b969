// A call that libvirt's in-process test driver (test:///…) mishandles badly enough to kill the
// process, guarded here so that no caller of the binding can trigger it.
//
// virDomainInterfaceAddresses on the test driver (libvirt 9.0, testDomainInterfaceAddresses)
// invents an address for each <interface type='network'> of the running domain from the first
// <ip> of that interface's network, without checking that the network has one. A network with
// no <ip> (mode bridge on a host bridge, an isolated network without addresses) makes it read
// through a NULL pointer: SIGSEGV inside libvirt.so, whatever the `source` argument. Reproduced
// with libvirt's own Python binding as well (see README.md, "Known libvirt issues").
// Real drivers are not affected and are not asked anything more.
import type { CallOptions } from './addon.js';
import type { Connect } from './connection.js';
import { ErrorCode, ErrorDomain, ErrorLevel, LibvirtError } from './errors.js';
import { attr, child, children, parseAnyXML } from './xml/codec.js';

/** The networks named by the domain definition's `<interface type='network'>` (in order). Pure. */
export function networkInterfaceNetworks(domainXML: string): string[] {
  const { element } = parseAnyXML(domainXML, ['devices.interface'], 'domain');
  const devices = child(element, 'devices');
  if (!devices) return [];
  return children(devices, 'interface')
    .filter((nic) => attr(nic, 'type') === 'network')
    .map((nic) => {
      const source = child(nic, 'source');
      return source ? attr(source, 'network') : undefined;
    })
    .filter((name): name is string => name !== undefined);
}

/** Whether a network definition has at least one `<ip>` element. Pure. */
export function networkHasIP(networkXML: string): boolean {
  const { element } = parseAnyXML(networkXML, ['ip'], 'network');
  return children(element, 'ip').length > 0;
}

/**
 * The network (if any) on which the test driver's virDomainInterfaceAddresses would crash for
 * this domain: the first network interface whose network exists but has no `<ip>`. Lookups that
 * fail are left to the real call, which reports them (VIR_ERR_NO_NETWORK) without crashing.
 */
async function crashingNetwork(
  conn: Connect,
  domainXML: () => Promise<string>,
  opts: CallOptions | undefined,
): Promise<string | undefined> {
  let names: string[];
  try {
    names = networkInterfaceNetworks(await domainXML());
  } catch {
    return undefined; // not running, gone, …: the real call says so
  }
  for (const name of new Set(names)) {
    let xml: string;
    try {
      const network = await conn.lookupNetworkByName(name, opts);
      try {
        xml = await network.getXMLDesc(0, opts);
      } finally {
        network.free();
      }
    } catch {
      continue;
    }
    if (!networkHasIP(xml)) return name;
  }
  return undefined;
}

/**
 * Rejects (VIR_ERR_NO_SUPPORT, from the test driver) instead of letting the test driver's
 * virDomainInterfaceAddresses run into its NULL dereference; resolves when the call is safe.
 * Costs nothing on other drivers but a virConnectGetType once per connection.
 */
export async function guardInterfaceAddresses(
  conn: Connect,
  domainName: () => string,
  domainXML: () => Promise<string>,
  opts: CallOptions | undefined,
): Promise<void> {
  if (!(await conn.isTestDriver(opts))) return;
  const network = await crashingNetwork(conn, domainXML, opts);
  if (network === undefined) return;
  throw new LibvirtError(
    `virDomainInterfaceAddresses not called for domain '${domainName()}': libvirt's test driver ` +
      `crashes the process for an interface on network '${network}', which has no <ip> address`,
    {
      code: ErrorCode.VIR_ERR_NO_SUPPORT,
      domain: ErrorDomain.VIR_FROM_TEST,
      level: ErrorLevel.VIR_ERR_ERROR,
      str1: network,
    },
  );
}
