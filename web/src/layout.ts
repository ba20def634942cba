/** The static skeleton of the signed-in app; views fill its containers. */
import { h } from './dom.js';

export interface Layout {
  root: HTMLElement;
  badge: HTMLElement;
  errors: HTMLElement;
  convList: HTMLElement;
  myName: HTMLElement;
  renameForm: HTMLFormElement;
  renameInput: HTMLInputElement;
  newTitle: HTMLInputElement;
  newMembers: HTMLTextAreaElement;
  newForm: HTMLFormElement;
  chat: HTMLElement;
  chatTitle: HTMLElement;
  leave: HTMLButtonElement;
  addMemberForm: HTMLFormElement;
  addMemberInput: HTMLInputElement;
  suggestions: HTMLElement;
  members: HTMLElement;
  messages: HTMLElement;
  typing: HTMLElement;
  editBanner: HTMLElement;
  cancelEdit: HTMLButtonElement;
  composer: HTMLFormElement;
  composerInput: HTMLInputElement;
  signOut: HTMLButtonElement;
}

export function buildLayout(me: { user_id: string; name: string }): Layout {
  const badge = h('span', {});
  const errors = h('div', {});
  const convList = h('div', { class: 'conv-list' });
  const newTitle = h('input', { placeholder: 'Title (optional)', maxlength: 200, 'data-testid': 'new-title' });
  const newMembers = h('textarea', {
    placeholder: 'Members: names (one per line or comma separated)',
    rows: 3,
    'data-testid': 'new-members',
  });
  const newForm = h(
    'form',
    { class: 'new-conv' },
    h('h3', {}, 'New conversation'),
    newTitle,
    newMembers,
    h('button', { type: 'submit', 'data-testid': 'create-conv' }, 'Create'),
  );
  const chatTitle = h('h2', { 'data-testid': 'chat-title' });
  const leave = h('button', { type: 'button', class: 'link danger', 'data-testid': 'leave-conv' }, 'Leave');
  const addMemberInput = h('input', { placeholder: 'Add a member by name', autocomplete: 'off', 'data-testid': 'add-member-input' });
  const suggestions = h('div', { class: 'suggestion-box', 'data-testid': 'user-suggestions' });
  const addMemberForm = h(
    'form',
    { class: 'add-member' },
    addMemberInput,
    h('button', { type: 'submit', 'data-testid': 'add-member' }, 'Search'),
    suggestions,
  );
  const members = h('div', { class: 'member-panel', 'data-testid': 'members' });
  const messages = h('div', { class: 'message-scroll', 'data-testid': 'messages' });
  const typing = h('div', { class: 'typing', 'data-testid': 'typing', 'aria-live': 'polite' });
  const cancelEdit = h('button', { type: 'button', class: 'link', 'data-testid': 'cancel-edit' }, 'cancel');
  const editBanner = h('div', { class: 'edit-banner', 'data-testid': 'edit-banner', hidden: true }, 'Editing your message · ', cancelEdit);
  const composerInput = h('input', {
    placeholder: 'Write a message…',
    maxlength: 4000,
    autocomplete: 'off',
    'data-testid': 'composer-input',
  });
  const composer = h('form', { class: 'composer' }, composerInput, h('button', { type: 'submit', 'data-testid': 'send' }, 'Send'));
  const chat = h(
    'section',
    { class: 'chat' },
    h('div', { class: 'chat-header' }, chatTitle, addMemberForm, leave),
    h('div', { class: 'chat-body' }, messages, members),
    typing,
    h('div', {}, editBanner, composer),
  );
  const signOut = h('button', { class: 'link' }, 'Sign out');
  const myName = h('strong', { 'data-testid': 'my-name' }, me.name || 'Unnamed user');
  const renameInput = h('input', { placeholder: 'New name', maxlength: 100, 'data-testid': 'rename-input' });
  const renameForm = h('form', { class: 'rename' }, renameInput, h('button', { type: 'submit', 'data-testid': 'rename' }, 'Rename'));
  const copy = h(
    'button',
    { class: 'link', title: 'Copy your user id', onclick: () => void navigator.clipboard?.writeText(me.user_id).catch(() => {}) },
    'copy id',
  );
  const root = h(
    'div',
    { class: 'app' },
    h(
      'header',
      {},
      h('h1', {}, 'RealChat'),
      badge,
      // The id stays available (copy, tests) but is not shown: people see names.
      h('span', { class: 'me' }, myName, ' ', copy, h('code', { 'data-testid': 'my-id', hidden: true }, me.user_id)),
      renameForm,
      signOut,
    ),
    errors,
    h('main', {}, h('aside', {}, newForm, h('h3', {}, 'Conversations'), convList), chat),
  );
  return {
    root,
    badge,
    errors,
    convList,
    myName,
    renameForm,
    renameInput,
    newTitle,
    newMembers,
    newForm,
    chat,
    chatTitle,
    leave,
    addMemberForm,
    addMemberInput,
    suggestions,
    members,
    messages,
    typing,
    editBanner,
    cancelEdit,
    composer,
    composerInput,
    signOut,
  };
}
