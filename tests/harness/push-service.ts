/**
 * A local push service (RFC 8030) for tests, with the receiving side implemented for real on
 * node:crypto alone: it checks the VAPID authorization (RFC 8292: an ES256 JWT whose `aud` is the
 * endpoint's origin, `exp` in the future and at most 24 h ahead, a `sub`, signed by the key in
 * `k=`, which must be the server's public key), and decrypts the `aes128gcm` body (RFC 8188 with the
 * RFC 8291 key derivation) with the subscription's private key and auth secret, which the test
 * generates as a browser would. Requests that fail a check are answered as push services do (401/400)
 * and recorded as rejected. Each subscription's answer can be set: accept (201), 404, 410, 500, or
 * hang (never answers: the sender's timeout).
 */
import { createECDH, createDecipheriv, createPublicKey, hkdfSync, randomBytes, verify } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface BrowserSubscription {
  /** What PushSubscription.toJSON() gives the page, to POST to /v1/push/subscriptions. */
  json: { endpoint: string; keys: { p256dh: string; auth: string } };
  id: string;
}

export interface Received {
  subscriptionId: string;
  /** The decrypted payload, parsed as JSON. */
  payload: any;
  topic: string | null;
  ttl: string | null;
  urgency: string | null;
  at: number;
}

export type Mode = 'accept' | 404 | 410 | 500 | 'hang';

export interface PushService {
  origin: string;
  /** A new subscription as a browser makes one (P-256 key pair and a 16-byte auth secret). */
  subscribe(): BrowserSubscription;
  /** Accepted requests are answered this much later (requests in flight for crash tests). */
  setLatency(ms: number): void;
  /** How this subscription's requests are answered from now on. */
  setMode(subscriptionId: string, mode: Mode): void;
  /** Accepted notifications (decrypted), in arrival order. */
  received: Received[];
  /** Every request and its answer (also refused, failed and hung ones). */
  requests: Array<{ subscriptionId: string; status: number | 'hang'; at: number }>;
  /** Requests that failed a VAPID or decryption check, with why. */
  rejected: Array<{ subscriptionId: string; reason: string }>;
  close(): Promise<void>;
}

interface Keys {
  ecdh: ReturnType<typeof createECDH>;
  publicRaw: Buffer;
  auth: Buffer;
}

class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function b64u(s: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Refused(400, 'not base64url');
  return Buffer.from(s, 'base64url');
}

/** RFC 8292: `Authorization: vapid t=<jwt>, k=<public key>`; returns nothing, throws Refused. */
export function verifyVapid(header: string | undefined, audience: string, expectedKey: string | null, nowS = Date.now() / 1000): void {
  const m = /^vapid\s+(.+)$/i.exec(header ?? '');
  if (!m) throw new Refused(401, 'no vapid authorization');
  const params = new Map<string, string>();
  for (const part of m[1]!.split(',')) {
    const i = part.indexOf('=');
    if (i > 0) params.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const t = params.get('t');
  const k = params.get('k');
  if (!t || !k) throw new Refused(401, 'vapid t= and k= required');
  if (expectedKey !== null && k !== expectedKey) throw new Refused(401, 'k is not the application server key');
  const pub = b64u(k);
  if (pub.length !== 65 || pub[0] !== 4) throw new Refused(401, 'k is not an uncompressed P-256 point');
  const key = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') },
    format: 'jwk',
  });
  const parts = t.split('.');
  if (parts.length !== 3) throw new Refused(401, 'malformed JWT');
  const jose = JSON.parse(b64u(parts[0]!).toString('utf8'));
  if (jose.alg !== 'ES256') throw new Refused(401, `JWT alg ${jose.alg}, not ES256`);
  // JWS ES256 signatures are r||s (64 bytes): ieee-p1363.
  const ok = verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key, dsaEncoding: 'ieee-p1363' }, b64u(parts[2]!));
  if (!ok) throw new Refused(401, 'JWT signature does not verify with k');
  const claims = JSON.parse(b64u(parts[1]!).toString('utf8'));
  if (claims.aud !== audience) throw new Refused(401, `aud ${claims.aud} is not ${audience}`);
  if (typeof claims.exp !== 'number' || claims.exp <= nowS) throw new Refused(401, 'JWT expired');
  if (claims.exp > nowS + 24 * 3600 + 60) throw new Refused(401, 'exp more than 24 hours ahead');
  if (typeof claims.sub !== 'string' || !/^(mailto:|https:)/.test(claims.sub)) throw new Refused(401, 'sub must be mailto: or https:');
}

