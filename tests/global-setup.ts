import type { TestProject } from 'vitest/node';
import { startPostgres, type PostgresServer } from './harness/postgres.js';

let pg: PostgresServer | null = null;

/** One real PostgreSQL for the whole run; each test file gets its own database (tests/harness/server.ts). */
export async function setup(project: TestProject): Promise<void> {
  pg = await startPostgres();
  project.provide('postgresUrl', pg.url);
}

export async function teardown(): Promise<void> {
  pg?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}
