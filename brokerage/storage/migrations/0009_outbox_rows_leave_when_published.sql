-- A message leaves the outbox in the transaction that saw JetStream acknowledge it, instead of being marked
-- published and deleted an hour later: the mark rewrote the whole row (its payload with it) and a second entry
-- in the primary key, once per order, and the purge then deleted it all the same. Nothing read a published row:
-- JetStream's duplicate window, not the outbox, drops a message a crashed relay publishes twice.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;  -- every row waits now: the primary key is the relay's order
ALTER TABLE outbox DROP COLUMN published_at;
