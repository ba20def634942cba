/**
 * What the public port checks before it does any work for a request: the Host header (DNS
 * rebinding), the browser Origin (cross-site WebSocket hijacking, CORS), and which client address a
 * request counts against (connection caps, dev-token buckets). Pure functions of the request's
 * headers and the configuration, so they are unit tested without a server.
 */
import { isIP } from 'node:net';
import type { EdgeConfig } from '../common/config.js';
import { AppError } from '../common/errors.js';

/** `host[:port]` → lowercased host without port (IPv6 literals keep their brackets). */
export function hostName(hostHeader: string): string {
  const h = hostHeader.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? h : h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

function isIpLiteral(name: string): boolean {
  return isIP(name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name) !== 0;
}

export interface EdgePolicy {
  /** Throws host_not_allowed unless the Host header names this server. */
  checkHost(hostHeader: string): void;
  /** Throws origin_not_allowed for a browser origin that is neither this server's own nor listed. */
  checkOrigin(originHeader: string, hostHeader: string): void;
  /** The origin to echo in Access-Control-Allow-Origin, or null (not a listed cross-origin caller). */
  corsOrigin(originHeader: string): string | null;
  /** The client's address: the socket peer, or the last X-Forwarded-For hop when the peer is a trusted proxy. */
  clientAddress(peer: string, forwardedFor: string): string;
}

export function createEdgePolicy(cfg: EdgeConfig): EdgePolicy {
  const hosts = cfg.allowedHosts === null ? null : new Set(cfg.allowedHosts);
  const origins = new Set(cfg.allowedOrigins);
  const proxies = new Set(cfg.trustedProxies);
  return {
    checkHost(hostHeader) {
      if (hosts === null) return;
      const name = hostName(hostHeader);
      // An IP literal cannot be rebound; `localhost` and *.localhost never leave the machine.
      if (name === '' || (!isIpLiteral(name) && name !== 'localhost' && !name.endsWith('.localhost') && !hosts.has(name))) {
        throw new AppError('host_not_allowed', 'this server does not answer to that Host name (set REALCHAT_PUBLIC_HOSTS)');
      }
    },
    checkOrigin(originHeader, hostHeader) {
      // Non-browser clients send no Origin; they cannot be driven by a hostile page.
      if (originHeader === '') return;
      if (origins.has(originHeader)) return;
      const host = hostHeader.trim().toLowerCase();
      if (host !== '' && (originHeader === `http://${host}` || originHeader === `https://${host}`)) return;
      throw new AppError('origin_not_allowed', 'this origin may not use this server (REALCHAT_ALLOWED_ORIGINS)');
    },
    corsOrigin(originHeader) {
      return origins.has(originHeader) ? originHeader : null;
    },
    clientAddress(peer, forwardedFor) {
      if (forwardedFor === '' || !proxies.has(peer)) return peer;
      const hops = forwardedFor.split(',');
      const last = hops[hops.length - 1]!.trim();
      return isIP(last) ? last : peer;
    },
  };
}

/** Open connections per client address, for the per-address cap. */
export class AddressCounter {
  // The entry keeps one copy of the address string that every connection from it shares (each
  // upgrade reads a fresh one: with thousands of connections per address, that adds up).
  private readonly counts = new Map<string, { address: string; n: number }>();

  /** Counts a connection (the caller checked `count` against the cap first); returns the shared copy of the address. */
  add(address: string): string {
    const e = this.counts.get(address);
    if (e) {
      e.n++;
      return e.address;
    }
    this.counts.set(address, { address, n: 1 });
    return address;
  }

  remove(address: string): void {
    const e = this.counts.get(address);
    if (!e) return;
    if (e.n <= 1) this.counts.delete(address);
    else e.n--;
  }

  count(address: string): number {
    return this.counts.get(address)?.n ?? 0;
  }
}
