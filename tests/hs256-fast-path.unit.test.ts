/**
 * gateway/hs256-fast-path.ts against jose, the library it stands in for: every token the fast path
 * accepts, jose accepts with the same claims (same options, same clock), and the tokens RealChat
 * issues take the fast path. Refusals are jose's to word, so the fast path only ever says null.
 */
import { createHmac } from 'node:crypto';
import { type errors, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { verifyHs256 } from '../gateway/hs256-fast-path.js';

const SECRET = 'fast-path-secret-'.repeat(4);
const KEY = Buffer.from(SECRET);
const NOW = 1_800_000_000;
const TOL = 30;
const SUB = '3fab7ee7-90a4-4b96-bbd6-cf48363a7eda';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');
function signed(header: unknown, payload: unknown, key: Buffer = KEY, raw?: { header?: Buffer; payload?: Buffer }): string {
  const h = b64(raw?.header ?? JSON.stringify(header));
  const p = b64(raw?.payload ?? JSON.stringify(payload));
  return `${h}.${p}.${b64(createHmac('sha256', key).update(`${h}.${p}`).digest())}`;
}
const HS = { alg: 'HS256', typ: 'JWT' };
const ok = { sub: SUB, iat: NOW - 10, exp: NOW + 3600 };

type Case = [name: string, token: string, fastAccepts: boolean, opts?: { issuer?: string; audience?: string }];
const valid = signed(HS, ok);
const cases: Case[] = [
  ['valid', valid, true],
  ['valid with a name and a kid', signed({ ...HS, kid: 'k1' }, { ...ok, name: 'Ann' }), true],
  ['no typ', signed({ alg: 'HS256' }, ok), true],
  ['expired beyond the tolerance', signed(HS, { ...ok, exp: NOW - TOL }), false],
  ['expired within the tolerance', signed(HS, { ...ok, exp: NOW - TOL + 1 }), true],
  ['nbf beyond the tolerance', signed(HS, { ...ok, nbf: NOW + TOL + 1 }), false],
  ['nbf within the tolerance', signed(HS, { ...ok, nbf: NOW + TOL }), true],
  ['nbf a string', signed(HS, { ...ok, nbf: 'soon' }), false],
  ['iat a string', signed(HS, { ...ok, iat: 'now' }), false],
  ['exp a string', signed(HS, { ...ok, exp: String(NOW + 60) }), false],
  ['no exp', signed(HS, { sub: SUB }), false],
  ['no sub', signed(HS, { exp: NOW + 60 }), false],
  ['another secret', signed(HS, ok, Buffer.from('another')), false],
  ['tampered payload', `${valid.split('.')[0]}.${b64(JSON.stringify({ ...ok, sub: 'x' }))}.${valid.split('.')[2]}`, false],
  ['alg none', `${b64(JSON.stringify({ alg: 'none' }))}.${b64(JSON.stringify(ok))}.`, false],
  ['alg HS512 header', signed({ alg: 'HS512' }, ok), false],
  ['crit header', signed({ ...HS, crit: ['b64'], b64: false }, ok), false],
  ['an extra header (cty): left to jose', signed({ ...HS, cty: 'JWT' }, ok), false],
  ['payload an array', signed(HS, [ok]), false],
  ['payload null', signed(HS, null), false],
  ['payload not UTF-8', signed(HS, null, KEY, { payload: Buffer.from([0x7b, 0xff, 0x7d]) }), false],
  ['header not JSON', signed(null, ok, KEY, { header: Buffer.from('alg') }), false],
  ['padded signature', `${valid}=`, false],
  ['a stray character', `${valid.slice(0, 5)}*${valid.slice(5)}`, false],
  ['two segments', valid.split('.').slice(0, 2).join('.'), false],
  ['four segments', `${valid}.x`, false],
  ['issuer matches', signed(HS, { ...ok, iss: 'idp' }), true, { issuer: 'idp' }],
  ['issuer differs', signed(HS, { ...ok, iss: 'other' }), false, { issuer: 'idp' }],
  ['issuer missing', signed(HS, ok), false, { issuer: 'idp' }],
  ['audience in a list', signed(HS, { ...ok, aud: ['a', 'app'] }), true, { audience: 'app' }],
  ['audience differs', signed(HS, { ...ok, aud: 'b' }), false, { audience: 'app' }],
  ['audience missing', signed(HS, ok), false, { audience: 'app' }],
];

async function joseSays(token: string, o: { issuer?: string; audience?: string } = {}) {
  try {
    const { payload } = await jwtVerify(token, new TextEncoder().encode(SECRET), {
      algorithms: ['HS256'],
      requiredClaims: ['exp', 'sub'],
      currentDate: new Date(NOW * 1000),
      clockTolerance: TOL,
      ...o,
    });
    return { payload };
  } catch (err) {
    return { err: err as errors.JOSEError };
  }
}

describe('HS256 fast path', () => {
  it.each(cases)('%s', async (_name, token, fastAccepts, o = {}) => {
    const fast = verifyHs256(token, KEY, { nowS: NOW, clockToleranceS: TOL, issuer: o.issuer ?? null, audience: o.audience ?? null });
    const jose = await joseSays(token, o);
    expect(fast !== null).toBe(fastAccepts);
    // Whatever the fast path accepts, jose accepts with the same claims.
    if (fast) expect(jose.payload).toEqual(fast);
  });

  it("the authenticator's own tokens take the fast path; refusals keep jose's words", async () => {
    const auth = createAuthenticator({ secret: SECRET, now: () => new Date(NOW * 1000) });
    const token = await auth.issue(SUB, { name: 'Ann', ttlS: 600 });
    expect(verifyHs256(token, KEY, { nowS: NOW, clockToleranceS: TOL, issuer: null, audience: null })).not.toBeNull();
    expect(await auth.verify(token)).toEqual({ userId: SUB, name: 'Ann', expiresAtMs: (NOW + 600 + TOL) * 1000 });
    await expect(auth.verify(signed(HS, { ...ok, exp: NOW - TOL }))).rejects.toMatchObject({
      code: 'unauthorized',
      message: 'token expired',
    });
    await expect(auth.verify(signed(HS, { ...ok, nbf: NOW + 999 }))).rejects.toMatchObject({ message: 'token claim nbf is not accepted' });
    await expect(auth.verify(signed(HS, ok, Buffer.from('x')))).rejects.toMatchObject({ message: 'invalid token' });
  });
});
