-- Protocol v1.1 (docs/protocol.md, "Timeline entries"): every change a member must learn about is
-- an entry of the conversation's one sequenced timeline, a row of `messages` with its `kind`,
-- written with its outbox event in one transaction and numbered by
-- UPDATE conversations SET last_seq = last_seq + 1 ... RETURNING, like a message. Resume, gap fill,
-- replay and CDC therefore carry the new kinds unchanged.
ALTER TABLE messages ADD COLUMN kind text NOT NULL DEFAULT 'message'
  CHECK (kind IN ('message', 'edit', 'delete', 'members_added', 'members_removed', 'role_changed'));
-- The message an edit or delete changes.
ALTER TABLE messages ADD COLUMN ref_message_id uuid;
-- On kind 'message' rows: the payload is the latest edit's (set by the edit), or erased (JSON null).
ALTER TABLE messages ADD COLUMN edited_at timestamptz;
ALTER TABLE messages ADD COLUMN deleted_at timestamptz;
CREATE INDEX messages_ref_message ON messages (ref_message_id) WHERE ref_message_id IS NOT NULL;

-- The creator owns a conversation; the owner names admins. Owners and admins remove members and
-- delete others' messages; adding members is open to every member unless the owner restricts it.
ALTER TABLE members ADD COLUMN role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member'));
UPDATE members m SET role = 'owner' FROM conversations c WHERE c.id = m.conversation_id AND m.user_id = c.created_by;
ALTER TABLE conversations ADD COLUMN who_can_add text NOT NULL DEFAULT 'members' CHECK (who_can_add IN ('members', 'admins'));
-- POST /v1/conversations with an Idempotency-Key: a repeat answers the conversation it created.
ALTER TABLE conversations ADD COLUMN create_key text;
CREATE UNIQUE INDEX conversations_create_key ON conversations (created_by, create_key) WHERE create_key IS NOT NULL;

-- GET /v1/users?query=: a name prefix, case-insensitive.
CREATE INDEX users_name_prefix ON users (lower(name) text_pattern_ops);

-- The envelope of a timeline entry as every path carries it (docs/protocol.md): fields that do not
-- apply are absent, so a plain message reads exactly as in v1.0.
CREATE FUNCTION realchat_envelope(m messages) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object(
      'message_id', m.id, 'conversation_id', m.conversation_id, 'sender_id', m.sender_id,
      'sequence_number', m.sequence, 'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'idempotency_key', m.idempotency_key,
      'kind', CASE WHEN m.kind <> 'message' THEN m.kind END,
      'ref_message_id', m.ref_message_id,
      'edited_at', to_char(m.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'deleted', CASE WHEN m.deleted_at IS NOT NULL THEN true END))
    -- Added after stripping: a payload may be JSON null (and is, once erased).
    || jsonb_build_object('payload', m.payload)
$$;

