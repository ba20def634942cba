-- API keys, webhooks and their delivery log (docs/webhooks.md, docs/protocol.md "API keys").

-- A key acts as its user (a bot is an ordinary users row). Only a hash of the secret is stored:
-- the key `rc_<id>_<secret>` is shown once; the id finds the row, sha256(key) is compared in
-- constant time.
CREATE TABLE api_keys (
  id           TEXT PRIMARY KEY,
  user_id      UUID NOT NULL REFERENCES users(id),
  name         TEXT NOT NULL,
  scopes       TEXT[] NOT NULL,
  key_hash     BYTEA NOT NULL,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

-- A webhook receives every event of the public stream whose type it lists (none listed: all).
-- The secret signs deliveries (Standard Webhooks), so it is kept as is, like a password the
-- server must present, not one it checks.
CREATE TABLE webhooks (
  id           UUID PRIMARY KEY,
  url          TEXT NOT NULL,
  event_types  TEXT[] NOT NULL DEFAULT '{}',
  secret       TEXT NOT NULL,
  enabled      BOOLEAN NOT NULL DEFAULT true,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  updated_at   TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);

-- One row per (webhook, event): the dispatcher's durable queue and the delivery log at once.
-- status: pending (waiting or being retried), delivered, dead (retries spent, or dropped because
-- the webhook's backlog was full; `npm run webhooks:replay` puts dead rows back to pending).
-- Order: within (webhook_id, conversation_id) rows are sent by id, one at a time: a row is sent
-- only when no earlier row of its conversation is still pending.
CREATE TABLE webhook_deliveries (
  id               BIGSERIAL PRIMARY KEY,
  webhook_id       UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
  event_id         UUID NOT NULL,
  event_type       TEXT NOT NULL,
  conversation_id  UUID NOT NULL,
  body             TEXT NOT NULL,
  status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts         INT NOT NULL DEFAULT 0,
  next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  -- A sender holds a row it is posting until then (several dispatchers share the table).
  locked_until     TIMESTAMPTZ,
  last_status_code INT,
  last_error       TEXT,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  finished_at      TIMESTAMPTZ,
  CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
);
-- The sender's scan: the head of each (webhook, conversation) among pending rows.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, conversation_id, id) WHERE status = 'pending';
-- The delivery log, newest first.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id DESC);
