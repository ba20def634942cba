/** Standard Webhooks signatures: the spec's published test vector, secrets, verification. */
import { describe, expect, it } from 'vitest';
import { generateWebhookSecret, signWebhook, verifyWebhook, webhookSecretKey } from '../common/webhook-signature.js';

// The Standard Webhooks reference libraries' vector (standard-webhooks/standard-webhooks, svix).
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

describe('webhook signatures (Standard Webhooks)', () => {
  it('reproduces the published test vector exactly', () => {
    expect(signWebhook(VECTOR.secret, VECTOR.id, VECTOR.timestamp, VECTOR.body)).toBe(VECTOR.signature);
  });

  it('verifies the vector at its time, and refuses a changed body, id, timestamp, or an old timestamp', () => {
    const h = { id: VECTOR.id, timestamp: String(VECTOR.timestamp), signature: VECTOR.signature };
    expect(verifyWebhook(VECTOR.secret, h, VECTOR.body, VECTOR.timestamp)).toBe(true);
    // Several signatures (a rotation): any one may match.
    expect(verifyWebhook(VECTOR.secret, { ...h, signature: `v1,bm9wZQ== ${VECTOR.signature}` }, VECTOR.body, VECTOR.timestamp)).toBe(true);
    expect(verifyWebhook(VECTOR.secret, h, '{"test": 2432232315}', VECTOR.timestamp)).toBe(false);
    expect(verifyWebhook(VECTOR.secret, { ...h, id: 'msg_other' }, VECTOR.body, VECTOR.timestamp)).toBe(false);
    expect(verifyWebhook(VECTOR.secret, { ...h, timestamp: String(VECTOR.timestamp + 1) }, VECTOR.body, VECTOR.timestamp)).toBe(false);
    expect(verifyWebhook(VECTOR.secret, h, VECTOR.body, VECTOR.timestamp + 301)).toBe(false);
    expect(verifyWebhook(generateWebhookSecret(), h, VECTOR.body, VECTOR.timestamp)).toBe(false);
  });

  it('generates whsec_ secrets of 32 random bytes and refuses malformed ones', () => {
    const a = generateWebhookSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]+={0,2}$/);
    expect(webhookSecretKey(a)?.length).toBe(32);
    expect(generateWebhookSecret()).not.toBe(a);
    expect(webhookSecretKey(VECTOR.secret)?.length).toBe(24);
    for (const bad of ['MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'whsec_', 'whsec_c2hvcnQ=', 'whsec_not base64!', `whsec_${'A'.repeat(100)}`])
      expect(webhookSecretKey(bad), bad).toBeNull();
  });
});
