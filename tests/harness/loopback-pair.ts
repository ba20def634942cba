/**
 * Two ends of a loopback TCP connection. What one end writes is in the other's kernel buffer at
 * once and is read in the event loop's next socket reads: a stand-in for a peer that answered
 * (a Kafka fetch, a client that read its socket) while the loop was busy.
 */
import { once } from 'node:events';
import net from 'node:net';

export interface LoopbackPair {
  a: net.Socket;
  b: net.Socket;
  close(): void;
}

export async function loopbackPair(): Promise<LoopbackPair> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [b] = (await once(server, 'connection')) as [net.Socket];
  await once(a, 'connect');
  return {
    a,
    b,
    close() {
      a.destroy();
      b.destroy();
      server.close();
    },
  };
}
