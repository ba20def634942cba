/**
 * Address ranges a server-side request (a webhook delivery) must never reach unless an operator
 * allows it: anything that is not a public unicast address, so a webhook URL cannot be used to
 * probe or call the deployment's own network, its cloud metadata service or the machine itself.
 */
import { BlockList, isIP } from 'node:net';

/** [network, prefix, why] per family. */
const V4: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'cgnat'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];

const V6: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  // A v4-mapped or -translated address reaches an IPv4 host through the IPv6 API: refused as a
  // whole rather than judged by the embedded address, so no mapping trick gets through.
  ['::ffff:0:0', 96, 'v4-mapped'],
  ['::', 96, 'v4-compatible'],
  ['64:ff9b::', 96, 'nat64'],
  ['64:ff9b:1::', 48, 'nat64'],
  ['100::', 64, 'discard'],
  ['2001:db8::', 32, 'documentation'],
  ['2002::', 16, '6to4'],
  ['fc00::', 7, 'unique-local'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
];

export interface AddressPolicy {
  /** Why `address` (an IP literal) may not be reached, or null when it is a public unicast address. */
  refusal(address: string): string | null;
}

export function createAddressPolicy(): AddressPolicy {
  // One list per range and family, checked in the order above (so a refusal names its range).
  // Separate families: BlockList matches an IPv4 address against ::ffff:0:0/96 too.
  const build = (ranges: typeof V4, family: 'ipv4' | 'ipv6') =>
    ranges.map(([net, prefix, why]) => {
      const list = new BlockList();
      list.addSubnet(net, prefix, family);
      return { list, why };
    });
  const v4 = build(V4, 'ipv4');
  const v6 = build(V6, 'ipv6');
  return {
    refusal(address) {
      const bare = address.replace(/^\[|\]$/g, '');
      const family = isIP(bare);
      if (family === 0) return 'not an IP address';
      const type = family === 4 ? 'ipv4' : 'ipv6';
      for (const { list, why } of family === 4 ? v4 : v6) if (list.check(bare, type)) return why;
      return null;
    },
  };
}
