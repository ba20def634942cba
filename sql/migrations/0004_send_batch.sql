-- The write path as one statement per batch of sends (group commit): the gateway collects the
-- sends that arrive while a batch is in flight and commits them together, one round trip and one
-- WAL flush for all of them, with set-based statements (per-row work costs PostgreSQL CPU that a
-- busy node cannot spare). Each send keeps its own rules, exactly as one transaction per send did:
--   * idempotency first: a (sender, key) that exists answers the stored message ('duplicate' when
--     conversation and payload are equal as jsonb, 'conflict' otherwise), whatever changed since;
--   * sequences come from UPDATE conversations SET last_seq = last_seq + n ... RETURNING, for the
--     members' sends only ('not_member' / 'not_found' otherwise), numbered in arrival order;
--   * message rows and their outbox events in the same transaction;
--   * a concurrent send of the same key that commits between the check and the insert makes that
--     insert do nothing, which would leave a sequence gap: the whole batch is then rolled back with
--     serialization_failure (40001) and the caller writes it again (the key now answers as stored).
-- The caller never puts one (sender, key) twice in a batch. Conversations are locked in id order
-- first: concurrent batches cannot wait on each other in a cycle.
--
-- batch: [{"i": index, "c": conversation_id, "s": sender_id, "k": idempotency_key, "p": payload,
--          "b": payload bytes as stored, "t": trace_id or null}, ...]
-- The unique constraint messages_conversation_sequence already indexes (conversation_id, sequence);
-- a second identical index only doubled the cost of every message insert.
DROP INDEX IF EXISTS messages_conversation_sequence_idx;

-- Called from inside the batch statement when its insert lost a race: fails the whole statement.
CREATE FUNCTION realchat_send_race(idempotency_key text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a concurrent send used idempotency key % first; write the batch again', idempotency_key
    USING ERRCODE = 'serialization_failure';
END;
$$;

CREATE FUNCTION realchat_send_batch(batch jsonb, outbox_mode text DEFAULT 'table')
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
             (m.conversation_id = i.c AND m.payload = i.p) AS same
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
