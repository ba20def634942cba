/** The shared shape of a role's process entry: config from the environment, signals, exit codes. */
import { loadConfig, ConfigError, type Config } from './config.js';

export function runMain(role: string, start: (config: Config) => Promise<{ stop(): Promise<void> }>): void {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`realchat ${role}: ${(err as Error).message}`);
    process.exit(2);
  }
  start(config).then(
    (running) => {
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        const hard = setTimeout(() => process.exit(1), config.timeouts.drainMs + 5000);
        hard.unref();
        running.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    },
    (err) => {
      console.error(`realchat ${role} failed to start:`, err instanceof ConfigError ? err.message : err);
      process.exit(err instanceof ConfigError ? 2 : 1);
    },
  );
}
