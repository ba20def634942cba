-- Relay leadership as a lease with expiry and a fencing token (relay/lease.ts), instead of a session
-- advisory lock: a paused leader keeps its session (and would keep such a lock) for as long as TCP
-- lets it, while a lease runs out on the database's clock. Every takeover increments `token`; the
-- leader's deletes of published outbox rows only succeed while its token is current and unexpired.
-- `holder_pid` is the backend of the holder's dedicated connection: when that backend is gone (the
-- holder crashed or lost its connection) a standby need not wait for the expiry.
CREATE TABLE relay_lease (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  holder_pid INT,
  token BIGINT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

INSERT INTO relay_lease (name, holder, holder_pid, token, expires_at) VALUES ('outbox', '', NULL, 0, '-infinity');
