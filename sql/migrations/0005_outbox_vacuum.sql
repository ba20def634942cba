-- The outbox is a queue: every row is inserted, published and deleted within milliseconds. Vacuum
-- it by row count rather than by a fraction of its (tiny) size, so the relay's index scan from the
-- oldest row never wades through a long tail of dead entries.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
                        autovacuum_vacuum_cost_delay = 0);
