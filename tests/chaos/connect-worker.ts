/**
 * The Kafka Connect worker running the Debezium outbox connector, for a chaos run with
 * `--relay debezium` (the outbox published from PostgreSQL's WAL instead of by our relays). One
 * worker: nothing replaces it while it is down, the replication slot keeps the WAL meanwhile.
 * Started through tests/harness/kafka.ts (infra/kafka/connect.sh); its faults are kill -9,
 * SIGSTOP/SIGCONT and SIGTERM (a clean stop), each followed by a restart.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConnectHandle, startConnect } from '../harness/kafka.js';
import { onEmergency, signal } from './procs.js';

export class ConnectWorker {
  paused = false;
  private readonly unregister: () => void;

  private constructor(
    readonly handle: ConnectHandle,
    private readonly dir: string,
  ) {
    this.unregister = onEmergency(() => {
      const pid = this.pid();
      signal(pid, 'SIGCONT');
      signal(pid, 'SIGKILL');
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  /** Starts the worker and registers the outbox connector on `topic`; resolves once its task runs. */
  static async create(brokers: string, pgPort: number, topic: string): Promise<ConnectWorker> {
    // Our own dir: a clean stop (the SIGTERM fault) must keep the worker's state for its restart.
    const dir = mkdtempSync(join(tmpdir(), 'realchat-chaos-connect-'));
    const handle = await startConnect(brokers, { host: '127.0.0.1', port: pgPort, db: 'postgres' }, { dir }).catch((err: unknown) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
    const w = new ConnectWorker(handle, dir);
    try {
      await handle.registerOutbox(topic);
    } catch (err) {
      await w.stop();
      throw err;
    }
    return w;
  }

  get name(): string {
    return 'connect';
  }

  pid(): number | null {
    const f = join(this.dir, 'pid');
    const pid = existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : Number.NaN;
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  sig(s: NodeJS.Signals): void {
    signal(this.pid(), s);
    if (s === 'SIGSTOP') this.paused = true;
    if (s === 'SIGCONT') this.paused = false;
  }

  /** kill -9 (offsets and connector config live in Kafka and survive). */
  kill(): Promise<void> {
    this.sig('SIGCONT');
    return this.handle.crash();
  }

  /** SIGTERM, bounded wait, then SIGKILL (connect.sh stop): the worker commits its offsets on the way out. */
  term(): Promise<void> {
    this.sig('SIGCONT');
    return this.handle.stop();
  }

  /** Starts it again; resolves once the connector and its task are RUNNING (throws after 60 s). */
  restart(): Promise<void> {
    return this.handle.restart();
  }

  /** Stops the worker; its log goes to `keepLogsIn` (the run's log dir) before its dir is removed. */
  async stop(keepLogsIn?: string): Promise<void> {
    this.sig('SIGCONT');
    await this.handle.stop().catch(() => {});
    if (keepLogsIn) {
      for (const f of ['connect.log', 'stdout.log']) {
        const from = join(this.dir, 'logs', f);
        if (existsSync(from)) copyFileSync(from, join(keepLogsIn, f === 'connect.log' ? 'connect.log' : 'connect-stdout.log'));
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    this.unregister();
  }
}