/** RFC 8188 aes128gcm with the RFC 8291 key derivation; the plaintext (padding removed). */
export function decryptAes128gcm(body: Buffer, keys: Keys): Buffer {
  if (body.length < 21) throw new Refused(400, 'body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20]!;
  const keyid = body.subarray(21, 21 + idlen);
  const records = body.subarray(21 + idlen);
  if (idlen !== 65 || keyid[0] !== 4) throw new Refused(400, 'keyid must be the sender public key (65 bytes)');
  if (rs < 18) throw new Refused(400, 'record size too small');
  // RFC 8291 section 3.4: IKM from the ECDH secret, keyed by the auth secret and both public keys.
  const ecdhSecret = keys.ecdh.computeSecret(keyid);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), keys.publicRaw, keyid]);
  const ikm = Buffer.from(hkdfSync('sha256', ecdhSecret, keys.auth, keyInfo, 32));
  // RFC 8188 section 2.2 / 2.3: content encryption key and nonce.
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonceBase = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const out: Buffer[] = [];
  let seq = 0;
  for (let off = 0; off < records.length; off += rs, seq++) {
    const rec = records.subarray(off, Math.min(off + rs, records.length));
    const nonce = Buffer.from(nonceBase);
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8);
    const d = createDecipheriv('aes-128-gcm', cek, nonce);
    d.setAuthTag(rec.subarray(rec.length - 16));
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(rec.subarray(0, rec.length - 16)), d.final()]);
    } catch {
      throw new Refused(400, 'aes128gcm record does not decrypt');
    }
    // Padding: a delimiter (0x02 in the last record, 0x01 before) followed by zeros.
    let end = plain.length - 1;
    while (end >= 0 && plain[end] === 0) end--;
    const last = off + rs >= records.length;
    if (end < 0 || plain[end] !== (last ? 2 : 1)) throw new Refused(400, 'bad record padding delimiter');
    out.push(plain.subarray(0, end));
  }
  return Buffer.concat(out);
}

function readBody(req: IncomingMessage, max = 8192): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > max) reject(new Refused(413, 'payload too large'));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** `vapidPublicKey`: the application server key every request must be signed with (null: any). */
export async function startPushService(vapidPublicKey: string | null = null): Promise<PushService> {
  const subs = new Map<string, { keys: Keys; mode: Mode }>();
  const hung = new Set<ServerResponse>();
  let latencyMs = 0;
  const svc: Omit<PushService, 'origin' | 'close'> = {
    received: [],
    requests: [],
    rejected: [],
    subscribe() {
      const ecdh = createECDH('prime256v1');
      const publicRaw = ecdh.generateKeys();
      const auth = randomBytes(16);
      const id = randomBytes(9).toString('base64url');
      subs.set(id, { keys: { ecdh, publicRaw, auth }, mode: 'accept' });
      return {
        id,
        json: { endpoint: `${origin}/push/${id}`, keys: { p256dh: publicRaw.toString('base64url'), auth: auth.toString('base64url') } },
      };
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    setMode(id, mode) {
      subs.get(id)!.mode = mode;
    },
  };
  const server: Server = createServer((req, res) => {
    void (async () => {
      const id = /^\/push\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1] ?? '';
      const sub = subs.get(id);
      const answer = (status: number) => {
        svc.requests.push({ subscriptionId: id, status, at: Date.now() });
        res.writeHead(status).end();
      };
      if (req.method !== 'POST' || !sub) return answer(404);
      let body: Buffer;
      try {
        body = await readBody(req);
        if (sub.mode === 'hang') {
          svc.requests.push({ subscriptionId: id, status: 'hang', at: Date.now() });
          hung.add(res);
          return;
        }
        if (sub.mode !== 'accept') return answer(sub.mode);
        verifyVapid(req.headers.authorization, origin, vapidPublicKey);
        if (req.headers['content-encoding'] !== 'aes128gcm') throw new Refused(415, 'Content-Encoding must be aes128gcm');
        if (req.headers.ttl === undefined) throw new Refused(400, 'TTL header required');
        const plain = decryptAes128gcm(body, sub.keys);
        if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
        svc.received.push({
          subscriptionId: id,
          payload: JSON.parse(plain.toString('utf8')),
          topic: (req.headers.topic as string | undefined) ?? null,
          ttl: (req.headers.ttl as string | undefined) ?? null,
          urgency: (req.headers.urgency as string | undefined) ?? null,
          at: Date.now(),
        });
        return answer(201);
      } catch (err) {
        const status = err instanceof Refused ? err.status : 400;
        svc.rejected.push({ subscriptionId: id, reason: (err as Error).message });
        return answer(status);
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    ...svc,
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        for (const r of hung) r.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  } as PushService;
}
