import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { AppError } from '../common/errors.js';
import { isUuid } from '../common/validate.js';

export interface Authenticator {
  /** Returns the user id (JWT `sub`) or throws AppError('unauthorized'). */
  verify(token: string): Promise<string>;
  issue(userId: string, opts?: { name?: string; ttlS?: number }): Promise<string>;
}

/** HS256 only: the algorithm is pinned so a token cannot choose a weaker or asymmetric one. */
export function createAuthenticator(secret: string, now: () => Date = () => new Date()): Authenticator {
  const key = new TextEncoder().encode(secret);
  return {
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'], requiredClaims: ['exp', 'sub'], currentDate: now() });
        if (!isUuid(payload.sub)) throw new AppError('unauthorized', 'token subject must be a user UUID');
        return payload.sub.toLowerCase();
      } catch (err) {
        if (err instanceof AppError) throw err;
        const message = err instanceof joseErrors.JWTExpired ? 'token expired' : 'invalid token';
        throw new AppError('unauthorized', message);
      }
    },
    async issue(userId, opts = {}) {
      const claims = opts.name ? { name: opts.name } : {};
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(userId)
        .setIssuedAt(now())
        .setExpirationTime(Math.floor(now().getTime() / 1000) + (opts.ttlS ?? 24 * 3600))
        .sign(key);
    },
  };
}

export function bearerToken(header: string): string {
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!m) throw new AppError('unauthorized', 'missing Authorization: Bearer <token>');
  return m[1]!;
}
