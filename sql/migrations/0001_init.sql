-- RealChat schema v1. Forward-only: never edit a released migration, add a new one.
-- Must run unchanged on PostgreSQL 15+ and on PGlite.

CREATE TABLE conversations (
  id          UUID PRIMARY KEY,
  title       TEXT,
  created_by  UUID NOT NULL,
  -- The per-conversation sequence. Only ever advanced by
  -- UPDATE conversations SET last_seq = last_seq + 1 ... RETURNING, inside the send transaction.
  last_seq    BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
  created_at  TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);

CREATE TABLE members (
  conversation_id UUID NOT NULL REFERENCES conversations(id),
  user_id         UUID NOT NULL,
  added_at        TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
  id               UUID PRIMARY KEY,
  conversation_id  UUID NOT NULL REFERENCES conversations(id),
  sender_id        UUID NOT NULL,
  sequence         BIGINT NOT NULL CHECK (sequence >= 1),
  payload          JSONB NOT NULL,
  idempotency_key  TEXT NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  CONSTRAINT messages_conversation_sequence UNIQUE (conversation_id, sequence),
  -- Idempotency is enforced by the database in the insert itself, never by check-then-insert.
  CONSTRAINT messages_sender_idempotency UNIQUE (sender_id, idempotency_key)
);
-- UNIQUE (conversation_id, sequence) already provides the (conversation_id, sequence) index;
-- it is named here so the plan is explicit.
CREATE INDEX messages_conversation_sequence_idx ON messages (conversation_id, sequence);

-- Transactional outbox. Column names follow the Debezium outbox event router's defaults
-- (aggregatetype, aggregateid, type, payload) so CDC needs no column mapping.
CREATE TABLE outbox (
  id             BIGSERIAL PRIMARY KEY,
  event_id       UUID NOT NULL UNIQUE,
  aggregatetype  TEXT NOT NULL DEFAULT 'conversation',
  aggregateid    TEXT NOT NULL,
  type           TEXT NOT NULL,
  payload        JSONB NOT NULL,
  trace_id       TEXT,
  created_at     TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);

CREATE TABLE user_conversation_state (
  user_id                  UUID NOT NULL,
  conversation_id          UUID NOT NULL REFERENCES conversations(id),
  last_delivered_sequence  BIGINT NOT NULL DEFAULT 0 CHECK (last_delivered_sequence >= 0),
  last_read_sequence       BIGINT NOT NULL DEFAULT 0 CHECK (last_read_sequence >= 0),
  PRIMARY KEY (user_id, conversation_id)
);

CREATE TABLE users (
  id          UUID PRIMARY KEY,
  name        TEXT,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);
