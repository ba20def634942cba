/** Entry: dev sign-in (POST /v1/dev/token), then the app. */
import { RestClient } from '../../client/index.js';
import { describeError, startApp } from './app.js';
import { h } from './dom.js';
import { clearSession, loadSession, saveSession, type SignedIn } from './session.js';
import { offerNotifications } from './push.js';

const root = document.getElementById('app')!;
let stop: (() => void) | null = null;

function showSignIn(message?: string): void {
  stop?.();
  stop = null;
  const name = h('input', { placeholder: 'Your name', maxlength: 100, required: true, autofocus: true, 'data-testid': 'signin-name' });
  const error = h('p', { class: 'error', role: 'alert', 'data-testid': 'error', hidden: !message }, message ?? '');
  const button = h('button', { type: 'submit', 'data-testid': 'signin' }, 'Sign in');
  const form = h(
    'form',
    { class: 'signin' },
    h('h1', {}, 'RealChat'),
    h('p', { class: 'muted' }, 'Development sign-in: pick a name and you get a fresh user id.'),
    name,
    button,
    error,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    button.disabled = true;
    new RestClient({ baseUrl: '' })
      .devToken({ name: name.value.trim() || 'anonymous' })
      .then((t) => {
        const s: SignedIn = { user_id: t.user_id, token: t.token, name: name.value.trim() || 'anonymous' };
        saveSession(localStorage, s);
        showApp(s);
      })
      .catch((err) => {
        button.disabled = false;
        error.hidden = false;
        error.textContent = describeError('Sign-in', err);
      });
  });
  root.replaceChildren(form);
}

function showApp(s: SignedIn): void {
  stop?.();
  const stopApp = startApp(root, s, (reason) => {
    clearSession(localStorage);
    showSignIn(reason);
  });
  // A notification click lands here: reload on the conversation's URL (the app opens it from there).
  const stopPush = offerNotifications(root, s.token, (id) => location.assign(`/?conversation=${encodeURIComponent(id)}`));
  stop = () => {
    stopPush();
    stopApp();
  };
}

const session = loadSession(localStorage);
if (session) showApp(session);
else showSignIn();
