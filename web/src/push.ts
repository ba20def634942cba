/**
 * Web Push in the web app: registers the service worker (web/public/sw.js) and offers to turn
 * notifications on. Turning them on asks the browser for permission, subscribes with the server's
 * VAPID key and registers the subscription (POST /v1/push/subscriptions). A click on a notification
 * focuses this window and asks it to open the conversation (`onOpen`).
 */
import { h } from './dom.js';

function keyBytes(b64url: string): Uint8Array<ArrayBuffer> {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (b64url.length % 4)) % 4);
  const raw = atob(b64);
  const out = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

async function api(token: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
}

/** Adds the "Turn on notifications" button to `container` when the browser supports push. Returns a cleanup. */
export function offerNotifications(container: HTMLElement, token: string, onOpen: (conversationId: string) => void): () => void {
  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) return () => {};
  const onMessage = (e: MessageEvent) => {
    const d = e.data as { type?: unknown; conversation_id?: unknown } | null;
    if (d?.type === 'open-conversation' && typeof d.conversation_id === 'string') onOpen(d.conversation_id);
  };
  navigator.serviceWorker.addEventListener('message', onMessage);
  const button = h('button', { type: 'button', class: 'push-toggle', 'data-testid': 'push-toggle' }, 'Turn on notifications');
  const status = (text: string, disabled = false) => {
    button.textContent = text;
    button.disabled = disabled;
  };
  const registration = navigator.serviceWorker.register('/sw.js');
  void registration.then(async (reg) => {
    if (Notification.permission === 'denied') status('Notifications blocked', true);
    else if (await reg.pushManager.getSubscription()) status('Notifications on', true);
  });
  button.addEventListener('click', () => {
    void (async () => {
      status('Turning on…', true);
      try {
        if ((await Notification.requestPermission()) !== 'granted') return status('Notifications blocked', true);
        const keyRes = await api(token, 'GET', '/v1/push/vapid-public-key');
        if (!keyRes.ok) return status('Notifications unavailable', true);
        const { public_key: key } = (await keyRes.json()) as { public_key: string };
        const reg = await registration;
        const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
        const res = await api(token, 'POST', '/v1/push/subscriptions', sub.toJSON());
        status(res.ok ? 'Notifications on' : 'Notifications unavailable', true);
      } catch {
        status('Turn on notifications');
      }
    })();
  });
  container.append(button);
  return () => {
    navigator.serviceWorker.removeEventListener('message', onMessage);
    button.remove();
  };
}
