/**
 * Posts pending webhook deliveries. Per (webhook, conversation) only the oldest pending row is
 * eligible, so a conversation's next event waits for the previous one's success or dead letter;
 * different conversations and webhooks go in parallel, up to `concurrency` requests at once. A
 * claimed row is held (`locked_until`) for the attempt, so several dispatchers can share the table
 * and a crashed one's rows are taken over once the hold expires (sent again: at least once).
 * A failed attempt waits retryScheduleMs[n] before the next; when the schedule is spent the row
 * is dead (replayable with `npm run webhooks:replay`).
 */
import type { Sql } from '../../common/db.js';
import type { Logger } from '../../common/log.js';
import { Sleeper, backoffMs } from '../../common/backoff.js';
import { withTimeout } from '../../common/timeout.js';
import { UrlRefusedError, type UrlGuard } from '../../common/url-guard.js';
import { WEBHOOK_HEADERS, signWebhook } from '../../common/webhook-signature.js';
import type { WebhookMetrics } from './metrics.js';
import type { PostResult, WebhookPoster } from './http-post.js';

export interface SenderSettings {
  requestTimeoutMs: number;
  dnsTimeoutMs: number;
  retryScheduleMs: readonly number[];
  concurrency: number;
  pollMs: number;
  queryTimeoutMs: number;
}

interface Claimed {
  id: number;
  webhook_id: string;
  event_id: string;
  conversation_id: string;
  body: string;
  attempts: number;
  url: string;
  secret: string;
}

export interface WebhookSender {
  start(): void;
  /** New rows were queued: look now rather than at the next poll. */
  wake(): void;
  /** Stops claiming and waits (bounded by the request timeout) for the attempts in flight. */
  stop(): Promise<void>;
}

