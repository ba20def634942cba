/**
 * Presence for clients in the web app (headless Debian Chromium, playwright-core): the member panel
 * of the open conversation shows a presence dot per member and "last seen" for an offline member.
 * Alice uses the app; Bob is a plain WebSocket client that comes and goes.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

const ROOT = resolve(import.meta.dirname, '..');
const GRACE_MS = 500;

async function buildWeb(): Promise<void> {
  await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'web', '--logLevel', 'warn'],
    { cwd: ROOT, timeout: 120_000 },
  );
  if (!existsSync(join(ROOT, 'web', 'dist', 'index.html'))) throw new Error('vite build produced no web/dist/index.html');
}

describe('presence in the web app (headless Chromium)', () => {
  let s: TestServer;
  let browser: Browser;

  beforeAll(async () => {
    await buildWeb();
    s = await startTestServer('pglite', { REALCHAT_PRESENCE_GRACE_MS: String(GRACE_MS) });
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
      timeout: 30_000,
    });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await s?.close();
  });

  const dot = (page: Page, userId: string) => page.locator(`[data-testid="member"][data-user-id="${userId}"] [data-testid="presence"]`);

  it('shows a dot per member and "last seen" once a member is offline', async () => {
    const bob = await s.token();
    const ctx = await browser.newContext({ viewport: { width: 1180, height: 720 } });
    try {
      const page = await ctx.newPage();
      await page.goto(s.http);
      await page.getByTestId('signin-name').fill('Alice');
      await page.getByTestId('signin').click();
      const aliceId = (await page.getByTestId('my-id').textContent({ timeout: 10_000 }))!.trim();
      await page.getByTestId('new-title').fill('Presence');
      await page.getByTestId('new-members').fill(bob.userId);
      await page.getByTestId('create-conv').click();
      await page.waitForSelector('[data-testid="conv-item"].active');

      await expect.poll(() => dot(page, bob.userId).getAttribute('data-status'), { timeout: 10_000 }).toBe('offline');
      await expect.poll(() => dot(page, aliceId).getAttribute('data-status'), { timeout: 10_000 }).toBe('online');
      const b = await TestClient.connect(s.wsUrl, bob.token);
      await expect.poll(() => dot(page, bob.userId).getAttribute('data-status'), { timeout: 10_000 }).toBe('online');
      const lastSeen = page.locator(`[data-testid="member"][data-user-id="${bob.userId}"] [data-testid="last-seen"]`);
      expect(await lastSeen.count()).toBe(0);

      b.close();
      await expect.poll(() => dot(page, bob.userId).getAttribute('data-status'), { timeout: 10_000 }).toBe('offline');
      await expect.poll(() => lastSeen.textContent(), { timeout: 10_000 }).toBe('last seen just now');
    } finally {
      await ctx.close();
    }
  });
});
