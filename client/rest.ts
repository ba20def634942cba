/** REST helpers for the v1 API. Every call has a timeout; failures are RealChatErrors with the server's code. */
import { RealChatError } from './errors.js';
import type { Envelope, MemberSummary, PresenceSummary, Role, UserSummary } from './types.js';

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
  /** The region that numbers its entries, and how often it was re-homed (v1.3; docs/multi-region.md). */
  home_region: string;
  home_epoch: number;
}

export interface AddedMembers {
  conversation_id: string;
  added_user_ids: string[];
  member_count: number;
  last_sequence: number;
}

export interface RemovedMembers {
  conversation_id: string;
  removed_user_ids: string[];
  member_count: number;
  last_sequence: number;
}

export interface RoleSet {
  conversation_id: string;
  user_id: string;
  role: Role;
  last_sequence: number;
}

export interface MembersPage {
  members: MemberSummary[];
  has_more: boolean;
}

const enc = encodeURIComponent;

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

  /**
   * `homeRegion`: the region that numbers its entries (multi-region); another region the server
   * knows creates it there, and this region's copy follows shortly (docs/multi-region.md).
   */
  createConversation(memberIds: string[], title?: string, opts: { homeRegion?: string } = {}): Promise<CreatedConversation> {
    return this.request('POST', '/v1/conversations', {
      member_ids: memberIds,
      ...(title ? { title } : {}),
      ...(opts.homeRegion ? { home_region: opts.homeRegion } : {}),
    });
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

  /** v1.1: the `limit` entries just below `beforeSequence`, ascending; `has_more` when older ones exist. */
  listMessagesBefore(conversationId: string, beforeSequence: number, limit = 100): Promise<{ messages: Envelope[]; has_more: boolean }> {
    return this.request('GET', `/v1/conversations/${enc(conversationId)}/messages?before_sequence=${beforeSequence}&limit=${limit}`);
  }

  /** v1.1: edits a message (only its sender); the edit entry. Idempotent with the same key. */
  editMessage(conversationId: string, messageId: string, payload: unknown, idempotencyKey: string): Promise<Envelope> {
    return this.request('PATCH', `/v1/conversations/${enc(conversationId)}/messages/${enc(messageId)}`, {
      idempotency_key: idempotencyKey,
      payload,
    });
  }

  /** v1.1: deletes (erases) a message: its sender, an owner or an admin; the delete entry. */
  deleteMessage(conversationId: string, messageId: string, idempotencyKey?: string): Promise<Envelope> {
    return this.request('DELETE', `/v1/conversations/${enc(conversationId)}/messages/${enc(messageId)}`, undefined, true, idempotencyKey);
  }

  /** v1.1: removes a member (yourself: leave). */
  removeMember(conversationId: string, userId: string, idempotencyKey?: string): Promise<RemovedMembers> {
    return this.request('DELETE', `/v1/conversations/${enc(conversationId)}/members/${enc(userId)}`, undefined, true, idempotencyKey);
  }

  /** v1.1: the owner makes a member an admin or a member again. */
  setRole(conversationId: string, userId: string, role: 'admin' | 'member', idempotencyKey?: string): Promise<RoleSet> {
    return this.request('PUT', `/v1/conversations/${enc(conversationId)}/members/${enc(userId)}/role`, { role }, true, idempotencyKey);
  }

  /** v1.1: members (ordered by user id) with their role and read/delivered positions. */
  listMembers(conversationId: string, opts: { limit?: number; after?: string } = {}): Promise<MembersPage> {
    const q = new URLSearchParams();
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.after !== undefined) q.set('after', opts.after);
    const qs = q.toString();
    return this.request('GET', `/v1/conversations/${enc(conversationId)}/members${qs ? `?${qs}` : ''}`);
  }

  /** v1.1: the owner decides who may add members. */
  updateConversation(
    conversationId: string,
    body: { who_can_add: 'members' | 'admins' },
  ): Promise<{ conversation_id: string; who_can_add: string }> {
    return this.request('PATCH', `/v1/conversations/${enc(conversationId)}`, body);
  }

  /** v1.1: sets the caller's display name. */
  setName(name: string): Promise<UserSummary> {
    return this.request('PUT', '/v1/users/me', { name });
  }

  /** v1.1: users whose name starts with `query` (case-insensitive). */
  async searchUsers(query: string, limit?: number): Promise<UserSummary[]> {
    const q = new URLSearchParams({ query });
    if (limit !== undefined) q.set('limit', String(limit));
    const r = await this.request<{ users: UserSummary[] }>('GET', `/v1/users?${q}`);
    return r.users;
  }

  /** v1.1: one user, or null when there is no such user. */
  /** Presence for clients: a user who shares a conversation with this one (else `forbidden`). */
  async getPresence(userId: string): Promise<PresenceSummary> {
    return this.request<PresenceSummary>('GET', `/v1/users/${enc(userId)}/presence`);
  }

  async getUser(userId: string): Promise<UserSummary | null> {
    try {
      return await this.request<UserSummary>('GET', `/v1/users/${enc(userId)}`);
    } catch (err) {
      if (err instanceof RealChatError && err.code === 'not_found') return null;
      throw err;
    }
  }

  /** Sends over REST (idempotent with the same key). */
  sendMessage(conversationId: string, payload: unknown, idempotencyKey: string): Promise<Envelope> {
    return this.request('POST', `/v1/conversations/${encodeURIComponent(conversationId)}/messages`, {
      idempotency_key: idempotencyKey,
      payload,
    });
  }

  private async request<T>(method: string, path: string, body?: unknown, auth = true, idempotencyKey?: string): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
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
