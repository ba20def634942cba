import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// `vite build web` -> web/dist (served by the gateway at `/`). `vite web` proxies the API to a local server.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  server: {
    proxy: {
      '/v1/ws': { target: 'ws://127.0.0.1:8080', ws: true },
      '/v1': 'http://127.0.0.1:8080',
    },
  },
});
