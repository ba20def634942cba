import { mkdir } from 'node:fs/promises';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface EmbeddedPostgres {
  /** postgres:// URL of the loopback socket in front of PGlite. */
  url: string;
  close(): Promise<void>;
}

/**
 * Runs PGlite (in-process Postgres) behind pglite-socket on an ephemeral loopback port so the
 * same postgres.js code path serves both modes. PGlite is single-connection: use max: 1.
 * dataDir null = in memory (tests).
 */
export async function startEmbeddedPostgres(dataDir: string | null): Promise<EmbeddedPostgres> {
  if (dataDir) await mkdir(dataDir, { recursive: true });
  const db = await PGlite.create(dataDir ? { dataDir } : {});
  const server = new PGLiteSocketServer({ db, port: 0, host: '127.0.0.1' });
  await server.start();
  const addr = (server as unknown as { server: { address(): { port: number } } }).server.address();
  return {
    url: `postgres://postgres@127.0.0.1:${addr.port}/postgres`,
    async close() {
      await server.stop();
      await db.close();
    },
  };
}
