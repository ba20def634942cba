/** The signed-in app: wires the SDK to the model and the model to the DOM. */
import { RealChatClient, RealChatError, RestClient, type Envelope, type UserSummary } from '../../client/index.js';
import { replaceChildren } from './dom.js';
import { buildLayout } from './layout.js';
import { idsOf, isPlain, messageText, Model, TYPING_SHOW_MS, type Conversation } from './model.js';
import type { SignedIn } from './session.js';
import {
  connectionBadge,
  conversationList,
  conversationTitle,
  errorList,
  memberList,
  messageList,
  typingLine,
  userSuggestions,
} from './views.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Entries per history page (initial load and each "older" page on scroll up). */
export const HISTORY_PAGE = 40;
const MEMBER_PAGES = 10;
const MEMBER_PAGE = 200;
/** Members of the open conversation whose presence is watched (the server allows 1,000 per connection). */
export const PRESENCE_WATCH_MAX = 200;

export function describeError(action: string, err: unknown): string {
  if (err instanceof RealChatError) {
    const hint: Record<string, string> = {
      forbidden: 'you are not allowed to do that here',
      not_found: 'no such conversation, message or user',
      conflict: 'that is no longer possible (already changed)',
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
  const client = new RealChatClient({ url: wsUrl, token: session.token, baseUrl: '' });
  const cleanups: Array<() => void> = [];

  // ---- rendering (coalesced per animation frame) ----
  let scheduled = false;
  /** Scroll to the newest message on the next render (opening a conversation, own send). */
  let forceBottom = true;
  /** Keep the distance from the bottom on the next render (older history was added above). */
  let keepFromBottom: number | null = null;
  let suggestions: UserSummary[] = [];
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
      ui.myName.textContent = model.me.name || 'Unnamed user';
      replaceChildren(ui.convList, conversationList(model, openConversation));
      const c = model.activeId ? model.conversations.get(model.activeId) : undefined;
      ui.chat.classList.toggle('empty', !c);
      ui.editBanner.hidden = !model.editing;
      if (!c) {
        ui.chatTitle.textContent = 'Select or create a conversation';
        ui.messages.replaceChildren();
        ui.members.replaceChildren();
        ui.suggestions.replaceChildren();
        ui.typing.textContent = '';
        return;
      }
      resolveNames(visibleIds(c));
      ui.chatTitle.textContent = conversationTitle(model, c);
      const el = ui.messages;
      const atBottom = forceBottom || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      const fromBottom = keepFromBottom;
      forceBottom = false;
      keepFromBottom = null;
      replaceChildren(el, messageList(model, c, messageActions));
      if (fromBottom !== null) el.scrollTop = el.scrollHeight - fromBottom;
      else if (atBottom) el.scrollTop = el.scrollHeight;
      replaceChildren(ui.members, memberList(model, c, memberActions));
      replaceChildren(ui.suggestions, userSuggestions(model, suggestions, addMember));
      ui.typing.textContent = typingLine(model, c, Date.now());
    });
  }
  const fail = (action: string) => (err: unknown) => {
    model.addError(describeError(action, err));
    render();
    if (err instanceof RealChatError && err.code === 'unauthorized') onSignOut('Your session expired; sign in again.');
  };

  // ---- names: looked up once each (GET /v1/users/{id}), never shown as ids ----
  const lookups = new Set<string>();
  function resolveNames(ids: Iterable<string>): void {
    for (const id of ids) {
      if (model.names.has(id) || lookups.has(id) || lookups.size >= 20) continue;
      lookups.add(id);
      client
        .getUser(id)
        .then(
          (u) => model.setName(id, u?.name ?? null),
          () => {},
        )
        .finally(() => {
          lookups.delete(id);
          render();
        });
    }
  }
  function visibleIds(c: Conversation): Set<string> {
    const ids = new Set<string>(c.members.keys());
    for (const m of c.messages.values()) for (const id of idsOf(m)) ids.add(id);
    for (const u of c.typing.keys()) ids.add(u);
    return ids;
  }

  // ---- reads ----
  function markActiveRead(): void {
    const c = model.activeId ? model.conversations.get(model.activeId) : undefined;
    if (!c || document.visibilityState !== 'visible' || (c.lastSeq <= c.readSeq && c.unread === 0)) return;
    c.readSeq = Math.max(c.readSeq, c.lastSeq);
    c.unread = 0;
    client.markRead(c.id, c.lastSeq);
    render();
  }

  // ---- history (newest page first, older pages on scroll up) and members ----
  async function loadHistory(id: string): Promise<void> {
    const c = model.ensure(id);
    if (c.lastSeq > 0) {
      const page = await client.history(id, { before: c.lastSeq + 1, limit: HISTORY_PAGE });
      for (const m of page.messages) addEntry(m);
      c.hasOlder = page.has_more;
    }
    c.historyLoaded = true;
    render();
  }

  function loadOlder(c: Conversation): void {
    if (!c.hasOlder || c.loadingOlder || !c.historyLoaded) return;
    c.loadingOlder = true;
    render();
    client
      .history(c.id, { before: model.oldestSeq(c), limit: HISTORY_PAGE })
      .then((page) => {
        for (const m of page.messages) addEntry(m);
        c.hasOlder = page.has_more;
        keepFromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
      }, fail('Loading older messages'))
      .finally(() => {
        c.loadingOlder = false;
        render();
      });
  }

  async function loadMembers(id: string): Promise<void> {
    const all = [];
    let after: string | undefined;
    for (let i = 0; i < MEMBER_PAGES; i++) {
      const page = await client.members(id, { limit: MEMBER_PAGE, ...(after ? { after } : {}) });
      all.push(...page.members);
      if (!page.has_more || page.members.length === 0) break;
      after = page.members.at(-1)!.user_id;
    }
    const c = model.conversations.get(id);
    if (!c) return;
    model.setMembers(c, all);
    if (model.activeId === id) watchPresence(all.map((m) => m.user_id));
    render();
  }

  // ---- presence of the open conversation's members (a dot and "last seen" in the member panel) ----
  let stopPresence: (() => void) | null = null;
  function watchPresence(userIds: string[]): void {
    stopPresence?.();
    model.presence.clear();
    stopPresence = client.presence.subscribe(userIds.slice(0, PRESENCE_WATCH_MAX), (p) => {
      model.presence.set(p.user_id, { status: p.status, last_seen_at: p.last_seen_at });
      render();
    });
  }
  const memberReloads = new Map<string, ReturnType<typeof setTimeout>>();
  function reloadMembersSoon(id: string): void {
    if (memberReloads.has(id)) return;
    memberReloads.set(
      id,
      setTimeout(() => {
        memberReloads.delete(id);
        if (model.conversations.get(id)?.membersLoaded) loadMembers(id).catch(fail('Loading members'));
      }, 100),
    );
  }

  function openConversation(id: string): void {
    if (model.activeId !== id) {
      model.editing = null;
      suggestions = [];
    }
    if (model.activeId !== id) {
      model.activeId = id;
      const known = model.conversations.get(id);
      if (known?.membersLoaded) watchPresence([...known.members.keys()]);
    }
    const c = model.ensure(id);
    forceBottom = true;
    if (!c.historyLoaded) loadHistory(id).then(markActiveRead, fail('Loading messages'));
    else markActiveRead();
    if (!c.membersLoaded) loadMembers(id).catch(fail('Loading members'));
    render();
    ui.composerInput.focus();
  }

  async function refreshConversations(): Promise<void> {
    const list = await rest.listConversations();
    for (const s of list.conversations) {
      const known = model.conversations.has(s.conversation_id);
      const c = model.upsertSummary(s);
      // Messages up to last_sequence come from history; the SDK delivers everything after.
      if (!known) client.track(c.id, s.last_sequence);
    }
    render();
  }

  /** An entry from history or the live stream, into the model. */
  function addEntry(env: Envelope): void {
    if (env.kind === 'edit' || env.kind === 'delete') {
      const c = model.ensure(env.conversation_id);
      c.lastSeq = Math.max(c.lastSeq, env.sequence_number);
      return;
    }
    if (!isPlain(env) && !['members_added', 'members_removed', 'role_changed'].includes(env.kind ?? '')) return; // unknown kinds
    model.addMessage(env);
  }

  // ---- SDK events ----
  cleanups.push(
    client.on('state', (s) => {
      model.connection = s;
      if (s.state === 'closed' && s.error?.code === 'unauthorized') fail('Connecting')(s.error);
      render();
    }),
    client.on('entry', (entry) => {
      const env = entry.envelope;
      const known = model.conversations.has(env.conversation_id);
      if (entry.kind === 'message') {
        const c = model.ensure(env.conversation_id);
        if (env.sender_id !== model.me.user_id && env.sequence_number > c.readSeq) c.unread++;
        model.addMessage(client.message(env.conversation_id, env.message_id) ?? env);
      } else addEntry(env);
      if (!known) refreshConversations().catch(fail('Loading conversations'));
      if (entry.kind === 'members_added' || entry.kind === 'members_removed' || entry.kind === 'role_changed')
        reloadMembersSoon(env.conversation_id);
      if (env.conversation_id === model.activeId) markActiveRead();
      render();
    }),
    client.on('update', (state) => {
      model.updateMessage(state);
      render();
    }),
    client.on('removed', (r) => {
      const c = model.conversations.get(r.conversation_id);
      if (c && r.reason === 'removed') model.addError(`You were removed from "${conversationTitle(model, c)}"`);
      model.forget(r.conversation_id);
      render();
    }),
    client.on('receipt', (r) => {
      const c = model.conversations.get(r.conversation_id);
      if (!c) return;
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
    client.on('error', (err) => {
      const c = err.ref ? model.conversations.get(err.ref) : undefined;
      fail(c ? `Request for "${conversationTitle(model, c)}"` : 'Request')(err);
    }),
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

  const messageActions = {
    edit(env: Envelope): void {
      model.editing = { conversationId: env.conversation_id, messageId: env.message_id };
      ui.composerInput.value = messageText(env);
      ui.composerInput.focus();
      render();
    },
    remove(env: Envelope): void {
      client.delete(env.conversation_id, env.message_id).catch(fail('Deleting the message'));
    },
  };

  const memberActions = {
    remove(userId: string): void {
      const id = model.activeId;
      if (!id) return;
      client.removeMember(id, userId).then(() => loadMembers(id), fail('Removing the member'));
    },
    setRole(userId: string, role: 'admin' | 'member'): void {
      const id = model.activeId;
      if (!id) return;
      client.setRole(id, userId, role).then(() => loadMembers(id), fail('Changing the role'));
    },
  };

  function addMember(u: UserSummary): void {
    const id = model.activeId;
    if (!id) return;
    model.setName(u.user_id, u.name);
    rest.addMembers(id, [u.user_id]).then(() => {
      ui.addMemberInput.value = '';
      suggestions = [];
      return loadMembers(id);
    }, fail('Adding a member'));
  }

  let searchTimer: ReturnType<typeof setTimeout> | null = null;
  let searchNo = 0;
  function search(now = false): void {
    if (searchTimer) clearTimeout(searchTimer);
    const q = ui.addMemberInput.value.trim();
    if (!q) {
      suggestions = [];
      render();
      return;
    }
    const run = () => {
      const n = ++searchNo;
      client.searchUsers(q, { limit: 8 }).then((users) => {
        if (n !== searchNo) return;
        for (const u of users) model.setName(u.user_id, u.name);
        suggestions = users;
        if (users.length === 0) model.addError(`No user named "${q}"`);
        render();
      }, fail('Searching users'));
    };
    if (now) run();
    else searchTimer = setTimeout(run, 200);
  }

  /** Names (or ids) of the new-conversation form to user ids: an exact name match, else the only match. */
  async function resolveMembers(tokens: string[]): Promise<string[]> {
    const ids: string[] = [];
    for (const t of tokens) {
      if (UUID.test(t)) {
        ids.push(t.toLowerCase());
        continue;
      }
      const users = await client.searchUsers(t, { limit: 20 });
      const exact = users.filter((u) => u.name?.toLowerCase() === t.toLowerCase());
      const pick = exact.length ? exact : users.length === 1 ? users : [];
      if (pick.length === 0) throw new Error(`no user named "${t}"`);
      if (pick.length > 1) throw new Error(`several users are named "${t}"; add them from the conversation instead`);
      model.setName(pick[0]!.user_id, pick[0]!.name);
      ids.push(pick[0]!.user_id);
    }
    return ids;
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
    const editing = model.editing;
    if (editing) {
      model.editing = null;
      render();
      client.edit(editing.conversationId, editing.messageId, { text, name: model.me.name }).catch(fail('Editing the message'));
      return;
    }
    send(text);
  });
  on(ui.cancelEdit, 'click', () => {
    model.editing = null;
    ui.composerInput.value = '';
    render();
  });
  on(ui.composerInput, 'input', () => {
    if (model.activeId && ui.composerInput.value && !model.editing) client.typing(model.activeId);
  });
  on(ui.messages, 'scroll', () => {
    const c = model.activeId ? model.conversations.get(model.activeId) : undefined;
    if (c && ui.messages.scrollTop < 80) loadOlder(c);
  });
  on(ui.newForm, 'submit', (e) => {
    e.preventDefault();
    const tokens = ui.newMembers.value
      .split(/[\n,;]+/)
      .map((s) => s.trim())
      .filter(Boolean);
    resolveMembers(tokens)
      .then((ids) =>
        rest.createConversation(
          ids.filter((x) => x !== model.me.user_id),
          ui.newTitle.value.trim() || undefined,
        ),
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
          role: 'owner',
          home_region: conv.home_region,
          home_epoch: conv.home_epoch,
        });
        client.track(c.id, conv.last_sequence);
        c.historyLoaded = true;
        openConversation(c.id);
      }, fail('Creating the conversation'));
  });
  on(ui.addMemberInput, 'input', () => search());
  on(ui.addMemberForm, 'submit', (e) => {
    e.preventDefault();
    if (!model.activeId) return fail('Adding a member')(new Error('open a conversation first'));
    search(true);
  });
  on(ui.leave, 'click', () => {
    const id = model.activeId;
    if (!id) return;
    client.leave(id).then(() => {
      model.forget(id);
      render();
    }, fail('Leaving the conversation'));
  });
  on(ui.renameForm, 'submit', (e) => {
    e.preventDefault();
    const name = ui.renameInput.value.trim();
    if (!name) return;
    client.setName(name).then((u) => {
      ui.renameInput.value = '';
      model.me.name = u.name ?? name;
      model.setName(model.me.user_id, model.me.name);
      render();
    }, fail('Renaming'));
  });
  on(ui.signOut, 'click', () => onSignOut());
  on(window, 'online', () => client.setNetworkAvailable(true));
  on(window, 'offline', () => client.setNetworkAvailable(false));
  on(document, 'visibilitychange', markActiveRead);

  // ---- start: conversations first (positions), then the socket (resume from them) ----
  render();
  // A notification click opens the app at /?conversation=<id> (web/public/sw.js, web/src/push.ts).
  const asked = new URLSearchParams(location.search).get('conversation');
  refreshConversations()
    .then(() => {
      if (asked && model.conversations.has(asked)) openConversation(asked);
    })
    .catch(fail('Loading conversations'))
    .finally(() => {
      if (!navigator.onLine) client.setNetworkAvailable(false);
      client.connect().catch(() => {
        /* the state badge shows it; attempts go on */
      });
    });

  return () => {
    for (const c of cleanups) c();
    stopPresence?.();
    for (const t of memberReloads.values()) clearTimeout(t);
    if (searchTimer) clearTimeout(searchTimer);
    client.close();
  };
}
