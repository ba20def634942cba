/**
 * A local webhook receiver for tests: verifies every request's Standard Webhooks signature, keeps
 * every request (valid or not), dedups by webhook-id like a real receiver would, and can be taken
 * down (its port closed) and brought back on the same port, or told to answer an error status.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyWebhook } from '../../common/webhook-signature.js';

export interface Received {
  id: string;
  body: any;
  valid: boolean;
}

export class WebhookReceiver {
  readonly all: Received[] = [];
  /** First arrival of each webhook-id, in arrival order. */
  readonly unique: Received[] = [];
  private readonly seen = new Set<string>();
  /** Answered to every request while set (e.g. 500); null: 204. */
  failWith: number | null = null;
  secret = '';
  port = 0;
  private server: Server | null = null;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  get invalid(): Received[] {
    return this.all.filter((r) => !r.valid);
  }

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const h = (n: string) => String(req.headers[n] ?? '');
        const valid =
          this.secret !== '' &&
          verifyWebhook(this.secret, { id: h('webhook-id'), timestamp: h('webhook-timestamp'), signature: h('webhook-signature') }, text);
        let body: any = null;
        try {
          body = JSON.parse(text);
        } catch {
          /* recorded as null */
        }
        const r = { id: h('webhook-id'), body, valid };
        this.all.push(r);
        if (this.failWith !== null) {
          res.writeHead(this.failWith).end();
          return;
        }
        if (valid && !this.seen.has(r.id)) {
          this.seen.add(r.id);
          this.unique.push(r);
        }
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Closes the port (connections refused) until start() again. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
