-- Regional failover (docs/multi-region.md): the conversations of a lost region are re-homed in a
-- surviving one. Each re-homing is recorded where it happened: the epoch it began and the last
-- sequence the new home had applied from the old one (the takeover point). Sequencing goes on
-- after it; an entry of the old home above it that reaches the new home later (acknowledged by the
-- old home and not mirrored before it was lost: the RPO window) is re-appended with a new number.
CREATE TABLE region_failovers (
  conversation_id uuid NOT NULL REFERENCES conversations(id),
  home_epoch      integer NOT NULL,
  from_region     text NOT NULL,
  takeover_seq    bigint NOT NULL CHECK (takeover_seq >= 0),
  at              timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, home_epoch)
);
