/**
 * Property-based fuzzing of the REST API with Schemathesis (installed by infra/setup-debian.sh in
 * .cache/venv), against docs/openapi.yaml as the server serves it (/v1/openapi.json): no answer may
 * be a server error, every answer must be documented (status, content type, headers, body schema),
 * invalid input must be refused, and authenticated routes must refuse requests without a token.
 * Settings: tests/fuzz/schemathesis.toml; accepted known findings: tests/fuzz/known_findings.py.
 *
 * A short, seeded run here (about 450 requests, some 20 s). Longer runs: tests/fuzz/schemathesis-long.sh,
 * which runs this same test with REALCHAT_FUZZ_MAX_EXAMPLES, REALCHAT_FUZZ_SEED, REALCHAT_FUZZ_TIMEOUT_S
 * and REALCHAT_FUZZ_ARGS (more `st run` options) set.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { UNLIMITED_RATES } from './harness/env.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ST = fileURLToPath(new URL('../.cache/venv/bin/st', import.meta.url));
const CONFIG = fileURLToPath(new URL('./fuzz/schemathesis.toml', import.meta.url));
const HOOKS = fileURLToPath(new URL('./fuzz/known_findings.py', import.meta.url));

const env = process.env;
/** Fuzzing examples per operation (coverage-phase cases come on top: they are deterministic). */
const MAX_EXAMPLES = Number(env.REALCHAT_FUZZ_MAX_EXAMPLES ?? 30);
const SEED = Number(env.REALCHAT_FUZZ_SEED ?? 20261129);
const TIMEOUT_S = Number(env.REALCHAT_FUZZ_TIMEOUT_S ?? 240);
/** More `st run` options, space-separated (the long run adds --max-time and --continue-on-failure). */
const EXTRA_ARGS = (env.REALCHAT_FUZZ_ARGS ?? '').split(/\s+/).filter(Boolean);

/** Rate limits out of the way: the fuzzer is one user sending as fast as it can. */
const FUZZ_ENV = {
  HOST: '127.0.0.1',
  ...UNLIMITED_RATES,
  REALCHAT_CONVERSATION_CREATES_PER_MIN: '10000000',
  REALCHAT_MEMBER_ADDS_PER_MIN: '10000000',
  REALCHAT_DEV_TOKENS_PER_MIN: '10000000',
};

function run(
  cmd: string,
  args: string[],
  extraEnv: Record<string, string>,
  timeoutMs: number,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: { ...process.env, ...extraEnv, NO_COLOR: '1', COLUMNS: '160' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      output += `\n[test] schemathesis still running after ${timeoutMs} ms: killed\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('Schemathesis fuzzing of the REST API (postgres)', () => {
  let s: TestServer;
  let token: string;
  let conversation: string;

  beforeAll(async () => {
    s = await startTestServer('postgres', FUZZ_ENV);
    const minted = await http(s, 'POST', '/v1/dev/token', { body: { name: 'fuzzer' } });
    expect(minted.status).toBe(200);
    token = minted.body.token;
    conversation = await createConversation(s, token, [], 'fuzzing');
  });
  afterAll(async () => s?.close());

  it(
    `finds no server error, no undocumented answer and no accepted invalid input (seed ${SEED}, ${MAX_EXAMPLES} examples per operation)`,
    async () => {
      expect(existsSync(ST), `${ST} is missing: run bash infra/setup-debian.sh (it installs Schemathesis in .cache/venv)`).toBe(true);
      const started = Date.now();
      const { code, output } = await run(
        ST,
        [
          '--config-file',
          CONFIG,
          'run',
          `${s.http}/v1/openapi.json`,
          '--phases',
          'coverage,fuzzing',
          '--max-examples',
          String(MAX_EXAMPLES),
          '--seed',
          String(SEED),
          '--workers',
          '2',
          '--request-timeout',
          '10',
          '--no-color',
          ...EXTRA_ARGS,
        ],
        {
          REALCHAT_FUZZ_TOKEN: token,
          REALCHAT_FUZZ_CONVERSATION: conversation,
          SCHEMATHESIS_HOOKS: HOOKS,
          // Hypothesis' own caches (Unicode tables) under .cache/, not in the work tree.
          HYPOTHESIS_STORAGE_DIRECTORY: fileURLToPath(new URL('../.cache/hypothesis', import.meta.url)),
        },
        (TIMEOUT_S - 15) * 1000,
      );
      // The summary is short; on failure the whole report is what CI shows.
      const summary = output
        .split('\n')
        .filter((l) => /known_findings|Filtered|passed|failed|errors?|Seed|generated/i.test(l))
        .slice(-25)
        .join('\n');
      console.log(`[schemathesis] exit ${code} after ${((Date.now() - started) / 1000).toFixed(1)} s\n${code === 0 ? summary : output}`);
      expect(code, `schemathesis failed (exit ${code}):\n${output}`).toBe(0);
      // The server is still there and well.
      expect((await http(s, 'GET', '/healthz')).status).toBe(200);
      expect((await http(s, 'GET', `/v1/conversations/${conversation}/messages?limit=1`, { token })).status).toBe(200);
    },
    TIMEOUT_S * 1000,
  );
});