-- The event (docs/events.md) of a timeline entry: written by the transaction that adds the entry
-- and by the outbox replay, so both say the same. Plain messages are written by
-- realchat_send_batch; this one serves them for the replay.
-- VOLATILE (a new event_id per call): a caller that reads the event twice must read it from one row.
CREATE FUNCTION realchat_entry_event(m messages, large boolean) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
  SELECT jsonb_build_object(
      'schema_version', 1, 'event_id', gen_random_uuid(),
      'type', CASE m.kind WHEN 'message' THEN 'message.created' WHEN 'edit' THEN 'message.edited'
                          WHEN 'delete' THEN 'message.deleted' WHEN 'members_added' THEN 'conversation.members_added'
                          WHEN 'members_removed' THEN 'conversation.members_removed' ELSE 'conversation.role_changed' END,
      'conversation_id', m.conversation_id,
      'occurred_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'message', realchat_envelope(m))
    || CASE m.kind
         WHEN 'members_added' THEN jsonb_build_object('user_ids', m.payload->'user_ids', 'added_by', m.payload->'by',
                                                      'last_sequence', m.sequence - 1)
                                   || CASE WHEN large THEN '{"large": true}'::jsonb ELSE '{}'::jsonb END
         WHEN 'members_removed' THEN jsonb_build_object('user_ids', m.payload->'user_ids', 'removed_by', m.payload->'by',
                                                        'reason', m.payload->'reason')
         WHEN 'role_changed' THEN jsonb_build_object('user_id', m.payload->'user_id', 'role', m.payload->'role',
                                                     'changed_by', m.payload->'by')
         WHEN 'delete' THEN jsonb_build_object('erased_message_ids',
                              (SELECT coalesce(jsonb_agg(x.id ORDER BY x.sequence), '[]'::jsonb) FROM messages x
                               WHERE x.conversation_id = m.conversation_id AND (x.id = m.ref_message_id OR (x.kind = 'edit' AND x.ref_message_id = m.ref_message_id))))
         ELSE '{}'::jsonb END
$$;

-- The members a conversation was created with (the outbox replay's creation event): today's
-- members whose first membership entry is not an addition, and those whose first is a removal.
CREATE FUNCTION realchat_initial_members(conv uuid) RETURNS uuid[] LANGUAGE sql STABLE AS $$
  WITH firsts AS (
    SELECT DISTINCT ON (u.id) u.id::uuid AS user_id, m.kind
    FROM messages m, jsonb_array_elements_text(m.payload->'user_ids') AS u(id)
    WHERE m.conversation_id = conv AND m.kind IN ('members_added', 'members_removed')
    ORDER BY u.id, m.sequence)
  SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM (
    SELECT mb.user_id AS x FROM members mb WHERE mb.conversation_id = conv
      AND NOT EXISTS (SELECT 1 FROM firsts f WHERE f.user_id = mb.user_id)
    UNION SELECT f.user_id FROM firsts f WHERE f.kind = 'members_removed') s
$$;

-- The send batch of 0004_send_batch.sql (read its comment there) with two changes: a stored key
-- answers 'duplicate' only for a plain message (the key of an edit or a delete is not a send's),
-- and also when the stored message was deleted since (its payload is erased, the retry is the
-- same send); and sending moves the sender's own read position, with a conversation.read event
-- when that read someone else's message (docs/protocol.md, "Unread").
CREATE OR REPLACE FUNCTION realchat_send_batch(batch jsonb, outbox_mode text DEFAULT 'table')
-- `payload` is returned for stored messages only (duplicate, conflict): a new message's payload is
-- what the caller sent.
RETURNS TABLE (idx int, status text, message_id uuid, conversation_id uuid, sender_id uuid, sequence bigint,
               payload jsonb, created_at timestamptz, idempotency_key text)
LANGUAGE plpgsql
-- One plan per session, not one per call: planning this statement costs more than running it.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
  PERFORM 1 FROM conversations cv
    WHERE cv.id IN (SELECT DISTINCT (e->>'c')::uuid FROM jsonb_array_elements(batch) e)
    ORDER BY cv.id FOR UPDATE;
  RETURN QUERY
    WITH input AS (
      -- jsonb_to_recordset turns a JSON null into SQL NULL; the payload null is a value (jsonb 'null').
      SELECT x.i, x.c, x.s, x.k, coalesce(x.p, 'null'::jsonb) AS p, x.b, x.t
      FROM jsonb_to_recordset(batch) AS x(i int, c uuid, s uuid, k text, p jsonb, b int, t text)
    ), stored AS (
      -- LATERAL ... OFFSET 0 and scalar subqueries keep these per-row index lookups: the planner
      -- cannot know the batch is small and would otherwise hash whole tables.
      SELECT i.i, m.id, m.conversation_id, m.sender_id, m.sequence, m.payload, m.created_at, m.idempotency_key,
             (m.kind = 'message' AND m.conversation_id = i.c AND (m.payload = i.p OR m.deleted_at IS NOT NULL)) AS same
      FROM input i, LATERAL (SELECT * FROM messages m WHERE m.sender_id = i.s AND m.idempotency_key = i.k OFFSET 0) m
    ), eligible AS (
      SELECT i.* FROM input i
      WHERE NOT EXISTS (SELECT 1 FROM stored st WHERE st.i = i.i)
        AND (SELECT true FROM members mb WHERE mb.conversation_id = i.c AND mb.user_id = i.s) IS NOT NULL
    ), counts AS (
      SELECT e.c, count(*) AS n FROM eligible e GROUP BY e.c
    ), bumped AS (
      UPDATE conversations cv SET last_seq = cv.last_seq + counts.n, updated_at = date_trunc('milliseconds', clock_timestamp())
      FROM counts WHERE cv.id = counts.c
      RETURNING cv.id, cv.last_seq, counts.n
    ), numbered AS (
      SELECT e.*, gen_random_uuid() AS mid, bu.last_seq - bu.n + row_number() OVER (PARTITION BY e.c ORDER BY e.i) AS seq
      FROM eligible e JOIN bumped bu ON bu.id = e.c
    ), inserted AS (
      INSERT INTO messages AS m (id, conversation_id, sender_id, sequence, payload, idempotency_key, payload_bytes)
      SELECT n.mid, n.c, n.s, n.seq, n.p, n.k, n.b FROM numbered n ORDER BY n.c, n.seq
      ON CONFLICT ON CONSTRAINT messages_sender_idempotency DO NOTHING
      RETURNING m.id, m.conversation_id, m.sender_id, m.sequence, m.payload, m.created_at, m.idempotency_key
    ), events AS (
      SELECT ins.*, n.i, n.t, gen_random_uuid() AS eid, to_char(ins.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts
      FROM inserted ins JOIN numbered n ON n.mid = ins.id
    ), read_before AS (
      -- The senders' read positions before this statement (every CTE reads the same snapshot).
      SELECT st.user_id, st.conversation_id, st.last_read_sequence AS old FROM user_conversation_state st
      WHERE (st.user_id, st.conversation_id) IN (SELECT ins.sender_id, ins.conversation_id FROM inserted ins)
    ), read_moved AS (
      -- Sending is reading: the sender's own read position moves to its newest message.
      INSERT INTO user_conversation_state AS s (user_id, conversation_id, last_read_sequence)
      SELECT ins.sender_id, ins.conversation_id, max(ins.sequence) FROM inserted ins GROUP BY ins.sender_id, ins.conversation_id
      ON CONFLICT (user_id, conversation_id) DO UPDATE SET last_read_sequence = EXCLUDED.last_read_sequence
        WHERE s.last_read_sequence < EXCLUDED.last_read_sequence
      RETURNING s.user_id, s.conversation_id, s.last_read_sequence
    ), receipts AS (
      -- A receipt (conversation.read) when the move read someone else's message: that is news for
      -- the others. A move over the sender's own messages only is not (each message entry already
      -- says its sender read up to it), and emitting it would double the events of a busy sender.
      INSERT INTO outbox (event_id, aggregateid, type, payload)
      SELECT r.eid, r.conversation_id::text, 'conversation.read',
             jsonb_build_object('schema_version', 1, 'event_id', r.eid, 'type', 'conversation.read', 'conversation_id', r.conversation_id,
               'occurred_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
               'user_id', r.user_id, 'read_sequence', r.last_read_sequence)
      FROM (SELECT rm.*, gen_random_uuid() AS eid, coalesce(rb.old, 0) AS old FROM read_moved rm
            LEFT JOIN read_before rb ON rb.user_id = rm.user_id AND rb.conversation_id = rm.conversation_id) r
      WHERE EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = r.conversation_id AND x.sequence > r.old
                      AND x.sequence < r.last_read_sequence AND x.kind = 'message' AND x.sender_id <> r.user_id)
         OR EXISTS (SELECT 1 FROM inserted y WHERE y.conversation_id = r.conversation_id AND y.sequence > r.old
                      AND y.sequence < r.last_read_sequence AND y.sender_id <> r.user_id)
    ), outboxed AS (
      INSERT INTO outbox (event_id, aggregateid, type, payload, trace_id)
      SELECT ev.eid, ev.conversation_id::text, 'message.created',
             jsonb_build_object('schema_version', 1, 'event_id', ev.eid, 'type', 'message.created', 'conversation_id', ev.conversation_id,
               'occurred_at', ev.ts,
               'message', jsonb_build_object('message_id', ev.id, 'conversation_id', ev.conversation_id, 'sender_id', ev.sender_id,
                 'sequence_number', ev.sequence, 'payload', ev.payload, 'created_at', ev.ts, 'idempotency_key', ev.idempotency_key)),
             ev.t
      FROM events ev ORDER BY ev.conversation_id, ev.sequence
    )
    SELECT i.i AS idx,
           CASE WHEN st.i IS NOT NULL THEN CASE WHEN st.same THEN 'duplicate' ELSE 'conflict' END
                WHEN ev.i IS NOT NULL THEN 'created'
                WHEN nu.i IS NOT NULL THEN realchat_send_race(i.k)
                WHEN EXISTS (SELECT 1 FROM conversations cv WHERE cv.id = i.c) THEN 'not_member'
                ELSE 'not_found' END AS status,
           coalesce(st.id, ev.id) AS message_id, coalesce(st.conversation_id, ev.conversation_id, i.c) AS conversation_id,
           coalesce(st.sender_id, ev.sender_id, i.s) AS sender_id, coalesce(st.sequence, ev.sequence) AS sequence,
           st.payload AS payload, coalesce(st.created_at, ev.created_at) AS created_at,
           coalesce(st.idempotency_key, ev.idempotency_key, i.k) AS idempotency_key
    FROM input i
    LEFT JOIN stored st ON st.i = i.i
    LEFT JOIN events ev ON ev.i = i.i
    LEFT JOIN numbered nu ON nu.i = i.i;
  IF outbox_mode = 'wal' THEN
    -- Debezium reads the inserts from the WAL; the rows need not stay (the table stays empty).
    DELETE FROM outbox o WHERE o.xmin = pg_current_xact_id()::xid;
  END IF;
END;
$$;
