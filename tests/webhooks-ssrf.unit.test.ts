/** The SSRF guard: address ranges, URL syntax, resolution (every address must pass), the allow switch. */
import { describe, expect, it } from 'vitest';
import { createAddressPolicy } from '../common/ip-ranges.js';
import { UrlRefusedError, createUrlGuard, type Resolver } from '../common/url-guard.js';

describe('address ranges', () => {
  const policy = createAddressPolicy();
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.254', 'cgnat'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fd12:3456::1', 'unique-local'],
    ['fc00::1', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'v4-mapped'],
    ['::ffff:8.8.8.8', 'v4-mapped'],
    ['64:ff9b::a00:1', 'nat64'],
  ])('refuses %s (%s)', (address, why) => {
    expect(policy.refusal(address)).toBe(why);
  });

  it.each(['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '11.0.0.1', '2606:4700:4700::1111', '2a00:1450:4001::1'])(
    'allows the public address %s',
    (address) => {
      expect(policy.refusal(address)).toBeNull();
    },
  );

  it('refuses what is not an address', () => {
    expect(policy.refusal('example.com')).toBe('not an IP address');
  });
});

describe('URL guard', () => {
  const fixed: Record<string, string[]> = {
    'public.test': ['93.184.216.34'],
    'mixed.test': ['93.184.216.34', '10.0.0.5'],
    'v6.test': ['2606:4700:4700::1111'],
  };
  const resolve: Resolver = async (host) => {
    const a = fixed[host];
    if (!a) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    return a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  const guard = createUrlGuard({ allowPrivate: false, dnsTimeoutMs: 1000, resolve });
  const refused = async (raw: string) => {
    try {
      await guard.resolve(guard.parse(raw));
      return null;
    } catch (err) {
      expect(err).toBeInstanceOf(UrlRefusedError);
      return (err as UrlRefusedError).kind;
    }
  };

  it('refuses loopback, private, metadata and IPv6 loopback literals', async () => {
    for (const u of [
      'http://127.0.0.1/hook',
      'http://10.0.0.1:8080/x',
      'http://169.254.169.254/latest/meta-data',
      'http://[::1]:9000/',
      'http://[::ffff:7f00:1]/',
      'http://2130706433/',
      'http://0x7f.1/',
    ])
      expect(await refused(u), u).toBe('blocked');
  });

  it('refuses a name that resolves to loopback (the real resolver: localhost)', async () => {
    const real = createUrlGuard({ allowPrivate: false, dnsTimeoutMs: 2000 });
    await expect(real.resolve(real.parse('http://localhost:8080/hook'))).rejects.toMatchObject({ kind: 'blocked' });
  });

  it('refuses a name when any of its addresses is refused; allows public names and pins the first address', async () => {
    expect(await refused('https://mixed.test/')).toBe('blocked');
    expect(await guard.resolve(guard.parse('https://public.test/x'))).toEqual({ address: '93.184.216.34', family: 4 });
    expect(await guard.resolve(guard.parse('https://v6.test/x'))).toEqual({ address: '2606:4700:4700::1111', family: 6 });
    expect(await refused('https://nowhere.test/')).toBe('unresolved');
  });

  it('refuses bad syntax: other schemes, credentials, fragments, no host, too long', async () => {
    for (const u of [
      'ftp://public.test/',
      'file:///etc/passwd',
      'https://u:p@public.test/',
      'https://public.test/#f',
      'not a url',
      `https://public.test/${'a'.repeat(2100)}`,
    ])
      expect(await refused(u), u).toBe('invalid');
  });

  it('a slow resolver times out', async () => {
    const slow = createUrlGuard({ allowPrivate: false, dnsTimeoutMs: 50, resolve: () => new Promise(() => {}) });
    await expect(slow.resolve(slow.parse('https://public.test/'))).rejects.toMatchObject({ kind: 'dns_timeout' });
  });

  it('REALCHAT_WEBHOOK_ALLOW_PRIVATE lets private addresses through', async () => {
    const open = createUrlGuard({ allowPrivate: true, dnsTimeoutMs: 2000 });
    expect(await open.resolve(open.parse('http://127.0.0.1:9/'))).toEqual({ address: '127.0.0.1', family: 4 });
    expect((await open.resolve(open.parse('http://localhost:9/'))).address).toMatch(/^(127\.0\.0\.1|::1)$/);
  });
});
