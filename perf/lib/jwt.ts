import { createHmac } from 'node:crypto';

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** HS256 JWT with node:crypto (no dependency). */
export function signHS256(claims: Record<string, unknown>, secret: string): string {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

export function tokenFor(sub: string, secret: string, ttlS = 6 * 3600): string {
  const now = Math.floor(Date.now() / 1000);
  return signHS256({ sub, iat: now, exp: now + ttlS }, secret);
}
