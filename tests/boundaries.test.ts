/**
 * The role boundaries and the single kafkajs importer are enforced by `npm run lint` (biome.json):
 * probe files that break each rule are linted with the project's own configuration in a scratch
 * copy of the layout, and must be refused; a file that keeps the rules must pass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..');
const BIOME = join(ROOT, 'node_modules', '.bin', 'biome');

describe('lint enforces the role boundaries', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'realchat-lint-'));
    copyFileSync(join(ROOT, 'biome.json'), join(dir, 'biome.json'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function lint(path: string, source: string): Promise<{ ok: boolean; output: string }> {
    const file = join(dir, path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, source);
    try {
      const r = await promisify(execFile)(BIOME, ['lint', '--max-diagnostics=50', path], { cwd: dir, timeout: 30_000 });
      return { ok: true, output: r.stdout + r.stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  }

  const cases: Array<[string, string, string]> = [
    ['gateway/probe.ts', "import { x } from '../relay/outbox-relay.js';\nexport { x };\n", 'never each other'],
    ['gateway/probe.ts', "import { x } from '../delivery/router.js';\nexport { x };\n", 'never each other'],
    ['relay/probe.ts', "import { x } from '../gateway/node.js';\nexport { x };\n", 'never each other'],
    ['delivery/probe.ts', "import { x } from '../standalone/realchat.js';\nexport { x };\n", 'never each other'],
    ['common/probe.ts', "import { x } from '../gateway/node.js';\nexport { x };\n", 'never imports one'],
    ['gateway/probe.ts', "import k from 'kafkajs';\nexport { k };\n", 'kafkajs stays behind'],
    ['common/probe.ts', "import k from 'kafkajs';\nexport { k };\n", 'kafkajs stays behind'],
    ['common/kafka/probe.ts', "import k from 'kafkajs';\nexport { k };\n", 'Only common/kafka/kafkajs.ts'],
    ['delivery/probe.ts', "import { x } from '../common/kafka/producer.js';\nexport { x };\n", "adapter's public module"],
  ];

  it.each(cases)('%s: a file that breaks a rule is refused', async (path, source, message) => {
    const r = await lint(path, source);
    expect(r.ok, r.output).toBe(false);
    expect(r.output).toContain(message);
  });

  it('a file that keeps the rules passes', async () => {
    const r = await lint(
      'gateway/probe.ts',
      "import { x } from '../common/kafka/index.js';\nimport { y } from '../common/lru.js';\nexport { x, y };\n",
    );
    expect(r.ok, r.output).toBe(true);
  });
});
