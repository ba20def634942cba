/**
 * The SDK's local view of plain messages (protocol v1.1): what an application shows. Each message is
 * kept in its current state, in the wire's own form: an `edit` entry replaces the referenced
 * message's payload and sets `edited_at`; a `delete` entry sets `deleted: true` and `payload: null`
 * (terminal: a later edit never brings it back). History pages carry the state at their read; an
 * edit or delete this view applied before the page arrived is applied again on top of it, unless the
 * page is newer. Bounded: messages per conversation, conversations, and remembered changes.
 */
import { LruMap } from '../common/lru.js';
import type { DeleteEntry, EditEntry } from './entries.js';
import type { Envelope } from './types.js';

interface Change {
  deleted: boolean;
  payload: unknown;
  /** The change entry's created_at (the edit time). */
  at: string;
}

interface Conv {
  /** message_id -> current state */
  byId: Map<string, Envelope>;
}

export interface MessageViewOptions {
  maxMessagesPerConversation: number;
  maxConversations: number;
  /** Changes remembered per client (for history pages that arrive after them). */
  maxRememberedChanges?: number;
}

export class MessageView {
  private readonly convs: LruMap<string, Conv>;
  private readonly changes: LruMap<string, Change>;

  constructor(private readonly o: MessageViewOptions) {
    this.convs = new LruMap(o.maxConversations);
    this.changes = new LruMap(o.maxRememberedChanges ?? 10_000);
  }

  /** Adds (or refreshes) a plain message; returns its current state. */
  put(env: Envelope): Envelope {
    let c = this.convs.get(env.conversation_id);
    if (!c) this.convs.set(env.conversation_id, (c = { byId: new Map() }));
    const state = withChange(env, this.changes.peek(env.message_id));
    c.byId.set(env.message_id, state);
    if (c.byId.size > this.o.maxMessagesPerConversation) {
      // Forget the oldest by sequence.
      let oldest: Envelope | null = null;
      for (const m of c.byId.values()) if (!oldest || m.sequence_number < oldest.sequence_number) oldest = m;
      if (oldest) c.byId.delete(oldest.message_id);
    }
    return state;
  }

  /** Applies an edit or delete entry; returns the message's new state when the view holds it. */
  apply(entry: EditEntry | DeleteEntry): Envelope | null {
    const prior = this.changes.peek(entry.ref_message_id);
    const change: Change =
      entry.kind === 'delete' || prior?.deleted
        ? { deleted: true, payload: null, at: prior?.deleted ? prior.at : entry.created_at }
        : { deleted: false, payload: entry.payload, at: entry.created_at };
    this.changes.set(entry.ref_message_id, change);
    const c = this.convs.peek(entry.conversation_id);
    const m = c?.byId.get(entry.ref_message_id);
    if (!c || !m) return null;
    const state = withChange(m, change);
    c.byId.set(m.message_id, state);
    return state;
  }

  get(conversationId: string, messageId: string): Envelope | undefined {
    return this.convs.peek(conversationId)?.byId.get(messageId);
  }

  /** The messages held for a conversation, ascending by sequence. */
  list(conversationId: string): Envelope[] {
    const c = this.convs.peek(conversationId);
    return c ? [...c.byId.values()].sort((a, b) => a.sequence_number - b.sequence_number) : [];
  }

  drop(conversationId: string): void {
    this.convs.delete(conversationId);
  }
}

function withChange(env: Envelope, ch: Change | undefined): Envelope {
  if (!ch) return env;
  if (env.deleted) return env;
  if (ch.deleted) {
    const { edited_at: _e, ...rest } = env;
    return { ...rest, payload: null, deleted: true };
  }
  // A history page read after a later edit already shows that one (entries arrive in order, pages may not).
  if (env.edited_at !== undefined && env.edited_at > ch.at) return env;
  return { ...env, payload: ch.payload, edited_at: ch.at };
}
