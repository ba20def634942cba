-- Multi-region (docs/multi-region.md). Each region has its own database; a conversation has one
-- home region, the only one that assigns its sequence numbers. The other regions hold a copy,
-- applied from the home region's mirrored event stream.
--
-- home_region NULL: homed in this database's own region (every conversation of a single-region
-- deployment, and every one created here). A name: homed there; this row is a mirrored copy.
-- home_epoch: raised each time the conversation is re-homed (a regional failover), so a copy can
-- tell an old home's entries from the new home's.
ALTER TABLE conversations ADD COLUMN home_region text CHECK (home_region <> '');
ALTER TABLE conversations ADD COLUMN home_epoch integer NOT NULL DEFAULT 0 CHECK (home_epoch >= 0);

-- The fence: a copy is written only on its home's behalf. Every path that numbers an entry does
-- UPDATE conversations SET last_seq = last_seq + n (and the conversation's other writes update it
-- too: who may add, member count), so one trigger guards them all, in the same statement (the row
-- is locked), whatever the caller believed about the home. The mirror applier, which writes the
-- home's entries into a copy, and a failover, which re-homes it, say so for their own transaction
-- (SET LOCAL realchat.copy_write = 'on').
CREATE FUNCTION realchat_home_fence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('realchat.copy_write', true), '') <> 'on' THEN
    RAISE EXCEPTION 'conversation % is homed in region %', OLD.id, OLD.home_region
      USING ERRCODE = 'RCH01', HINT = OLD.home_region;
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER conversations_home_fence BEFORE UPDATE ON conversations
  FOR EACH ROW WHEN (OLD.home_region IS NOT NULL)
  EXECUTE FUNCTION realchat_home_fence();

-- Where an outbox row's event came from: NULL for this region's own writes; a region's name for
-- an event the mirror applier copied from that region's stream (published to this region's topic
-- for this region's clients, with that name in the realchat-region header, so no region applies
-- an event it mirrored back from another).
ALTER TABLE outbox ADD COLUMN origin_region text;

-- Events without a sequence (read receipts) that the mirror applier applied, by event id: its
-- deduplication for them (entries deduplicate by (conversation, sequence)). Pruned after a week,
-- far beyond any redelivery of a mirrored topic.
CREATE TABLE mirror_applied_events (
  event_id   uuid PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mirror_applied_events_age ON mirror_applied_events (applied_at);
