/**
 * The shared shape of a role's process entry: config from the environment, signals, exit codes,
 * and the last line of defence for errors nothing else caught.
 *
 * Policy (docs/architecture.md, "bad input and abuse"): every request path is guarded, so reaching
 * these handlers means a bug. An uncaught exception leaves the process in an unknown state: it is
 * logged as fatal with its context, then the process drains (bounded) and exits 1 for its
 * supervisor to restart it. An unhandled rejection is a promise nobody awaited: it is logged as
 * fatal and counted, and the process keeps serving (nothing is known to be corrupt).
 */
import { loadConfig, ConfigError, type Config } from './config.js';
import { createLogger } from './log.js';

export function runMain(role: string, start: (config: Config) => Promise<{ stop(): Promise<void> }>): void {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`realchat ${role}: ${(err as Error).message}`);
    process.exit(2);
  }
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role });
  let running: { stop(): Promise<void> } | null = null;
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    const hard = setTimeout(() => process.exit(1), config.timeouts.drainMs + 5000);
    hard.unref();
    (running ? running.stop() : Promise.resolve()).then(
      () => process.exit(code),
      () => process.exit(1),
    );
  };

  let unhandled = 0;
  process.on('unhandledRejection', (reason) => {
    // Bounded: a bug that rejects in a loop must not flood the log.
    if (++unhandled <= 100 || unhandled % 1000 === 0)
      log.fatal({ err: reason, count: unhandled }, 'unhandled promise rejection (a bug); still serving');
  });
  process.on('uncaughtException', (err, origin) => {
    log.fatal({ err, origin }, 'uncaught exception (a bug): draining, then exiting 1');
    stop(1);
  });

  start(config).then(
    (r) => {
      running = r;
      process.once('SIGTERM', () => stop(0));
      process.once('SIGINT', () => stop(0));
    },
    (err) => {
      console.error(`realchat ${role} failed to start:`, err instanceof ConfigError ? err.message : err);
      process.exit(err instanceof ConfigError ? 2 : 1);
    },
  );
}
