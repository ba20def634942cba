/** The static skeleton of the signed-in app; views fill its containers. */
import { h } from './dom.js';
import { shortId } from './model.js';

export interface Layout {
  root: HTMLElement;
  badge: HTMLElement;
  errors: HTMLElement;
  convList: HTMLElement;
  newTitle: HTMLInputElement;
  newMembers: HTMLTextAreaElement;
  newForm: HTMLFormElement;
  chat: HTMLElement;
  chatTitle: HTMLElement;
  addMemberForm: HTMLFormElement;
  addMemberInput: HTMLInputElement;
  messages: HTMLElement;
  typing: HTMLElement;
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
    placeholder: 'Member user ids (one per line or comma separated)',
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
  const chatTitle = h('h2', {});
  const addMemberInput = h('input', { placeholder: 'Add member by user id', 'data-testid': 'add-member-input' });
  const addMemberForm = h('form', { class: 'add-member' }, addMemberInput, h('button', { type: 'submit' }, 'Add'));
  const messages = h('div', { class: 'message-scroll', 'data-testid': 'messages' });
  const typing = h('div', { class: 'typing', 'data-testid': 'typing', 'aria-live': 'polite' });
  const composerInput = h('input', {
    placeholder: 'Write a message…',
    maxlength: 4000,
    autocomplete: 'off',
    'data-testid': 'composer-input',
  });
  const composer = h('form', { class: 'composer' }, composerInput, h('button', { type: 'submit', 'data-testid': 'send' }, 'Send'));
  const chat = h('section', { class: 'chat' }, h('div', { class: 'chat-header' }, chatTitle, addMemberForm), messages, typing, composer);
  const signOut = h('button', { class: 'link' }, 'Sign out');
  const copy = h(
    'button',
    { class: 'link', title: 'Copy your user id', onclick: () => void navigator.clipboard?.writeText(me.user_id).catch(() => {}) },
    'copy',
  );
  const root = h(
    'div',
    { class: 'app' },
    h(
      'header',
      {},
      h('h1', {}, 'RealChat'),
      badge,
      h(
        'span',
        { class: 'me' },
        h('strong', {}, me.name || shortId(me.user_id)),
        ' · your id: ',
        h('code', { 'data-testid': 'my-id' }, me.user_id),
        ' ',
        copy,
      ),
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
    newTitle,
    newMembers,
    newForm,
    chat,
    chatTitle,
    addMemberForm,
    addMemberInput,
    messages,
    typing,
    composer,
    composerInput,
    signOut,
  };
}
