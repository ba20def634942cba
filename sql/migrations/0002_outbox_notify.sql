-- Wakes relays as soon as a transaction that wrote outbox rows commits (NOTIFY is delivered at
-- commit, and repeated notifications of one transaction are folded into one). Relays also poll,
-- so a missed notification only costs latency.
CREATE FUNCTION realchat_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('realchat_outbox', '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION realchat_outbox_notify();
