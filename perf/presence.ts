/**
 * Presence for clients benchmark: presence changes per second and their fanout to watchers.
 *
 *   node dist/perf/presence.js [--subjects 50] [--watchers 200] [--duration 10]
 *                              [--url http://a:port,http://b:port --jwt-secret S] [--out FILE]
 *
 * `subjects` users each cycle for `duration` s: connect (hello), wait until every watcher saw
 * `online`, close, wait until every watcher saw `offline`. `watchers` connections each watch every
 * subject (presence_subscribe), all members of one conversation. Reported: completed changes per
 * second, presence frames per second (changes × watchers), latency from the subject's action (hello
 * sent / close called) to each watcher's frame, and frames that never came (lost, after a 5 s wait).
 * Without --url it starts RealChat in this process (embedded PGlite, REALCHAT_PRESENCE_GRACE_MS=0 so
 * every close is a change at once); with --url the target must run with REALCHAT_PRESENCE_GRACE_MS=0
 * and the given HS256 secret (watchers and subjects are spread round robin over the URLs, so on the
 * distributed stack changes cross nodes through Redis). Results: perf/results/presence-<target>-<stamp>.{json,md}.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import WebSocket from 'ws';
import { loadConfig } from '../common/config.js';
import { startRealChat } from '../standalone/realchat.js';
import { newHist, recordMs, summarize } from './lib/hist.js';
import { makeConversations, makeUsers, type User } from './lib/realchat-api.js';
import { markdownHead, resultsBase } from './lib/report.js';

interface Opts {
  subjects: number;
  watchers: number;
  durationS: number;
  urls: string[] | null;
  secret: string;
  out: string | undefined;
}

function parse(argv: string[]): Opts {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, dflt: number, max: number) => {
    const v = get(name);
    const n = v === undefined ? dflt : Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be an integer 1-${max}`);
    return n;
  };
  const url = get('url');
  if (url && !get('jwt-secret')) throw new Error('--url needs --jwt-secret (the HS256 secret the target runs with)');
  return {
    subjects: num('subjects', 50, 1000),
    watchers: num('watchers', 200, 20_000),
    durationS: num('duration', 10, 3600),
    urls: url ? url.split(',').map((u) => u.trim().replace(/\/$/, '')) : null,
    secret: get('jwt-secret') ?? randomBytes(32).toString('hex'),
    out: get('out'),
  };
}

type Frame = Record<string, any> & { type: string };

/** One connection that hands every frame to `onFrame`; resolves once welcomed. */
function connect(base: string, token: string, onFrame: (f: Frame) => void): Promise<WebSocket> {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/ws`, { handshakeTimeout: 10_000 });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no welcome within 10 s')), 10_000);
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', token })));
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      if (f.type === 'welcome') {
        clearTimeout(timer);
        resolve(ws);
      } else if (f.type === 'error' && f.code === 'unauthorized') reject(new Error(f.message));
      onFrame(f);
    });
  });
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const started = new Date().toISOString();
  const embedded = o.urls
    ? null
    : await startRealChat(
        loadConfig({
          PORT: '0',
          LOG_LEVEL: 'warn',
          REALCHAT_JWT_SECRET: o.secret,
          REALCHAT_PRESENCE_GRACE_MS: '0',
          REALCHAT_FRAMES_PER_S: '100000',
          REALCHAT_FRAME_BURST: '100000',
          REALCHAT_MAX_CONNECTIONS_PER_ADDRESS: String(o.watchers + o.subjects + 100),
        }),
        { ephemeralEmbedded: true },
      );
  const urls = o.urls ?? [`http://127.0.0.1:${embedded!.port}`];
  const runId = randomUUID().slice(0, 8);
  const subjects = await makeUsers(urls[0]!, o.subjects, 'jwt', o.secret, runId);
  const watchers = await makeUsers(urls[0]!, o.watchers, 'jwt', o.secret, runId);
  await makeConversations(urls, [[...watchers, ...subjects]], runId);
  const subjectIds = subjects.map((s) => s.userId);

  // Per subject: the status it is going to, when the action started, the watchers still to see it.
  const pending = new Map<string, { status: string; at: number; left: number; done: () => void }>();
  const hist = newHist();
  let frames = 0;
  /** Frames of the subscribe answers (before the cycles start). */
  let initial = 0;
  let measuring = false;
  const onWatcherFrame = (f: Frame) => {
    if (f.type !== 'presence') return;
    if (!measuring) {
      initial++;
      return;
    }
    frames++;
    const p = pending.get(f.user_id);
    if (!p || f.status !== p.status) return;
    recordMs(hist, performance.now() - p.at);
    if (--p.left === 0) p.done();
  };
  const watcherSockets: WebSocket[] = [];
  await Promise.all(
    watchers.map(async (w: User, i) => {
      const ws = await connect(urls[i % urls.length]!, w.token, onWatcherFrame);
      watcherSockets.push(ws);
      for (let k = 0; k < subjectIds.length; k += 1000)
        ws.send(JSON.stringify({ type: 'presence_subscribe', user_ids: subjectIds.slice(k, k + 1000) }));
    }),
  );
  const expectInitial = o.watchers * o.subjects;
  for (let t = 0; initial < expectInitial && t < 600; t++) await new Promise((r) => setTimeout(r, 50));
  if (initial < expectInitial) throw new Error(`only ${initial} of ${expectInitial} subscribe answers arrived`);
  measuring = true;

  let changes = 0;
  let lost = 0;
  const waitAll = (userId: string, status: string, at: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        lost += pending.get(userId)?.left ?? 0;
        pending.delete(userId);
        resolve();
      }, 5000);
      pending.set(userId, {
        status,
        at,
        left: o.watchers,
        done: () => {
          clearTimeout(timer);
          pending.delete(userId);
          changes++;
          resolve();
        },
      });
    });

  const t0 = performance.now();
  const deadline = t0 + o.durationS * 1000;
  await Promise.all(
    subjects.map(async (s, i) => {
      const base = urls[(i + 1) % urls.length]!;
      while (performance.now() < deadline) {
        const onAt = performance.now();
        const online = waitAll(s.userId, 'online', onAt);
        const ws = await connect(base, s.token, () => {});
        await online;
        const offAt = performance.now();
        const offline = waitAll(s.userId, 'offline', offAt);
        ws.close();
        await offline;
      }
    }),
  );
  const elapsedS = (performance.now() - t0) / 1000;
  for (const ws of watcherSockets) ws.close();
  await embedded?.close();

  const latency = summarize(hist);
  const result = {
    scenario: 'presence',
    target: o.urls ? 'realchat-url' : 'realchat-embedded',
    started_at: started,
    command: `node dist/perf/presence.js ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, memory_bytes: os.totalmem(), node: process.version },
    options: { subjects: o.subjects, watchers: o.watchers, duration_s: o.durationS, urls: o.urls?.length ?? 0 },
    elapsed_s: Math.round(elapsedS * 100) / 100,
    changes,
    changes_per_s: Math.round((changes / elapsedS) * 10) / 10,
    frames,
    frames_per_s: Math.round(frames / elapsedS),
    fanout_per_change: o.watchers,
    lost_frames: lost,
    latency_ms: latency,
  };
  const base = resultsBase(o.out, `presence-${result.target}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    ...markdownHead(
      `presence · ${result.target}`,
      `Started ${started} on ${result.machine.cpus} CPUs, Node ${process.version}; the generator runs on the same machine.`,
      result.command,
    ),
    '| subjects | watchers | changes/s | presence frames/s | fanout per change | lost frames | p50 ms | p99 ms | max ms |',
    '|---|---|---|---|---|---|---|---|---|',
    `| ${o.subjects} | ${o.watchers} | ${result.changes_per_s} | ${result.frames_per_s} | ${o.watchers} | ${lost} | ${latency.p50} | ${latency.p99} | ${latency.max} |`,
    '',
    'Latency: from the subject sending hello (online) or closing (offline) to each watcher receiving the frame.',
    '',
  ].join('\n');
  writeFileSync(`${base}.md`, md);
  console.log(md);
  console.log(`results: ${base}.{json,md}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
