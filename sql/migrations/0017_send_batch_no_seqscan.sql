-- realchat_send_batch plans without sequential scans, whatever the statistics say when it plans.
-- Its statements are planned once per session (force_generic_plan) against the statistics of
-- that moment. A gateway that connected while messages was tiny (a new deployment, emptied
-- tables) got a plan that read the whole table for each send's idempotency lookup and receipt
-- check, and kept it until autovacuum's next ANALYZE of messages, up to a minute away: sends
-- took 1-5 s and timed out while the table grew (perf/README.md, "Tenth round"). Every lookup of
-- the function has an index; with sequential scans off the planner takes it at any table size.
ALTER FUNCTION realchat_send_batch(jsonb, text) SET enable_seqscan = off;
-- A later CREATE OR REPLACE of the function drops this setting unless it repeats it; the plan test
-- in tests/group-commit.test.ts (tiny analyzed tables) fails if it is lost.
