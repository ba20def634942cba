/** The app's state. Bounded: at most MAX_MESSAGES messages kept per conversation, MAX_ERRORS errors shown. */
import type { ConversationSummary, Envelope, StateChange } from '../../client/index.js';

export const MAX_MESSAGES = 500;
export const MAX_ERRORS = 5;
export const TYPING_SHOW_MS = 4000;

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
  messages: Map<number, Envelope>;
  pending: Map<string, Pending>;
  historyLoaded: boolean;
  /** Other members' read positions, from live receipts. */
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
  /** Display names learnt from message payloads (bounded). */
  readonly names = new Map<string, string>();
  private errorNo = 0;

  constructor(readonly me: { user_id: string; name: string }) {}

  upsertSummary(s: ConversationSummary): Conversation {
    const c = this.ensure(s.conversation_id);
    c.title = s.title;
    c.lastSeq = Math.max(c.lastSeq, s.last_sequence);
    c.readSeq = Math.max(c.readSeq, s.read_sequence);
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
        messages: new Map(),
        pending: new Map(),
        historyLoaded: false,
        readBy: new Map(),
        typing: new Map(),
      };
      this.conversations.set(id, c);
    }
    return c;
  }

  addMessage(env: Envelope): Conversation {
    const c = this.ensure(env.conversation_id);
    c.messages.set(env.sequence_number, env);
    c.pending.delete(env.idempotency_key);
    c.lastSeq = Math.max(c.lastSeq, env.sequence_number);
    c.typing.delete(env.sender_id);
    const p = env.payload as { name?: unknown } | null;
    if (p && typeof p === 'object' && typeof p.name === 'string' && p.name && this.names.size < 10_000)
      this.names.set(env.sender_id, p.name.slice(0, 100));
    if (c.messages.size > MAX_MESSAGES) {
      const keep = [...c.messages.keys()].sort((a, b) => a - b).slice(-MAX_MESSAGES);
      const keepSet = new Set(keep);
      for (const k of c.messages.keys()) if (!keepSet.has(k)) c.messages.delete(k);
    }
    return c;
  }

  nameOf(userId: string): string {
    return userId === this.me.user_id ? 'You' : (this.names.get(userId) ?? shortId(userId));
  }

  unread(c: Conversation): number {
    return Math.max(0, c.lastSeq - c.readSeq);
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

export function messageText(env: Envelope): string {
  const p = env.payload as { text?: unknown } | null;
  if (p && typeof p === 'object' && typeof p.text === 'string') return p.text;
  return typeof env.payload === 'string' ? env.payload : JSON.stringify(env.payload);
}

export function senderName(env: Envelope, me: string): string {
  if (env.sender_id === me) return 'You';
  const p = env.payload as { name?: unknown } | null;
  const name = p && typeof p === 'object' && typeof p.name === 'string' && p.name ? p.name : null;
  return name ?? shortId(env.sender_id);
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}
