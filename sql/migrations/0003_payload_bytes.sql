-- Size of each payload as PostgreSQL prints it (numbers in plain decimal, jsonb's spacing), written
-- by the send path. Pages of history are bounded by the sum of these, so one request can never
-- make the server print and hold an unbounded amount of text. NULL for rows written before this
-- migration: readers fall back to octet_length(payload::text).
ALTER TABLE messages ADD COLUMN payload_bytes INTEGER CHECK (payload_bytes >= 0);
