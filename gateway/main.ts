/** Process entry: config from the environment, signals, exit codes. */
import { loadConfig, ConfigError } from '../common/config.js';
import { startRealChat } from './realchat.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`realchat: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  let app;
  try {
    app = await startRealChat(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`realchat: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  if (config.devAuth) {
    app.log.info(
      { hint: `curl -s -X POST http://${config.host}:${app.port}/v1/dev/token -d '{"name":"alice"}'` },
      'dev auth is on: get a token with POST /v1/dev/token',
    );
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, 'draining');
    const hard = setTimeout(() => {
      app.log.error('drain timed out; exiting');
      process.exit(1);
    }, config.timeouts.drainMs + 5000);
    hard.unref();
    app.close().then(
      () => process.exit(0),
      (err) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  console.error('realchat failed to start:', err);
  process.exit(1);
});
