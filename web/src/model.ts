/** The app's state. Bounded: at most MAX_MESSAGES entries kept per conversation, MAX_ERRORS errors shown. */
import type { ConversationSummary, Envelope, MemberSummary, Role, StateChange } from '../../client/index.js';

export const MAX_MESSAGES = 2000;
export const MAX_ERRORS = 5;
export const TYPING_SHOW_MS = 4000;
/** Display names remembered (user id -> name). */
export const MAX_NAMES = 5000;

export interface Pending {
  key: string;
  text: string;
  status: 'sending' | 'failed';
  error?: string;
}

export interface Conversation {
  id: string;
  title: string | null;
  lastSeq: number;
  /** My read position. */
  readSeq: number;
  /** Others' plain messages after my read position (the server's count, then live ones). */
  unread: number;
  /** My role (v1.1), when known. */
  role: Role | null;
  /**
   * Timeline entries shown, by sequence: plain messages in their current state (edited: `edited_at`
   * and the latest payload; deleted: `deleted`, payload null) and membership/role entries.
   */
  messages: Map<number, Envelope>;
  pending: Map<string, Pending>;
  historyLoaded: boolean;
  /** Older entries exist below the oldest shown. */
  hasOlder: boolean;
  loadingOlder: boolean;
  /** Members (GET /members), by user id. */
  members: Map<string, MemberSummary>;
  membersLoaded: boolean;
  /** Other members' read positions, from GET /members and live receipts. */
  readBy: Map<string, number>;
  /** user -> until (ms epoch) */
  typing: Map<string, number>;
}

export interface AppError {
  id: number;
  text: string;
}

export class Model {
  readonly conversations = new Map<string, Conversation>();
  activeId: string | null = null;
  connection: StateChange = { state: 'idle', attempt: 0 };
  errors: AppError[] = [];
  /** Display names (GET /v1/users/{id}, member lists, search results); null: the user has none. */
  readonly names = new Map<string, string | null>();
  /** The message being edited in the composer. */
  editing: { conversationId: string; messageId: string } | null = null;
  /** Presence of the open conversation's members (client.presence; at most PRESENCE_WATCH_MAX users). */
  readonly presence = new Map<string, { status: 'online' | 'offline'; last_seen_at: string | null }>();
  private errorNo = 0;

  constructor(readonly me: { user_id: string; name: string }) {
    this.setName(me.user_id, me.name || null);
  }

  upsertSummary(s: ConversationSummary): Conversation {
    const c = this.ensure(s.conversation_id);
    c.title = s.title;
    c.lastSeq = Math.max(c.lastSeq, s.last_sequence);
    c.readSeq = Math.max(c.readSeq, s.read_sequence);
    c.unread = s.unread;
    if (s.role) c.role = s.role;
    return c;
  }

  ensure(id: string): Conversation {
    let c = this.conversations.get(id);
    if (!c) {
      c = {
        id,
        title: null,
        lastSeq: 0,
        readSeq: 0,
        unread: 0,
        role: null,
        messages: new Map(),
        pending: new Map(),
        historyLoaded: false,
        hasOlder: false,
        loadingOlder: false,
        members: new Map(),
        membersLoaded: false,
        readBy: new Map(),
        typing: new Map(),
      };
      this.conversations.set(id, c);
    }
    return c;
  }

  /** The conversation is gone for this user (left, removed). */
  forget(id: string): void {
    this.conversations.delete(id);
    if (this.activeId === id) this.activeId = null;
    if (this.editing?.conversationId === id) this.editing = null;
  }

  /** Adds an entry (a plain message in its current state, or a membership/role entry) to show. */
  addMessage(env: Envelope): Conversation {
    const c = this.ensure(env.conversation_id);
    const prior = c.messages.get(env.sequence_number);
    // A history page never undoes what a later entry changed (deleted stays deleted).
    if (!(prior?.deleted && !env.deleted)) c.messages.set(env.sequence_number, env);
    c.pending.delete(env.idempotency_key);
    c.lastSeq = Math.max(c.lastSeq, env.sequence_number);
    c.typing.delete(env.sender_id);
    if (c.messages.size > MAX_MESSAGES) {
      const keep = new Set([...c.messages.keys()].sort((a, b) => a - b).slice(-MAX_MESSAGES));
      for (const k of c.messages.keys()) if (!keep.has(k)) c.messages.delete(k);
      c.hasOlder = true;
    }
    return c;
  }

