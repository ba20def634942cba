/** Rendering: pure functions from the model to DOM nodes. Stable elements (inputs) live in layout.ts. */
import type { Envelope, MemberSummary, UserSummary } from '../../client/index.js';
import { h } from './dom.js';
import { canModerate, isPlain, messageText, systemText, TYPING_SHOW_MS, type Conversation, type Model } from './model.js';

export interface MessageActions {
  edit(env: Envelope): void;
  remove(env: Envelope): void;
}

export interface MemberActions {
  remove(userId: string): void;
  setRole(userId: string, role: 'admin' | 'member'): void;
}

export function conversationTitle(m: Model, c: Conversation): string {
  if (c.title) return c.title;
  const others = [...c.members.keys()].filter((u) => u !== m.me.user_id).map((u) => m.nameOf(u));
  return others.length ? others.join(', ') : 'Untitled conversation';
}

export function connectionBadge(m: Model): HTMLElement {
  const c = m.connection;
  const label: Record<string, string> = {
    idle: 'starting',
    connecting: 'connecting…',
    connected: 'connected',
    reconnecting: 'reconnecting…',
    offline: 'offline',
    closed: 'disconnected',
  };
  const retry = c.retryInMs !== undefined && c.state !== 'connected' ? ` (retry in ${Math.ceil(c.retryInMs / 1000)} s)` : '';
  return h(
    'span',
    { class: `badge state-${c.state}`, 'data-testid': 'conn-state', 'data-state': c.state, title: c.reason ?? '' },
    (label[c.state] ?? c.state) + retry,
  );
}

export function errorList(m: Model, dismiss: (id: number) => void): HTMLElement {
  return h(
    'div',
    { class: 'errors', role: 'alert' },
    m.errors.map((e) =>
      h(
        'div',
        { class: 'error', 'data-testid': 'error' },
        h('span', {}, e.text),
        h('button', { class: 'link', onclick: () => dismiss(e.id), 'aria-label': 'dismiss' }, '×'),
      ),
    ),
  );
}

export function conversationList(m: Model, open: (id: string) => void): HTMLElement {
  const convs = m.sortedConversations();
  if (convs.length === 0) return h('p', { class: 'muted' }, 'No conversations yet. Create one above.');
  return h(
    'ul',
    { class: 'convs' },
    convs.map((c) => {
      const unread = m.unread(c);
      return h(
        'li',
        {
          class: c.id === m.activeId ? 'conv active' : 'conv',
          'data-testid': 'conv-item',
          'data-conv-id': c.id,
          onclick: () => open(c.id),
        },
        h('span', { class: 'conv-title' }, conversationTitle(m, c)),
        unread > 0 ? h('span', { class: 'unread', 'data-testid': 'unread' }, unread) : null,
      );
    }),
  );
}

