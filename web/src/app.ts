/** The signed-in app: wires the SDK to the model and the model to the DOM. */
import { RealChatClient, RealChatError, RestClient, type Envelope } from '../../client/index.js';
import { replaceChildren } from './dom.js';
import { buildLayout } from './layout.js';
import { Model, shortId, TYPING_SHOW_MS } from './model.js';
import type { SignedIn } from './session.js';
import { connectionBadge, conversationList, errorList, messageList, typingLine } from './views.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HISTORY_PAGE = 100;

export function describeError(action: string, err: unknown): string {
  if (err instanceof RealChatError) {
    const hint: Record<string, string> = {
      forbidden: 'you are not a member of this conversation',
      not_found: 'no such conversation or user',
      unauthorized: 'your session is no longer valid; sign in again',
      rate_limited: 'too many requests; slow down',
      unavailable: 'the server is temporarily unavailable',
      payload_too_large: 'the message is too large',
      queue_full: 'too many messages are waiting to be sent',
      timeout: 'the server did not answer in time',
      network: 'the server cannot be reached',
      closed: 'the connection is closed',
    };
    return `${action} failed: ${hint[err.code] ?? err.message} (${err.code}${err.message && hint[err.code] ? `: ${err.message}` : ''})`;
  }
  return `${action} failed: ${String((err as Error)?.message ?? err)}`;
}

