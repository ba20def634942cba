/** Small helpers shared by the multi-process suites. */
import postgres from 'postgres';
import type { StoredMessage } from './history.js';

export async function createConversationAt(port: number, token: string, members: string[]): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/v1/conversations`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
    body: JSON.stringify({ member_ids: members }),
    signal: AbortSignal.timeout(10_000),
  });
  if (r.status !== 201) throw new Error(`create conversation: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { conversation_id: string }).conversation_id;
}

/** Every stored message of a conversation, for the history checker. */
export async function storedMessages(databaseUrl: string, conversationId: string): Promise<StoredMessage[]> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    return [
      ...(await sql<StoredMessage[]>`
        SELECT conversation_id, sequence::int AS sequence_number, id AS message_id, sender_id, idempotency_key, payload
        FROM messages WHERE conversation_id = ${conversationId} ORDER BY sequence`),
    ];
  } finally {
    await sql.end();
  }
}
