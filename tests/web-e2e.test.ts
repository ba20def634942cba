/**
 * End to end in headless Debian Chromium (playwright-core): two browser contexts sign in as two
 * users and chat; one goes offline, the other sends, the first comes back and shows every missed
 * message once and in order. Saves tests/artifacts/screenshot-web.png.
 *
 * The web app is built here (vite build web -> web/dist). It is served by the gateway itself when
 * gateway/server.ts calls serveStatic (gateway/static-files.ts); until then, by a small static +
 * API proxy server in this test. Either way the browser talks to one origin, as in production.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import { connect } from 'node:net';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { promisify } from 'node:util';
import uWS from 'uWebSockets.js';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startTestServer, type TestServer } from './harness/server.js';
import { serveStatic, webCsp } from '../gateway/static-files.js';
import { createEdgePolicy } from '../gateway/edge.js';
import { LogLimiter } from '../common/log-limiter.js';
import { createLogger } from '../common/log.js';

const WEB_CSP = webCsp();

// Functions passed to page.waitForFunction / $$eval run in the browser.
declare const document: any;

const ROOT = resolve(import.meta.dirname, '..');
const WEB_DIST = join(ROOT, 'web', 'dist');
// A test artifact (git-ignored); docs/screenshot-web.png is a copy of one, for the README.
const SCREENSHOT = join(ROOT, 'tests', 'artifacts', 'screenshot-web.png');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function buildWeb(): Promise<void> {
  await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'web', '--logLevel', 'warn'],
    { cwd: ROOT, timeout: 120_000 },
  );
  if (!existsSync(join(WEB_DIST, 'index.html'))) throw new Error('vite build produced no web/dist/index.html');
}

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

/** web/dist + a pass-through of /v1 (HTTP and the WebSocket upgrade) to the gateway. */
function startStaticProxy(upstreamPort: number): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/v1/') || url === '/healthz') {
      const up = request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
      return;
    }
    const path = normalize(decodeURIComponent(url.split('?')[0]!)).replace(/^(\.\.[/\\])+/, '');
    let file = join(WEB_DIST, path === '/' ? 'index.html' : path);
    if (!file.startsWith(WEB_DIST) || !existsSync(file) || extname(file) === '') file = join(WEB_DIST, 'index.html');
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    // The gateway's policy, so the app is tested under it either way.
    res.writeHead(200, { 'content-type': type, ...(type === 'text/html' ? { 'content-security-policy': WEB_CSP } : {}) });
    res.end(readFileSync(file));
  });
  server.on('upgrade', (req, socket, head) => {
    const up = connect(upstreamPort, '127.0.0.1', () => {
      const lines = [
        `${req.method} ${req.url} HTTP/1.1`,
        ...Object.entries(req.headers).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`),
      ];
      up.write(lines.join('\r\n') + '\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(socket).pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  return new Promise((res) =>
    server.listen(0, '127.0.0.1', () => res({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server })),
  );
}

async function signIn(page: Page, base: string, name: string): Promise<string> {
  await page.goto(base);
  await page.getByTestId('signin-name').fill(name);
  await page.getByTestId('signin').click();
  const id = (await page.getByTestId('my-id').textContent({ timeout: 10_000 }))!.trim();
  await expectState(page, 'connected');
  return id;
}

async function expectState(page: Page, ...states: string[]): Promise<string> {
  const sel = states.map((s) => `[data-testid="conn-state"][data-state="${s}"]`).join(', ');
  await page.waitForSelector(sel, { timeout: 20_000 });
  return (await page.getByTestId('conn-state').getAttribute('data-state'))!;
}

async function sendText(page: Page, text: string): Promise<void> {
  await page.getByTestId('composer-input').fill(text);
  await page.getByTestId('send').click();
}

/** Texts of the stored (not pending) messages shown, with their sequence numbers. */
async function shown(page: Page): Promise<Array<{ seq: number; text: string }>> {
  return page.$$eval('[data-testid="message"]', (els: any[]) =>
    els.map((el: any) => ({
      seq: Number(el.getAttribute('data-seq')),
      text: el.querySelector('[data-testid="message-text"]')?.textContent ?? '',
    })),
  );
}

async function waitForTexts(page: Page, n: number): Promise<void> {
  await page.waitForFunction((count) => document.querySelectorAll('[data-testid="message"]').length >= count, n, { timeout: 20_000 });
}

describe('web app end to end (headless Chromium)', () => {
  let s: TestServer;
  let proxy: Server | null = null;
  let base: string;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    await buildWeb();
    s = await startTestServer('pglite', { REALCHAT_HEARTBEAT_INTERVAL_MS: '2000' });
    const home = await fetch(s.http + '/').then(
      async (r) => (r.ok ? r.text() : ''),
      () => '',
    );
    if (home.includes('id="app"')) base = s.http;
    else {
      const p = await startStaticProxy(s.app.port);
      proxy = p.server;
      base = p.url;
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
  });

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    proxy?.close();
    await s?.close();
  });

  it('two users chat; the one who was offline gets every missed message once and in order', async () => {
    const ctxA = await browser.newContext({ viewport: { width: 1180, height: 720 } });
    const ctxB = await browser.newContext({ viewport: { width: 1180, height: 720 } });
    contexts.push(ctxA, ctxB);
    const alice = await ctxA.newPage();
    const bob = await ctxB.newPage();
    const pageErrors: string[] = [];
    for (const p of [alice, bob]) p.on('pageerror', (e) => pageErrors.push(String(e)));
    const aliceId = await signIn(alice, base, 'Alice');
    const bobId = await signIn(bob, base, 'Bob');
    expect(aliceId).toMatch(/^[0-9a-f-]{36}$/);
    expect(bobId).not.toBe(aliceId);

    // A refused action shows a clear error.
    await alice.getByTestId('new-members').fill('not-a-user-id');
    await alice.getByTestId('create-conv').click();
    await expect(alice.getByTestId('error').first().textContent()).resolves.toContain('no user named');

    // Alice creates a conversation with Bob and says hello.
    await alice.getByTestId('new-title').fill('Alice & Bob');
    await alice.getByTestId('new-members').fill(bobId);
    await alice.getByTestId('create-conv').click();
    await alice.waitForSelector('[data-testid="conv-item"].active');
    await sendText(alice, 'hello bob');
    await waitForTexts(alice, 1);

    // Bob sees the new conversation with an unread count, opens it, answers.
    const bobConv = bob.locator('[data-testid="conv-item"]', { hasText: 'Alice & Bob' });
    await bobConv.waitFor({ timeout: 10_000 });
    await expect(bobConv.getByTestId('unread').textContent({ timeout: 10_000 })).resolves.toBe('1');
    await bobConv.click();
    await waitForTexts(bob, 1);
    await expect.poll(() => bobConv.getByTestId('unread').count(), { timeout: 10_000 }).toBe(0);
    // Typing indicator, then the answer.
    await bob.getByTestId('composer-input').pressSequentially('hi al', { delay: 20 });
    await alice.waitForFunction(() => / is typing/.test(document.querySelector('[data-testid="typing"]')?.textContent ?? ''), null, {
      timeout: 10_000,
    });
    await bob.getByTestId('composer-input').fill('');
    await sendText(bob, 'hi alice');
    await waitForTexts(alice, 2);
    // Read receipt: Bob has read Alice's message.
    await alice.waitForFunction(() => document.querySelector('[data-seq="1"] .tick')?.textContent?.includes('read'), null, {
      timeout: 10_000,
    });

    // Bob goes offline; Alice sends five messages.
    await ctxB.setOffline(true);
    const offlineState = await expectState(bob, 'offline', 'reconnecting');
    expect(['offline', 'reconnecting']).toContain(offlineState);
    const missed = ['one', 'two', 'three', 'four', 'five'].map((w) => `missed ${w}`);
    for (const t of missed) {
      await sendText(alice, t);
      await alice.waitForFunction(
        (txt) => [...document.querySelectorAll('[data-testid="message-text"]')].some((e: any) => e.textContent === txt),
        t,
        { timeout: 10_000 },
      );
    }
    expect((await shown(bob)).length).toBe(2);

    // Bob comes back: every missed message, once, in order.
    await ctxB.setOffline(false);
    await expectState(bob, 'connected');
    await waitForTexts(bob, 7);
    await bob.waitForTimeout(500);
    const bobSees = await shown(bob);
    expect(bobSees.map((m) => m.text)).toEqual(['hello bob', 'hi alice', ...missed]);
    expect(bobSees.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(await bob.getByTestId('pending-message').count()).toBe(0);
    const aliceSees = await shown(alice);
    expect(aliceSees.map((m) => m.text)).toEqual(['hello bob', 'hi alice', ...missed]);
    await alice.waitForFunction(() => document.querySelector('[data-seq="7"] .tick')?.textContent?.includes('read'), null, {
      timeout: 10_000,
    });

    // The session survives a reload (token in localStorage) and history is loaded again.
    await bob.reload();
    await expectState(bob, 'connected');
    await bob.locator('[data-testid="conv-item"]', { hasText: 'Alice & Bob' }).click();
    await waitForTexts(bob, 7);
    expect((await shown(bob)).map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);

    // A notification click opens the app at /?conversation=<id>: that conversation is open at once.
    const convId = await bob.locator('[data-testid="conv-item"]', { hasText: 'Alice & Bob' }).getAttribute('data-conv-id');
    await bob.goto(`${base}/?conversation=${convId}`);
    await expectState(bob, 'connected');
    await waitForTexts(bob, 7);
    expect(await bob.getByTestId('chat-title').textContent()).toContain('Alice & Bob');

    // Errors can be dismissed.
    await alice.locator('[data-testid="error"] button').first().click();
    await expect.poll(() => alice.getByTestId('error').count(), { timeout: 5000 }).toBe(0);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await alice.screenshot({ path: SCREENSHOT });
    expect(existsSync(SCREENSHOT)).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it('v1.1: names, add by name, edit, delete, roles, remove, read marks after a reload, older history on scroll, leave', async () => {
    const tag = Math.random().toString(36).slice(2, 7);
    const names = { dora: `Dora ${tag}`, eli: `Eli ${tag}`, finn: `Finn ${tag}` };
    const pages: Record<'dora' | 'eli' | 'finn', Page> = {} as never;
    const ids: Record<string, string> = {};
    const pageErrors: string[] = [];
    for (const who of ['dora', 'eli', 'finn'] as const) {
      const ctx = await browser.newContext({ viewport: { width: 1180, height: 720 } });
      contexts.push(ctx);
      pages[who] = await ctx.newPage();
      pages[who].on('pageerror', (e) => pageErrors.push(String(e)));
      ids[who] = await signIn(pages[who], base, names[who]);
    }
    const { dora, eli, finn } = pages;
    const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
    // What a person sees: innerText leaves out hidden elements (the app keeps the user's id in one, for copying).
    // biome-ignore lint/performance/useDomNodeTextContent: rendered text is the point here
    const visibleText = (p: Page) => p.evaluate(() => document.body.innerText as string);
    const memberRow = (p: Page, who: string) => p.locator(`[data-testid="member"][data-user-id="${ids[who]}"]`);
    const messageBySeq = (p: Page, seq: number) => p.locator(`[data-testid="message"][data-seq="${seq}"]`);

    // Dora creates a conversation with Eli, by name.
    await dora.getByTestId('new-title').fill(`Team ${tag}`);
    await dora.getByTestId('new-members').fill(names.eli);
    await dora.getByTestId('create-conv').click();
    await dora.waitForSelector('[data-testid="conv-item"].active');
    await memberRow(dora, 'eli').waitFor({ timeout: 10_000 });

    // Add a member by name: search, pick the suggestion.
    await dora.getByTestId('add-member-input').fill(names.finn.slice(0, 6).toLowerCase() + names.finn.slice(6));
    await dora.locator(`[data-testid="user-suggestion"][data-user-id="${ids.finn}"]`).click({ timeout: 10_000 });
    await memberRow(dora, 'finn').waitFor({ timeout: 10_000 });
    const finnConv = finn.locator('[data-testid="conv-item"]', { hasText: `Team ${tag}` });
    await finnConv.waitFor({ timeout: 10_000 });

    await sendText(dora, 'hello team');
    await waitForTexts(dora, 1);
    const eliConv = eli.locator('[data-testid="conv-item"]', { hasText: `Team ${tag}` });
    await eliConv.click({ timeout: 10_000 });
    await finnConv.click();
    await eli.locator('[data-testid="message-text"]', { hasText: 'hello team' }).waitFor({ timeout: 10_000 });
    const helloSeq = Number(await eli.locator('[data-testid="message"]', { hasText: 'hello team' }).getAttribute('data-seq'));

    // Names, never ids: the sender, the member list, the "added" line.
    await expect
      .poll(() => eli.locator('[data-testid="message"]', { hasText: 'hello team' }).getByTestId('message-sender').textContent())
      .toBe(names.dora);
    await expect.poll(() => memberRow(eli, 'finn').getByTestId('member-name').textContent(), { timeout: 10_000 }).toBe(names.finn);
    await expect
      .poll(() => eli.getByTestId('system-entry').first().textContent(), { timeout: 10_000 })
      .toBe(`${names.dora} added ${names.finn}`);
    expect(await visibleText(eli)).not.toMatch(UUID_RE);
    expect(await visibleText(dora)).not.toMatch(UUID_RE);

    // Edit own message: the other user sees the new text and the "edited" mark.
    await dora.locator(`[data-testid="message"][data-seq="${helloSeq}"] [data-testid="edit-message"]`).click();
    await dora.getByTestId('composer-input').fill('hello team (edited)');
    await dora.getByTestId('send').click();
    await expect
      .poll(() => messageBySeq(eli, helloSeq).getByTestId('message-text').textContent(), { timeout: 10_000 })
      .toBe('hello team (edited)');
    await expect(messageBySeq(eli, helloSeq).getByTestId('edited-mark').count()).resolves.toBe(1);
    // Eli cannot edit or delete Dora's message (a plain member).
    await expect(messageBySeq(eli, helloSeq).getByTestId('edit-message').count()).resolves.toBe(0);
    await expect(messageBySeq(eli, helloSeq).getByTestId('delete-message').count()).resolves.toBe(0);

    // Delete own message: the other user sees "message deleted" and no text.
    await sendText(dora, 'oops, wrong chat');
    const oops = eli.locator('[data-testid="message"]', { hasText: 'oops, wrong chat' });
    await oops.waitFor({ timeout: 10_000 });
    const oopsSeq = Number(await oops.getAttribute('data-seq'));
    await messageBySeq(dora, oopsSeq).getByTestId('delete-message').click();
    await expect
      .poll(() => messageBySeq(eli, oopsSeq).getByTestId('message-deleted').textContent(), { timeout: 10_000 })
      .toBe('message deleted');
    await expect(messageBySeq(eli, oopsSeq).getByTestId('message-text').count()).resolves.toBe(0);
    expect(await visibleText(eli)).not.toContain('oops, wrong chat');

    // Promote an admin: the owner makes Eli an admin; everyone's member list shows it.
    await memberRow(dora, 'eli').getByTestId('promote-member').click();
    await expect.poll(() => memberRow(eli, 'eli').getAttribute('data-role'), { timeout: 10_000 }).toBe('admin');
    await expect.poll(() => memberRow(dora, 'eli').getAttribute('data-role'), { timeout: 10_000 }).toBe('admin');
    await expect.poll(() => memberRow(dora, 'eli').getByTestId('demote-member').count()).toBe(1);

    // Remove a member: Eli (admin) removes Finn; the conversation leaves Finn's list.
    await memberRow(eli, 'finn').getByTestId('remove-member').click({ timeout: 10_000 });
    await expect.poll(() => finnConv.count(), { timeout: 10_000 }).toBe(0);
    await expect.poll(() => memberRow(dora, 'finn').count(), { timeout: 10_000 }).toBe(0);

    // More than one page of history (sent over REST), read by Eli.
    const session = JSON.parse((await dora.evaluate(() => (globalThis as any).localStorage.getItem('realchat.session'))) as string) as {
      token: string;
    };
    const convId = (await dora.locator('[data-testid="conv-item"].active').getAttribute('data-conv-id'))!;
    const headers = { authorization: `Bearer ${session.token}`, 'content-type': 'application/json' };
    const EXTRA = 70;
    let lastSeq = 0;
    for (let i = 1; i <= EXTRA; i++) {
      const r = await fetch(`${s.http}/v1/conversations/${convId}/messages`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ idempotency_key: `bulk-${tag}-${i}`, payload: { text: `bulk ${i}` } }),
      });
      expect(r.status).toBe(201);
      lastSeq = ((await r.json()) as { sequence_number: number }).sequence_number;
    }
    await eli.locator('[data-testid="message-text"]', { hasText: `bulk ${EXTRA}` }).waitFor({ timeout: 20_000 });
    await expect
      .poll(
        async () => {
          const r = await fetch(`${s.http}/v1/conversations/${convId}/members`, { headers });
          const body = (await r.json()) as { members: Array<{ user_id: string; read_sequence: number }> };
          return body.members.find((m) => m.user_id === ids.eli)?.read_sequence;
        },
        { timeout: 10_000 },
      )
      .toBe(lastSeq);

    // After a reload: Eli's read mark (GET /members), and only the newest page of history.
    await dora.reload();
    await expectState(dora, 'connected');
    await dora.locator('[data-testid="conv-item"]', { hasText: `Team ${tag}` }).click();
    await messageBySeq(dora, lastSeq).waitFor({ timeout: 10_000 });
    await expect.poll(() => messageBySeq(dora, lastSeq).getByTestId('tick').textContent(), { timeout: 10_000 }).toContain('read');
    const firstPage = await dora.getByTestId('message').count();
    expect(firstPage).toBeLessThan(EXTRA + 2);
    expect(await messageBySeq(dora, helloSeq).count()).toBe(0);

    // Scrolling up loads older history until the first message.
    for (let i = 0; i < 10 && (await messageBySeq(dora, helloSeq).count()) === 0; i++) {
      const before = await dora.getByTestId('message').count();
      await dora.$eval('[data-testid="messages"]', (el: any) => {
        el.scrollTop = 0;
      });
      await dora.waitForFunction((n) => document.querySelectorAll('[data-testid="message"]').length > n, before, { timeout: 10_000 });
    }
    expect(await dora.getByTestId('message').count()).toBe(EXTRA + 2);
    await expect(messageBySeq(dora, helloSeq).getByTestId('message-text').textContent()).resolves.toBe('hello team (edited)');
    await expect(messageBySeq(dora, helloSeq).getByTestId('edited-mark').count()).resolves.toBe(1);
    await expect(messageBySeq(dora, oopsSeq).getByTestId('message-deleted').count()).resolves.toBe(1);
    const seqsShown = (await shown(dora)).map((m) => m.seq);
    expect(seqsShown).toEqual([...seqsShown].sort((a, b) => a - b));

    // Leave: Eli leaves; the conversation leaves Eli's list and Eli leaves Dora's member list.
    await eli.getByTestId('leave-conv').click();
    await expect.poll(() => eliConv.count(), { timeout: 10_000 }).toBe(0);
    await expect.poll(() => memberRow(dora, 'eli').count(), { timeout: 10_000 }).toBe(0);
    await dora.locator('[data-testid="system-entry"]', { hasText: `${names.eli} left` }).waitFor({ timeout: 10_000 });
    expect(await visibleText(dora)).not.toMatch(UUID_RE);
    expect(pageErrors).toEqual([]);
  });
});

describe('gateway static files (gateway/static-files.ts)', () => {
  it('serves index.html at /, hashed assets cached, client routes, and yields /v1 to the API', async () => {
    if (!existsSync(join(WEB_DIST, 'index.html'))) await buildWeb();
    const app = uWS.App();
    const site = serveStatic(app, WEB_DIST, {
      csp: WEB_CSP,
      edge: createEdgePolicy({ allowedOrigins: [], allowedHosts: [], trustedProxies: [], internalPort: null, internalHost: '127.0.0.1' }),
      logs: new LogLimiter(createLogger({ level: 'silent', nodeId: 't', role: 'test' })),
    });
    expect(site.files).toBeGreaterThanOrEqual(3);
    app.any('/*', (res) => {
      res.writeStatus('404 Not Found').end('api 404');
    });
    const listen = await new Promise<uWS.us_listen_socket>((res, rej) =>
      app.listen('127.0.0.1', 0, (ls) => (ls ? res(ls) : rej(new Error('listen')))),
    );
    const port = uWS.us_socket_local_port(listen);
    try {
      const base = `http://127.0.0.1:${port}`;
      const index = await fetch(base + '/');
      expect(index.status).toBe(200);
      expect(index.headers.get('content-type')).toContain('text/html');
      expect(index.headers.get('content-security-policy')).toBe(WEB_CSP);
      const html = await index.text();
      expect(html).toContain('id="app"');
      const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
      const js = await fetch(base + asset);
      expect(js.status).toBe(200);
      expect(js.headers.get('content-type')).toContain('javascript');
      expect(js.headers.get('cache-control')).toContain('immutable');
      const etag = js.headers.get('etag')!;
      expect((await fetch(base + asset, { headers: { 'if-none-match': etag } })).status).toBe(304);
      expect(await (await fetch(base + '/some/client/route')).text()).toContain('id="app"');
      expect((await fetch(base + '/assets/missing.js')).status).toBe(404);
      expect((await fetch(base + '/%2e%2e/package.json')).status).toBe(404);
      const api = await fetch(base + '/v1/unknown');
      expect([api.status, await api.text()]).toEqual([404, 'api 404']);
    } finally {
      uWS.us_listen_socket_close(listen);
    }
  });
});
