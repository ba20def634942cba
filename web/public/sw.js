/* RealChat service worker: shows Web Push notifications (docs/protocol.md, "Web Push") and, on a
   click, focuses an open RealChat window on the conversation (or opens one). Plain JS: Vite copies
   web/public as it is, and a service worker must be served from the site's root to cover it. */
self.addEventListener('push', (event) => {
  let n = {};
  try {
    n = event.data ? event.data.json() : {};
  } catch {
    n = {};
  }
  const title = typeof n.title === 'string' ? n.title : 'RealChat';
  event.waitUntil(
    self.registration.showNotification(title, {
      body: typeof n.body === 'string' ? n.body : 'New message',
      // Same tag: a newer notification of the conversation replaces the older one on the device too.
      tag: typeof n.conversation_id === 'string' ? `conversation:${n.conversation_id}` : undefined,
      data: { url: typeof n.url === 'string' && n.url.startsWith('/') ? n.url : '/', conversation_id: n.conversation_id },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const { url, conversation_id: conversationId } = event.notification.data || {};
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const mine = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (mine) {
        await mine.focus();
        mine.postMessage({ type: 'open-conversation', conversation_id: conversationId });
        return;
      }
      await self.clients.openWindow(url || '/');
    })(),
  );
});
