/**
 * Bearer tokens (JWT). HS256 with our own secret (dev tokens, simple deployments), and RS256/ES256
 * with an identity provider's public key or JWKS. Algorithms are pinned per key kind, so a token
 * cannot pick a weaker one (or `none`), and an HS256 token can never be checked against a public key.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  SignJWT,
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { AppError } from '../common/errors.js';
import { isUuid } from '../common/validate.js';
import { verifyHs256 } from './hs256-fast-path.js';

export interface VerifiedToken {
  userId: string;
  /** The token's `name` claim (a display name), when it has a usable one. */
  name?: string;
  /** When the token stops being valid: open sockets are closed then (close 4502). */
  expiresAtMs: number;
}

export interface Authenticator {
  /** Throws AppError('unauthorized') for anything but a valid token. */
  verify(token: string): Promise<VerifiedToken>;
  /** HS256 with our secret (dev auth, tests). Throws when there is no secret. */
  issue(userId: string, opts?: { name?: string; ttlS?: number }): Promise<string>;
}

export interface AuthOptions {
  secret: string | null;
  publicKeyPem?: string | null;
  /** JWKS: an http(s) URL (fetched with a timeout, cached, refetched for unknown key ids) or a file path. */
  jwks?: string | null;
  issuer?: string | null;
  audience?: string | null;
  /** `exp` at most this far ahead. */
  maxTtlS?: number;
  clockToleranceS?: number;
  jwksTimeoutMs?: number;
  now?: () => Date;
}

type KeyGetter = (header: Parameters<JWTVerifyGetKey>[0]) => ReturnType<JWTVerifyGetKey>;

function pemKey(pem: string): { key: KeyObject; alg: 'RS256' | 'ES256' } {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType === 'rsa') return { key, alg: 'RS256' };
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return { key, alg: 'ES256' };
  throw new Error('REALCHAT_JWT_PUBLIC_KEY must be an RSA key (RS256) or an EC P-256 key (ES256)');
}

function jwksGetter(source: string, timeoutMs: number): KeyGetter {
  if (/^https?:\/\//.test(source)) {
    const remote = createRemoteJWKSet(new URL(source), { timeoutDuration: timeoutMs, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
    return (header) => remote(header, { payload: {}, signature: '' } as never);
  }
  const local = createLocalJWKSet(JSON.parse(readFileSync(source, 'utf8')));
  return (header) => local(header);
}

export function createAuthenticator(opts: AuthOptions): Authenticator {
  const now = opts.now ?? (() => new Date());
  const secretKey = opts.secret ? new TextEncoder().encode(opts.secret) : null;
  const pem = opts.publicKeyPem ? pemKey(opts.publicKeyPem) : null;
  const jwks = opts.jwks ? jwksGetter(opts.jwks, opts.jwksTimeoutMs ?? 3000) : null;
  const maxTtlS = opts.maxTtlS ?? 24 * 3600;
  const toleranceS = opts.clockToleranceS ?? 30;
  const algorithms = [...(secretKey ? ['HS256'] : []), ...(pem ? [pem.alg] : []), ...(jwks ? ['RS256', 'ES256'] : [])];
  if (algorithms.length === 0)
    throw new Error('no token key configured (REALCHAT_JWT_SECRET, REALCHAT_JWT_PUBLIC_KEY or REALCHAT_JWT_JWKS)');

  const keyFor: KeyGetter = async (header) => {
    if (header.alg === 'HS256' && secretKey) return secretKey;
    if (pem && header.alg === pem.alg) return pem.key;
    if (jwks && (header.alg === 'RS256' || header.alg === 'ES256')) {
      try {
        return await jwks(header);
      } catch (err) {
        // No such key in the set: the token is wrong. Anything else (timeout, refused, a 5xx, a
        // malformed set): the identity provider is down, which must not look like a bad token
        // (clients stop for good on unauthorized).
        if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) throw err;
        throw new AppError('unavailable', 'the token key set could not be fetched; retry shortly', { cause: err });
      }
    }
    throw new AppError('unauthorized', 'token algorithm not accepted');
  };

  /** Every token the HS256 fast path does not accept: jose decides, and its refusal is worded here. */
  async function viaJose(token: string): Promise<JWTPayload> {
    try {
      return (
        await jwtVerify(token, keyFor, {
          algorithms,
          requiredClaims: ['exp', 'sub'],
          currentDate: now(),
          clockTolerance: toleranceS,
          ...(opts.issuer ? { issuer: opts.issuer } : {}),
          ...(opts.audience ? { audience: opts.audience } : {}),
        })
      ).payload;
    } catch (err) {
      if (err instanceof AppError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new AppError('unauthorized', 'token expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed)
        throw new AppError('unauthorized', `token claim ${err.claim} is not accepted`);
      throw new AppError('unauthorized', 'invalid token');
    }
  }

  return {
    async verify(token) {
      const payload =
        (secretKey &&
          verifyHs256(token, secretKey, {
            nowS: Math.floor(now().getTime() / 1000),
            clockToleranceS: toleranceS,
            issuer: opts.issuer || null,
            audience: opts.audience || null,
          })) ||
        (await viaJose(token));
      if (!isUuid(payload.sub)) throw new AppError('unauthorized', 'token subject must be a user UUID');
      const expS = payload.exp!;
      if (expS - now().getTime() / 1000 > maxTtlS + toleranceS) {
        throw new AppError('unauthorized', `token lives too long: exp may be at most ${maxTtlS} s ahead`);
      }
      // The same tolerance as the check above: a token accepted now is not closed as expired a moment later.
      const name = typeof payload.name === 'string' ? payload.name.trim().slice(0, 100) : '';
      return { userId: payload.sub.toLowerCase(), expiresAtMs: (expS + toleranceS) * 1000, ...(name ? { name } : {}) };
    },
    async issue(userId, o = {}) {
      if (!secretKey) throw new Error('this node has no HS256 secret to sign with');
      const jwt = new SignJWT(o.name ? { name: o.name } : {})
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(userId)
        .setIssuedAt(now())
        .setExpirationTime(Math.floor(now().getTime() / 1000) + Math.min(o.ttlS ?? 24 * 3600, maxTtlS));
      if (opts.issuer) jwt.setIssuer(opts.issuer);
      if (opts.audience) jwt.setAudience(opts.audience);
      return jwt.sign(secretKey);
    },
  };
}

export function bearerToken(header: string): string {
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!m) throw new AppError('unauthorized', 'missing Authorization: Bearer <token>');
  return m[1]!;
}