export function messageList(m: Model, c: Conversation, actions: MessageActions): HTMLElement {
  const me = m.me.user_id;
  const entries = [...c.messages.values()].sort((a, b) => a.sequence_number - b.sequence_number);
  const seenUpTo = Math.max(0, ...[...c.readBy.entries()].filter(([u]) => u !== me).map(([, s]) => s));
  const moderator = canModerate(c.role);
  const items: HTMLElement[] = [];
  if (c.hasOlder)
    items.push(
      h(
        'li',
        { class: 'muted older', 'data-testid': 'older-hint' },
        c.loadingOlder ? 'Loading older messages…' : 'Scroll up for older messages',
      ),
    );
  for (const env of entries) {
    if (!isPlain(env)) {
      const text = systemText(m, env);
      if (text) items.push(h('li', { class: 'system', 'data-testid': 'system-entry', 'data-seq': env.sequence_number }, text));
      continue;
    }
    const mine = env.sender_id === me;
    const time = new Date(env.created_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const deleted = env.deleted === true;
    const editing = m.editing?.messageId === env.message_id;
    items.push(
      h(
        'li',
        {
          class: `msg${mine ? ' mine' : ''}${deleted ? ' deleted' : ''}${editing ? ' editing' : ''}`,
          'data-testid': 'message',
          'data-seq': env.sequence_number,
          'data-message-id': env.message_id,
        },
        h(
          'div',
          { class: 'meta' },
          h('strong', { 'data-testid': 'message-sender' }, m.nameOf(env.sender_id)),
          ' · ',
          time,
          env.edited_at && !deleted
            ? h('span', { class: 'edited', 'data-testid': 'edited-mark', title: env.edited_at }, ' · edited')
            : null,
          !deleted && (mine || moderator)
            ? h(
                'span',
                { class: 'actions' },
                mine ? h('button', { class: 'link', 'data-testid': 'edit-message', onclick: () => actions.edit(env) }, 'edit') : null,
                h('button', { class: 'link', 'data-testid': 'delete-message', onclick: () => actions.remove(env) }, 'delete'),
              )
            : null,
        ),
        deleted
          ? h('div', { class: 'text deleted', 'data-testid': 'message-deleted' }, 'message deleted')
          : h('div', { class: 'text', 'data-testid': 'message-text' }, messageText(env)),
        mine && !deleted
          ? h(
              'div',
              { class: 'tick', 'data-testid': 'tick', title: seenUpTo >= env.sequence_number ? 'read' : 'delivered to the server' },
              seenUpTo >= env.sequence_number ? '✓✓ read' : '✓ sent',
            )
          : null,
      ),
    );
  }
  for (const p of c.pending.values()) {
    items.push(
      h(
        'li',
        { class: `msg mine pending ${p.status}`, 'data-testid': 'pending-message' },
        h('div', { class: 'meta' }, h('strong', {}, 'You')),
        h('div', { class: 'text' }, p.text),
        h('div', { class: 'tick' }, p.status === 'sending' ? 'sending…' : `not sent: ${p.error ?? ''}`),
      ),
    );
  }
  if (items.length === 0)
    return h('ul', { class: 'messages' }, h('li', { class: 'muted empty' }, c.historyLoaded ? 'No messages yet. Say hello!' : 'Loading…'));
  return h('ul', { class: 'messages' }, items);
}

type PresenceState = { status: 'online' | 'offline'; last_seen_at: string | null } | undefined;

/** Presence for clients: a dot, green online, grey offline, hollow while unknown. */
function presenceDot(p: PresenceState): HTMLElement {
  const status = p?.status ?? 'unknown';
  return h('span', { class: `presence-dot presence-${status}`, 'data-testid': 'presence', 'data-status': status, title: status });
}

/** "last seen 5 min ago" for an offline member (nothing while online or never seen). */
export function lastSeenText(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return 'last seen just now';
  if (s < 3600) return `last seen ${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `last seen ${Math.floor(s / 3600)} h ago`;
  return `last seen ${new Date(iso).toLocaleDateString()}`;
}

function lastSeen(p: PresenceState, now: number): HTMLElement | null {
  if (p?.status !== 'offline' || !p.last_seen_at) return null;
  return h('span', { class: 'muted last-seen', 'data-testid': 'last-seen', title: p.last_seen_at }, lastSeenText(p.last_seen_at, now));
}

/** The member panel: names and roles; remove / promote / demote as my role allows. */
export function memberList(m: Model, c: Conversation, actions: MemberActions): HTMLElement {
  if (!c.membersLoaded) return h('p', { class: 'muted' }, 'Loading members…');
  const me = m.me.user_id;
  const rank: Record<string, number> = { owner: 0, admin: 1, member: 2 };
  const members = [...c.members.values()].sort(
    (a, b) => (rank[a.role] ?? 3) - (rank[b.role] ?? 3) || m.nameOf(a.user_id).localeCompare(m.nameOf(b.user_id)),
  );
  return h(
    'ul',
    { class: 'members', 'data-testid': 'member-list' },
    members.map((x: MemberSummary) => {
      const self = x.user_id === me;
      // The owner cannot be removed; an admin cannot remove an admin; only the owner changes roles.
      const canRemove = !self && x.role !== 'owner' && (c.role === 'owner' || (c.role === 'admin' && x.role === 'member'));
      const canRole = c.role === 'owner' && !self && x.role !== 'owner';
      return h(
        'li',
        { class: 'member', 'data-testid': 'member', 'data-user-id': x.user_id, 'data-role': x.role },
        presenceDot(m.presence.get(x.user_id)),
        h('span', { class: 'member-name', 'data-testid': 'member-name' }, m.nameOf(x.user_id, { you: false }), self ? ' (you)' : ''),
        lastSeen(m.presence.get(x.user_id), Date.now()),
        x.role !== 'member' ? h('span', { class: `role role-${x.role}`, 'data-testid': 'member-role' }, x.role) : null,
        canRole
          ? x.role === 'admin'
            ? h(
                'button',
                { class: 'link', 'data-testid': 'demote-member', onclick: () => actions.setRole(x.user_id, 'member') },
                'make member',
              )
            : h(
                'button',
                { class: 'link', 'data-testid': 'promote-member', onclick: () => actions.setRole(x.user_id, 'admin') },
                'make admin',
              )
          : null,
        canRemove
          ? h('button', { class: 'link danger', 'data-testid': 'remove-member', onclick: () => actions.remove(x.user_id) }, 'remove')
          : null,
      );
    }),
  );
}

/** Search results of "add member by name". */
export function userSuggestions(m: Model, users: UserSummary[], pick: (u: UserSummary) => void): HTMLElement {
  return h(
    'ul',
    { class: 'suggestions' },
    users.map((u) =>
      h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'link', 'data-testid': 'user-suggestion', 'data-user-id': u.user_id, onclick: () => pick(u) },
          u.name ?? 'Unnamed user',
          u.user_id === m.me.user_id ? ' (you)' : '',
        ),
      ),
    ),
  );
}

export function typingLine(m: Model, c: Conversation, now: number): string {
  const who = [...c.typing.entries()].filter(([u, until]) => u !== m.me.user_id && until > now).map(([u]) => m.nameOf(u));
  if (who.length === 0) return '';
  return `${who.join(', ')} ${who.length === 1 ? 'is' : 'are'} typing…`;
}

export { TYPING_SHOW_MS };
