/** Rendering: pure functions from the model to DOM nodes. Stable elements (inputs) live in layout.ts. */
import { h } from './dom.js';
import { messageText, senderName, shortId, TYPING_SHOW_MS, type Conversation, type Model } from './model.js';

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
        h('span', { class: 'conv-title' }, c.title || `Conversation ${shortId(c.id)}`),
        unread > 0 ? h('span', { class: 'unread', 'data-testid': 'unread' }, unread) : null,
      );
    }),
  );
}

export function messageList(m: Model, c: Conversation): HTMLElement {
  const me = m.me.user_id;
  const msgs = [...c.messages.values()].sort((a, b) => a.sequence_number - b.sequence_number);
  const seenUpTo = Math.max(0, ...[...c.readBy.entries()].filter(([u]) => u !== me).map(([, s]) => s));
  const items: HTMLElement[] = msgs.map((env) => {
    const mine = env.sender_id === me;
    const time = new Date(env.created_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return h(
      'li',
      { class: mine ? 'msg mine' : 'msg', 'data-testid': 'message', 'data-seq': env.sequence_number },
      h('div', { class: 'meta' }, h('strong', {}, senderName(env, me)), ' · ', time),
      h('div', { class: 'text', 'data-testid': 'message-text' }, messageText(env)),
      mine
        ? h(
            'div',
            { class: 'tick', title: seenUpTo >= env.sequence_number ? 'read' : 'delivered to the server' },
            seenUpTo >= env.sequence_number ? '✓✓ read' : '✓ sent',
          )
        : null,
    );
  });
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

export function typingLine(m: Model, c: Conversation, now: number): string {
  const who = [...c.typing.entries()].filter(([u, until]) => u !== m.me.user_id && until > now).map(([u]) => m.nameOf(u));
  if (who.length === 0) return '';
  return `${who.join(', ')} ${who.length === 1 ? 'is' : 'are'} typing…`;
}

export { TYPING_SHOW_MS };