export function startApp(container: HTMLElement, session: SignedIn, onSignOut: (reason?: string) => void): () => void {
  const model = new Model({ user_id: session.user_id, name: session.name });
  const ui = buildLayout(model.me);
  container.replaceChildren(ui.root);
  const rest = new RestClient({ baseUrl: '', token: session.token });
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
  const client = new RealChatClient({ url: wsUrl, token: session.token });
  const cleanups: Array<() => void> = [];

  // ---- rendering (coalesced per animation frame) ----
  let scheduled = false;
  /** Scroll to the newest message on the next render (opening a conversation, own send). */
  let forceBottom = true;
  function render(): void {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      replaceChildren(ui.badge, connectionBadge(model));
      replaceChildren(
        ui.errors,
        errorList(model, (id) => {
          model.dismissError(id);
          render();
        }),
      );
      replaceChildren(ui.convList, conversationList(model, openConversation));
      const c = model.activeId ? model.conversations.get(model.activeId) : undefined;
      ui.chat.classList.toggle('empty', !c);
      if (!c) {
        ui.chatTitle.textContent = 'Select or create a conversation';
        ui.messages.replaceChildren();
        ui.typing.textContent = '';
        return;
      }
      ui.chatTitle.textContent = c.title || `Conversation ${shortId(c.id)}`;
      ui.chatTitle.title = c.id;
      const el = ui.messages;
      const atBottom = forceBottom || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      forceBottom = false;
      replaceChildren(el, messageList(model, c));
      if (atBottom) el.scrollTop = el.scrollHeight;
      ui.typing.textContent = typingLine(model, c, Date.now());
    });
  }
  const fail = (action: string) => (err: unknown) => {
    model.addError(describeError(action, err));
    render();
    if (err instanceof RealChatError && err.code === 'unauthorized') onSignOut('Your session expired; sign in again.');
  };

  // ---- reads ----
  function markActiveRead(): void {
    const c = model.activeId ? model.conversations.get(model.activeId) : undefined;
    if (!c || document.visibilityState !== 'visible' || c.lastSeq <= c.readSeq) return;
    c.readSeq = c.lastSeq;
    client.markRead(c.id, c.lastSeq);
    render();
  }

  async function loadHistory(id: string): Promise<void> {
    const c = model.ensure(id);
    const from = Math.max(0, c.lastSeq - HISTORY_PAGE);
    const page = await rest.listMessages(id, from, HISTORY_PAGE);
    for (const m of page.messages) model.addMessage(m);
    c.historyLoaded = true;
    render();
  }

  function openConversation(id: string): void {
    model.activeId = id;
    const c = model.ensure(id);
    forceBottom = true;
    if (!c.historyLoaded) loadHistory(id).then(markActiveRead, fail('Loading messages'));
    else markActiveRead();
    render();
    ui.composerInput.focus();
  }

  async function refreshConversations(): Promise<void> {
    const list = await rest.listConversations();
    for (const s of list.conversations) {
      const known = model.conversations.has(s.conversation_id);
      const c = model.upsertSummary(s);
      // Messages up to last_sequence come from history (REST); the SDK delivers everything after.
      if (!known) client.track(c.id, s.last_sequence);
    }
    render();
  }

  // ---- SDK events ----
  cleanups.push(
    client.on('state', (s) => {
      model.connection = s;
      if (s.state === 'closed' && s.error?.code === 'unauthorized') fail('Connecting')(s.error);
      render();
    }),
    client.on('message', (env: Envelope) => {
      const known = model.conversations.has(env.conversation_id);
      model.addMessage(env);
      if (!known) refreshConversations().catch(fail('Loading conversations'));
      if (env.conversation_id === model.activeId) markActiveRead();
      render();
    }),
    client.on('receipt', (r) => {
      const c = model.ensure(r.conversation_id);
      if (r.user_id === model.me.user_id) c.readSeq = Math.max(c.readSeq, r.read_sequence);
      else c.readBy.set(r.user_id, Math.max(c.readBy.get(r.user_id) ?? 0, r.read_sequence));
      render();
    }),
    client.on('typing', (t) => {
      const c = model.conversations.get(t.conversation_id);
      if (!c) return;
      c.typing.set(t.user_id, Date.now() + TYPING_SHOW_MS);
      render();
      setTimeout(render, TYPING_SHOW_MS + 50);
    }),
    client.on('error', (err) => fail(err.ref && UUID.test(err.ref) ? `Request for conversation ${shortId(err.ref)}` : 'Request')(err)),
  );

  // ---- user actions ----
  function send(text: string): void {
    const id = model.activeId;
    if (!id) return;
    const c = model.ensure(id);
    const key = crypto.randomUUID();
    c.pending.set(key, { key, text, status: 'sending' });
    forceBottom = true;
    render();
    client.send(id, { text, name: model.me.name }, { idempotencyKey: key }).then(
      () => {
        c.pending.delete(key);
        render();
      },
      (err) => {
        const p = c.pending.get(key);
        if (p) {
          p.status = 'failed';
          p.error = err instanceof RealChatError ? err.code : 'error';
        }
        fail('Sending')(err);
      },
    );
  }

  type AnyEvents = HTMLElementEventMap & WindowEventMap & DocumentEventMap;
  const on = <K extends keyof AnyEvents>(el: EventTarget, ev: K, fn: (e: AnyEvents[K]) => void) => {
    el.addEventListener(ev, fn as EventListener);
    cleanups.push(() => el.removeEventListener(ev, fn as EventListener));
  };

  on(ui.composer, 'submit', (e) => {
    e.preventDefault();
    const text = ui.composerInput.value.trim();
    if (!text) return;
    if (!model.activeId) return fail('Sending')(new Error('open a conversation first'));
    ui.composerInput.value = '';
    send(text);
  });
  on(ui.composerInput, 'input', () => {
    if (model.activeId && ui.composerInput.value) client.typing(model.activeId);
  });
  on(ui.newForm, 'submit', (e) => {
    e.preventDefault();
    const ids = ui.newMembers.value
      .split(/[\s,;]+/)
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = ids.filter((x) => !UUID.test(x));
    if (bad.length) return fail('Creating the conversation')(new Error(`not a user id: ${bad.join(', ')}`));
    rest
      .createConversation(
        ids.filter((x) => x !== model.me.user_id),
        ui.newTitle.value.trim() || undefined,
      )
      .then((conv) => {
        ui.newTitle.value = '';
        ui.newMembers.value = '';
        const c = model.upsertSummary({
          conversation_id: conv.conversation_id,
          title: conv.title,
          last_sequence: conv.last_sequence,
          read_sequence: 0,
          unread: 0,
        });
        client.track(c.id, conv.last_sequence);
        c.historyLoaded = true;
        openConversation(c.id);
      }, fail('Creating the conversation'));
  });
  on(ui.addMemberForm, 'submit', (e) => {
    e.preventDefault();
    const id = model.activeId;
    const user = ui.addMemberInput.value.trim();
    if (!id) return fail('Adding a member')(new Error('open a conversation first'));
    if (!UUID.test(user)) return fail('Adding a member')(new Error(`not a user id: ${user || '(empty)'}`));
    rest.addMembers(id, [user]).then(() => {
      ui.addMemberInput.value = '';
    }, fail('Adding a member'));
  });
  on(ui.signOut, 'click', () => onSignOut());
  on(window, 'online', () => client.setNetworkAvailable(true));
  on(window, 'offline', () => client.setNetworkAvailable(false));
  on(document, 'visibilitychange', markActiveRead);

  // ---- start: conversations first (positions), then the socket (resume from them) ----
  render();
  refreshConversations()
    .catch(fail('Loading conversations'))
    .finally(() => {
      if (!navigator.onLine) client.setNetworkAvailable(false);
      client.connect().catch(() => {
        /* the state badge shows it; attempts go on */
      });
    });

  return () => {
    for (const c of cleanups) c();
    client.close();
  };
}