  /** An edit or delete applied to a shown message (the SDK's current state of it). */
  updateMessage(state: Envelope): void {
    const c = this.conversations.get(state.conversation_id);
    if (c?.messages.has(state.sequence_number)) c.messages.set(state.sequence_number, state);
    if (state.deleted && this.editing?.messageId === state.message_id) this.editing = null;
  }

  /** Lowest sequence shown (for loading older history). */
  oldestSeq(c: Conversation): number {
    let min = Number.POSITIVE_INFINITY;
    for (const k of c.messages.keys()) if (k < min) min = k;
    return min === Number.POSITIVE_INFINITY ? c.lastSeq + 1 : min;
  }

  setMembers(c: Conversation, members: MemberSummary[]): void {
    c.members = new Map(members.map((m) => [m.user_id, m]));
    c.membersLoaded = true;
    for (const m of members) {
      if (m.name) this.setName(m.user_id, m.name);
      if (m.user_id === this.me.user_id) {
        c.role = m.role;
        c.readSeq = Math.max(c.readSeq, m.read_sequence);
      } else if (m.read_sequence > 0) c.readBy.set(m.user_id, Math.max(c.readBy.get(m.user_id) ?? 0, m.read_sequence));
    }
  }

  setName(userId: string, name: string | null): void {
    if (this.names.size >= MAX_NAMES && !this.names.has(userId)) {
      const oldest = this.names.keys().next();
      if (!oldest.done && oldest.value !== this.me.user_id) this.names.delete(oldest.value);
    }
    this.names.set(userId, name ? name.slice(0, 100) : null);
  }

  /** A person's display name; never their raw id ("…" while it is being looked up). */
  nameOf(userId: string, opts: { you?: boolean } = { you: true }): string {
    if (opts.you !== false && userId === this.me.user_id) return 'You';
    if (!this.names.has(userId)) return '…';
    return this.names.get(userId) ?? 'Unnamed user';
  }

  unread(c: Conversation): number {
    return c.unread;
  }

  /** Most recently active first. */
  sortedConversations(): Conversation[] {
    return [...this.conversations.values()].sort((a, b) => lastActivity(b).localeCompare(lastActivity(a)) || a.id.localeCompare(b.id));
  }

  addError(text: string): void {
    this.errors = [...this.errors, { id: ++this.errorNo, text }].slice(-MAX_ERRORS);
  }

  dismissError(id: number): void {
    this.errors = this.errors.filter((e) => e.id !== id);
  }
}

function lastActivity(c: Conversation): string {
  const m = c.messages.get(c.lastSeq);
  return m?.created_at ?? (c.lastSeq > 0 ? '0' : '');
}

/** A plain message (not a membership, role, edit or delete entry). */
export function isPlain(env: Envelope): boolean {
  return env.kind === undefined || env.kind === 'message';
}

export function messageText(env: Envelope): string {
  const p = env.payload as { text?: unknown } | null;
  if (p && typeof p === 'object' && typeof p.text === 'string') return p.text;
  return typeof env.payload === 'string' ? env.payload : JSON.stringify(env.payload);
}

/** A one-line description of a membership or role entry, with names. */
export function systemText(m: Model, env: Envelope): string {
  const p = (env.payload ?? {}) as { user_ids?: unknown; reason?: unknown; user_id?: unknown; role?: unknown };
  const by = m.nameOf(env.sender_id);
  const who = (ids: unknown) =>
    Array.isArray(ids)
      ? ids
          .filter((x): x is string => typeof x === 'string')
          .map((u) => m.nameOf(u))
          .join(', ')
      : '';
  switch (env.kind) {
    case 'members_added':
      return `${by} added ${who(p.user_ids)}`;
    case 'members_removed':
      return p.reason === 'left' ? `${who(p.user_ids)} left` : `${by} removed ${who(p.user_ids)}`;
    case 'role_changed':
      return `${by} made ${typeof p.user_id === 'string' ? m.nameOf(p.user_id) : 'someone'} ${p.role === 'admin' ? 'an admin' : 'a member'}`;
    default:
      return '';
  }
}

/** Ids named by an entry (sender and payload), to look up their names. */
export function idsOf(env: Envelope): string[] {
  const ids = [env.sender_id];
  const p = env.payload as { user_ids?: unknown; user_id?: unknown } | null;
  if (p && typeof p === 'object' && !isPlain(env)) {
    if (Array.isArray(p.user_ids)) for (const u of p.user_ids) if (typeof u === 'string') ids.push(u);
    if (typeof p.user_id === 'string') ids.push(p.user_id);
  }
  return ids;
}

export function canModerate(role: Role | null): boolean {
  return role === 'owner' || role === 'admin';
}
