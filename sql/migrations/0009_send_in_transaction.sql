-- Sending from the application's own transaction (docs/protocol.md, "Sending from SQL"): an
-- application that shares RealChat's PostgreSQL posts a message in its own transaction, so its
-- change and the message commit together or not at all:
--
--   BEGIN;
--   UPDATE orders SET state = 'shipped' WHERE id = 42;
--   SELECT realchat_send('<conversation>', '<sender>', 'order-42-shipped', '{"text": "Your order shipped"}');
--   COMMIT;
--
-- The same write as the API's (realchat_send_batch, one item): membership, idempotency per
-- (sender, key), the sequence from UPDATE conversations ... RETURNING, the message row and its
-- outbox event; the relay publishes it once the caller commits, and a rollback leaves no row, no
-- event and no sequence gap. The API's limits apply, read from settings an operator sets to match
-- the gateways' (ALTER DATABASE ... SET realchat.max_payload_bytes = ...): realchat.max_payload_bytes
-- (default 65536, counted on the payload as PostgreSQL prints it), realchat.max_number_chars (40),
-- and realchat.outbox_mode ('table'; 'wal' when Debezium reads the outbox from the WAL).
-- Errors carry SQLSTATEs of their own, the API's codes: RC400 invalid_request, RC403 forbidden,
-- RC404 not_found, RC409 conflict. The conversation row stays locked until the caller commits:
-- keep the transaction short (sends to that conversation wait for it).

-- Why a payload breaks the API's payload rules (common/validate.ts checkPayload), or null. jsonb
-- itself already refuses NUL characters and unpaired surrogates.
CREATE FUNCTION realchat_payload_problem(p jsonb, max_bytes int, max_number_chars int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  WITH RECURSIVE walk(v, depth) AS (
    SELECT p, 0
    UNION ALL
    SELECT c.v, w.depth + 1
    FROM walk w, LATERAL (
      SELECT a.value AS v FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.v) = 'array' THEN w.v ELSE '[]'::jsonb END) a
      UNION ALL
      SELECT o.value FROM jsonb_each(CASE WHEN jsonb_typeof(w.v) = 'object' THEN w.v ELSE '{}'::jsonb END) o
    ) c
    -- A container at depth 64 is the 65th level: walking one level further finds it.
    WHERE w.depth < 65
  )
  SELECT CASE
    WHEN octet_length(p::text) > max_bytes THEN format('payload exceeds %s bytes', max_bytes)
    WHEN EXISTS (SELECT 1 FROM walk WHERE depth >= 64 AND jsonb_typeof(v) IN ('object', 'array'))
      THEN 'payload nests deeper than 64 levels'
    WHEN EXISTS (SELECT 1 FROM walk WHERE jsonb_typeof(v) = 'number' AND length(v::text) > max_number_chars)
      THEN format('payload numbers may have at most %s characters written out in decimal', max_number_chars)
  END
$$;

-- Returns the message's envelope (the stored one for a repeated key).
CREATE FUNCTION realchat_send(conversation_id uuid, sender_id uuid, idempotency_key text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  max_bytes int := coalesce(nullif(current_setting('realchat.max_payload_bytes', true), '')::int, 65536);
  max_number_chars int := coalesce(nullif(current_setting('realchat.max_number_chars', true), '')::int, 40);
  mode text := coalesce(nullif(current_setting('realchat.outbox_mode', true), ''), 'table');
  problem text;
  r record;
BEGIN
  IF conversation_id IS NULL OR sender_id IS NULL THEN
    RAISE EXCEPTION 'conversation_id and sender_id are required' USING ERRCODE = 'RC400';
  END IF;
  IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 128 THEN
    RAISE EXCEPTION 'idempotency_key must be 1-128 characters' USING ERRCODE = 'RC400';
  END IF;
  IF payload IS NULL THEN
    RAISE EXCEPTION 'payload must be a JSON value (JSON null is jsonb ''null'')' USING ERRCODE = 'RC400';
  END IF;
  problem := realchat_payload_problem(payload, max_bytes, max_number_chars);
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION '%', problem USING ERRCODE = 'RC400';
  END IF;
  SELECT * INTO r FROM realchat_send_batch(
    jsonb_build_array(jsonb_build_object('i', 0, 'c', conversation_id, 's', sender_id, 'k', idempotency_key, 'p', payload,
                                         'b', octet_length(payload::text), 't', null)),
    mode);
  CASE r.status
    WHEN 'created', 'duplicate' THEN
      RETURN (SELECT realchat_envelope(m) FROM messages m WHERE m.id = r.message_id);
    WHEN 'conflict' THEN
      RAISE EXCEPTION 'idempotency_key was already used for a different conversation or payload' USING ERRCODE = 'RC409';
    WHEN 'not_member' THEN
      RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'RC403';
    ELSE
      RAISE EXCEPTION 'conversation not found' USING ERRCODE = 'RC404';
  END CASE;
END;
$$;
