-- Web Push notifications for offline users (issue 14; docs/architecture.md, "Notifier").
-- Must run unchanged on PostgreSQL 15+ and on PGlite.

-- A browser's PushSubscription. The endpoint is its identity: a browser that subscribes again with
-- the same endpoint (another user signing in on it) takes it over, so one device never notifies two
-- users. Written by gateways, read (and deleted on 404/410) by notifiers.
CREATE TABLE push_subscriptions (
  id          BIGSERIAL PRIMARY KEY,
  user_id     UUID NOT NULL,
  endpoint    TEXT NOT NULL UNIQUE,
  p256dh      TEXT NOT NULL,
  auth        TEXT NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id, id);

-- PUT /v1/conversations/{id}/notifications {"muted": true}: a row; false: no row.
CREATE TABLE push_mutes (
  user_id          UUID NOT NULL,
  conversation_id  UUID NOT NULL REFERENCES conversations(id),
  muted_at         TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
  PRIMARY KEY (user_id, conversation_id)
);

-- The notifier's work and its collapse state, one row per subscription and conversation:
-- pending: to be sent at due_at (a notifier holds it while lease_until is in the future);
-- sent: the push service took it; no other notification of this conversation goes to this
-- subscription until its user has read past sequence_number (then the next message re-arms the row).
-- Written by the notifier in the same step that consumes the event, before the event's offset is
-- committed, so a notifier killed at any point loses nothing (docs/architecture.md, "Notifier").
CREATE TABLE push_notifications (
  subscription_id  BIGINT NOT NULL REFERENCES push_subscriptions(id) ON DELETE CASCADE,
  conversation_id  UUID NOT NULL,
  user_id          UUID NOT NULL,
  sequence_number  BIGINT NOT NULL CHECK (sequence_number >= 1),
  -- When the message was written: the unread delay for online members counts from here.
  message_at       TIMESTAMPTZ NOT NULL,
  state            TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  due_at           TIMESTAMPTZ NOT NULL,
  lease_until      TIMESTAMPTZ,
  last_error       TEXT,
  PRIMARY KEY (subscription_id, conversation_id)
);
CREATE INDEX push_notifications_due ON push_notifications (due_at) WHERE state = 'pending';

-- Notifications given up on: a push service that kept failing (5xx, 429, timeouts) past the
-- attempts, or refused the request (4xx other than 404/410). Operators read, and may delete, these
-- rows (docs/operations.md, "Web Push").
CREATE TABLE push_dead_letters (
  id               BIGSERIAL PRIMARY KEY,
  user_id          UUID NOT NULL,
  conversation_id  UUID NOT NULL,
  sequence_number  BIGINT NOT NULL,
  endpoint         TEXT NOT NULL,
  attempts         INTEGER NOT NULL,
  status           INTEGER,
  reason           TEXT NOT NULL,
  created_at       TIMESTAMPTZ NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);
CREATE INDEX push_dead_letters_by_time ON push_dead_letters (created_at);
