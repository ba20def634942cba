/** REST helpers for the v1 API. Every call has a timeout; failures are RealChatErrors with the server's code. */
import { RealChatError } from './errors.js';
import type { Envelope } from './types.js';

type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<{
  status: number;
  text(): Promise<string>;
}>;

export interface RestOptions {
  /** http(s)://host (no trailing slash); '' for same-origin in browsers. */
  baseUrl: string;
  token?: string | (() => string | Promise<string>);
  fetch?: FetchLike;
  timeoutMs?: number;
}

export type { ConversationSummary } from '../common/wire.js';
import type { ConversationSummary } from '../common/wire.js';

export interface CreatedConversation {
  conversation_id: string;
  title: string | null;
  member_ids: string[];
  last_sequence: number;
  created_at: string;
}

export interface AddedMembers {
  conversation_id: string;
  added_user_ids: string[];
  member_count: number;
  last_sequence: number;
}

export class RestClient {
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;

  constructor(private readonly o: RestOptions) {
    const f = o.fetch ?? (globalThis.fetch as unknown as FetchLike | undefined);
    if (!f) throw new Error('no fetch implementation: pass options.fetch');
    this.fetchImpl = (url, init) => f(url, init);
    this.timeoutMs = o.timeoutMs ?? 15_000;
  }

  /** Dev auth (embedded mode only): a token for a new (or the given) user. */
  devToken(body: { name?: string; user_id?: string } = {}): Promise<{ user_id: string; token: string }> {
    return this.request('POST', '/v1/dev/token', body, false);
  }

  createConversation(memberIds: string[], title?: string): Promise<CreatedConversation> {
    return this.request('POST', '/v1/conversations', { member_ids: memberIds, ...(title ? { title } : {}) });
  }

  addMembers(conversationId: string, userIds: string[]): Promise<AddedMembers> {
    return this.request('POST', `/v1/conversations/${encodeURIComponent(conversationId)}/members`, { user_ids: userIds });
  }

  listConversations(limit?: number): Promise<{ conversations: ConversationSummary[]; has_more?: boolean }> {
    return this.request('GET', `/v1/conversations${limit ? `?limit=${limit}` : ''}`);
  }

  listMessages(conversationId: string, afterSequence = 0, limit = 100): Promise<{ messages: Envelope[]; has_more: boolean }> {
    return this.request(
      'GET',
      `/v1/conversations/${encodeURIComponent(conversationId)}/messages?after_sequence=${afterSequence}&limit=${limit}`,
    );
  }

  /** Sends over REST (idempotent with the same key). */
  sendMessage(conversationId: string, payload: unknown, idempotencyKey: string): Promise<Envelope> {
    return this.request('POST', `/v1/conversations/${encodeURIComponent(conversationId)}/messages`, {
      idempotency_key: idempotencyKey,
      payload,
    });
  }

  private async request<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (auth && this.o.token !== undefined) {
      const t = typeof this.o.token === 'function' ? await this.o.token() : this.o.token;
      headers.authorization = `Bearer ${t}`;
    }
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this.timeoutMs);
    let status: number;
    let text: string;
    try {
      const res = await this.fetchImpl(this.o.baseUrl + path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: ctrl.signal,
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      if (ctrl.signal.aborted) throw new RealChatError('timeout', `${method} ${path}: no answer within ${this.timeoutMs} ms`);
      throw new RealChatError('network', `${method} ${path}: ${String((err as Error)?.message ?? err)}`);
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (status >= 200 && status < 300) return parsed as T;
    const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new RealChatError(e?.code ?? 'internal', e?.message ?? `${method} ${path} failed with HTTP ${status}`, undefined, status);
  }
}
