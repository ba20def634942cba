-- realchat_send_batch reads conversations by index lookups only: the lock statement and the
-- not_member / not_found check. The function is 0015_send_receipt_on_message.sql's with only those
-- two changed.
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
  -- Locked one by one by primary key, in id order (so two batches cannot deadlock). The earlier
  -- `WHERE cv.id IN (...) ORDER BY cv.id FOR UPDATE` got a generic plan that guessed 100 ids and
  -- hashed them against a sequential scan of conversations while the table was small (below
  -- 20,000-30,000 rows in a test): every batch read the whole table (perf/README.md, "Ninth round").
  PERFORM 1 FROM (SELECT DISTINCT (e->>'c')::uuid AS id FROM jsonb_array_elements(batch) e ORDER BY 1) ids,
    LATERAL (SELECT 1 FROM conversations cv WHERE cv.id = ids.id OFFSET 0 FOR UPDATE) locked;
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
      -- A receipt when the move read someone else's message: that is news for the others. A move
      -- over the sender's own messages only is not (each message entry already says its sender read
      -- up to it). The receipt rides on the sender's newest message of the batch (its read_sequence
      -- is that message's sequence) instead of being an event of its own: in a conversation where
      -- members answer each other nearly every send reads someone's message, and a separate event
      -- cost the whole pipeline (relay, Kafka, delivery, node topics, gateways) ~1.7 events per
      -- message (perf/README.md, "Seventh round").
      SELECT r.user_id, r.conversation_id, r.last_read_sequence, gen_random_uuid() AS eid
      FROM (SELECT rm.*, coalesce(rb.old, 0) AS old FROM read_moved rm
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
                 'sequence_number', ev.sequence, 'payload', ev.payload, 'created_at', ev.ts, 'idempotency_key', ev.idempotency_key))
             || CASE WHEN rc.eid IS NULL THEN '{}'::jsonb
                     ELSE jsonb_build_object('receipt', jsonb_build_object('event_id', rc.eid, 'user_id', rc.user_id,
                                                                          'read_sequence', rc.last_read_sequence)) END,
             ev.t
      FROM events ev
      LEFT JOIN receipts rc ON rc.conversation_id = ev.conversation_id AND rc.user_id = ev.sender_id AND rc.last_read_sequence = ev.sequence
      ORDER BY ev.conversation_id, ev.sequence
    )
    SELECT i.i AS idx,
           CASE WHEN st.i IS NOT NULL THEN CASE WHEN st.same THEN 'duplicate' ELSE 'conflict' END
                WHEN ev.i IS NOT NULL THEN 'created'
                WHEN nu.i IS NOT NULL THEN realchat_send_race(i.k)
                -- A scalar subquery, not EXISTS: EXISTS could be planned as a hash of the whole table.
                WHEN (SELECT true FROM conversations cv WHERE cv.id = i.c) IS NOT NULL THEN 'not_member'
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
