// RealChat REST setup: users (dev tokens or self-signed HS256 JWTs) and conversations.
import { randomUUID } from 'node:crypto';
import { tokenFor } from './jwt.js';

export interface User {
  userId: string;
  token: string;
}

async function pool<T>(n: number, conc: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(conc, n) }, run));
  return out;
}

async function post(url: string, body: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers['authorization'] = `Bearer ${token}`;
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      /* not json */
    }
    if ((res.status === 429 || res.status === 503) && attempt < 5) {
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      continue;
    }
    return { status: res.status, json };
  }
}

export async function makeUsers(base: string, n: number, auth: 'dev' | 'jwt', secret: string, runId: string): Promise<User[]> {
  if (auth === 'jwt')
    return Array.from({ length: n }, () => {
      const userId = randomUUID();
      return { userId, token: tokenFor(userId, secret) };
    });
  return pool(n, 16, async (i) => {
    const r = await post(`${base}/v1/dev/token`, { name: `perf-${runId}-${i}` });
    if (r.status !== 200 && r.status !== 201) throw new Error(`dev token: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    return { userId: String(r.json['user_id']), token: String(r.json['token']) };
  });
}

/** Create one conversation per member list (the first member creates it); big ones are filled in chunks. */
export async function makeConversations(
  baseOrBases: string | readonly string[],
  groups: User[][],
  runId: string,
  concurrency = 8,
): Promise<string[]> {
  const CHUNK = 500;
  const bases = typeof baseOrBases === 'string' ? [baseOrBases] : baseOrBases;
  return pool(groups.length, concurrency, async (gi) => {
    const base = bases[gi % bases.length]!;
    const g = groups[gi]!;
    const creator = g[0]!;
    const others = g.slice(1).map((u) => u.userId);
    const r = await post(`${base}/v1/conversations`, { member_ids: others.slice(0, CHUNK), title: `perf ${runId} ${gi}` }, creator.token);
    if (r.status !== 201 && r.status !== 200)
      throw new Error(
        `create conversation at ${base}: HTTP ${r.status} ${JSON.stringify(r.json)}${r.status === 401 ? ' (is the JWT secret the one the gateways run with?)' : ''}`,
      );
    const id = String(r.json['conversation_id']);
    for (let i = CHUNK; i < others.length; i += CHUNK) {
      const a = await post(`${base}/v1/conversations/${id}/members`, { user_ids: others.slice(i, i + CHUNK) }, creator.token);
      if (a.status >= 300) throw new Error(`add members: HTTP ${a.status} ${JSON.stringify(a.json)}`);
    }
    return id;
  });
}
