/**
 * One webhook POST to an address the URL guard checked: the connection goes to that address
 * (pinned through `lookup`), while the Host header and TLS name stay the URL's. One deadline covers
 * the whole exchange; redirects are not followed (a 3xx is a failed attempt); the response body is
 * read up to a bound and thrown away.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { deadlineTimer } from '../../common/timeout.js';
import type { ResolvedAddress } from '../../common/url-guard.js';

const MAX_RESPONSE_BYTES = 64 * 1024;

export type PostOutcome = 'ok' | 'http_error' | 'timeout' | 'network';

export interface PostResult {
  outcome: PostOutcome;
  status: number | null;
  error: string | null;
}

export type WebhookPoster = (opts: {
  url: URL;
  address: ResolvedAddress;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
}) => Promise<PostResult>;

export const postPinned: WebhookPoster = ({ url, address, headers, body, timeoutMs }) =>
  new Promise((resolve) => {
    const pinned: LookupFunction = (_host, opts, cb) => {
      if ((opts as { all?: boolean }).all) (cb as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [address]);
      else cb(null, address.address, address.family);
    };
    const https = url.protocol === 'https:';
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const payload = Buffer.from(body);
    let settled = false;
    const done = (r: PostResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = (https ? httpsRequest : httpRequest)({
      protocol: url.protocol,
      host,
      port: url.port || (https ? 443 : 80),
      path: `${url.pathname}${url.search}`,
      method: 'POST',
      lookup: pinned,
      agent: false,
      ...(https && isIP(host) === 0 ? { servername: host } : {}),
      headers: {
        ...headers,
        'content-type': 'application/json',
        'content-length': String(payload.length),
        'user-agent': 'RealChat-Webhooks/1',
      },
    });
    // After the turn's socket reads: an answer that arrived in time, behind a turn longer than the
    // deadline, is an answer, not a failed attempt that would be sent again.
    const timer = deadlineTimer(timeoutMs, () => {
      if (settled) return;
      done({ outcome: 'timeout', status: null, error: `no complete answer within ${timeoutMs} ms` });
      req.destroy();
    });
    req.on('error', (err) => done({ outcome: 'network', status: null, error: err.message.slice(0, 200) }));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > MAX_RESPONSE_BYTES) res.destroy();
      });
      const finish = () =>
        done(
          status >= 200 && status < 300
            ? { outcome: 'ok', status, error: null }
            : {
                outcome: 'http_error',
                status,
                error: status >= 300 && status < 400 ? `redirect (${status}) not followed` : `answered ${status}`,
              },
        );
      res.on('end', finish);
      res.on('close', finish);
      res.on('error', finish);
    });
    req.end(payload);
  });
