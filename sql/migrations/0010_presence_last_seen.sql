-- Presence for clients (docs/architecture.md, "Presence for clients"): when a user's last
-- connection to a gateway node closed, written by that node (on the database's clock, so every
-- node compares it with one clock) and read for `presence` frames and GET /v1/users/{id}/presence.
-- Online/offline itself lives in the presence registry (Redis) or in memory, never here: a row
-- write per connection open would put the database on the connect path. Null: never seen (or a
-- node was killed before it could write it). A user who connects only with a token has no users
-- row until then: the gateway inserts one (name null).
ALTER TABLE users ADD COLUMN last_seen_at TIMESTAMPTZ;
