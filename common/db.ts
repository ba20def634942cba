import postgres from 'postgres';
import { AppError, HomeElsewhereError } from './errors.js';
import { TimeoutError, withTimeout } from './timeout.js';

export type Sql = postgres.Sql<Record<string, never>>;
export type TxSql = postgres.TransactionSql<Record<string, never>>;

export interface DbOptions {
  url: string;
  /** PGlite behind pglite-socket serializes everything: it must be 1 there. */
  maxConnections: number;
  connectTimeoutS: number;
  queryTimeoutMs: number;
  applicationName: string;
  /** Connections are replaced after this long (default 30 min); null: never (a connection whose identity matters, relay/lease.ts). */
  maxLifetimeS?: number | null;
}

/**
 * Seconds before the pool's next connection attempt after `retries` failed ones in a row
 * (postgres.js' `backoff`). Its default grows 3^n/100 s up to 20 s, so after a database outage of
 * a few seconds a role waited 5-20 s more before it even tried again (docs/chaos.md, finding 14).
 * Capped at 1 s: a refused connect to a server that is down costs both sides nothing.
 */
export function reconnectDelayS(retries: number, random: () => number = Math.random): number {
  return (0.5 + random() / 2) * Math.min(0.05 * 2 ** retries, 1);
}

/**
 * postgres.js has no client-side query timeout, so the server enforces one (statement_timeout,
 * idle_in_transaction_session_timeout) and callers wrap calls in withTimeout() against a dead network.
 */
export function createSql(opts: DbOptions): Sql {
  return postgres(opts.url, {
    max: opts.maxConnections,
    connect_timeout: opts.connectTimeoutS,
    idle_timeout: opts.maxLifetimeS === null ? 0 : 60,
    max_lifetime: opts.maxLifetimeS === undefined ? 60 * 30 : opts.maxLifetimeS,
    backoff: (retries: number) => reconnectDelayS(retries),
    onnotice: () => {},
    connection: {
      application_name: opts.applicationName,
      statement_timeout: opts.queryTimeoutMs,
      idle_in_transaction_session_timeout: opts.queryTimeoutMs * 2,
    },
    types: {
      // BIGINT sequences fit a JS number far beyond any realistic conversation length (2^53).
      bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) },
    },
  }) as unknown as Sql;
}

/** A role's pool with the configured connect and query timeouts. */
export function createConfiguredSql(
  timeouts: { readonly dbConnectS: number; readonly dbQueryMs: number },
  opts: Omit<DbOptions, 'connectTimeoutS' | 'queryTimeoutMs'>,
): Sql {
  return createSql({ ...opts, connectTimeoutS: timeouts.dbConnectS, queryTimeoutMs: timeouts.dbQueryMs });
}

/** A query with its deadline (withTimeout), its failure mapped by mapDbError (unavailable, conflict, ...). */
export async function timedQuery<T>(query: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  try {
    return await withTimeout(query, timeoutMs, what);
  } catch (err) {
    throw mapDbError(err);
  }
}

/** Errors that mean "the database is not reachable right now" rather than "your request is wrong". */
export function isUnavailableError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: string; errno?: string };
  const code = e.code ?? '';
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'].includes(code)) return true;
  if (['CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED'].includes(code)) return true;
  // 57014 query_canceled (statement_timeout), 57P01-57P03 admin shutdown / cannot connect now,
  // 53300 too many connections, 08xxx connection exceptions, 40001/40P01 serialization/deadlock.
  if (/^(57014|57P0[123]|53300|08...|40001|40P01)$/.test(code)) return true;
  return e instanceof TimeoutError;
}

/**
 * The home-region fence (sql/migrations/0013_regions.sql): an entry of a conversation homed in
 * another region may not be numbered here. The region's name is the error's hint.
 */
export const HOME_FENCE_SQLSTATE = 'RCH01';

/** Maps infrastructure failures to the contract's `unavailable`; leaves everything else alone. */
export function mapDbError(err: unknown): unknown {
  if (err instanceof AppError) return err;
  const fenced = err as { code?: string; hint?: string };
  if (fenced?.code === HOME_FENCE_SQLSTATE) return new HomeElsewhereError(fenced.hint ?? '?', { cause: err });
  if (isUnavailableError(err))
    return new AppError('unavailable', 'database unavailable, retry with the same idempotency key', { cause: err, retryAfterS: 1 });
  return err;
}
