// Compile-time check: the browser's WebSocket satisfies the SDK's WebSocketConstructor.
import type { WebSocketConstructor } from '../../client/index.js';
export const nativeWebSocket: WebSocketConstructor = WebSocket;
