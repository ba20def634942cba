/**
 * The SSRF guard for server-side requests to user-given URLs (webhooks): a URL is checked when it
 * is registered and again before every request, after DNS resolution, and the request then goes to
 * the address that was checked (pinned), so a name that resolves differently a moment later (DNS
 * rebinding) cannot reach a refused address. Every resolved address must pass, not just one.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { withTimeout } from './timeout.js';
import { createAddressPolicy } from './ip-ranges.js';

export const MAX_URL_CHARS = 2048;

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

/** Why a URL is refused; `kind` tells the caller's answer: the URL is wrong, or DNS did not answer in time. */
export class UrlRefusedError extends Error {
  override name = 'UrlRefusedError';
  constructor(
    message: string,
    readonly kind: 'invalid' | 'blocked' | 'unresolved' | 'dns_timeout',
  ) {
    super(message);
  }
}

export interface UrlGuardOptions {
  /** REALCHAT_WEBHOOK_ALLOW_PRIVATE: private, loopback and other non-public addresses are allowed (tests, closed networks). */
  allowPrivate: boolean;
  dnsTimeoutMs: number;
  resolve?: Resolver;
}

export interface UrlGuard {
  /** Syntax only: http(s), a host, no credentials, no fragment, bounded length. */
  parse(raw: string): URL;
  /** Resolves the URL's host and checks every address; answers the address to connect to. */
  resolve(url: URL): Promise<ResolvedAddress>;
}

const systemResolver: Resolver = async (hostname) => {
  const all = await dnsLookup(hostname, { all: true, verbatim: true });
  return all.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

export function createUrlGuard(opts: UrlGuardOptions): UrlGuard {
  const policy = createAddressPolicy();
  const resolver = opts.resolve ?? systemResolver;
  return {
    parse(raw) {
      if (raw.length > MAX_URL_CHARS) throw new UrlRefusedError(`url must be at most ${MAX_URL_CHARS} characters`, 'invalid');
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        throw new UrlRefusedError('url is not a valid absolute URL', 'invalid');
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UrlRefusedError('url must be http or https', 'invalid');
      if (url.username || url.password) throw new UrlRefusedError('url must not carry credentials', 'invalid');
      if (url.hash) throw new UrlRefusedError('url must not have a fragment', 'invalid');
      if (!url.hostname) throw new UrlRefusedError('url must name a host', 'invalid');
      return url;
    },
    async resolve(url) {
      const host = url.hostname.replace(/^\[|\]$/g, '');
      let addresses: ResolvedAddress[];
      const literal = isIP(host);
      if (literal !== 0) addresses = [{ address: host, family: literal === 6 ? 6 : 4 }];
      else {
        try {
          addresses = await withTimeout(resolver(host), opts.dnsTimeoutMs, `resolving ${host}`);
        } catch (err) {
          if ((err as Error).name === 'TimeoutError') throw new UrlRefusedError(`resolving ${host} timed out`, 'dns_timeout');
          throw new UrlRefusedError(`${host} does not resolve`, 'unresolved');
        }
        if (addresses.length === 0) throw new UrlRefusedError(`${host} does not resolve`, 'unresolved');
      }
      if (!opts.allowPrivate) {
        for (const a of addresses) {
          const why = policy.refusal(a.address);
          if (why) throw new UrlRefusedError(`${host} resolves to ${a.address} (${why}); only public addresses are allowed`, 'blocked');
        }
      }
      return addresses[0]!;
    },
  };
}
