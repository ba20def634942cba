/**
 * What a connection's presence writes cost the gateway's thread and Redis, by how they are sent:
 * what a hello and a close write (common/presence.ts: the connection count up, an `online`
 * notice, the count down), N times, `--burst` connections per event-loop turn as in a reconnect
 * storm. Variants: the count written as MULTI/HINCRBY/EXPIRE/SADD/EXPIRE/EXEC or as one script,
 * each with ioredis sending a command per write or auto-pipelining (one write per event-loop turn).
 * CPU of this process (the client's share: ioredis and its socket writes) and of redis-server
 * (from /proc) per 1,000 connections, median of `--rounds` rounds, variants interleaved.
 *   node dist/perf/presence-cost.js --redis redis://127.0.0.1:16379 [--n 20000] [--burst 50] [--rounds 5] [--out OUT]
 * Writes OUT.json and OUT.md. Uses keys under rcbench:, deleted at the end.
 */
import { writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { cliArg } from './lib/cli.js';
import { machineInfo, readProc } from './lib/proc.js';
import { markdownHead, resultsBase } from './lib/report.js';
import { median } from './lib/stats.js';

type Variant = { name: string; script: boolean; autoPipelining: boolean };
const VARIANTS: Variant[] = [
  { name: 'multi', script: false, autoPipelining: false },
  { name: 'script', script: true, autoPipelining: false },
  { name: 'multi, auto-pipelined', script: false, autoPipelining: true },
  { name: 'script, auto-pipelined', script: true, autoPipelining: true },
];
const DAY_S = 86_400;
const ADD_LUA = `redis.call('HINCRBY', KEYS[1], ARGV[1], 1); redis.call('EXPIRE', KEYS[1], ARGV[3]); redis.call('SADD', KEYS[2], ARGV[2]); redis.call('EXPIRE', KEYS[2], ARGV[3]); return 1`;
const REMOVE_LUA = `local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1); if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('SREM', KEYS[2], ARGV[2]) end; return n`;

type Scripted = Redis & {
  rbAdd(u: string, n: string, node: string, user: string, ttl: number): Promise<number>;
  rbRemove(u: string, n: string, node: string, user: string): Promise<number>;
};

/** CPU seconds (user + system) of redis-server, from /proc. */
function procCpuS(pid: number): number {
  const sample = readProc(pid);
  if (!sample) throw new Error(`redis-server (pid ${pid}) is not readable in /proc: run this on the machine Redis runs on`);
  return sample.cpu_s;
}

async function connectionCycle(r: Scripted, v: Variant, i: number): Promise<void> {
  const node = 'bench-node';
  const user = `rcbench:u:${i}`;
  if (v.script) await r.rbAdd(user, `rcbench:n:${node}`, node, String(i), DAY_S);
  else
    await r
      .multi()
      .hincrby(user, node, 1)
      .expire(user, DAY_S)
      .sadd(`rcbench:n:${node}`, String(i))
      .expire(`rcbench:n:${node}`, DAY_S)
      .exec();
  await r.publish(`rcbench:p:${i}`, '{"status":"online"}');
  await r.rbRemove(user, `rcbench:n:${node}`, node, String(i));
}

async function round(r: Scripted, v: Variant, n: number, burst: number, redisPid: number) {
  const cpu0 = process.cpuUsage();
  const redis0 = procCpuS(redisPid);
  const t0 = performance.now();
  const pending: Array<Promise<void>> = [];
  for (let i = 0; i < n; i += burst) {
    for (let k = i; k < Math.min(n, i + burst); k++) pending.push(connectionCycle(r, v, k));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.all(pending);
  const wallS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { wallS, clientCpuS: (cpu.user + cpu.system) / 1e6, redisCpuS: procCpuS(redisPid) - redis0 };
}

async function main(): Promise<void> {
  const url = cliArg('redis', 'redis://127.0.0.1:16379');
  const n = Number(cliArg('n', '20000'));
  const burst = Number(cliArg('burst', '50'));
  const rounds = Number(cliArg('rounds', '5'));
  const out = resultsBase(cliArg('out', '') || undefined, 'presence-cost');
  const started = new Date().toISOString();
  const clients = new Map<string, Scripted>();
  for (const v of VARIANTS) {
    const r = new Redis(url, { enableAutoPipelining: v.autoPipelining, enableOfflineQueue: false, commandTimeout: 5000 }) as Scripted;
    r.defineCommand('rbAdd', { numberOfKeys: 2, lua: ADD_LUA });
    r.defineCommand('rbRemove', { numberOfKeys: 2, lua: REMOVE_LUA });
    await new Promise((resolve) => r.once('ready', resolve));
    clients.set(v.name, r);
  }
  const any = clients.values().next().value as Scripted;
  const redisPid = Number(/process_id:(\d+)/.exec(await any.info('server'))![1]);
  const samples = new Map<string, Array<Awaited<ReturnType<typeof round>>>>(VARIANTS.map((v) => [v.name, []]));
  for (const v of VARIANTS) await round(clients.get(v.name)!, v, Math.min(n, 2000), burst, redisPid); // warm-up
  for (let k = 0; k < rounds; k++) {
    for (const v of k % 2 === 0 ? VARIANTS : [...VARIANTS].reverse())
      samples.get(v.name)!.push(await round(clients.get(v.name)!, v, n, burst, redisPid));
  }
  for (;;) {
    const [cursor, keys] = await any.scan(0, 'MATCH', 'rcbench:*', 'COUNT', 10_000);
    if (keys.length > 0) await any.del(...keys);
    if (cursor === '0' && keys.length === 0) break;
  }
  for (const r of clients.values()) r.disconnect();
  const rows = VARIANTS.map((v) => {
    const s = samples.get(v.name)!;
    return {
      variant: v.name,
      clientCpuMsPer1000: (median(s.map((x) => x.clientCpuS)) / n) * 1e6,
      redisCpuMsPer1000: (median(s.map((x) => x.redisCpuS)) / n) * 1e6,
      connectionsPerS: n / median(s.map((x) => x.wallS)),
    };
  });
  const meta = { started, ...machineInfo(), n, burst, rounds };
  writeFileSync(`${out}.json`, `${JSON.stringify({ meta, rows, samples: Object.fromEntries(samples) }, null, 2)}\n`);
  const md = [
    ...markdownHead(
      'Presence writes per connection: client and Redis CPU by how they are sent',
      `${started}, ${meta.cpus} CPUs, Linux ${meta.kernel}, Node ${meta.node}. ${n} connections per round (${burst} per event-loop turn), median of ${rounds} rounds.`,
      `node dist/perf/presence-cost.js --redis ${url} --n ${n} --burst ${burst} --rounds ${rounds} --out ${out}`,
    ),
    '| variant | client CPU ms / 1,000 connections | redis-server CPU ms / 1,000 | connections/s |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      (r) => `| ${r.variant} | ${r.clientCpuMsPer1000.toFixed(0)} | ${r.redisCpuMsPer1000.toFixed(0)} | ${r.connectionsPerS.toFixed(0)} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(`${out}.md`, md);
  process.stdout.write(md);
}

await main();
