/**
 * The embedded database (PGlite) runs with settings sized for one process with one connection
 * (common/embedded-postgres.ts): PostgreSQL's 128 MB of shared buffers would sit in the process's
 * own memory. Fails if PGlite stops applying `postgresqlconf` (a silent RSS regression otherwise).
 */
import { afterAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../common/embedded-postgres.js';

describe('embedded PostgreSQL settings', () => {
  let db: EmbeddedPostgres | null = null;
  afterAll(async () => db?.close());

  it('runs with 32 MB of shared buffers, room for 10 connections, and 32-64 MB of WAL kept between checkpoints', async () => {
    db = await startEmbeddedPostgres(null);
    const sql = postgres(db.url, { max: 1, connect_timeout: 10 });
    try {
      const [buffers] = await sql<{ shared_buffers: string }[]>`SHOW shared_buffers`;
      const [conns] = await sql<{ max_connections: string }[]>`SHOW max_connections`;
      const [minWal] = await sql<{ min_wal_size: string }[]>`SHOW min_wal_size`;
      const [maxWal] = await sql<{ max_wal_size: string }[]>`SHOW max_wal_size`;
      expect([buffers!.shared_buffers, conns!.max_connections, minWal!.min_wal_size, maxWal!.max_wal_size]).toEqual([
        '32MB',
        '10',
        '32MB',
        '64MB',
      ]);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
});
