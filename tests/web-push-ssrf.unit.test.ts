/**
 * A push subscription's endpoint is a URL a user gave us: the notifier checks where its host
 * resolves before every request (delivery/notifier/push-sender.ts with common/url-guard.ts) and
 * never sends to a private, loopback or link-local address; such a notification is dead-lettered.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createPushSender, generateVapidKeys } from '../delivery/notifier/push-sender.js';
import { createUrlGuard, type Resolver } from '../common/url-guard.js';
import { createECDH, randomBytes } from 'node:crypto';

const resolveTo =
  (address: string): Resolver =>
  async () => [{ address, family: 4 }];

function browserKeys() {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return { p256dh: ecdh.getPublicKey().toString('base64url'), auth: randomBytes(16).toString('base64url') };
}

/** A sender whose endpoint host resolves to `address`, and the fetch it would call. */
function senderResolvingTo(address: string) {
  const fetchSpy = vi.fn(async () => new Response(null, { status: 201 }));
  vi.stubGlobal('fetch', fetchSpy);
  const send = createPushSender({
    vapid: { ...generateVapidKeys(), subject: 'mailto:ops@example.com' },
    ttlS: 60,
    timeoutMs: 1000,
    guard: createUrlGuard({ allowPrivate: false, dnsTimeoutMs: 1000, resolve: resolveTo(address) }),
  });
  const push = () => send({ endpoint: 'https://push.example.test/send/abc', ...browserKeys() }, '{"x":1}', 'topic');
  return { push, fetchSpy };
}

describe('push requests and the SSRF guard', () => {
  afterEach(() => vi.unstubAllGlobals());

  for (const address of ['10.1.2.3', '127.0.0.1', '169.254.169.254', '192.168.0.7']) {
    it(`an endpoint whose host resolves to ${address} is refused without a request`, async () => {
      const { push, fetchSpy } = senderResolvingTo(address);
      expect(await push()).toEqual({ kind: 'rejected', status: 0, reason: 'blocked_address' });
      expect(fetchSpy).not.toHaveBeenCalled();
    });
  }

  it('a public address is sent to', async () => {
    const { push, fetchSpy } = senderResolvingTo('93.184.216.34');
    expect(await push()).toEqual({ kind: 'accepted', status: 201 });
    expect(fetchSpy).toHaveBeenCalledTimes(1);
  });
});
