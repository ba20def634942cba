/**
 * RealChat client SDK (protocol v1.1). Works in browsers (native WebSocket, fetch) and in Node 20
 * (pass the `ws` package's WebSocket).
 *
 *   import WebSocket from 'ws';
 *   import { RealChatClient, RestClient } from './client/index.js';
 *   const rest = new RestClient({ baseUrl: 'http://127.0.0.1:8080' });
 *   const { token } = await rest.devToken({ name: 'alice' });
 *   const client = new RealChatClient({ url: 'ws://127.0.0.1:8080/v1/ws', token, WebSocket });
 *   client.on('message', (m) => console.log(m.sequence_number, m.payload));
 *   await client.connect();
 *   await client.send(conversationId, { text: 'hi' });
 */
export { RealChatClient } from './client.js';
export type { ClientEvents, ClientOptions, ConnectionState, MessageInfo, ReceiptInfo, Removal, StateChange } from './client.js';
export { RestClient } from './rest.js';
export { PresenceSubscriptions } from './presence.js';
export type { PresenceListener } from './presence.js';
export type { AddedMembers, ConversationSummary, CreatedConversation, MembersPage, RemovedMembers, RestOptions, RoleSet } from './rest.js';
export { toEntry } from './entries.js';
export type {
  DeleteEntry,
  EditEntry,
  MembersAddedEntry,
  MembersRemovedEntry,
  MessageEntry,
  RoleChangedEntry,
  TimelineEntry,
  UnknownEntry,
} from './entries.js';
export { MessageView } from './view.js';
export { RealChatError } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { backoffDelay } from './backoff.js';
export { CloseCodes, isFatalClose } from './types.js';
export type {
  Ack,
  EntryKind,
  Envelope,
  MemberSummary,
  MessagesPage,
  Receipt,
  Rewind,
  Role,
  Synced,
  Typing,
  Presence,
  PresenceSummary,
  UserSummary,
  Via,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
