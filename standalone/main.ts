/** Process entry of `npm start`: the whole pipeline in one process (see standalone/realchat.ts). */
import { runMain } from '../common/process-main.js';
import { startRealChat } from './realchat.js';

runMain('gateway', async (config) => {
  const app = await startRealChat(config);
  if (config.devAuth) {
    app.log.info(
      { hint: `curl -s -X POST http://${config.host}:${app.port}/v1/dev/token -d '{"name":"alice"}'` },
      'dev auth is on: get a token with POST /v1/dev/token',
    );
  }
  return {
    async stop() {
      app.log.info('draining');
      await app.close();
    },
  };
});
