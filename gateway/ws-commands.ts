/**
 * What each WebSocket request frame does once a connection is open: one small handler per frame
 * type, looked up in a table (a new frame type is one more entry). Handlers get the connection's
 * user and a reply function; they throw AppError for anything the client must be told, and the
 * caller turns that into an `error` frame with the request's `ref`.
 */
import type { ClientFrame, Envelope, ServerFrame } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { ChatStore } from './chat-store.js';
import type { ClusterPorts } from './pipeline.js';
import type { PresenceService, PresenceWatcher } from './presence-watch.js';
import type { ConnectionRegistry } from './registry.js';
import { admitEntryWrite, type RateLimiter } from './rate-limit.js';
import { traceIdOf } from '../common/trace-id.js';
import { fanOutTyping } from './typing.js';

export type RequestFrame = Exclude<ClientFrame, { type: 'hello' } | { type: 'ping' }>;
export type RequestType = RequestFrame['type'];

export interface CommandContext {
  userId: string;
  reply(frame: ServerFrame): void;
  /** The connection is subscribed to the conversation (it learns its own removal in stream order). */
  subscribed(conversationId: string): boolean;
  /** The connection, as presence frames reach it. */
  watcher: PresenceWatcher;
}

export interface CommandDeps {
  store: Pick<ChatStore, 'sendMessage' | 'editMessage' | 'deleteMessage' | 'listMessages' | 'markRead' | 'membership'>;
  /** Null: a large room (its membership is checked in the database). */
  membership: { isMember(conversationId: string, userId: string): Promise<ReadonlySet<string> | null> };
  registry: Pick<ConnectionRegistry, 'deliverFrame' | 'roomFrame'>;
  cluster: Pick<ClusterPorts, 'publishEphemeral'> | null;
  /** Offers a typing frame to the other regions (gateway/region-forwarder.ts); absent: one region. */
  regionTyping?: (conversationId: string, userId: string) => void;
  presence: Pick<PresenceService, 'subscribe' | 'unsubscribe'>;
  sendLimiter: RateLimiter;
  log: Logger;
  metrics: Metrics;
  /** Bytes a `messages` reply may hold (below the connection's buffer bound, so it always fits). */
  maxSyncPageBytes: number;
  admitSend(): void;
  onEventCommitted(): void;
  newTraceId(): string;
}

type Handlers = { [K in RequestType]: (frame: Extract<RequestFrame, { type: K }>, ctx: CommandContext) => Promise<void> };

/**
 * The `ack` of a write that appended a timeline entry (send, edit, delete). It names the request's
 * own key: deleting a message someone else already deleted answers their delete entry.
 */
function ackOf(key: string, envelope: Envelope, duplicate: boolean): ServerFrame {
  return {
    type: 'ack',
    idempotency_key: key,
    conversation_id: envelope.conversation_id,
    message_id: envelope.message_id,
    sequence_number: envelope.sequence_number,
    created_at: envelope.created_at,
    duplicate,
  };
}

export function createCommandHandlers(deps: CommandDeps): Handlers {
  const { store, log, metrics } = deps;
  return {
    async send(frame, { userId, reply }) {
      admitEntryWrite(deps, userId);
      const timer = metrics.dbWriteSeconds.startTimer();
      const trace = frame.traceparent ?? deps.newTraceId();
      const { envelope, duplicate } = await store.sendMessage(
        userId,
        frame.conversation_id,
        frame.idempotency_key,
        frame.payload,
        frame.payloadStoredBytes,
        trace,
      );
      timer();
      log.debug(
        {
          trace_id: traceIdOf(trace),
          conversation_id: envelope.conversation_id,
          message_id: envelope.message_id,
          sequence: envelope.sequence_number,
          duplicate,
        },
        'message accepted',
      );
      if (duplicate) metrics.duplicateSends.inc();
      else {
        metrics.messagesAccepted.inc({ via: 'ws' });
        deps.onEventCommitted();
      }
      reply(ackOf(frame.idempotency_key, envelope, duplicate));
    },

    async edit(frame, { userId, reply }) {
      admitEntryWrite(deps, userId);
      const r = await store.editMessage(
        userId,
        frame.conversation_id,
        frame.message_id,
        frame.idempotency_key,
        frame.payload,
        frame.payloadStoredBytes,
        deps.newTraceId(),
      );
      if (!r.duplicate) deps.onEventCommitted();
      reply(ackOf(frame.idempotency_key, r.envelope, r.duplicate));
    },

    async delete(frame, { userId, reply }) {
      admitEntryWrite(deps, userId);
      const r = await store.deleteMessage(userId, frame.conversation_id, frame.message_id, frame.idempotency_key, deps.newTraceId());
      if (!r.duplicate) deps.onEventCommitted();
      reply(ackOf(frame.idempotency_key, r.envelope, r.duplicate));
    },

    async sync(frame, { userId, reply }) {
      const from = frame.before_sequence === null ? { after: frame.after_sequence } : { before: frame.before_sequence };
      const page = await store.listMessages(userId, frame.conversation_id, from, frame.limit, deps.maxSyncPageBytes);
      reply({ type: 'messages', conversation_id: frame.conversation_id, messages: page.messages, has_more: page.has_more });
    },

    async read(frame, { userId }) {
      const r = await store.markRead(userId, frame.conversation_id, frame.sequence_number, null);
      if (r.advanced) deps.onEventCommitted();
    },

    async typing(frame, { userId, subscribed }) {
      await fanOutTyping(deps, frame.conversation_id, userId, subscribed(frame.conversation_id));
      // Members connected to other regions: best effort, after this region's (it may refuse).
      deps.regionTyping?.(frame.conversation_id, userId);
    },

    // Presence for clients (gateway/presence-watch.ts): frames for the allowed users, then one
    // `forbidden` error naming the refused ones.
    async presence_subscribe(frame, { watcher }) {
      await deps.presence.subscribe(watcher, frame.user_ids);
    },

    async presence_unsubscribe(frame, { watcher }) {
      await deps.presence.unsubscribe(watcher, frame.user_ids);
    },
  };
}

/** Runs the handler for a frame's type (the table is exhaustive over RequestType). */
export function runCommand(handlers: Handlers, frame: RequestFrame, ctx: CommandContext): Promise<void> {
  const handler = handlers[frame.type] as (f: RequestFrame, c: CommandContext) => Promise<void>;
  return handler(frame, ctx);
}