export function createWebhookSender(deps: {
  sql: Sql;
  log: Logger;
  metrics: WebhookMetrics;
  settings: SenderSettings;
  guard: UrlGuard;
  post: WebhookPoster;
}): WebhookSender {
  const { sql, log, metrics, settings: s } = deps;
  const sleeper = new Sleeper();
  const inFlight = new Set<Promise<void>>();
  // Long enough for DNS and the request; past it another dispatcher may take the row over.
  const holdMs = s.dnsTimeoutMs + s.requestTimeoutMs + 5000;
  let running = false;
  let loop: Promise<void> | null = null;
  let lastCount = 0;

  const db = <T>(p: Promise<T>, what: string) => withTimeout(p, s.queryTimeoutMs, what);

  function claim(n: number): Promise<Claimed[]> {
    return db(
      sql<Claimed[]>`
        WITH heads AS (
          SELECT DISTINCT ON (webhook_id, conversation_id) id
          FROM webhook_deliveries WHERE status = 'pending'
          ORDER BY webhook_id, conversation_id, id
        ), due AS (
          SELECT d.id FROM webhook_deliveries d
          JOIN heads ON heads.id = d.id
          JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
          WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
            AND (d.locked_until IS NULL OR d.locked_until < clock_timestamp())
          ORDER BY d.next_attempt_at, d.id
          LIMIT ${n}
          FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE webhook_deliveries d
        SET locked_until = clock_timestamp() + make_interval(secs => ${holdMs / 1000}), attempts = d.attempts + 1
        FROM due, webhooks w
        WHERE d.id = due.id AND w.id = d.webhook_id
        RETURNING d.id, d.webhook_id, d.event_id, d.conversation_id, d.body, d.attempts, w.url, w.secret`,
      'webhook claim',
    );
  }

  async function attempt(c: Claimed): Promise<PostResult> {
    try {
      const url = deps.guard.parse(c.url);
      const address = await deps.guard.resolve(url);
      const ts = Math.floor(Date.now() / 1000);
      return await deps.post({
        url,
        address,
        body: c.body,
        timeoutMs: s.requestTimeoutMs,
        headers: {
          [WEBHOOK_HEADERS.id]: c.event_id,
          [WEBHOOK_HEADERS.timestamp]: String(ts),
          [WEBHOOK_HEADERS.signature]: signWebhook(c.secret, c.event_id, ts, c.body),
        },
      });
    } catch (err) {
      if (err instanceof UrlRefusedError) return { outcome: 'network', status: null, error: `refused: ${err.message}`.slice(0, 200) };
      throw err;
    }
  }

  async function record(c: Claimed, r: PostResult): Promise<void> {
    if (r.outcome === 'ok') {
      await db(
        sql`UPDATE webhook_deliveries SET status = 'delivered', finished_at = clock_timestamp(), locked_until = NULL,
              last_status_code = ${r.status}, last_error = NULL
            WHERE id = ${c.id} AND status = 'pending'`,
        'webhook delivered',
      );
      return;
    }
    // attempts counts this one: after attempt n, wait schedule[n-1]; none left: dead.
    const wait = s.retryScheduleMs[c.attempts - 1];
    if (wait === undefined) {
      metrics.deadLettered.inc({ reason: 'retries_spent' });
      log.warn({ webhook_id: c.webhook_id, event_id: c.event_id, attempts: c.attempts, error: r.error }, 'webhook delivery dead-lettered');
    }
    await db(
      sql`UPDATE webhook_deliveries SET
            status = ${wait === undefined ? 'dead' : 'pending'},
            finished_at = ${wait === undefined ? sql`clock_timestamp()` : null},
            next_attempt_at = clock_timestamp() + make_interval(secs => ${(wait ?? 0) / 1000}),
            locked_until = NULL, last_status_code = ${r.status}, last_error = ${r.error}
          WHERE id = ${c.id} AND status = 'pending'`,
      'webhook retry',
    );
  }

  async function handle(c: Claimed): Promise<void> {
    const timer = metrics.attemptSeconds.startTimer();
    let r: PostResult;
    try {
      r = await attempt(c);
    } catch (err) {
      r = { outcome: 'network', status: null, error: (err as Error).message.slice(0, 200) };
    }
    timer();
    metrics.attempts.inc({ outcome: r.error?.startsWith('refused:') ? 'refused' : r.outcome });
    if (r.outcome !== 'ok')
      log.debug({ webhook_id: c.webhook_id, event_id: c.event_id, attempt: c.attempts, error: r.error }, 'webhook attempt failed');
    // If this fails the hold expires and the row is sent again: at least once.
    await record(c, r).catch((err) => {
      metrics.errors.inc();
      log.warn({ err, webhook_id: c.webhook_id, event_id: c.event_id }, 'webhook outcome not recorded; the delivery will be retried');
    });
  }

  async function countPending(): Promise<void> {
    if (Date.now() - lastCount < 10_000) return;
    lastCount = Date.now();
    const [row] = await db(
      sql<[{ n: number }]>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'pending'`,
      'webhook count',
    );
    metrics.pending.set(row.n);
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (running) {
      const free = s.concurrency - inFlight.size;
      let claimed: Claimed[] = [];
      if (free > 0) {
        try {
          claimed = await claim(free);
          await countPending();
          failures = 0;
        } catch (err) {
          metrics.errors.inc();
          log.warn({ err }, 'webhook claim failed; retrying');
          await sleeper.sleep(backoffMs(failures++, 200, 10_000));
          continue;
        }
      }
      for (const c of claimed) {
        const p = handle(c).finally(() => {
          inFlight.delete(p);
          // The conversation's next row may be due now.
          sleeper.wake();
        });
        inFlight.add(p);
      }
      // A full batch: there may be more due at once. Otherwise wait for a wake-up or the poll.
      if (claimed.length === 0 || claimed.length < free) await sleeper.sleep(s.pollMs);
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      loop = run();
    },
    wake: () => sleeper.wake(),
    async stop() {
      running = false;
      sleeper.wake();
      await loop;
      await Promise.allSettled([...inFlight]);
    },
  };
}
